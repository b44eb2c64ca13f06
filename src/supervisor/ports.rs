//! Instance ports: allocate free loopback ports, and when a fixed port is
//! taken, name the process that holds it (Linux: `/proc/net/tcp{,6}` socket
//! inode → `/proc/*/fd`).

use std::net::{Ipv4Addr, TcpListener};

/// A port nobody listens on right now. The kernel picks it; the instance
/// binds it moments later (a tiny race shared by every port-0 scheme that
/// hands the number to another process).
pub fn free_loopback_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// `Err` with a message naming the holder when `port` already has a listener.
pub fn ensure_free(port: u16) -> Result<(), String> {
    // std sets SO_REUSEADDR, so this fails only when someone listens (not on TIME_WAIT).
    match TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(match holder(port) {
            Some((pid, cmd)) => format!("port {port} is already in use by pid {pid} ({cmd})"),
            None => format!("port {port} is already in use (by a process this user cannot see)"),
        }),
        Err(e) => Err(format!("cannot check port {port}: {e}")),
    }
}

/// The pid and command line of a process listening on `port`.
pub fn holder(port: u16) -> Option<(i32, String)> {
    let inodes: Vec<u64> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|table| listening_inodes(&table, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if wanted.iter().any(|w| target.as_os_str() == w.as_str()) {
                return Some((pid, cmdline(pid)));
            }
        }
    }
    None
}

/// Socket inodes in a `/proc/net/tcp` table listening on `port`.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local_port = cols.get(1)?.rsplit(':').next()?;
            let matches = u16::from_str_radix(local_port, 16).ok()? == port;
            (matches && *cols.get(3)? == LISTEN)
                .then(|| cols.get(9)?.parse().ok())
                .flatten()
        })
        .collect()
}

/// A process's command line with spaces between arguments.
pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_sockets_from_proc_net_tcp() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4243 1 0000000000000000 100 0 0 10 0
";
        assert_eq!(listening_inodes(table, 8080), vec![4242]);
        assert!(listening_inodes(table, 8081).is_empty());
    }

    #[test]
    fn names_the_process_holding_a_port() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let err = ensure_free(port).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "port {port} is already in use by pid {}",
                std::process::id()
            )),
            "{err}"
        );
        drop(listener);
        assert_eq!(ensure_free(port), Ok(()));
    }
}

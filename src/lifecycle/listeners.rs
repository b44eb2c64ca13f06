//! The sockets a harbor serves: bound from the config, or handed over
//! already listening — by systemd socket activation (`LISTEN_FDS`), or by
//! the harbormaster being upgraded (`harbormaster upgrade`, which uses the
//! same variables).
//!
//! Handed-over sockets are fds `3 .. 3+LISTEN_FDS`, named by
//! `LISTEN_FDNAMES` (colon-separated; systemd's `FileDescriptorName=`).
//! Each is given a role:
//! - by name: `gateway` (or `http`) → a plain gateway listener, `tls` (or
//!   `https`) → a `[gateway.tls]` listener, `admin` → the admin listener;
//!   a role that receives named sockets takes only those (its configured
//!   addresses are not bound);
//! - otherwise by address: the socket's local address is looked up in
//!   `[gateway] listen`, `[gateway.tls] listen` and `[admin] listen`; one
//!   that matches no address is an error that names it.
//!
//! Every configured address no socket was handed over for is bound as usual.
//! `LISTEN_PID`, when set, must be this process (as `sd_listen_fds` checks);
//! the variables are removed from the environment either way, and the fds
//! are made close-on-exec, so managed apps never inherit them.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, OwnedFd};

use anyhow::{bail, Context};

use super::Listeners;
use crate::config::Config;

/// The first fd systemd (and `upgrade`) passes.
pub const FIRST_FD: i32 = 3;
/// `upgrade` only: the `admin.sock` listener and the runtime dir's lock file.
pub const ADMIN_SOCKET: &str = "admin.sock";
pub const LOCK: &str = "runtime.lock";

/// What was handed to this process (see the module doc).
#[derive(Debug, Default)]
pub struct Handed {
    pub sockets: Vec<Inherited>,
    /// `upgrade` only.
    pub admin_socket: Option<std::os::unix::net::UnixListener>,
    /// `upgrade` only: the lock to adopt (`RuntimeDir::adopt`).
    pub lock: Option<OwnedFd>,
}

/// A listening socket handed to this process, with its name.
#[derive(Debug)]
pub struct Inherited {
    pub name: String,
    pub listener: TcpListener,
}

/// Takes the sockets named by `LISTEN_FDS` / `LISTEN_PID` /
/// `LISTEN_FDNAMES` and removes the variables (call it before other threads
/// exist: it changes the environment).
pub fn take_from_env() -> anyhow::Result<Handed> {
    let fds = std::env::var("LISTEN_FDS").ok();
    let pid = std::env::var("LISTEN_PID").ok();
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    for name in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
        std::env::remove_var(name);
    }
    let Some(fds) = fds else {
        return Ok(Handed::default());
    };
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            // Meant for another process (sd_listen_fds ignores them too).
            return Ok(Handed::default());
        }
    }
    let n: i32 = fds
        .trim()
        .parse()
        .with_context(|| format!("LISTEN_FDS={fds:?} is not a number"))?;
    let names: Vec<&str> = names.split(':').collect();
    let mut handed = Handed::default();
    for i in 0..n {
        let fd = FIRST_FD + i;
        let name = names.get(i as usize).copied().unwrap_or("").to_string();
        match name.as_str() {
            ADMIN_SOCKET => handed.admin_socket = Some(owned(fd)?.into()),
            LOCK => handed.lock = Some(owned(fd)?),
            super::upgrade::READY_FD_NAME => super::upgrade::set_ready_pipe(owned(fd)?),
            _ => handed.sockets.push(Inherited {
                listener: take_fd(fd)?,
                name,
            }),
        }
    }
    Ok(handed)
}

/// Owns fd `fd` (close-on-exec from now on).
#[allow(unsafe_code)]
fn owned(fd: i32) -> anyhow::Result<OwnedFd> {
    // SAFETY: as in `take_fd`: passed to this process for it to own.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC)
        .with_context(|| format!("fd {fd} from LISTEN_FDS is not open"))?;
    Ok(owned)
}

/// Owns fd `fd`, checks that it is a listening TCP socket, and marks it
/// close-on-exec.
fn take_fd(fd: i32) -> anyhow::Result<TcpListener> {
    // LISTEN_FDS says fds 3.. were passed to this process for it to own;
    // the variables were removed above, so nothing else takes them.
    let owned = owned(fd)?;
    let listening = rustix::net::sockopt::socket_acceptconn(&owned).unwrap_or(false);
    let listener = TcpListener::from(owned);
    match listener.local_addr() {
        Ok(_) if listening => Ok(listener),
        Ok(addr) => bail!("fd {fd} from LISTEN_FDS ({addr}) is not listening"),
        Err(e) => bail!("fd {fd} from LISTEN_FDS is not a TCP socket: {e}"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Gateway,
    Tls,
    Admin,
}

fn role_by_name(name: &str) -> Option<Role> {
    match name {
        "gateway" | "http" => Some(Role::Gateway),
        "tls" | "https" => Some(Role::Tls),
        "admin" => Some(Role::Admin),
        _ => None,
    }
}

/// The listeners for `config`: the `inherited` sockets in their roles (see
/// the module doc), every other configured address bound (std sets
/// SO_REUSEADDR, so a restart never sees EADDRINUSE from TIME_WAIT).
pub fn bind_with(config: &Config, inherited: Vec<Inherited>) -> anyhow::Result<Listeners> {
    let tls_listen: &[SocketAddr] = config.gateway.tls.as_ref().map_or(&[], |t| &t.listen);
    let admin_listen = [config.admin.listen];
    let configured = |role| match role {
        Role::Gateway => config.gateway.listen.as_slice(),
        Role::Tls => tls_listen,
        Role::Admin => &admin_listen,
    };
    let mut given: Vec<(Role, TcpListener)> = Vec::new();
    for Inherited { name, listener } in inherited {
        let addr = listener.local_addr()?;
        let role = role_by_name(&name).or_else(|| {
            [Role::Gateway, Role::Tls, Role::Admin]
                .into_iter()
                .find(|&r| configured(r).contains(&addr))
        });
        let Some(role) = role else {
            bail!(
                "the socket passed as {name:?} ({addr}) matches no [gateway] listen, [gateway.tls] listen or [admin] listen address; \
                 list {addr} there, or name it gateway, tls or admin (FileDescriptorName=)"
            );
        };
        tracing::info!(event = "socket_inherited", %addr, name = %name, role = ?role);
        given.push((role, listener));
    }
    let mut take = |role: Role, key: &str| -> anyhow::Result<Vec<TcpListener>> {
        let named_only = given.iter().any(|(r, l)| {
            *r == role && !l.local_addr().is_ok_and(|a| configured(role).contains(&a))
        });
        let (mine, rest): (Vec<_>, Vec<_>) = given.drain(..).partition(|(r, _)| *r == role);
        given = rest;
        let mut out: Vec<TcpListener> = mine.into_iter().map(|(_, l)| l).collect();
        if !named_only {
            let have: Vec<SocketAddr> = out.iter().filter_map(|l| l.local_addr().ok()).collect();
            for addr in configured(role).iter().filter(|a| !have.contains(a)) {
                out.push(
                    TcpListener::bind(addr)
                        .with_context(|| format!("cannot listen on {addr} ({key})"))?,
                );
            }
        }
        Ok(out)
    };
    let gateway = take(Role::Gateway, "gateway.listen")?;
    let tls = take(Role::Tls, "gateway.tls.listen")?;
    let mut admin = take(Role::Admin, "admin.listen")?;
    if admin.len() > 1 {
        bail!("more than one admin socket was passed; pass at most one");
    }
    let admin = admin.pop().context("no admin listener")?;
    Ok(Listeners {
        gateway,
        tls,
        admin,
        admin_socket: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        crate::config::from_str(text, std::path::Path::new("/tmp/hm-test.toml")).unwrap()
    }

    fn listener() -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        (l, a)
    }

    #[test]
    fn sockets_are_matched_by_address_and_the_rest_is_bound() {
        let (l, addr) = listener();
        let c = config(&format!(
            "[gateway]\nlisten = [\"{addr}\", \"127.0.0.1:0\"]\n"
        ));
        let got = bind_with(
            &c,
            vec![Inherited {
                name: "harbormaster.socket".into(),
                listener: l,
            }],
        )
        .unwrap();
        assert_eq!(got.gateway.len(), 2);
        assert_eq!(got.gateway[0].local_addr().unwrap(), addr);
        assert!(got.tls.is_empty());
    }

    #[test]
    fn a_named_socket_replaces_the_configured_addresses_of_its_role() {
        let (g, gaddr) = listener();
        let (a, aaddr) = listener();
        let c = config("[gateway]\nlisten = [\"127.0.0.1:0\"]\n");
        let got = bind_with(
            &c,
            vec![
                Inherited {
                    name: "gateway".into(),
                    listener: g,
                },
                Inherited {
                    name: "admin".into(),
                    listener: a,
                },
            ],
        )
        .unwrap();
        assert_eq!(got.gateway.len(), 1);
        assert_eq!(got.gateway[0].local_addr().unwrap(), gaddr);
        assert_eq!(got.admin.local_addr().unwrap(), aaddr);
    }

    #[test]
    fn an_unmatched_unnamed_socket_is_an_error_naming_it() {
        let (l, addr) = listener();
        let c = config("[gateway]\nlisten = [\"127.0.0.1:0\"]\n");
        let err = bind_with(
            &c,
            vec![Inherited {
                name: "web.socket".into(),
                listener: l,
            }],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(&addr.to_string()) && err.contains("web.socket"),
            "{err}"
        );
    }
}

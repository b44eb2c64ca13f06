// Deadlines here bound waits on a real external process: wall-clock time is
// the point, and paused tokio time does not apply to it.
#![allow(clippy::disallowed_types)]

//! A real PostgreSQL server for a test: `initdb` into a temp dir, a free
//! loopback port, its unix socket in the temp dir, run as the `postgres`
//! user when the tests run as root (initdb and postgres refuse root). Stopped
//! (and its files removed) on drop. Installed by `scripts/deps/postgresql.sh`;
//! when it is missing the test FAILS saying so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

/// Debian's server binaries (not on PATH): the newest version installed.
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists() && b.join("postgres").exists())
        .collect();
    found.sort();
    found.pop().expect(
        "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: run scripts/deps/postgresql.sh",
    )
}

/// The user to run as: ourselves, or `postgres` when we are root.
fn run_as() -> Option<nix::unistd::User> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    Some(
        nix::unistd::User::from_name("postgres")
            .ok()
            .flatten()
            .expect("running as root, and there is no `postgres` user to run PostgreSQL as: run scripts/deps/postgresql.sh"),
    )
}

fn command(program: &Path) -> Command {
    match run_as() {
        None => Command::new(program),
        Some(user) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={}", user.uid))
                .arg(format!("--regid={}", user.gid))
                .arg("--init-groups")
                .arg("--")
                .arg(program);
            c
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Postgres {
    /// A new cluster, started; user `hm` (trust auth), database `postgres`.
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("hm-pg-").tempdir().unwrap();
        if let Some(user) = run_as() {
            nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid)).unwrap();
        }
        let out = command(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "hm", "-E", "UTF8", "--no-sync", "-D"])
            .arg(dir.path().join("data"))
            .stdout(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Self {
            dir,
            bin,
            port: free_port(),
            child: None,
        };
        pg.resume();
        pg
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `postgres://hm@127.0.0.1:PORT/DB`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://hm@127.0.0.1:{}/{db}", self.port)
    }

    /// Starts the server (again, after [`Postgres::stop`]) on the same port
    /// and waits until it answers queries.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = command(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=50",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = self.url("postgres");
        loop {
            let ready = std::thread::scope(|s| {
                s.spawn(|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                            Ok((client, conn)) => {
                                tokio::spawn(conn);
                                client.simple_query("SELECT 1").await.is_ok()
                            }
                            Err(_) => false,
                        }
                    })
                })
                .join()
                .unwrap()
            });
            if ready {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("postgres exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "postgres not ready within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fast shutdown (SIGINT: connections are cut, data is kept); waits for the exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Creates database `name` and returns its URL.
    pub async fn create_db(&self, name: &str) -> String {
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .expect("connect to the test PostgreSQL");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        self.url(name)
    }

    /// Runs `sql` on database `db`: one count (first column of the first row, bigint).
    pub async fn count(url: &str, sql: &str) -> i64 {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test PostgreSQL");
        tokio::spawn(conn);
        client.query_one(sql, &[]).await.unwrap().get(0)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Immediate shutdown: the data dir goes with the temp dir anyway.
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGQUIT);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

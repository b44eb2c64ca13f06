//! A small HTTP backend for harbormaster's tests, benchmarks and demo.
//!
//! It behaves like the services harbormaster supervises, including the badly
//! behaved ones: slow starters, crashers, hangers, processes that ignore
//! SIGTERM and processes that leave grandchildren behind.
#![forbid(unsafe_code)]

mod routes;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

#[derive(Debug, Parser)]
#[command(name = "testapp", about = "HTTP test backend for harbormaster")]
struct Args {
    /// Port to listen on (0 = any free port).
    #[arg(long, env = "PORT", default_value_t = 0)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Name reported by `/` (default: $HARBORMASTER_INSTANCE, else "testapp").
    #[arg(long, env = "HARBORMASTER_INSTANCE", default_value = "testapp")]
    name: String,
    /// Wait this long before opening the port, like a slow starter.
    #[arg(long, value_parser = humantime::parse_duration)]
    startup_delay: Option<Duration>,
    /// Log SIGTERM and keep running (to test escalation to SIGKILL).
    #[arg(long)]
    ignore_sigterm: bool,
    /// Start a grandchild process that ignores SIGTERM (to test process-group cleanup).
    #[arg(long)]
    spawn_grandchild: bool,
    /// Log one stdout line per request.
    #[arg(long)]
    log_requests: bool,
    /// Internal: run as the grandchild.
    #[arg(long, hide = true)]
    grandchild: bool,
    /// `POST /admin/shutdown` answers at once, then shuts down after this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    shutdown_delay: Duration,
    /// After a shutdown starts, wait at most this long for open requests.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    shutdown_grace: Duration,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    if args.grandchild {
        return grandchild().await;
    }
    eprintln!("testapp: starting pid={}", std::process::id());
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;

    let grandchild_pid = if args.spawn_grandchild {
        Some(spawn_grandchild().await?)
    } else {
        None
    };

    if let Some(delay) = args.startup_delay {
        eprintln!("testapp: waiting {delay:?} before listening");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = sigterm.recv(), if !args.ignore_sigterm => {
                eprintln!("testapp: SIGTERM while starting, exiting");
                return Ok(());
            }
            _ = sigint.recv() => return Ok(()),
        }
    }

    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.host, args.port)).await?;
    let addr = listener.local_addr()?;
    let shutdown = Arc::new(Notify::new());
    let state = routes::State::new(
        args.name.clone(),
        addr.port(),
        grandchild_pid,
        args.log_requests,
        shutdown.clone(),
    )
    .with_shutdown_delay(args.shutdown_delay);
    println!(
        "testapp: listening on {addr} name={} pid={}",
        args.name,
        std::process::id()
    );

    let ignore_sigterm = args.ignore_sigterm;
    let stop = async move {
        loop {
            tokio::select! {
                _ = sigterm.recv() => {
                    if ignore_sigterm {
                        // Write errors too are ignored: once harbormaster is
                        // gone the pipe is broken, and eprintln! would panic
                        // and end us, which is not what a stubborn app does.
                        let _ = writeln!(std::io::stderr(), "testapp: ignoring SIGTERM");
                        continue;
                    }
                    eprintln!("testapp: SIGTERM, shutting down");
                }
                _ = sigint.recv() => eprintln!("testapp: SIGINT, shutting down"),
                _ = shutdown.notified() => eprintln!("testapp: shutdown requested"),
            }
            break;
        }
    };
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, routes::router(state)).with_graceful_shutdown(async move {
        stop.await;
        let _ = stopping_tx.send(());
    });
    let grace = args.shutdown_grace;
    tokio::select! {
        result = server => result?,
        _ = async move {
            let _ = stopping_rx.await;
            tokio::time::sleep(grace).await;
        } => eprintln!("testapp: open requests did not finish within {grace:?}; exiting"),
    }
    println!("testapp: stopped");
    Ok(())
}

/// Starts the grandchild and returns once it ignores SIGTERM.
async fn spawn_grandchild() -> std::io::Result<u32> {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("--grandchild")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let pid = child.id().unwrap_or_default();
    let mut ready = String::new();
    if let Some(out) = child.stdout.take() {
        tokio::io::BufReader::new(out).read_line(&mut ready).await?;
    }
    println!("testapp: grandchild pid={pid}");
    Ok(pid)
}

/// Sleeps forever and ignores SIGTERM: only SIGKILL (to its group) ends it.
/// It ignores write errors too, so a dead reader of its output cannot end it.
async fn grandchild() -> std::io::Result<()> {
    use std::io::Write;
    let mut sigterm = signal(SignalKind::terminate())?;
    // Tell the parent the handler is in place (then never touch stdout again).
    let _ = writeln!(std::io::stdout(), "ready");
    let _ = std::io::stdout().flush();
    let pid = std::process::id();
    let _ = writeln!(
        std::io::stderr(),
        "testapp grandchild: pid={pid} ignoring SIGTERM"
    );
    loop {
        sigterm.recv().await;
        let _ = writeln!(std::io::stderr(), "testapp grandchild: ignoring SIGTERM");
    }
}

//! harbormaster's own structured log, as text or JSON lines: on stderr in the
//! foreground, or (under `start`) in `STATE_DIR/logs/harbormaster.log`,
//! rotated by size like the app logs.
//!
//! Repeated warnings are collapsed: a peer that makes us warn about the same
//! thing thousands of times (a client resetting connections, a flapping
//! probe) must not be able to fill the disk. Of the warnings and errors with
//! the same call site and message, the first [`BURST`] in a [`WINDOW`] are
//! written; the rest are counted and reported in one line, "… 312 more in
//! the last 10 s: MESSAGE", with the next warning after the window. This is a
//! per-layer filter rather than a writer so it keys on the message, not on
//! the formatted line with its timestamp; info and debug are never dropped.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::LogFormat;
use crate::supervisor::output::RotatingFile;

/// Identical warnings written per window before the rest are counted.
pub const BURST: u32 = 5;
/// The window over which identical warnings are counted.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Where log lines go.
#[derive(Debug, Clone)]
pub enum Sink {
    Stderr,
    File(Arc<RotatingFile>),
    /// stderr and a file (`harbormaster mcp`: stdout is the MCP channel).
    Both(Arc<RotatingFile>),
}

impl Sink {
    fn write_all(&self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Stderr => std::io::stderr().write_all(bytes),
            Self::File(file) => file.append(bytes),
            Self::Both(file) => {
                // The file first: a closed stderr must not lose the line.
                let kept = file.append(bytes);
                let _ = std::io::stderr().write_all(bytes);
                kept
            }
        }
    }
}

/// One formatted event is one `write_all` (tracing-subscriber buffers it).
pub struct SinkWriter<'a>(&'a Sink);

impl Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(buf).map(|()| buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = SinkWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        SinkWriter(self)
    }
}

/// `--log-level` wins over `RUST_LOG`; neither means `info`.
pub fn init(format: LogFormat, level: Option<&str>, sink: Sink) -> anyhow::Result<()> {
    let filter = match level {
        Some(level) => EnvFilter::try_new(level)
            .map_err(|e| anyhow::anyhow!("invalid --log-level {level:?}: {e}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    // rustls warns once per handshake about a client's mistakes (an IP
    // address sent as SNI, as wrk does): noise at best, a log flood at
    // worst. Shown only when the filter names rustls.
    let spec = level.map_or_else(
        || std::env::var("RUST_LOG").unwrap_or_default(),
        String::from,
    );
    let filter = match "rustls=error".parse() {
        Ok(quiet) if !spec.contains("rustls") => filter.add_directive(quiet),
        _ => filter,
    };
    let ansi = matches!(sink, Sink::Stderr) && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(sink.clone())
        .with_ansi(ansi);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    let repeats = Repeats {
        sink,
        format,
        seen: Mutex::default(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt.with_filter(repeats))
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// The per-layer filter that collapses repeated warnings.
struct Repeats {
    sink: Sink,
    format: LogFormat,
    seen: Mutex<HashMap<(&'static str, String), Window>>,
}

struct Window {
    start: Instant,
    written: u32,
    suppressed: u64,
    level: Level,
}

impl<S> Filter<S> for Repeats {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        let level = *event.metadata().level();
        if level > Level::WARN {
            return true;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        // Report and forget every window that has passed.
        seen.retain(|(_, text), w| {
            if now < w.start + WINDOW {
                return true;
            }
            if w.suppressed > 0 {
                self.summary(w, text);
            }
            false
        });
        let w = seen
            .entry((event.metadata().name(), message.0))
            .or_insert(Window {
                start: now,
                written: 0,
                suppressed: 0,
                level,
            });
        if w.written < BURST {
            w.written += 1;
            true
        } else {
            w.suppressed += 1;
            false
        }
    }
}

impl Repeats {
    fn summary(&self, w: &Window, text: &str) {
        let now = humantime::format_rfc3339_micros(std::time::SystemTime::now());
        let what = format!(
            "… {} more in the last {} s: {text}",
            w.suppressed,
            WINDOW.as_secs()
        );
        let line = match self.format {
            LogFormat::Text => format!("{now} {:>5} harbormaster: {what}\n", w.level),
            LogFormat::Json => {
                let mut v = serde_json::json!({
                    "timestamp": now.to_string(),
                    "level": w.level.as_str(),
                    "event": "log_suppressed",
                    "suppressed": w.suppressed,
                    "message": what,
                })
                .to_string();
                v.push('\n');
                v
            }
        };
        let _ = self.sink.write_all(line.as_bytes());
    }
}

/// The `message` field of an event, as written.
struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn identical_warnings_are_collapsed_into_one_count() {
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(RotatingFile::new(dir.path().join("h.log")));
        let sink = Sink::File(file.clone());
        let repeats = Repeats {
            sink: sink.clone(),
            format: LogFormat::Json,
            seen: Mutex::default(),
        };
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(sink)
                .with_filter(repeats),
        );
        let _default = tracing::subscriber::set_default(subscriber);
        for _ in 0..300 {
            tracing::warn!("peer reset the connection");
        }
        tracing::info!("info is never collapsed");
        let text = std::fs::read_to_string(file.path()).unwrap();
        let warns = text.matches("peer reset the connection").count();
        assert_eq!(warns, BURST as usize, "{text}");
        assert!(text.contains("info is never collapsed"));

        tokio::time::advance(WINDOW).await;
        tracing::warn!("something else");
        let text = std::fs::read_to_string(file.path()).unwrap();
        let expected = format!(
            "… {} more in the last 10 s: peer reset the connection",
            300 - BURST
        );
        assert!(text.contains(&expected), "{text}");
    }
}

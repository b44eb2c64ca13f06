//! Instance output: every stdout/stderr line goes to an in-memory ring (for
//! `logs` and death records), to the app's log file under `[runtime]
//! state_dir` (rotated by size), and to tracing at debug level.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Lines kept in memory per instance.
pub const RING_LINES: usize = 1000;
/// A log file is rotated when it would grow past this.
pub const MAX_FILE_BYTES: u64 = 10 << 20;
/// Rotated files kept: `APP.log.1` … `APP.log.3`.
pub const KEEP_FILES: u32 = 3;
/// A line longer than this is split, so a process that never prints a newline
/// cannot grow our memory.
const MAX_LINE: usize = 16 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LogLine {
    pub at: SystemTime,
    pub stream: Stream,
    pub text: String,
}

/// The last [`RING_LINES`] lines of one instance.
#[derive(Debug, Default)]
pub struct LogRing(Mutex<VecDeque<LogLine>>);

impl LogRing {
    pub fn push(&self, line: LogLine) {
        let mut lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == RING_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The last `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<LogLine> {
        let lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        lines
            .iter()
            .skip(lines.len().saturating_sub(n))
            .cloned()
            .collect()
    }
}

/// An append-only file rotated by size (`NAME.1` … `NAME.3` kept): app
/// logs and harbormaster's own log.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    file: Mutex<Option<(File, u64)>>,
}

impl RotatingFile {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            file: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `bytes`, rotating first if they would grow the file past
    /// [`MAX_FILE_BYTES`]. Writes are small appends to the page cache; an
    /// error (disk full) is returned and never stops the caller.
    pub fn append(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if guard
            .as_ref()
            .is_some_and(|(_, size)| size + bytes.len() as u64 > MAX_FILE_BYTES)
        {
            *guard = None;
            self.rotate();
        }
        let (file, size) = match guard.as_mut() {
            Some(open) => open,
            None => {
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?;
                let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                guard.insert((f, size))
            }
        };
        file.write_all(bytes)?;
        *size += bytes.len() as u64;
        Ok(())
    }

    fn rotate(&self) {
        let name = |i: u32| PathBuf::from(format!("{}.{i}", self.path.display()));
        for i in (1..KEEP_FILES).rev() {
            let _ = std::fs::rename(name(i), name(i + 1));
        }
        let _ = std::fs::rename(&self.path, name(1));
    }
}

/// One app's log file, shared by its instances, rotated by size.
#[derive(Debug)]
pub struct AppLog(RotatingFile);

/// The last `n` lines of a log file (read from its last 256 KiB at most:
/// a log file may be 10 MiB); none when it cannot be read.
pub fn tail_file(path: &Path, n: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    const WINDOW: u64 = 256 << 10;
    let Ok(mut file) = File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let start = len.saturating_sub(WINDOW);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // cut mid-line
    }
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

impl AppLog {
    /// Where `app`'s output goes under `dir` (`state_dir/logs`).
    pub fn path_for(dir: &Path, app: &str) -> PathBuf {
        dir.join(format!("{app}.log"))
    }

    pub fn new(dir: &Path, app: &str) -> Self {
        Self(RotatingFile::new(Self::path_for(dir, app)))
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Appends one line; an error is logged and never stops the capture.
    pub fn write(&self, instance: &str, line: &LogLine) {
        let text = format!(
            "{} {instance} {}| {}\n",
            humantime::format_rfc3339_millis(line.at),
            line.stream.name(),
            line.text
        );
        if let Err(e) = self.0.append(text.as_bytes()) {
            tracing::warn!(path = %self.path().display(), error = %e, "cannot write app log file");
        }
    }
}

/// Reads `reader` line by line until EOF, sending each line everywhere.
pub async fn capture(
    mut reader: impl AsyncRead + Unpin,
    stream: Stream,
    app: String,
    instance: String,
    ring: Arc<LogRing>,
    file: Arc<AppLog>,
) {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let emit = |bytes: &[u8]| {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let line = LogLine {
            at: SystemTime::now(),
            stream,
            text: String::from_utf8_lossy(bytes).into_owned(),
        };
        tracing::debug!(app = %app, instance = %instance, stream = stream.name(), line = %line.text, "output");
        file.write(&instance, &line);
        ring.push(line);
    };
    loop {
        let n = match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some(pos) = buf[start..].iter().position(|b| *b == b'\n') {
            emit(&buf[start..start + pos]);
            start += pos + 1;
        }
        buf.drain(..start);
        while buf.len() >= MAX_LINE {
            emit(&buf[..MAX_LINE]);
            buf.drain(..MAX_LINE);
        }
    }
    if !buf.is_empty() {
        emit(&buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn splits_lines_keeps_the_last_thousand_and_writes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Arc::new(LogRing::default());
        let file = Arc::new(AppLog::new(dir.path(), "web"));
        let input: String = (0..1500)
            .map(|i| format!("line {i}\r\n"))
            .collect::<String>()
            + "tail";
        capture(
            input.as_bytes(),
            Stream::Stdout,
            "web".into(),
            "web#0".into(),
            ring.clone(),
            file.clone(),
        )
        .await;
        let tail = ring.tail(2);
        assert_eq!(tail[0].text, "line 1499");
        assert_eq!(tail[1].text, "tail");
        assert_eq!(ring.tail(5000).len(), RING_LINES);
        let written = std::fs::read_to_string(file.path()).unwrap();
        assert_eq!(written.lines().count(), 1501);
        assert!(written
            .lines()
            .next()
            .unwrap()
            .ends_with(" web#0 stdout| line 0"));
    }

    #[tokio::test]
    async fn a_line_without_newline_is_split_not_buffered_forever() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Arc::new(LogRing::default());
        let file = Arc::new(AppLog::new(dir.path(), "web"));
        let input = vec![b'x'; MAX_LINE * 2 + 10];
        capture(
            &input[..],
            Stream::Stderr,
            "web".into(),
            "web#0".into(),
            ring.clone(),
            file,
        )
        .await;
        let lens: Vec<usize> = ring.tail(10).iter().map(|l| l.text.len()).collect();
        assert_eq!(lens, [MAX_LINE, MAX_LINE, 10]);
    }

    #[test]
    fn rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let file = AppLog::new(dir.path(), "web");
        let big = "y".repeat(1 << 20);
        for _ in 0..25 {
            file.write(
                "web#0",
                &LogLine {
                    at: SystemTime::now(),
                    stream: Stream::Stdout,
                    text: big.clone(),
                },
            );
        }
        assert!(std::fs::metadata(file.path()).unwrap().len() <= MAX_FILE_BYTES);
        assert!(dir.path().join("web.log.1").exists());
        assert!(dir.path().join("web.log.2").exists());
        assert!(!dir.path().join("web.log.4").exists());
    }
}

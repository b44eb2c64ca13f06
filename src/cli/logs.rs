//! `harbormaster logs APP [-f] [-n N]`: the recent output of an app's
//! instances, from its log file under `[runtime] state_dir`. `-f` follows the file
//! with inotify (and across rotation) until interrupted.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::ExitCode;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::client;
use super::Cli;
use crate::config::AppName;

pub fn logs(cli: &Cli, app: &str, follow: bool, lines: usize) -> ExitCode {
    // Validated before it becomes a path, whether or not the config loads.
    let app = match AppName::new(app) {
        Ok(name) => name,
        Err(why) => {
            eprintln!("invalid app name `{app}`: {why}");
            return ExitCode::FAILURE;
        }
    };
    if let Ok(config) = crate::config::load(&cli.config) {
        if !config.apps.contains_key(&app) {
            eprintln!("unknown app `{app}` in {}", cli.config.display());
            return ExitCode::FAILURE;
        }
    }
    let path = client::dirs(cli)
        .state
        .join("logs")
        .join(format!("{app}.log"));
    if !path.exists() && !follow {
        eprintln!(
            "no output recorded for {app} yet ({} does not exist)",
            path.display()
        );
        return ExitCode::FAILURE;
    }
    print!(
        "{}",
        super::start::tail(&path, lines).trim_start_matches('\n')
    );
    if !follow {
        return ExitCode::SUCCESS;
    }
    match follow_file(&path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cannot follow {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// Prints what is appended to `path`, reopening it when it is rotated.
fn follow_file(path: &Path) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let inotify = Inotify::init(InitFlags::empty())?;
    // Watch the folder: it sees writes, and the rename + create of a rotation.
    inotify.add_watch(
        dir,
        AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_FROM,
    )?;
    let mut offset = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let name = path.file_name().map(|n| n.to_os_string());
    let mut out = std::io::stdout();
    loop {
        let events = inotify.read_events()?;
        if !events.iter().any(|e| e.name == name) {
            continue;
        }
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if len < offset {
            offset = 0; // rotated: a new file started
        }
        if let Ok(mut f) = std::fs::File::open(path) {
            f.seek(SeekFrom::Start(offset))?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            offset += buf.len() as u64;
            out.write_all(&buf)?;
            out.flush()?;
        }
    }
}

//! Changes of the config file, for reload on save: the folder is watched
//! (editors save by writing a new file and renaming it over the old one) and
//! events for the file are debounced. The one side effect of this module,
//! kept apart from loading; the caller decides what a change does.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio_util::sync::CancellationToken;

/// Quiet time after the last change before reloading (editors write in bursts).
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Calls `changed` once the file has been quiet for a moment after each
/// burst of changes, until `cancel`.
pub async fn on_change<F: Future<Output = ()>>(
    file: PathBuf,
    cancel: CancellationToken,
    mut changed: impl FnMut() -> F,
) {
    let (Some(dir), Some(name)) = (
        file.parent().map(PathBuf::from),
        file.file_name().map(|n| n.to_os_string()),
    ) else {
        return;
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let ours = event
                .paths
                .iter()
                .any(|p| p.file_name() == Some(name.as_os_str()));
            if ours && !event.kind.is_access() {
                let _ = tx.send(());
            }
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP or `harbormaster reload`");
            return;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the config folder; reload with SIGHUP or `harbormaster reload`");
        return;
    }
    tracing::info!(event = "watching_config", file = %file.display());
    loop {
        tokio::select! {
            got = rx.recv() => if got.is_none() { return },
            _ = cancel.cancelled() => return,
        }
        // Debounce: wait until the file has been quiet for a moment.
        loop {
            tokio::select! {
                got = rx.recv() => if got.is_none() { return },
                _ = tokio::time::sleep(DEBOUNCE) => break,
                _ = cancel.cancelled() => return,
            }
        }
        changed().await;
    }
}

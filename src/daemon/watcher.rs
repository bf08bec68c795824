//! Watches the rules folder, the plugins folder and the config on a thread
//! of its own and only *signals* a reload; the writer does the work. Bursts
//! (an editor's save, a checkout of 500 files) are debounced into one
//! signal. Once a second it checks whether a watched folder was deleted and
//! recreated or swapped through a symlink, and then watches it anew.

use super::writer::Command;
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Sender, channel};
use std::time::{Duration, Instant};

/// Quiet time after the last change before the reload is signalled.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Identity of what a path points at now (follows symlinks).
fn identity(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

pub fn spawn(
    paths: Vec<PathBuf>,
    writer: Sender<Command>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("nudge-watcher".into()).spawn(move || {
        let (tx, rx) = channel();
        let mut watcher = match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res
                && !matches!(ev.kind, notify::EventKind::Access(_))
            {
                let _ = tx.send(());
            }
        }) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "Cannot watch the rules folder; reload with SIGHUP or POST /v1/reload.");
                return;
            }
        };
        let mut ids: Vec<Option<(u64, u64)>> = paths.iter().map(|p| identity(p)).collect();
        for p in &paths {
            let _ = watcher.watch(p, RecursiveMode::Recursive);
        }
        let mut due: Option<Instant> = None;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(()) => due = Some(Instant::now() + DEBOUNCE),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
            // Re-arm on a folder deleted and recreated, or a symlink swapped.
            for (i, p) in paths.iter().enumerate() {
                let now = identity(p);
                if now != ids[i] {
                    let _ = watcher.unwatch(p);
                    if now.is_some() {
                        let _ = watcher.watch(p, RecursiveMode::Recursive);
                    }
                    ids[i] = now;
                    due = Some(Instant::now() + DEBOUNCE);
                }
            }
            if due.is_some_and(|d| Instant::now() >= d) {
                due = None;
                if writer.send(Command::Reload { reason: "files changed", reply: None }).is_err() {
                    return;
                }
            }
        }
    })
}

//! Watches the rules folder, the plugins folder and the config on a thread
//! of its own and only *signals* a reload; the writer does the work. Bursts
//! (an editor's save, a checkout of 500 files) are debounced into one
//! signal. Once a second it checks whether a watched folder was deleted and
//! recreated or swapped through a symlink, and then watches it anew. A
//! burst never delays a reload by more than `MAX_WAIT`, and changes to
//! files that cannot matter (notes, editor swap files) are ignored.

use super::writer::Command;
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Sender, channel};
use std::time::{Duration, Instant};

/// Quiet time after the last change before the reload is signalled.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// The longest a reload waits for quiet: a file that changes every 100 ms
/// (a log, a sync tool) would otherwise postpone reloads for ever.
const MAX_WAIT: Duration = Duration::from_millis(1500);

/// Whether a change to `p` can matter to a reload: rule files, plugins,
/// the config, and folders (extensionless names); not `notes.txt`, editor
/// swap and backup files (`.x.swp`, `x~`) or other hidden files.
fn relevant(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    if name.starts_with('.') || name.ends_with('~') {
        return false;
    }
    match p.extension().and_then(|e| e.to_str()) {
        None => true,
        Some(e) => matches!(e, "rules" | "yaml" | "yml" | "rhai"),
    }
}

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
                && ev.paths.iter().any(|p| relevant(p))
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
        // When the current burst of changes began (for `MAX_WAIT`).
        let mut first: Option<Instant> = None;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(()) => {
                    let now = Instant::now();
                    let began = *first.get_or_insert(now);
                    due = Some((now + DEBOUNCE).min(began + MAX_WAIT));
                }
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
                first = None;
                if writer.send(Command::Reload { reason: "files changed", reply: None }).is_err() {
                    return;
                }
            }
        }
    })
}

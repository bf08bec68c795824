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

/// How the watcher learns of changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WatchMode {
    /// The kernel's notifications (inotify); polling when the kernel
    /// refuses them.
    #[default]
    Notify,
    /// Polling every `POLL_EVERY`: network file systems and some container
    /// bind mounts never deliver notifications for changes made elsewhere.
    Poll,
}

/// How often polling looks at the watched files' modification times.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// What turns a change to a relevant file into a signal.
fn handler(tx: Sender<()>) -> impl notify::EventHandler {
    move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && !matches!(ev.kind, notify::EventKind::Access(_))
            && ev.paths.iter().any(|p| relevant(p))
        {
            let _ = tx.send(());
        }
    }
}

/// A watcher on every path that exists, armed before this returns, so an
/// edit made once the daemon says it listens is never missed. The kernel's
/// inotify limits are per user (128 instances by default), shared by every
/// process of that user: when they are used up, polling takes over rather
/// than hot reload silently stopping.
fn arm(paths: &[PathBuf], mode: WatchMode, tx: &Sender<()>) -> Option<Box<dyn Watcher + Send>> {
    if mode == WatchMode::Notify {
        match notify::recommended_watcher(handler(tx.clone())) {
            Ok(mut w) => {
                let refused = paths
                    .iter()
                    .filter(|p| p.exists())
                    .find_map(|p| w.watch(p, RecursiveMode::Recursive).err());
                match refused {
                    None => return Some(Box::new(w)),
                    Some(e) => {
                        tracing::warn!(error = %e, "Cannot watch with inotify; polling the rules folder instead.")
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "Cannot watch with inotify; polling the rules folder instead.")
            }
        }
    }
    // Modification times are compared in whole seconds: two saves within
    // one second would look like one without comparing the contents too.
    let config = notify::Config::default()
        .with_poll_interval(POLL_EVERY)
        .with_compare_contents(true);
    match notify::PollWatcher::new(handler(tx.clone()), config) {
        Ok(mut w) => {
            for p in paths {
                let _ = w.watch(p, RecursiveMode::Recursive);
            }
            tracing::info!(
                every_ms = POLL_EVERY.as_millis() as u64,
                "Polling the rules folder for changes."
            );
            Some(Box::new(w))
        }
        Err(e) => {
            tracing::error!(error = %e, "Cannot watch the rules folder; reload with SIGHUP or POST /v1/reload.");
            None
        }
    }
}

pub fn spawn(
    paths: Vec<PathBuf>,
    mode: WatchMode,
    writer: Sender<Command>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let (tx, rx) = channel();
    let ids: Vec<Option<(u64, u64)>> = paths.iter().map(|p| identity(p)).collect();
    let watcher = arm(&paths, mode, &tx);
    std::thread::Builder::new()
        .name("nudge-watcher".into())
        .spawn(move || {
            let Some(mut watcher) = watcher else { return };
            let mut ids = ids;
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
                    if writer
                        .send(Command::Reload {
                            reason: "files changed",
                            reply: None,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
            }
        })
}

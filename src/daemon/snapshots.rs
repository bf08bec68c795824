//! Cluster mode's partition snapshots, on the daemon's side: the writer
//! takes one of a partition it holds every `--snapshot-every` events it
//! applied there (or `--snapshot-minutes` after the last, when events
//! came since), as a file of the partition's store in the backup format,
//! on its own thread between two commits (so the state is one commit's),
//! and a task puts it in the cluster's object store. A node that takes a
//! partition puts the snapshot in place first when it is further on than
//! its own copy, then applies the stream from there. Moving snapshots to
//! and from NATS is `cluster::snapshot`'s; replacing a store's contents,
//! crash-safe, is `store::backup::replace_partition`'s. A partition the
//! spread gives another node gets a snapshot too before its lease goes,
//! so the new holder starts from where this node got.

use super::Shared;
use crate::cluster::snapshot::SnapshotInfo;
use crate::engine::partitions::Partitions;
use crate::store::{SledStore, Store};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// When snapshots are taken, and where their files wait.
pub struct Snapshots {
    /// Events applied to a partition between two snapshots (0: never).
    pub every: u64,
    /// A partition with events since its last snapshot gets one after this.
    pub at_most: Duration,
    /// `<data folder>/snapshots`: files being put or got.
    pub dir: PathBuf,
    state: Mutex<Vec<Since>>,
    /// Files taken so far: each gets a name of its own.
    files: std::sync::atomic::AtomicU64,
}

/// A partition's events and time since its last snapshot here.
struct Since {
    events: u64,
    at: Instant,
    /// A snapshot of it is being put: the next waits for it.
    putting: std::sync::Arc<AtomicBool>,
}

impl Snapshots {
    pub fn new(every: u64, at_most: Duration, dir: PathBuf, partitions: usize) -> Snapshots {
        let now = Instant::now();
        Snapshots {
            every,
            at_most,
            dir,
            files: Default::default(),
            state: Mutex::new(
                (0..partitions)
                    .map(|_| Since {
                        events: 0,
                        at: now,
                        putting: Default::default(),
                    })
                    .collect(),
            ),
        }
    }

    /// Counts `applied` events of partition `part`; whether it is time
    /// for a snapshot, and the flag to hold while it is put.
    fn due(&self, part: usize, applied: u64) -> Option<std::sync::Arc<AtomicBool>> {
        let mut state = self.state.lock().ok()?;
        let s = state.get_mut(part)?;
        s.events += applied;
        let due = self.every > 0
            && s.events > 0
            && (s.events >= self.every || s.at.elapsed() >= self.at_most)
            && !s.putting.load(Ordering::Acquire);
        if !due {
            return None;
        }
        s.events = 0;
        s.at = Instant::now();
        s.putting.store(true, Ordering::Release);
        Some(s.putting.clone())
    }
}

/// After a commit of `applied` events to partition `part`: takes its
/// snapshot when due and hands it to a task that puts it. A failure is
/// logged; the partition is then rebuilt from an older snapshot or copy.
pub fn after_apply(parts: &Partitions<SledStore>, shared: &Shared, part: usize, applied: u64) {
    let (Some(snaps), Some(cluster)) = (shared.snapshots.as_ref(), shared.cluster.as_ref()) else {
        return;
    };
    let Some(putting) = snaps.due(part, applied) else {
        return;
    };
    match take(parts, shared, part) {
        Ok(taken) => {
            let cluster = cluster.clone();
            cluster.runtime.clone().spawn(async move {
                put(&cluster, part, taken).await;
                putting.store(false, Ordering::Release);
            });
        }
        Err(e) => {
            tracing::warn!(partition = part, error = %e, "Cannot take a snapshot.");
            putting.store(false, Ordering::Release);
        }
    }
}

/// A snapshot taken, to put.
pub struct Taken {
    file: PathBuf,
    info: SnapshotInfo,
    took: Duration,
}

/// Takes partition `part`'s snapshot to a file of its own.
pub fn take(parts: &Partitions<SledStore>, shared: &Shared, part: usize) -> Result<Taken, String> {
    let (Some(snaps), Some(cluster)) = (shared.snapshots.as_ref(), shared.cluster.as_ref()) else {
        return Err("not in cluster mode".into());
    };
    let engine = parts
        .engines()
        .get(part)
        .ok_or_else(|| format!("no partition {part} here"))?;
    let info = SnapshotInfo {
        applied: engine
            .store()
            .meta_u64(crate::store::keys::STREAM_SEQ)
            .map_err(|e| e.to_string())?,
        node: cluster.options.node.clone(),
        ruleset: engine.rules.version.clone(),
        routed_through: engine
            .store()
            .meta_u64(crate::store::keys::ROUTED_THROUGH)
            .map_err(|e| e.to_string())?,
    };
    let n = snaps.files.fetch_add(1, Ordering::Relaxed);
    let file = snaps.dir.join(format!("p{part}-{n}.out"));
    let started = Instant::now();
    if let Err(e) = write(engine.store(), &file) {
        let _ = std::fs::remove_file(&file);
        return Err(e);
    }
    Ok(Taken {
        file,
        info,
        took: started.elapsed(),
    })
}

/// Puts a snapshot taken, while the partition's lease is held here, and
/// removes its file. The handovers of members moved into the partition
/// that it covers go (One ID): no rebuild reads them again.
pub async fn put(cluster: &crate::cluster::Cluster, part: usize, taken: Taken) {
    let Taken { file, info, took } = taken;
    let bytes = std::fs::metadata(&file).map_or(0, |m| m.len());
    if cluster.owned.holds(part) {
        match cluster.put_snapshot(part, &file, &info).await {
            Ok(()) => {
                tracing::info!(
                    partition = part,
                    applied = info.applied,
                    bytes,
                    taken_ms = took.as_millis() as u64,
                    "Snapshot put."
                );
                if info.routed_through > 0
                    && let Err(e) = cluster.drop_handovers(part, info.routed_through).await
                {
                    tracing::warn!(partition = part, error = %e, "Cannot delete the handovers the snapshot covers; the next snapshot tries again.");
                }
            }
            Err(e) => tracing::warn!(partition = part, error = %e, "Cannot put a snapshot."),
        }
    }
    let _ = std::fs::remove_file(&file);
}

/// The store's export to `file`, synced.
fn write(store: &SledStore, file: &std::path::Path) -> Result<(), String> {
    let io = |e: std::io::Error| format!("{}: {e}", file.display());
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let f = std::fs::File::create(file).map_err(io)?;
    let mut out = std::io::BufWriter::new(f);
    crate::store::backup::export(store, &mut out).map_err(|e| e.to_string())?;
    let f = out.into_inner().map_err(|e| io(e.into_error()))?;
    f.sync_all().map_err(io)
}

/// Puts the snapshot in `file` in place of partition `part`'s copy here
/// (the writer's thread), and makes its engine again from it; how many
/// entries it held.
pub fn restore(
    parts: &mut Partitions<SledStore>,
    shared: &Shared,
    part: usize,
    file: &std::path::Path,
) -> Result<u64, String> {
    if !shared.cluster.as_ref().is_some_and(|c| c.owned.holds(part)) {
        return Err("the partition's lease is no longer held here".into());
    }
    let n = parts.len();
    let engine = parts
        .engines_mut()
        .get_mut(part)
        .ok_or_else(|| format!("no partition {part} here"))?;
    let open = || {
        std::fs::File::open(file)
            .map(|f| Box::new(std::io::BufReader::new(f)) as Box<dyn std::io::BufRead>)
    };
    let entries = crate::store::backup::replace_partition(engine.store(), (part, n), &open)
        .map_err(|e| e.to_string())?;
    // Made again from the store whatever happens: it was replaced, or
    // cleared by a failure half-way (then rebuilt from the stream).
    engine.reopen().map_err(|e| e.to_string())?;
    Ok(entries)
}

//! Where member state lives: a small [`Store`] trait and its sled
//! implementation. One sled tree with key prefixes (`m` members, `s` seen
//! event ids, `o` outbox, `x` meta, `i` identifiers), so that one sled batch carries
//! everything an event changes and is applied atomically; `commit` then
//! flushes, so a commit that returned is durable. Knows nothing of rules.

pub mod backup;
mod error;
pub mod folder;
mod format;
pub mod keys;
mod raw;

pub use error::StoreError;

use crate::model::{MemberRecord, SeenEvent};
use std::path::{Path, PathBuf};

/// Format of the data folder. A folder written by a newer nudge is refused.
/// 2: outbox entries in batches, member records of format 2.
/// 3: seen markers under the day of their event (the dedup window).
/// 4: seen event ids in the member records (record format 6); a folder of
/// format 3 is taken up as it is: its markers are read until the window
/// has passed them.
/// (Kept under the meta key `schema_version`, its name since format 1.)
pub const FORMAT_VERSION: u32 = 4;

/// Expired seen markers (past the dedup window) one commit removes at
/// most. A day of a busy programme is a million markers; spread over
/// commits, no commit pays for a whole day, and markers past the window
/// are harmless until they go (events that old are refused before their
/// marker is looked up).
const PRUNE_PER_COMMIT: usize = 20_000;

/// Everything one commit writes; applied atomically and durably.
#[derive(Default, Debug)]
pub struct WriteSet {
    pub members: Vec<(String, Vec<u8>)>,
    /// Seen markers: the UTC day of the event, the id, the body hash; for
    /// the ids a member's record has no room for (`SEEN_IN_RECORD`).
    pub seen: Vec<(i32, String, u128)>,
    /// Seen markers of days before this one go: out of the dedup window.
    pub seen_before: Option<i32>,
    /// New outbox entries, by sequence number (consecutive).
    pub outbox: Vec<(u64, Vec<u8>)>,
    /// Every sink has the entries below this sequence number: they go.
    pub delivered_below: Option<u64>,
    pub meta: Vec<(String, Vec<u8>)>,
    pub meta_removed: Vec<String>,
    /// One ID: identifier (`kind:value`, or `member:ID` for a merged member)
    /// to the member it belongs to.
    pub identities: Vec<(String, String)>,
    /// Identifiers (keys as in `identities`) that go: moved to another
    /// partition with their member.
    pub identities_removed: Vec<String>,
    /// Members merged into others.
    pub members_removed: Vec<String>,
}

impl WriteSet {
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
            && self.seen.is_empty()
            && self.seen_before.is_none()
            && self.outbox.is_empty()
            && self.delivered_below.is_none()
            && self.meta.is_empty()
            && self.meta_removed.is_empty()
            && self.identities.is_empty()
            && self.identities_removed.is_empty()
            && self.members_removed.is_empty()
    }
}

/// A member's seen events and the days whose ids spilled into markers.
pub type SeenIds = (Vec<SeenEvent>, Vec<i32>);

/// Member ids from `from` (included) to `to` (left out; `None`: to the
/// last), as bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdRange {
    pub from: Vec<u8>,
    pub to: Option<Vec<u8>>,
}

impl IdRange {
    /// Every member after `after` (all: `None`), to the end: a scan taken
    /// again where the last one stopped. The first id above `after` is
    /// `after` and a zero byte: after `1` comes `1\0`, then `10`, `2`.
    pub fn after(after: Option<&str>) -> IdRange {
        IdRange {
            from: after.map_or_else(Vec::new, |a| [a.as_bytes(), &[0]].concat()),
            to: None,
        }
    }
}

/// How many times `member_ranges` cuts its ranges again, one byte deeper,
/// at most: four levels split any alphabet finely, and each costs a seek
/// per prefix in use.
const MAX_SPLITS: usize = 4;

/// How many bytes of the ids `member_ranges` looks at, at most (long
/// common prefixes are passed one byte a level).
const MAX_ID_BYTES: usize = 64;

pub trait Store {
    fn member(&self, id: &str) -> Result<Option<MemberRecord>, StoreError>;
    /// A member's seen events and the days whose ids spilled into markers
    /// (`MemberRecord::seen`, `seen_spilled`), read without decoding the
    /// rest of the record.
    fn member_seen(&self, id: &str) -> Result<Option<SeenIds>, StoreError>;
    /// The body hash a seen marker holds for an event id: a store of
    /// format 3 kept one per event; from format 4 on, records keep them
    /// and only what a record has no room for is a marker.
    /// `day` is the UTC day of the event's time (`base::time::utc_day`).
    fn seen(&self, day: i32, event_id: &str) -> Result<Option<u128>, StoreError>;
    /// The seen markers of `day` whose ids start with `prefix` (a member's
    /// spilled ids, `engine::dedup`): id and body hash.
    fn seen_of(&self, day: i32, prefix: &str) -> Result<Vec<(String, u128)>, StoreError>;
    /// The last UTC day whose ids a folder of store format 3 may hold as
    /// markers of their own (`keys::SEEN_MARKERS_UNTIL`); `None` for a
    /// folder made as format 4.
    fn format_3_markers_until(&self) -> Result<Option<i32>, StoreError>;
    /// Applies `w` atomically and returns once it is durable.
    fn commit(&self, w: WriteSet) -> Result<(), StoreError>;
    /// Member ids in key order.
    fn member_ids(&self) -> Result<Vec<String>, StoreError>;
    /// Ranges of member ids that hold every member once between them,
    /// about `want` of them when there are enough members: for scans that
    /// read the store on several threads, a range each at a time.
    fn member_ranges(&self, want: usize) -> Result<Vec<IdRange>, StoreError>;
    /// Calls `visit` with the id and stored bytes of every member in
    /// `range`, in key order, until it returns `false`.
    fn each_member_bytes(
        &self,
        range: &IdRange,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError>;
    /// Calls `visit` with every member in key order until it returns
    /// `false`: one pass over the store, for segments.
    fn each_member(
        &self,
        visit: &mut dyn FnMut(&str, MemberRecord) -> bool,
    ) -> Result<(), StoreError>;
    /// Outbox entries from `from` on, in order, at most `limit`.
    fn outbox(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// The member an identifier (`kind:value`, `member:ID`) belongs to.
    fn identity(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Meta entries whose key starts with `prefix`, in key order.
    fn meta_prefix(&self, prefix: &str, limit: usize)
    -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// How many meta entries have a key starting with `prefix` (read
    /// once, at open: it visits them all).
    fn meta_count(&self, prefix: &str) -> Result<u64, StoreError>;

    /// A day kept in meta (`last_tick`, `seen_floor`, ...), if any.
    fn meta_day(&self, key: &str) -> Result<Option<i32>, StoreError> {
        Ok(self
            .meta(key)?
            .and_then(|b| b.as_slice().try_into().ok())
            .map(i32::from_le_bytes))
    }

    /// A counter or cursor kept in meta (0 when absent).
    fn meta_u64(&self, key: &str) -> Result<u64, StoreError> {
        Ok(self
            .meta(key)?
            .and_then(|b| b.as_slice().try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0))
    }
}

#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    path: PathBuf,
    /// Commits flush to disk. A temporary store (replay, tests) skips the
    /// flush: it is deleted when dropped, so durability buys nothing.
    durable: bool,
    commits: std::sync::Arc<Commits>,
    /// The folder is of an older store format this nudge reads as it is
    /// (3); its first commit writes the current format, so that a command
    /// that only reads leaves it for the nudge that wrote it.
    older_format: std::sync::Arc<std::sync::Mutex<Option<u32>>>,
}

/// sled's page cache unless the config says otherwise (`storage.cache_mb`).
/// sled's own default (1 GiB) is most of a daemon's memory, and its
/// accounting is loose: measured with 1,000,000 members, a 256 MiB cache
/// took the daemon to 1.4 GiB and 64 MiB kept it under 1 GiB at its peak
/// (the first tick), with no loss of ingest speed within the noise: the
/// operating system's file cache holds the rest of the store.
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;

/// The file beside sled's own that holds the last flushed commit number.
pub const COMMIT_MARK: &str = "nudge.commit";

/// Every commit carries its number into the store; after the flush the
/// number also goes to [`COMMIT_MARK`], outside sled. sled recovers a
/// truncated log to its last whole entry without a word, so a store that
/// opens with a number below the mark has lost flushed commits: the open
/// fails instead of serving (and re-sending) from an older state. The mark
/// is written after the flush, so it is never ahead of a healthy store;
/// the lock keeps commit numbers in the order they are applied.
struct Commits {
    last: std::sync::Mutex<u64>,
    mark: Option<std::fs::File>,
}

impl Commits {
    fn new(last: u64, mark: Option<std::fs::File>) -> std::sync::Arc<Commits> {
        std::sync::Arc::new(Commits {
            last: std::sync::Mutex::new(last),
            mark,
        })
    }

    /// Writes `n` to the mark, when the store has one.
    fn mark(&self, n: u64) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        match &self.mark {
            Some(f) => f.write_all_at(&n.to_le_bytes(), 0),
            None => Ok(()),
        }
    }
}

fn is_lock_error(e: &sled::Error) -> bool {
    // sled wraps the failed flock in an error of its own kind; its text
    // keeps the OS error.
    matches!(e, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("WouldBlock"))
}

/// Consecutive runs of outbox entries: (first sequence number, entries).
fn runs(entries: Vec<(u64, Vec<u8>)>) -> Vec<(u64, Vec<Vec<u8>>)> {
    let mut out: Vec<(u64, Vec<Vec<u8>>)> = Vec::new();
    for (seq, bytes) in entries {
        match out.last_mut() {
            Some((first, run)) if *first + run.len() as u64 == seq => run.push(bytes),
            _ => out.push((seq, vec![bytes])),
        }
    }
    out
}

/// A batch of outbox entries: their count, then each as length and bytes
/// (u32, little-endian).
fn encode_batch(entries: &[Vec<u8>]) -> Vec<u8> {
    let size = 4 + entries.iter().map(|e| 4 + e.len()).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        out.extend_from_slice(&(e.len() as u32).to_le_bytes());
        out.extend_from_slice(e);
    }
    out
}

fn batch_len(v: &[u8]) -> u32 {
    v.get(..4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

/// The entries of a batch; a torn or short value yields what it holds.
fn decode_batch(v: &[u8]) -> Vec<&[u8]> {
    let n = batch_len(v) as usize;
    let mut out = Vec::with_capacity(n);
    let mut at = 4;
    for _ in 0..n {
        let Some(len) = v.get(at..at + 4).and_then(|b| b.try_into().ok()) else {
            break;
        };
        let len = u32::from_le_bytes(len) as usize;
        let Some(entry) = v.get(at + 4..at + 4 + len) else {
            break;
        };
        out.push(entry);
        at += 4 + len;
    }
    out
}

fn batch_first(k: &[u8]) -> u64 {
    k.get(1..9)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

fn key(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(rest.len() + 1);
    k.push(prefix);
    k.extend_from_slice(rest);
    k
}

impl SledStore {
    /// The byte values that follow `prefix` in member ids, ascending.
    fn next_id_bytes(&self, prefix: &[u8]) -> Result<Vec<u8>, StoreError> {
        let head = key(keys::MEMBER, prefix);
        let mut out = Vec::new();
        let mut from = 0u16;
        while from <= 255 {
            let seek = [head.as_slice(), &[from as u8]].concat();
            let Some(k) = self.db.range(seek..).keys().next().transpose()? else {
                break;
            };
            let Some(&b) = k
                .strip_prefix(head.as_slice())
                .and_then(|rest| rest.first())
            else {
                break;
            };
            out.push(b);
            from = u16::from(b) + 1;
        }
        Ok(out)
    }

    /// Adds to `b` the removal of the first `PRUNE_PER_COMMIT` keys of `range`.
    fn remove_range(
        &self,
        b: &mut sled::Batch,
        range: std::ops::Range<Vec<u8>>,
    ) -> Result<(), StoreError> {
        for k in self.db.range(range).keys().take(PRUNE_PER_COMMIT) {
            b.remove(k?);
        }
        Ok(())
    }

    /// Opens (or creates) the data folder.
    ///
    /// sled's periodic flusher is off: every commit flushes itself, and the
    /// flusher thread would hold the folder's lock for a moment after the
    /// store is dropped. A lock still held is waited for up to a second (a
    /// process that just exited), then reported as `Locked`.
    pub fn open(path: &Path) -> Result<SledStore, StoreError> {
        Self::open_with(path, None)
    }

    /// Opens with a page cache of `cache_bytes` (the config's
    /// `storage.cache_mb`), [`DEFAULT_CACHE_BYTES`] when not given.
    /// A folder of several partitions, or one of its partitions, is
    /// refused: partitions are opened through `folder`.
    pub fn open_with(path: &Path, cache_bytes: Option<u64>) -> Result<SledStore, StoreError> {
        if let Some(partitions) = folder::partitions_in(path)?.filter(|n| *n > 1) {
            return Err(StoreError::Partitioned {
                path: path.to_path_buf(),
                partitions,
            });
        }
        let store = Self::open_partition(path, cache_bytes.unwrap_or(DEFAULT_CACHE_BYTES))?;
        match store.meta(keys::PARTITION)? {
            Some(place) => Err(StoreError::APartition {
                path: path.to_path_buf(),
                place: String::from_utf8_lossy(&place).into_owned(),
            }),
            None => Ok(store),
        }
    }

    /// Opens a store as it is: a folder's own, or one of its partitions.
    fn open_partition(path: &Path, cache_bytes: u64) -> Result<SledStore, StoreError> {
        let config = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(cache_bytes)
            .flush_every_ms(None);
        let mut tries = 0;
        let db = loop {
            // sled can panic on some damaged files instead of failing: that
            // is a damaged folder too, not a crash (and no restart loop).
            let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
                .map_err(|panic| StoreError::Open {
                path: path.to_path_buf(),
                message: panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "sled stopped on damaged data".into()),
            })?;
            match opened {
                Ok(db) => break db,
                Err(e) if is_lock_error(&e) && tries < 20 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) if is_lock_error(&e) => {
                    return Err(StoreError::Locked {
                        path: path.to_path_buf(),
                    });
                }
                Err(e) => {
                    return Err(StoreError::Open {
                        path: path.to_path_buf(),
                        message: e.to_string(),
                    });
                }
            }
        };
        let mut s = SledStore {
            db,
            path: path.to_path_buf(),
            durable: true,
            commits: Commits::new(0, None),
            older_format: Default::default(),
        };
        s.check_version()?;
        if s.meta(keys::REPLACING)?.is_some() {
            // A replacement a crash cut short: what is left is neither
            // state, so nothing is (the partition is rebuilt).
            s.clear_contents()?;
            s.end_replace()?;
        }
        s.check_commits()?;
        Ok(s)
    }

    /// Compares the store's commit number with the mark, and opens the
    /// mark for writing.
    fn check_commits(&mut self) -> Result<(), StoreError> {
        let stored = self.meta_u64(keys::COMMIT_SEQ)?;
        let mark_path = self.path.join(COMMIT_MARK);
        let flushed = std::fs::read(&mark_path)
            .ok()
            .and_then(|b| b.get(..8).and_then(|b| b.try_into().ok()))
            .map_or(0, u64::from_le_bytes);
        if stored < flushed {
            return Err(StoreError::LostCommits {
                path: self.path.clone(),
                stored,
                flushed,
            });
        }
        let mark = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&mark_path)
            .map_err(|e| StoreError::Open {
                path: self.path.clone(),
                message: format!("cannot write {}: {e}", mark_path.display()),
            })?;
        self.commits = Commits::new(stored, Some(mark));
        Ok(())
    }

    /// A store in a fresh temporary folder, removed when dropped.
    pub fn temporary() -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .temporary(true)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let s = SledStore {
            db,
            path: PathBuf::from("(temporary)"),
            durable: false,
            commits: Commits::new(0, None),
            older_format: Default::default(),
        };
        s.check_version()?;
        Ok(s)
    }

    /// Member `id`'s stored record read by `decode` (all of it, or a part).
    fn decode_member<T>(
        &self,
        id: &str,
        decode: impl FnOnce(&[u8]) -> Result<T, String>,
    ) -> Result<Option<T>, StoreError> {
        match self.db.get(key(keys::MEMBER, id.as_bytes()))? {
            None => Ok(None),
            Some(b) => decode(&b).map(Some).map_err(|message| StoreError::Corrupt {
                member: id.to_string(),
                message,
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies a batch with the next commit number, flushes, then moves
    /// the mark on.
    fn apply(&self, mut b: sled::Batch) -> Result<(), StoreError> {
        let mut last = self
            .commits
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = *last + 1;
        b.insert(
            key(keys::META, keys::COMMIT_SEQ.as_bytes()),
            &next.to_le_bytes(),
        );
        let mut older = self.older();
        self.upgrade(&mut b, older.is_some())?;
        self.db.apply_batch(b)?;
        *older = None;
        *last = next;
        if self.durable {
            self.db.flush()?;
            // Best effort: a mark left behind only weakens the check.
            let _ = self.commits.mark(next);
        }
        Ok(())
    }

    /// Bytes the store takes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

impl Store for SledStore {
    fn member(&self, id: &str) -> Result<Option<MemberRecord>, StoreError> {
        self.decode_member(id, MemberRecord::decode)
    }

    fn member_seen(&self, id: &str) -> Result<Option<SeenIds>, StoreError> {
        self.decode_member(id, crate::model::decode_seen)
    }

    fn seen(&self, day: i32, event_id: &str) -> Result<Option<u128>, StoreError> {
        Ok(self
            .db
            .get(keys::seen(day, event_id))?
            .and_then(|b| b.as_ref().try_into().ok())
            .map(u128::from_le_bytes))
    }

    fn seen_of(&self, day: i32, prefix: &str) -> Result<Vec<(String, u128)>, StoreError> {
        let start = keys::seen(day, "").len();
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(keys::seen(day, prefix)) {
            let (k, v) = kv?;
            if let Ok(h) = v.as_ref().try_into() {
                let id = String::from_utf8_lossy(&k[start..]).into_owned();
                out.push((id, u128::from_le_bytes(h)));
            }
        }
        Ok(out)
    }

    fn format_3_markers_until(&self) -> Result<Option<i32>, StoreError> {
        if self.older_format() == Some(3) {
            return Ok(Some(
                self.meta_day(keys::NEWEST_EVENT_DAY)?.unwrap_or(i32::MAX),
            ));
        }
        self.meta_day(keys::SEEN_MARKERS_UNTIL)
    }

    fn commit(&self, w: WriteSet) -> Result<(), StoreError> {
        if w.is_empty() {
            return Ok(());
        }
        let mut b = sled::Batch::default();
        for (id, bytes) in w.members {
            b.insert(key(keys::MEMBER, id.as_bytes()), bytes);
        }
        for (day, id, hash) in w.seen {
            b.insert(keys::seen(day, &id), &hash.to_le_bytes());
        }
        // Bounded per commit: a backlog of expired keys goes over the next
        // commits instead of stalling one.
        if let Some(day) = w.seen_before {
            self.remove_range(&mut b, vec![keys::SEEN]..keys::seen(day, ""))?;
        }

        // The outbox is kept in batches: one value per run of consecutive
        // entries of a commit, under the first's sequence number, so a
        // commit of a thousand effects is one write, not a thousand.
        for (first, entries) in runs(w.outbox) {
            b.insert(
                key(keys::OUTBOX, &first.to_be_bytes()),
                encode_batch(&entries),
            );
        }
        if let Some(below) = w.delivered_below {
            for kv in self.db.range(vec![keys::OUTBOX]..vec![keys::OUTBOX + 1]) {
                let (k, v) = kv?;
                let (first, n) = (batch_first(&k), batch_len(&v));
                if first + n as u64 > below {
                    break;
                }
                b.remove(k);
            }
        }
        for (k, v) in w.meta {
            b.insert(key(keys::META, k.as_bytes()), v);
        }
        for k in w.meta_removed {
            b.remove(key(keys::META, k.as_bytes()));
        }
        for k in w.identities_removed {
            b.remove(key(keys::IDENTITY, k.as_bytes()));
        }
        for (k, member) in w.identities {
            b.insert(key(keys::IDENTITY, k.as_bytes()), member.as_bytes());
        }
        for id in w.members_removed {
            b.remove(key(keys::MEMBER, id.as_bytes()));
        }
        self.apply(b)
    }

    fn member_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix([keys::MEMBER]).keys() {
            let k = kv?;
            out.push(String::from_utf8_lossy(&k[1..]).into_owned());
        }
        Ok(out)
    }

    fn member_ranges(&self, want: usize) -> Result<Vec<IdRange>, StoreError> {
        // Cut at the id prefixes in use, one byte deeper per round until
        // there are enough: ids' alphabets and lengths vary (`0001`,
        // `m-1000000`, phone numbers), so cutting at evenly spaced byte
        // values would put most members in one range. Each prefix's next
        // bytes are found by seeking, one seek per byte value in use.
        let mut cuts: Vec<Vec<u8>> = vec![Vec::new()];
        let mut splits = 0;
        // A level where every prefix has one next byte (a common prefix
        // such as `member-`) does not count as a split.
        for _ in 0..MAX_ID_BYTES {
            if cuts.len() >= want || splits == MAX_SPLITS {
                break;
            }
            let (before, mut longer) = (cuts.len(), false);
            let mut deeper = Vec::with_capacity(cuts.len());
            for p in &cuts {
                let next = self.next_id_bytes(p)?;
                if next.is_empty() {
                    deeper.push(p.clone());
                }
                longer |= !next.is_empty();
                deeper.extend(next.into_iter().map(|b| [p.as_slice(), &[b]].concat()));
            }
            if !longer {
                break;
            }
            splits += usize::from(deeper.len() > before);
            cuts = deeper;
        }
        // The first range starts at the beginning, so an id that is a
        // prefix of the others (`1` before `10`) is in it.
        if let Some(first) = cuts.first_mut() {
            first.clear();
        }
        let ends = cuts.iter().skip(1).map(|c| Some(c.clone())).chain([None]);
        Ok(cuts
            .iter()
            .zip(ends)
            .map(|(from, to)| IdRange {
                from: from.clone(),
                to,
            })
            .collect())
    }

    fn each_member_bytes(
        &self,
        range: &IdRange,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let from = key(keys::MEMBER, &range.from);
        let to = match &range.to {
            Some(t) => key(keys::MEMBER, t),
            None => vec![keys::MEMBER + 1],
        };
        for kv in self.db.range(from..to) {
            let (k, v) = kv?;
            if !visit(&k[1..], &v) {
                break;
            }
        }
        Ok(())
    }

    fn each_member(
        &self,
        visit: &mut dyn FnMut(&str, MemberRecord) -> bool,
    ) -> Result<(), StoreError> {
        for kv in self.db.scan_prefix([keys::MEMBER]) {
            let (k, v) = kv?;
            let id = String::from_utf8_lossy(&k[1..]);
            let rec = MemberRecord::decode(&v).map_err(|message| StoreError::Corrupt {
                member: id.to_string(),
                message,
            })?;
            if !visit(&id, rec) {
                break;
            }
        }
        Ok(())
    }

    fn outbox(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        // The batch holding `from` starts at or before it.
        let start = match self
            .db
            .range(vec![keys::OUTBOX]..=key(keys::OUTBOX, &from.to_be_bytes()))
            .next_back()
        {
            Some(kv) => kv?.0.to_vec(),
            None => vec![keys::OUTBOX],
        };
        for kv in self.db.range(start..vec![keys::OUTBOX + 1]) {
            let (k, v) = kv?;
            let first = batch_first(&k);
            for (i, entry) in decode_batch(&v).into_iter().enumerate() {
                let seq = first + i as u64;
                if seq >= from {
                    out.push((seq, entry.to_vec()));
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    fn meta_count(&self, prefix: &str) -> Result<u64, StoreError> {
        let mut n = 0;
        for k in self
            .db
            .scan_prefix(key(keys::META, prefix.as_bytes()))
            .keys()
        {
            k?;
            n += 1;
        }
        Ok(n)
    }

    fn meta_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for kv in self
            .db
            .scan_prefix(key(keys::META, prefix.as_bytes()))
            .take(limit)
        {
            let (k, v) = kv?;
            out.push((String::from_utf8_lossy(&k[1..]).into_owned(), v.to_vec()));
        }
        Ok(out)
    }

    fn identity(&self, k: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .db
            .get(key(keys::IDENTITY, k.as_bytes()))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn meta(&self, k: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .db
            .get(key(keys::META, k.as_bytes()))?
            .map(|v| v.to_vec()))
    }
}

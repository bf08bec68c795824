//! A data folder as its partitions: the folder itself when it has one,
//! else one sled database per partition in `p0/`, `p1/`, ... Which
//! partition a member is in. Knows nothing of rules, and nothing of how
//! the partitions are written (one engine each, `engine::partitions`).

use super::{SledStore, Store, StoreError, WriteSet, keys};
use crate::config::MAX_PARTITIONS;
use std::path::Path;

/// The partition of `member` among `partitions`: a stable hash of the id,
/// so that every process and every version of nudge routes it the same.
pub fn partition_of(member: &str, partitions: usize) -> usize {
    match partitions {
        0 | 1 => 0,
        p => (xxhash_rust::xxh3::xxh3_64(member.as_bytes()) % p as u64) as usize,
    }
}

/// The file in a folder of several partitions that says how many, and
/// the folder's id, which each partition also holds: a partition folder
/// lost must not make it look like a folder of fewer, and one from another
/// data folder must not pass for its own.
pub const PARTITIONS_FILE: &str = "partitions";

/// How many partitions the folder at `folder` was made with; `None` when
/// nothing is there yet.
pub fn partitions_in(folder: &Path) -> Result<Option<usize>, StoreError> {
    Ok(layout(folder)?.map(|(n, _)| n))
}

/// The folder's partitions and id (no id for a folder of one); `None`
/// when nothing is there yet.
pub fn layout(folder: &Path) -> Result<Option<(usize, String)>, StoreError> {
    let file = folder.join(PARTITIONS_FILE);
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return single(folder),
        Err(e) => {
            return Err(layout_error(
                folder,
                format!("cannot read {}: {e}", file.display()),
            ));
        }
    };
    let mut words = text.split_whitespace();
    let n = words.next().and_then(|w| w.parse::<usize>().ok());
    let (Some(n), Some(id)) = (n.filter(|n| (2..=MAX_PARTITIONS).contains(n)), words.next()) else {
        return Err(layout_error(
            folder,
            format!(
                "its file {} says `{}`, not the number of its partitions (2 to {MAX_PARTITIONS}) and the folder's id; it was edited or damaged: write back what it held",
                file.display(),
                text.trim()
            ),
        ));
    };
    match (0..n).find(|k| !folder.join(format!("p{k}")).is_dir()) {
        Some(k) => Err(layout_error(
            folder,
            format!(
                "its partition folder p{k} is missing (it has {n} partitions); restore it (from a backup of the whole folder), or move the folder away to start empty"
            ),
        )),
        None => Ok(Some((n, id.to_string()))),
    }
}

/// A folder with no `partitions` file: a store of one partition, nothing
/// yet, or partition folders whose file was lost (refused: opened as one
/// partition, it would start a new, empty store beside them).
fn single(folder: &Path) -> Result<Option<(usize, String)>, StoreError> {
    if folder.join("conf").exists() || folder.join("db").exists() {
        return Ok(Some((1, String::new())));
    }
    let parts = std::fs::read_dir(folder)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix('p')
                .is_some_and(|k| k.parse::<usize>().is_ok())
                && e.path().is_dir()
        });
    if parts {
        return Err(layout_error(
            folder,
            format!(
                "it holds partition folders (p0, ...) but not its `{PARTITIONS_FILE}` file, which says how many and the folder's id; restore the file (from a backup of the folder), or move the folder away to start empty"
            ),
        ));
    }
    Ok(None)
}

/// For the commands that do not make partitions (all but `nudge ingest`
/// so far): refuses a folder not made yet when the config asks for
/// partitions, rather than make it a folder of one.
pub fn refuse_to_make(folder: &Path, configured: usize) -> Result<(), StoreError> {
    if configured > 1 && layout(folder)?.is_none() {
        return Err(StoreError::PartitionsConfigured {
            path: folder.to_path_buf(),
            partitions: configured,
        });
    }
    Ok(())
}

/// Opens the folder's partitions, making `make` of them when the folder
/// is new (a folder that exists keeps its own number). Each partition's
/// cache is its share of `cache_bytes`.
pub fn open_partitions(
    folder: &Path,
    make: usize,
    cache_bytes: Option<u64>,
) -> Result<Vec<SledStore>, StoreError> {
    let (n, id) = match layout(folder)? {
        Some(l) => l,
        None => make_folder(folder, make.clamp(1, MAX_PARTITIONS))?,
    };
    if n == 1 {
        return Ok(vec![SledStore::open_with(folder, cache_bytes)?]);
    }
    let cache = cache_share(cache_bytes, n);
    // Opening a partition is mostly sled reading its files: seconds for a
    // large store read cold (after an import, a restart of the machine).
    // The partitions open at once, a thread each (the work is reading).
    let id = &id;
    std::thread::scope(|s| {
        let opening: Vec<_> = (0..n)
            .map(|k| s.spawn(move || open_partition(folder, k, n, id, cache)))
            .collect();
        opening
            .into_iter()
            .map(|o| {
                o.join().unwrap_or_else(|_| {
                    Err(StoreError::Open {
                        path: folder.to_path_buf(),
                        message: "a partition's opening stopped".into(),
                    })
                })
            })
            .collect()
    })
}

/// A partition's part of sled's cache: the partitions share the one the
/// config gives (`storage.cache_mb`) rather than multiply it.
fn cache_share(cache_bytes: Option<u64>, n: usize) -> u64 {
    cache_bytes
        .unwrap_or(super::DEFAULT_CACHE_BYTES)
        .div_ceil(n as u64)
}

/// Makes a folder of `n` partitions: the partitions, then the file that
/// says how many (a folder of one is the store itself, made when it is
/// opened).
fn make_folder(folder: &Path, n: usize) -> Result<(usize, String), StoreError> {
    if n == 1 {
        return Ok((1, String::new()));
    }
    use std::hash::BuildHasher;
    let io = |e: std::io::Error| layout_error(folder, format!("cannot make it: {e}"));
    std::fs::create_dir_all(folder).map_err(io)?;
    for k in 0..n {
        std::fs::create_dir_all(folder.join(format!("p{k}"))).map_err(io)?;
    }
    // Random per process (std's hasher seed), as `folder_id`.
    let seed = std::collections::hash_map::RandomState::new();
    let id = format!("{:016x}", seed.hash_one(folder));
    write_layout(folder, n, &id)?;
    Ok((n, id))
}

/// Writes the file that makes `folder` a folder of `n` partitions with
/// id `id`, in one step (the partitions are there before it).
pub(super) fn write_layout(folder: &Path, n: usize, id: &str) -> Result<(), StoreError> {
    let io = |e: std::io::Error| layout_error(folder, format!("cannot make it: {e}"));
    let tmp = folder.join(format!("{PARTITIONS_FILE}.tmp"));
    std::fs::write(&tmp, format!("{n} {id}\n")).map_err(io)?;
    std::fs::rename(&tmp, folder.join(PARTITIONS_FILE)).map_err(io)
}

/// Opens partition `k` of the `n` of folder `id`, and checks (or, in a new
/// partition, writes) that it is that one.
fn open_partition(
    folder: &Path,
    k: usize,
    n: usize,
    id: &str,
    cache: u64,
) -> Result<SledStore, StoreError> {
    let dir = folder.join(format!("p{k}"));
    // The lock is the data folder's, whichever partition found it taken.
    let store = SledStore::open_partition(&dir, cache).map_err(|e| match e {
        StoreError::Locked { .. } => StoreError::Locked {
            path: folder.to_path_buf(),
        },
        e => e,
    })?;
    let want = format!("{k}/{n} {id}");
    match store.meta(keys::PARTITION)? {
        Some(have) if have == want.as_bytes() => Ok(store),
        Some(have) => Err(layout_error(
            &dir,
            format!(
                "it says it is partition {} where partition {want} belongs (partition folders renamed, or moved from another data folder); put them back as they were",
                String::from_utf8_lossy(&have)
            ),
        )),
        None => {
            store.commit(WriteSet {
                meta: vec![(keys::PARTITION.to_string(), want.into_bytes())],
                ..WriteSet::default()
            })?;
            Ok(store)
        }
    }
}

fn layout_error(path: &Path, message: String) -> StoreError {
    StoreError::Layout {
        path: path.to_path_buf(),
        message,
    }
}

/// A data folder's partitions read as one store, for the commands and
/// routes that read every member (segments): a member is read from its
/// partition, scans go through every partition (members in key order
/// within each), days in meta are the newest of any partition and
/// counters their sum. Writes go through each partition's own engine:
/// [`Store::commit`] here is refused.
pub struct Folder {
    pub parts: Vec<SledStore>,
}

impl Folder {
    /// The store of `member`'s partition: its home, unless its home notes
    /// that a One ID merge moved it (a note it cannot read: the home).
    pub fn of(&self, member: &str) -> &SledStore {
        let home = &self.parts[partition_of(member, self.parts.len())];
        match moved_to(home, member).ok().flatten() {
            Some(k) if k < self.parts.len() => &self.parts[k],
            _ => home,
        }
    }
}

/// Where a member's home partition `home` notes a One ID merge moved it,
/// if one did (the note `engine::moves` writes).
pub fn moved_to<S: Store + ?Sized>(home: &S, member: &str) -> Result<Option<usize>, StoreError> {
    Ok(home
        .identity(&keys::moved(member))?
        .and_then(|k| k.parse().ok()))
}

impl Store for Folder {
    fn member(&self, id: &str) -> Result<Option<crate::model::MemberRecord>, StoreError> {
        self.of(id).member(id)
    }

    fn member_seen(&self, id: &str) -> Result<Option<super::SeenIds>, StoreError> {
        self.of(id).member_seen(id)
    }

    fn seen(&self, day: i32, event_id: &str) -> Result<Option<u128>, StoreError> {
        for p in &self.parts {
            if let Some(h) = p.seen(day, event_id)? {
                return Ok(Some(h));
            }
        }
        Ok(None)
    }

    fn seen_of(&self, day: i32, prefix: &str) -> Result<Vec<(String, u128)>, StoreError> {
        let mut all = Vec::new();
        for p in &self.parts {
            all.extend(p.seen_of(day, prefix)?);
        }
        Ok(all)
    }

    fn format_3_markers_until(&self) -> Result<Option<i32>, StoreError> {
        Ok(None)
    }

    fn commit(&self, _: WriteSet) -> Result<(), StoreError> {
        Err(StoreError::Io(
            "a data folder of partitions is written through its partitions' engines".into(),
        ))
    }

    fn member_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        for p in &self.parts {
            ids.extend(p.member_ids()?);
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Partition 0's ranges: they cover every id (the first from the
    /// start, the last to the end), so every partition's members too.
    fn member_ranges(&self, want: usize) -> Result<Vec<super::IdRange>, StoreError> {
        self.parts[0].member_ranges(want)
    }

    fn each_member_bytes(
        &self,
        range: &super::IdRange,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let mut go = true;
        for p in &self.parts {
            p.each_member_bytes(range, &mut |id, bytes| {
                go = visit(id, bytes);
                go
            })?;
            if !go {
                break;
            }
        }
        Ok(())
    }

    fn each_member(
        &self,
        visit: &mut dyn FnMut(&str, crate::model::MemberRecord) -> bool,
    ) -> Result<(), StoreError> {
        let mut go = true;
        for p in &self.parts {
            p.each_member(&mut |id, rec| {
                go = visit(id, rec);
                go
            })?;
            if !go {
                break;
            }
        }
        Ok(())
    }

    fn outbox(&self, _: u64, _: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        Err(StoreError::Io(
            "each partition of a data folder has its own outbox".into(),
        ))
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.parts[0].meta(key)
    }

    fn identity(&self, key: &str) -> Result<Option<String>, StoreError> {
        for p in &self.parts {
            if let Some(m) = p.identity(key)? {
                return Ok(Some(m));
            }
        }
        Ok(None)
    }

    fn meta_count(&self, prefix: &str) -> Result<u64, StoreError> {
        self.parts.iter().map(|p| p.meta_count(prefix)).sum()
    }

    fn meta_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut all = Vec::new();
        for p in &self.parts {
            all.extend(p.meta_prefix(prefix, limit)?);
        }
        all.truncate(limit);
        Ok(all)
    }

    fn meta_day(&self, key: &str) -> Result<Option<i32>, StoreError> {
        let mut newest = None;
        for p in &self.parts {
            newest = newest.max(p.meta_day(key)?);
        }
        Ok(newest)
    }

    fn meta_u64(&self, key: &str) -> Result<u64, StoreError> {
        self.parts.iter().map(|p| p.meta_u64(key)).sum()
    }
}

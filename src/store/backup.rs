//! `nudge export` and `nudge import-state`: a whole data folder as one
//! NDJSON file, and back. Owns the backup format; knows nothing of what
//! the entries mean (members, outbox, identifiers are all just keys).
//!
//! The file is a header line, one line per entry (key and value in hex),
//! and a trailer with the entry count and a SHA-256 over every entry. A
//! folder of several partitions is one file too: the header says how many,
//! each entry which partition it is in. An
//! import reads the whole file and checks the trailer before it writes
//! anything, into an empty folder only, so a torn or edited backup changes
//! nothing.

use crate::config::MAX_PARTITIONS;
use crate::store::{DEFAULT_CACHE_BYTES, FORMAT_VERSION, SledStore, StoreError, keys};
use sha2::{Digest, Sha256};
use std::io::{BufRead, Write};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("backup line {line}: {message}")]
    Format { line: usize, message: String },
    #[error(
        "the backup's checksum does not match (trailer {expected}, entries {found}): the file is damaged or was edited; nothing was written"
    )]
    Checksum { expected: String, found: String },
    #[error(
        "the data folder {path} is not empty; import a backup into a new folder (`--data NEW`)"
    )]
    NotEmpty { path: String },
}

/// What a backup holds: its entry count and checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub entries: u64,
    pub sha256: String,
}

#[derive(Default)]
struct Digester {
    hash: Sha256,
    entries: u64,
}

impl Digester {
    fn add(&mut self, k: &[u8], v: &[u8]) {
        for part in [k, v] {
            self.hash.update((part.len() as u64).to_le_bytes());
            self.hash.update(part);
        }
        self.entries += 1;
    }

    /// An entry of partition `p` (a backup of more than one).
    fn add_in(&mut self, p: usize, k: &[u8], v: &[u8]) {
        self.hash.update((p as u64).to_le_bytes());
        self.add(k, v);
    }

    fn finish(self) -> Summary {
        Summary {
            entries: self.entries,
            sha256: hex(&self.hash.finalize()),
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Writes every entry of `store` (a folder of one partition) to `out`.
pub fn export(store: &SledStore, out: &mut dyn Write) -> Result<Summary, BackupError> {
    export_folder(std::slice::from_ref(store), out)
}

/// Writes every entry of a data folder's partitions to `out`: with more
/// than one, the header says how many and each entry which it is in.
pub fn export_folder(parts: &[SledStore], out: &mut dyn Write) -> Result<Summary, BackupError> {
    let io = |source| BackupError::Io {
        what: "write the backup".into(),
        source,
    };
    let n = parts.len();
    let format = parts.first().map_or(FORMAT_VERSION, SledStore::format);
    let header = match n {
        1 => serde_json::json!({"nudge_backup": 1, "store_format": format}),
        _ => serde_json::json!({"nudge_backup": 1, "store_format": format, "partitions": n}),
    };
    writeln!(out, "{header}").map_err(io)?;
    let mut d = Digester::default();
    for (p, store) in parts.iter().enumerate() {
        for kv in store.raw_entries() {
            let (k, v) = kv?;
            if n == 1 {
                d.add(&k, &v);
                writeln!(out, "{{\"k\":\"{}\",\"v\":\"{}\"}}", hex(&k), hex(&v)).map_err(io)?;
            } else {
                d.add_in(p, &k, &v);
                writeln!(
                    out,
                    "{{\"p\":{p},\"k\":\"{}\",\"v\":\"{}\"}}",
                    hex(&k),
                    hex(&v)
                )
                .map_err(io)?;
            }
        }
    }
    let s = d.finish();
    writeln!(
        out,
        "{}",
        serde_json::json!({"entries": s.entries, "sha256": s.sha256})
    )
    .map_err(io)?;
    out.flush().map_err(io)?;
    Ok(s)
}

/// Where a backup is read from: opened once to check it and once more to
/// write it, so no backup has to fit in memory.
pub type Source<'a> = &'a dyn Fn() -> std::io::Result<Box<dyn BufRead + 'a>>;

/// Restores a backup into an empty store. Reads and checks everything
/// first, then reads it again and writes in batches, and flushes once.
pub fn import(store: &SledStore, source: Source<'_>) -> Result<Summary, BackupError> {
    let open = opener(source);
    let (n, _) = read(&mut *open()?, &mut |_, _, _| Ok(()))?;
    if n > 1 {
        return Err(BackupError::Format {
            line: 1,
            message: format!(
                "a backup of a data folder of {n} partitions is restored as a whole folder"
            ),
        });
    }
    import_checked(store, &open)
}

/// [`import`] of a backup read once and found whole.
fn import_checked<'a>(
    store: &SledStore,
    open: &dyn Fn() -> Result<Box<dyn BufRead + 'a>, BackupError>,
) -> Result<Summary, BackupError> {
    if !store.is_blank()? {
        return Err(BackupError::NotEmpty {
            path: store.path().display().to_string(),
        });
    }
    write(std::slice::from_ref(store), &mut *open()?)?;
    digest(std::slice::from_ref(store))
}

/// Restores a backup into the data folder at `folder`, which must be new
/// or empty: a folder of one partition as [`import`] does, one of more as
/// its partitions, then the file that says how many (last, so that a
/// restore cut short is not a folder).
pub fn import_folder(folder: &Path, source: Source<'_>) -> Result<Summary, BackupError> {
    let open = opener(source);
    let (n, id) = read(&mut *open()?, &mut |_, _, _| Ok(()))?;
    if n == 1 {
        return import_checked(&SledStore::open(folder)?, &open);
    }
    let empty = std::fs::read_dir(folder).map_or(true, |mut d| d.next().is_none());
    if !empty {
        return Err(BackupError::NotEmpty {
            path: folder.display().to_string(),
        });
    }
    let parts = (0..n)
        .map(|k| SledStore::open_partition(&folder.join(format!("p{k}")), DEFAULT_CACHE_BYTES))
        .collect::<Result<Vec<_>, _>>()?;
    write(&parts, &mut *open()?)?;
    super::folder::write_layout(folder, n, &id)?;
    digest(&parts)
}

/// Replaces the contents of `store`, partition `k` of `n`, with a
/// snapshot of that partition taken on another node (cluster mode: a
/// partition's export, in this same format). The whole snapshot is read
/// and checked first, nothing changed when it fails; then the store's
/// contents are replaced, keeping what places it (its folder, partition
/// and commit number), crash-safe (`SledStore::begin_replace`).
pub fn replace_partition(
    store: &SledStore,
    (k, n): (usize, usize),
    source: Source<'_>,
) -> Result<u64, BackupError> {
    let open = opener(source);
    let place = super::key(keys::META, keys::PARTITION.as_bytes());
    let mut says = None;
    let (parts, _) = read(&mut *open()?, &mut |_, key, v| {
        if key == place {
            says = Some(String::from_utf8_lossy(&v).into_owned());
        }
        Ok(())
    })?;
    let want = format!("{k}/{n} ");
    if parts != 1 || !says.as_deref().is_some_and(|s| s.starts_with(&want)) {
        return Err(BackupError::Format {
            line: 1,
            message: format!(
                "not a snapshot of partition {k} of {n} (it says {})",
                says.as_deref().unwrap_or("nothing")
            ),
        });
    }
    store.begin_replace()?;
    let (mut batch, mut written) = (Vec::new(), 0);
    let summary = read(&mut *open()?, &mut |_, key, v| {
        if !SledStore::keeps_on_replace(&key) {
            batch.push((key, v));
            written += 1;
        }
        if batch.len() == 10_000 {
            store.raw_insert(std::mem::take(&mut batch))?;
        }
        Ok(())
    });
    let written_all = summary.and_then(|_| Ok(store.raw_insert(batch)?));
    if let Err(e) = written_all {
        // Half of a state is no state: the partition is left empty (and
        // rebuilt from the stream), not mixed.
        store.clear_contents()?;
        store.end_replace()?;
        return Err(e);
    }
    store.end_replace()?;
    Ok(written)
}

fn opener<'a>(source: Source<'a>) -> impl Fn() -> Result<Box<dyn BufRead + 'a>, BackupError> + 'a {
    move || {
        source().map_err(|source| BackupError::Io {
            what: "read the backup".into(),
            source,
        })
    }
}

/// Writes a checked backup's entries into `parts`, in batches, and
/// flushes each once.
fn write(parts: &[SledStore], input: &mut dyn BufRead) -> Result<(), BackupError> {
    let mut batches: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![Vec::new(); parts.len()];
    read(input, &mut |p, k, v| {
        let batch = &mut batches[p];
        batch.push((k, v));
        if batch.len() == 10_000 {
            parts[p].raw_insert(std::mem::take(batch))?;
        }
        Ok(())
    })?;
    for (store, batch) in parts.iter().zip(batches) {
        store.raw_insert(batch)?;
        store.raw_finish()?;
    }
    Ok(())
}

/// The summary of what `parts` hold, as their export would say it.
fn digest(parts: &[SledStore]) -> Result<Summary, BackupError> {
    let mut d = Digester::default();
    for (p, store) in parts.iter().enumerate() {
        for kv in store.raw_entries() {
            let (k, v) = kv?;
            match parts.len() {
                1 => d.add(&k, &v),
                _ => d.add_in(p, &k, &v),
            }
        }
    }
    Ok(d.finish())
}

/// Parses and checks a whole backup, handing each entry to `entry` with
/// its partition (the check of the trailer comes after the last); its
/// partitions and, with more than one, the folder's id (each partition's
/// meta says which it is, the same for all).
fn read(
    input: &mut dyn BufRead,
    entry: &mut dyn FnMut(usize, Vec<u8>, Vec<u8>) -> Result<(), StoreError>,
) -> Result<(usize, String), BackupError> {
    let bad = |line: usize, message: &str| BackupError::Format {
        line,
        message: message.to_string(),
    };
    let mut lines = input.lines().enumerate().map(|(i, l)| (i + 1, l));
    let mut next = || -> Result<Option<(usize, serde_json::Value)>, BackupError> {
        let Some((n, line)) = lines.next() else {
            return Ok(None);
        };
        let line = line.map_err(|source| BackupError::Io {
            what: "read the backup".into(),
            source,
        })?;
        serde_json::from_str(&line)
            .map(|v| Some((n, v)))
            .map_err(|e| bad(n, &format!("not JSON ({e})")))
    };
    let Some((_, header)) = next()? else {
        return Err(bad(1, "empty file; a backup starts with its header"));
    };
    let n = header_partitions(&header)?;
    let mut places = Places::new(n);
    let mut d = Digester::default();
    let mut last = 1;
    while let Some((line, v)) = next()? {
        last = line;
        if let (Some(total), Some(sum)) = (v["entries"].as_u64(), v["sha256"].as_str()) {
            if next()?.is_some() {
                return Err(bad(line + 1, "lines after the trailer"));
            }
            let found = d.finish();
            if found.entries != total || found.sha256 != sum {
                return Err(BackupError::Checksum {
                    expected: format!("{total} entries, {sum}"),
                    found: format!("{} entries, {}", found.entries, found.sha256),
                });
            }
            return places.id(line).map(|id| (n, id));
        }
        let (Some(k), Some(val)) = (
            v["k"].as_str().and_then(unhex),
            v["v"].as_str().and_then(unhex),
        ) else {
            return Err(bad(line, "an entry is {\"k\": HEX, \"v\": HEX}"));
        };
        let p = match (n, v["p"].as_u64()) {
            (1, None) => 0,
            (_, Some(p)) if (p as usize) < n && n > 1 => p as usize,
            _ => {
                return Err(bad(
                    line,
                    &format!(
                        "an entry of a backup of {n} partitions names its partition (\"p\": 0 to {})",
                        n - 1
                    ),
                ));
            }
        };
        match n {
            1 => d.add(&k, &val),
            _ => d.add_in(p, &k, &val),
        }
        places.see(p, &k, &val);
        entry(p, k, val)?;
    }
    Err(bad(
        last,
        "the file ends without its trailer (entries and sha256): it was cut short",
    ))
}

/// The header's partitions (1 when it does not say), after checking it
/// is a backup this nudge reads.
fn header_partitions(header: &serde_json::Value) -> Result<usize, BackupError> {
    let bad = |message: String| BackupError::Format { line: 1, message };
    if header["nudge_backup"] != 1 {
        return Err(bad("not a nudge backup (no `nudge_backup` header)".into()));
    }
    // Format 3 reads as it is (its folder becomes 4 at its first write).
    if !(header["store_format"] == FORMAT_VERSION || header["store_format"] == 3) {
        return Err(bad(format!(
            "store format {} but this nudge reads 3 and {FORMAT_VERSION}",
            header["store_format"]
        )));
    }
    match header.get("partitions").map(serde_json::Value::as_u64) {
        None => Ok(1),
        Some(Some(n)) if (2..=MAX_PARTITIONS as u64).contains(&n) => Ok(n as usize),
        Some(_) => Err(bad(format!(
            "`partitions` is {}, not 2 to {MAX_PARTITIONS}",
            header["partitions"]
        ))),
    }
}

/// What each partition's meta says it is (`K/N id`), to check that a
/// backup of partitions is of one folder, each partition in its place.
struct Places {
    n: usize,
    said: Vec<Option<String>>,
    key: Vec<u8>,
}

impl Places {
    fn new(n: usize) -> Places {
        Places {
            n,
            said: vec![None; n],
            key: super::key(keys::META, keys::PARTITION.as_bytes()),
        }
    }

    fn see(&mut self, p: usize, k: &[u8], v: &[u8]) {
        if self.n > 1 && k == self.key.as_slice() {
            self.said[p] = Some(String::from_utf8_lossy(v).into_owned());
        }
    }

    /// The folder's id, when every partition says it is itself of it.
    fn id(&self, line: usize) -> Result<String, BackupError> {
        if self.n == 1 {
            return Ok(String::new());
        }
        let id = self.said[0]
            .as_deref()
            .and_then(|s| s.split_once(' '))
            .map(|(_, id)| id.to_string())
            .unwrap_or_default();
        match (0..self.n)
            .find(|k| self.said[*k].as_deref() != Some(&format!("{k}/{} {id}", self.n)))
        {
            None if !id.is_empty() => Ok(id),
            found => Err(BackupError::Format {
                line,
                message: format!(
                    "partition {} does not say it is partition {0} of this folder's {}: the backup was put together from other backups",
                    found.unwrap_or(0),
                    self.n
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, WriteSet};

    fn partition(k: &str, members: &[&str]) -> SledStore {
        let s = SledStore::temporary().expect("store");
        s.commit(WriteSet {
            members: members.iter().map(|m| (m.to_string(), vec![1])).collect(),
            meta: vec![(keys::PARTITION.into(), k.as_bytes().to_vec())],
            ..WriteSet::default()
        })
        .expect("commit");
        s
    }

    #[test]
    fn a_partition_is_replaced_by_its_snapshot_and_keeps_its_place() {
        let theirs = partition("0/2 their-folder", &["a", "b"]);
        let ours = partition("0/2 our-folder", &["c"]);
        let mut snapshot = Vec::new();
        export(&theirs, &mut snapshot).expect("export");
        let source = || Ok(Box::new(snapshot.as_slice()) as Box<dyn BufRead>);
        replace_partition(&ours, (0, 2), &source).expect("replaced");
        assert!(has(&ours, "a"));
        assert!(!has(&ours, "c"));
        assert_eq!(
            ours.meta(keys::PARTITION).expect("read"),
            Some(b"0/2 our-folder".to_vec())
        );
        // Another partition's snapshot changes nothing.
        let err = replace_partition(&ours, (1, 2), &source).expect_err("refused");
        assert!(
            err.to_string()
                .contains("not a snapshot of partition 1 of 2"),
            "{err}"
        );
        assert!(has(&ours, "a"));
    }

    #[test]
    fn a_replacement_cut_short_leaves_an_empty_partition() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p0");
        {
            let s =
                SledStore::open_partition(&path, crate::store::DEFAULT_CACHE_BYTES).expect("open");
            s.commit(WriteSet {
                members: vec![("a".into(), vec![1])],
                meta: vec![(keys::PARTITION.into(), b"0/2 f".to_vec())],
                ..WriteSet::default()
            })
            .expect("commit");
            s.begin_replace().expect("begin");
            s.raw_insert(vec![(crate::store::key(keys::MEMBER, b"half"), vec![1])])
                .expect("insert");
        }
        let s = SledStore::open_partition(&path, crate::store::DEFAULT_CACHE_BYTES).expect("open");
        assert!(!has(&s, "half"));
        assert!(!has(&s, "a"));
        assert_eq!(
            s.meta(keys::PARTITION).expect("read"),
            Some(b"0/2 f".to_vec())
        );
        assert!(s.meta(keys::REPLACING).expect("read").is_none());
    }

    fn has(store: &SledStore, member: &str) -> bool {
        let k = crate::store::key(keys::MEMBER, member.as_bytes());
        store.raw_entries().any(|e| e.expect("entry").0 == k)
    }

    fn filled() -> SledStore {
        let s = SledStore::temporary().expect("store");
        s.commit(WriteSet {
            members: vec![("m1".into(), vec![1, 2, 3]), ("m2".into(), vec![0xff])],
            identities: vec![("phone:1".into(), "m1".into())],
            meta: vec![("k".into(), b"v".to_vec())],
            ..WriteSet::default()
        })
        .expect("commit");
        s
    }

    #[test]
    fn a_backup_round_trips_with_the_same_checksum() {
        let a = filled();
        let mut buf = Vec::new();
        let exported = export(&a, &mut buf).expect("export");
        let b = SledStore::temporary().expect("store");
        let imported = import(&b, &|| Ok(Box::new(buf.as_slice()))).expect("import");
        assert_eq!(exported, imported);
        let mut again = Vec::new();
        assert_eq!(export(&b, &mut again).expect("export"), exported);
        assert_eq!(again, buf);
        assert_eq!(
            b.identity("phone:1").expect("identity").as_deref(),
            Some("m1")
        );
    }

    #[test]
    fn damaged_backups_and_full_folders_change_nothing() {
        let a = filled();
        let mut buf = Vec::new();
        export(&a, &mut buf).expect("export");
        let text = String::from_utf8(buf.clone()).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        let cut = lines[..lines.len() - 1].join("\n");
        let edited = text.replacen("\"v\":\"010203\"", "\"v\":\"010204\"", 1);
        assert_ne!(edited, text);
        for (bad, want) in [
            (cut.as_str(), "cut short"),
            (edited.as_str(), "checksum does not match"),
            ("", "empty file"),
            ("{\"x\":1}\n", "not a nudge backup"),
        ] {
            let b = SledStore::temporary().expect("store");
            let e = import(&b, &|| Ok(Box::new(bad.as_bytes()))).expect_err("refused");
            assert!(e.to_string().contains(want), "{e}");
            assert!(b.is_blank().expect("blank"), "nothing written for {want}");
        }
        let e = import(&a, &|| Ok(Box::new(buf.as_slice()))).expect_err("not empty");
        assert!(matches!(e, BackupError::NotEmpty { .. }), "{e}");
    }

    /// A folder of three partitions, each with a member.
    fn partitioned(dir: &Path) -> Vec<SledStore> {
        let parts = crate::store::folder::open_partitions(dir, 3, None).expect("open");
        for (k, p) in parts.iter().enumerate() {
            p.commit(WriteSet {
                members: vec![(format!("m{k}"), vec![k as u8])],
                ..WriteSet::default()
            })
            .expect("commit");
        }
        parts
    }

    /// The backup with its trailer made again over its entries (as an
    /// edit that knows the format would).
    fn resummed(text: &str) -> String {
        let mut d = Digester::default();
        let lines: Vec<&str> = text.lines().collect();
        for l in &lines[1..lines.len() - 1] {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            let (k, val) = (
                unhex(v["k"].as_str().expect("k")).expect("hex"),
                unhex(v["v"].as_str().expect("v")).expect("hex"),
            );
            d.add_in(v["p"].as_u64().expect("p") as usize, &k, &val);
        }
        let s = d.finish();
        let trailer = serde_json::json!({"entries": s.entries, "sha256": s.sha256});
        format!("{}\n{trailer}\n", lines[..lines.len() - 1].join("\n"))
    }

    #[test]
    fn a_folder_of_partitions_round_trips_as_one_backup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let parts = partitioned(&dir.path().join("a"));
        let mut buf = Vec::new();
        let exported = export_folder(&parts, &mut buf).expect("export");
        let text = String::from_utf8(buf.clone()).expect("utf8");
        assert!(
            text.starts_with("{\"nudge_backup\":1,\"partitions\":3,"),
            "{text}"
        );
        let to = dir.path().join("b");
        let imported = import_folder(&to, &|| Ok(Box::new(buf.as_slice()))).expect("import");
        assert_eq!(imported, exported);
        let again = crate::store::folder::open_partitions(&to, 1, None).expect("reopen");
        assert_eq!(again.len(), 3, "the backup's partitions, not the asked 1");
        assert_eq!(
            crate::store::folder::layout(&to).expect("layout"),
            crate::store::folder::layout(&dir.path().join("a")).expect("layout")
        );
        let mut copy = Vec::new();
        export_folder(&again, &mut copy).expect("export");
        assert_eq!(copy, buf);
        // A folder of one cannot take it, nor a folder not empty.
        let one = SledStore::temporary().expect("store");
        let e = import(&one, &|| Ok(Box::new(buf.as_slice()))).expect_err("refused");
        assert!(e.to_string().contains("restored as a whole folder"), "{e}");
        let e = import_folder(&to, &|| Ok(Box::new(buf.as_slice()))).expect_err("full");
        assert!(matches!(e, BackupError::NotEmpty { .. }), "{e}");
    }

    #[test]
    fn a_backup_of_partitions_put_together_wrongly_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let parts = partitioned(&dir.path().join("a"));
        let mut buf = Vec::new();
        export_folder(&parts, &mut buf).expect("export");
        let text = String::from_utf8(buf).expect("utf8");
        // Partitions 1 and 2 swapped, the checksum made again: each says
        // which it is, so the swap is found.
        let swapped = resummed(
            &text
                .replace("{\"p\":1,", "{\"p\":9,")
                .replace("{\"p\":2,", "{\"p\":1,")
                .replace("{\"p\":9,", "{\"p\":2,"),
        );
        let unnamed = text.replacen("{\"p\":0,", "{", 1);
        for (bad, want) in [
            (swapped.as_str(), "does not say it is partition 1"),
            (unnamed.as_str(), "names its partition"),
        ] {
            let to = dir.path().join("b");
            let e = import_folder(&to, &|| Ok(Box::new(bad.as_bytes()))).expect_err("refused");
            assert!(e.to_string().contains(want), "{e}");
            assert!(!to.exists(), "nothing written for {want}");
        }
    }
}

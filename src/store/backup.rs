//! `nudge export` and `nudge import-state`: a whole data folder as one
//! NDJSON file, and back. Owns the backup format; knows nothing of what
//! the entries mean (members, outbox, identifiers are all just keys).
//!
//! The file is a header line, one line per entry (key and value in hex),
//! and a trailer with the entry count and a SHA-256 over every entry. An
//! import reads the whole file and checks the trailer before it writes
//! anything, into an empty folder only, so a torn or edited backup changes
//! nothing.

use crate::store::{FORMAT_VERSION, SledStore, StoreError};
use sha2::{Digest, Sha256};
use std::io::{BufRead, Write};

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

/// Writes every entry of `store` to `out`.
pub fn export(store: &SledStore, out: &mut dyn Write) -> Result<Summary, BackupError> {
    let io = |source| BackupError::Io {
        what: "write the backup".into(),
        source,
    };
    writeln!(
        out,
        "{}",
        serde_json::json!({"nudge_backup": 1, "store_format": store.format()})
    )
    .map_err(io)?;
    let mut d = Digester::default();
    for kv in store.raw_entries() {
        let (k, v) = kv?;
        d.add(&k, &v);
        writeln!(out, "{{\"k\":\"{}\",\"v\":\"{}\"}}", hex(&k), hex(&v)).map_err(io)?;
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
    if !store.is_blank()? {
        return Err(BackupError::NotEmpty {
            path: store.path().display().to_string(),
        });
    }
    let open = || {
        source().map_err(|source| BackupError::Io {
            what: "read the backup".into(),
            source,
        })
    };
    read(&mut *open()?, &mut |_, _| Ok(()))?;
    let mut batch = Vec::new();
    read(&mut *open()?, &mut |k, v| {
        batch.push((k, v));
        if batch.len() == 10_000 {
            store.raw_insert(std::mem::take(&mut batch))?;
        }
        Ok(())
    })?;
    store.raw_insert(batch)?;
    store.raw_finish()?;
    let mut d = Digester::default();
    for kv in store.raw_entries() {
        let (k, v) = kv?;
        d.add(&k, &v);
    }
    Ok(d.finish())
}

/// Parses and checks a whole backup, handing each entry to `entry` (the
/// check of the trailer comes after the last).
fn read(
    input: &mut dyn BufRead,
    entry: &mut dyn FnMut(Vec<u8>, Vec<u8>) -> Result<(), StoreError>,
) -> Result<(), BackupError> {
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
    if header["nudge_backup"] != 1 {
        return Err(bad(1, "not a nudge backup (no `nudge_backup` header)"));
    }
    // Format 3 reads as it is (its folder becomes 4 at its first write).
    if !(header["store_format"] == FORMAT_VERSION || header["store_format"] == 3) {
        return Err(bad(
            1,
            &format!(
                "store format {} but this nudge reads 3 and {FORMAT_VERSION}",
                header["store_format"]
            ),
        ));
    }
    let mut d = Digester::default();
    let mut last = 1;
    while let Some((n, v)) = next()? {
        last = n;
        if let (Some(total), Some(sum)) = (v["entries"].as_u64(), v["sha256"].as_str()) {
            if next()?.is_some() {
                return Err(bad(n + 1, "lines after the trailer"));
            }
            let found = d.finish();
            if found.entries != total || found.sha256 != sum {
                return Err(BackupError::Checksum {
                    expected: format!("{total} entries, {sum}"),
                    found: format!("{} entries, {}", found.entries, found.sha256),
                });
            }
            return Ok(());
        }
        let (Some(k), Some(val)) = (
            v["k"].as_str().and_then(unhex),
            v["v"].as_str().and_then(unhex),
        ) else {
            return Err(bad(n, "an entry is {\"k\": HEX, \"v\": HEX}"));
        };
        d.add(&k, &val);
        entry(k, val)?;
    }
    Err(bad(
        last,
        "the file ends without its trailer (entries and sha256): it was cut short",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, WriteSet};

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
}

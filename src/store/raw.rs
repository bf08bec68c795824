//! Raw access to a store for backups and snapshots: every entry as it is,
//! writing entries back, and replacing a partition's whole contents
//! crash-safely. What the entries mean is not known here.

use super::{SledStore, Store, StoreError, key, keys};

impl SledStore {
    /// Every key and value of the store, in key order (for backups).
    pub fn raw_entries(&self) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + '_ {
        self.db.iter().map(|kv| {
            kv.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(Into::into)
        })
    }

    /// True when the store holds nothing but its format version.
    pub fn is_blank(&self) -> Result<bool, StoreError> {
        let version = key(keys::META, keys::FORMAT.as_bytes());
        for kv in self.db.iter().keys() {
            if kv? != version.as_slice() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Writes raw entries (a restore), without a commit number of its own.
    pub fn raw_insert(&self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for (k, v) in entries {
            b.insert(k, v);
        }
        self.db.apply_batch(b)?;
        Ok(())
    }

    /// After a restore: flush, and take the restored commit number as the
    /// last one (and the mark's).
    pub fn raw_finish(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        let restored = self.meta_u64(keys::COMMIT_SEQ)?;
        let mut last = self
            .commits
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *last = restored;
        self.commits
            .mark(restored)
            .map_err(|e| StoreError::Io(e.to_string()))
    }

    /// Whether `key` is one of the entries that say what and where this
    /// store is (format, folder, partition, commit number), which a
    /// replacement of its contents keeps.
    pub(super) fn places_it(key: &[u8]) -> bool {
        [
            keys::FORMAT,
            keys::FOLDER_ID,
            keys::PARTITION,
            keys::COMMIT_SEQ,
        ]
        .iter()
        .any(|k| key == self::key(keys::META, k.as_bytes()).as_slice())
    }

    /// Starts replacing the store's contents (a partition's snapshot,
    /// cluster mode): marks it, flushed, then removes every entry but
    /// those that place it. Until [`Self::end_replace`], an open after a
    /// crash finds the mark and clears the store (the partition is then
    /// rebuilt as if new), never half of one state and half of another.
    pub fn begin_replace(&self) -> Result<(), StoreError> {
        self.db
            .insert(key(keys::META, keys::REPLACING.as_bytes()), &[1u8][..])?;
        self.db.flush()?;
        self.clear_contents()
    }

    /// Ends a replacement: the mark goes, and the store is flushed.
    pub fn end_replace(&self) -> Result<(), StoreError> {
        self.db
            .remove(key(keys::META, keys::REPLACING.as_bytes()))?;
        self.db.flush()?;
        Ok(())
    }

    /// Whether a replacement would keep `key` as it is here.
    pub fn keeps_on_replace(key: &[u8]) -> bool {
        Self::places_it(key) || key == self::key(keys::META, keys::REPLACING.as_bytes()).as_slice()
    }

    /// Removes every entry but those that place the store (and the mark
    /// of a replacement), in batches, flushed.
    pub(super) fn clear_contents(&self) -> Result<(), StoreError> {
        loop {
            let mut b = sled::Batch::default();
            let mut n = 0;
            for k in self.db.iter().keys() {
                let k = k?;
                if !Self::keeps_on_replace(&k) {
                    b.remove(k);
                    n += 1;
                    if n == 10_000 {
                        break;
                    }
                }
            }
            if n == 0 {
                break;
            }
            self.db.apply_batch(b)?;
        }
        self.db.flush()?;
        Ok(())
    }
}

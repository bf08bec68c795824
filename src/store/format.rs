//! The data folder's store format: checked when it opens, a folder of
//! format 3 taken up as it is, and the current format written with the
//! first commit to it. What each format holds is `super::FORMAT_VERSION`'s.

use super::{FORMAT_VERSION, SledStore, Store, StoreError, key, keys};

impl SledStore {
    pub(super) fn check_version(&self) -> Result<(), StoreError> {
        match self.meta(keys::FORMAT)? {
            Some(b) => {
                let found = b
                    .as_slice()
                    .try_into()
                    .map(u32::from_le_bytes)
                    .unwrap_or(u32::MAX);
                if found > FORMAT_VERSION {
                    return Err(StoreError::NewerVersion {
                        path: self.path.clone(),
                        found,
                    });
                }
                if found == 3 {
                    *self.older() = Some(found);
                    return Ok(());
                }
                if found < FORMAT_VERSION {
                    return Err(StoreError::OlderVersion {
                        path: self.path.clone(),
                        found,
                    });
                }
                Ok(())
            }
            None => self.write_format(),
        }
    }

    pub(super) fn older(&self) -> std::sync::MutexGuard<'_, Option<u32>> {
        self.older_format
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The older store format the folder is of until its first commit
    /// (which writes the current one): for a notice that from then on the
    /// nudge that wrote it cannot open it.
    pub fn older_format(&self) -> Option<u32> {
        *self.older()
    }

    /// Whether any seen marker is left.
    pub fn has_seen_markers(&self) -> Result<bool, StoreError> {
        Ok(self
            .db
            .scan_prefix([keys::SEEN])
            .next()
            .transpose()?
            .is_some())
    }

    /// The format the folder is of now.
    pub fn format(&self) -> u32 {
        self.older_format().unwrap_or(FORMAT_VERSION)
    }

    fn write_format(&self) -> Result<(), StoreError> {
        self.db.insert(
            key(keys::META, keys::FORMAT.as_bytes()),
            &FORMAT_VERSION.to_le_bytes(),
        )?;
        self.db.flush()?;
        Ok(())
    }

    /// What the first commit to a folder of an older format adds to its
    /// batch (`older`): it holds records of this format from then on, and
    /// the last day whose ids may sit in format 3's markers.
    pub(super) fn upgrade(&self, b: &mut sled::Batch, older: bool) -> Result<(), StoreError> {
        if !older {
            return Ok(());
        }
        b.insert(
            key(keys::META, keys::FORMAT.as_bytes()),
            &FORMAT_VERSION.to_le_bytes(),
        );
        let until = self.meta_day(keys::NEWEST_EVENT_DAY)?.unwrap_or(i32::MAX);
        b.insert(
            key(keys::META, keys::SEEN_MARKERS_UNTIL.as_bytes()),
            &until.to_le_bytes(),
        );
        Ok(())
    }
}

//! What can go wrong with a data folder, said so that an operator knows
//! what to do.

use super::FORMAT_VERSION;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the data folder {path} is in use by another nudge process (it is locked); stop that process or use another --data folder"
    )]
    Locked { path: PathBuf },
    #[error(
        "the data folder {path} was written by a newer nudge (format {found}, this one reads {FORMAT_VERSION}); upgrade nudge or use another --data folder"
    )]
    NewerVersion { path: PathBuf, found: u32 },
    #[error(
        "the data folder {path} was written by an older nudge (store format {found}; this one reads {FORMAT_VERSION}); ingest its events again into a new data folder"
    )]
    OlderVersion { path: PathBuf, found: u32 },
    #[error(
        "the data folder {path} cannot be opened: {message}; if it is damaged, restore it from a backup or move it away to start empty"
    )]
    Open { path: PathBuf, message: String },
    #[error(
        "the data folder {path} is damaged: it holds {stored} commits but {flushed} were flushed (a store file was truncated, replaced or lost); restore it from a backup (`nudge import-state`) or move it away to start empty"
    )]
    LostCommits {
        path: PathBuf,
        stored: u64,
        flushed: u64,
    },
    #[error(
        "the data folder {path} is split into {partitions} partitions, and this command works on a folder of one partition (`nudge replay --data` replays into a new one): give it another data folder"
    )]
    Partitioned { path: PathBuf, partitions: usize },
    /// A folder of partitions that does not fit together.
    #[error("{path}: {message}")]
    Layout { path: PathBuf, message: String },
    #[error(
        "{path} is a partition of a data folder (partition {place}): give the data folder it is in, not one of its partitions"
    )]
    APartition { path: PathBuf, place: String },
    #[error(
        "`storage.partitions` is {partitions}, and this command does not make a data folder, which {path} is not yet (`nudge run` and `nudge ingest` make one of {partitions} partitions; `nudge import-state` restores one)"
    )]
    PartitionsConfigured { path: PathBuf, partitions: usize },
    #[error("member `{member}` has a damaged record: {message}")]
    Corrupt { member: String, message: String },
    #[error("storage error: {0}")]
    Io(String),
    #[error("{0}")]
    TiersChanged(String),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

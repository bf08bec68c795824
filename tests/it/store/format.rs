//! The data folder's format and lock: a second process is told it is
//! locked; folders from a newer or older nudge are refused with what to do.

use crate::engine::*;

#[test]
fn a_second_process_on_the_same_folder_is_told_it_is_locked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = SledStore::open(dir.path()).expect("open");
    match SledStore::open(dir.path()) {
        Err(StoreError::Locked { .. }) => {}
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("opened a locked folder"),
    }
}

/// A data folder that says it was written in store format `version`.
fn folder_of_format(version: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = SledStore::open(dir.path()).expect("open");
    s.commit(WriteSet {
        meta: vec![("schema_version".into(), version.to_le_bytes().to_vec())],
        ..WriteSet::default()
    })
    .expect("commit");
    dir
}

#[test]
fn a_folder_from_a_newer_nudge_is_refused() {
    let dir = folder_of_format(99);
    match SledStore::open(dir.path()) {
        Err(e @ StoreError::NewerVersion { .. }) => assert!(e.to_string().contains("newer nudge")),
        Err(other) => panic!("expected NewerVersion, got {other}"),
        Ok(_) => panic!("opened a newer folder"),
    }
}

#[test]
fn a_folder_from_an_older_nudge_is_refused_with_what_to_do() {
    let dir = folder_of_format(1);
    match SledStore::open(dir.path()) {
        Err(e @ StoreError::OlderVersion { .. }) => {
            assert!(e.to_string().contains("ingest its events again"), "{e}")
        }
        Err(other) => panic!("expected OlderVersion, got {other}"),
        Ok(_) => panic!("opened an older folder"),
    }
}

//! The store cut into ranges of member ids for scans on several threads:
//! whatever the ids look like, the ranges hold every member exactly once,
//! in key order, and split a large store into many ranges.

use nudge::store::{IdRange, SledStore, Store, WriteSet};

/// Every member id read back range by range, in order.
fn read_back(store: &SledStore, want: usize) -> (Vec<String>, usize) {
    let ranges = store.member_ranges(want).expect("ranges");
    let mut ids = Vec::new();
    for r in &ranges {
        store
            .each_member_bytes(r, &mut |id, bytes| {
                assert_eq!(bytes, id, "the bytes are the member's own");
                ids.push(String::from_utf8(id.to_vec()).expect("utf-8"));
                true
            })
            .expect("scan");
    }
    (ids, ranges.len())
}

fn store_of(ids: &[String]) -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SledStore::open(dir.path()).expect("open");
    let members = ids.iter().map(|id| (id.clone(), id.as_bytes().to_vec()));
    store
        .commit(WriteSet {
            members: members.collect(),
            ..WriteSet::default()
        })
        .expect("commit");
    (dir, store)
}

#[test]
fn ranges_hold_every_member_once_whatever_the_ids() {
    let shapes: Vec<Vec<String>> = vec![
        vec![],
        vec!["only".into()],
        // CDNOW's numbering: three leading digits in use.
        (1..=2357).map(|i| format!("{i:04}")).collect(),
        // Ids that are prefixes of other ids.
        ["1", "10", "100", "1000", "101", "11", "2", "\u{ff}x"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        // One common prefix, as the benches' and many shops' ids have.
        (0..5000).map(|i| format!("member-{i:07}")).collect(),
        (0..3000).map(|i| format!("会员{i}")).collect(),
    ];
    for ids in shapes {
        let (_dir, store) = store_of(&ids);
        let mut want = ids.clone();
        want.sort();
        for parts in [1, 2, 64] {
            let (got, n) = read_back(&store, parts);
            assert_eq!(got, want, "{parts} parts of {} ids", ids.len());
            if ids.len() > 1000 && parts == 64 {
                assert!(n >= 64, "{} ids cut into only {n} ranges", ids.len());
            }
        }
    }
}

/// A scan taken in parts, each going on after the last member the one
/// before saw (a cluster's segment export): every member once, in order,
/// ids that are prefixes of others included.
#[test]
fn parts_after_the_last_seen_hold_every_member_once() {
    let ids: Vec<String> = [
        "1", "10", "100", "1000", "101", "11", "2", "\u{ff}x", "a\u{0}b",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain((0..50).map(|i| format!("m{i}")))
    .collect();
    let (_dir, store) = store_of(&ids);
    let mut want = ids.clone();
    want.sort();
    for size in [1, 2, 7, 100] {
        let (mut got, mut after) = (Vec::<String>::new(), None::<String>);
        loop {
            let mut part = Vec::new();
            store
                .each_member_bytes(&IdRange::after(after.as_deref()), &mut |id, _| {
                    part.push(String::from_utf8(id.to_vec()).expect("utf-8"));
                    part.len() < size
                })
                .expect("scan");
            let done = part.len() < size;
            after = part.last().cloned();
            got.extend(part);
            if done {
                break;
            }
        }
        assert_eq!(got, want, "parts of {size}");
    }
}

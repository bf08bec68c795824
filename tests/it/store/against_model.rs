//! Model-based test of the sled store: random commits (members written and
//! removed, outbox entries and their release, meta, identifiers)
//! and restarts, against an in-memory model of the same. After every step
//! every read the engine uses agrees with the model.

use nudge::model::MemberRecord;
use nudge::store::{SledStore, Store, WriteSet};
use proptest::prelude::*;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
enum Op {
    Commit {
        members: Vec<(u8, i64)>,
        removed: Vec<u8>,
        outbox: u8,
        release: Option<u8>,
        meta: Vec<(u8, u8)>,
        meta_removed: Vec<u8>,
        identities: Vec<(u8, u8)>,
    },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let small = || 0u8..12;
    prop_oneof![
        6 => (
            prop::collection::vec((small(), -50i64..50), 0..4),
            prop::collection::vec(small(), 0..2),
            0u8..5,
            prop::option::of(0u8..40),
            prop::collection::vec((small(), any::<u8>()), 0..3),
            prop::collection::vec(small(), 0..2),
            prop::collection::vec((small(), small()), 0..2),
        )
            .prop_map(|(members, removed, outbox, release, meta, meta_removed, identities)| Op::Commit {
                members, removed, outbox, release, meta, meta_removed, identities,
            }),
        1 => Just(Op::Restart),
    ]
}

#[derive(Default, Debug)]
struct Model {
    members: BTreeMap<String, i64>,
    outbox: BTreeMap<u64, Vec<u8>>,
    next_seq: u64,
    meta: BTreeMap<String, Vec<u8>>,
    identities: BTreeMap<String, String>,
    /// (first, end) of each commit's outbox entries still stored.
    batches: Vec<(u64, u64)>,
}

fn record(points: i64) -> Vec<u8> {
    MemberRecord {
        points,
        ..MemberRecord::default()
    }
    .encode()
}

fn agree(store: &SledStore, m: &Model) -> Result<(), TestCaseError> {
    let ids: Vec<String> = m.members.keys().cloned().collect();
    prop_assert_eq!(store.member_ids().expect("ids"), ids);
    for i in 0..12u8 {
        let id = format!("m{i}");
        let got = store.member(&id).expect("member").map(|r| r.points);
        prop_assert_eq!(got, m.members.get(&id).copied(), "member {}", id);
        let k = format!("k{i}");
        prop_assert_eq!(store.meta(&k).expect("meta"), m.meta.get(&k).cloned());
        let ident = format!("phone:{i}");
        prop_assert_eq!(
            store.identity(&ident).expect("identity"),
            m.identities.get(&ident).cloned()
        );
    }
    for from in [0, m.next_seq / 2, m.next_seq.saturating_sub(1)] {
        let want: Vec<(u64, Vec<u8>)> = m
            .outbox
            .range(from..)
            .take(7)
            .map(|(s, v)| (*s, v.clone()))
            .collect();
        prop_assert_eq!(
            store.outbox(from, 7).expect("outbox"),
            want,
            "from {}",
            from
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn the_store_agrees_with_a_model_across_restarts(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("data");
        let mut store = SledStore::open(&path).expect("open");
        let mut m = Model::default();
        for op in ops {
            match op {
                Op::Restart => {
                    drop(store);
                    store = SledStore::open(&path).expect("reopen");
                }
                Op::Commit { members, removed, outbox, release, meta, meta_removed, identities } => {
                    let mut w = WriteSet::default();
                    for (i, p) in members {
                        let id = format!("m{i}");
                        w.members.push((id.clone(), record(p)));
                        m.members.insert(id, p);
                    }
                    for i in removed {
                        let id = format!("m{i}");
                        // A write and a removal of one member in one commit: removal wins.
                        w.members_removed.push(id.clone());
                        m.members.remove(&id);
                    }
                    // Released first: the batches committed before this one
                    // that end at or below `below` (sinks release whole batches).
                    if let Some(r) = release {
                        let below = u64::from(r).min(m.next_seq);
                        w.delivered_below = Some(below);
                        while let Some(&(first, end)) = m.batches.first() {
                            if end > below {
                                break;
                            }
                            for s in first..end {
                                m.outbox.remove(&s);
                            }
                            m.batches.remove(0);
                        }
                    }
                    if outbox > 0 {
                        m.batches.push((m.next_seq, m.next_seq + u64::from(outbox)));
                    }
                    for _ in 0..outbox {
                        let seq = m.next_seq;
                        let bytes = format!("effect {seq}").into_bytes();
                        w.outbox.push((seq, bytes.clone()));
                        m.outbox.insert(seq, bytes);
                        m.next_seq += 1;
                    }
                    for (i, v) in meta {
                        let k = format!("k{i}");
                        w.meta.push((k.clone(), vec![v]));
                        m.meta.insert(k, vec![v]);
                    }
                    for i in meta_removed {
                        let k = format!("k{i}");
                        w.meta_removed.push(k.clone());
                        m.meta.remove(&k);
                    }
                    for (i, member) in identities {
                        let k = format!("phone:{i}");
                        w.identities.push((k.clone(), format!("m{member}")));
                        m.identities.insert(k, format!("m{member}"));
                    }
                    store.commit(w).expect("commit");
                }
            }
            agree(&store, &m)?;
        }
    }
}

//! `engine::partitions` through the library: a batch over three
//! partitions gives each event's outcome in the batch's order and each
//! member's state as one engine gives it; the pipeline keeps a member's
//! events in order, and a writer that fails stops the feed, with every
//! batch already sent finished and no thread left waiting. Relays to
//! members of other partitions arrive once: after a failed commit, and
//! after a stop at any point between the sender's commit and the
//! recipient's.

use super::*;
use nudge::engine::partitions::{Batch, Partitions};
use nudge::store::folder::partition_of;

fn engines(n: usize) -> (Arc<Schema>, Partitions<SledStore>) {
    // A point for a purchase whose amount is its number: in order, each.
    let (s, r) = build(
        CONFIG,
        "rule \"p\" on purchase when floor(event.amount) == orders then award points 1",
    );
    let engines = (0..n)
        .map(|_| {
            Engine::new(s.clone(), r.clone(), SledStore::temporary().expect("store"))
                .expect("engine")
        })
        .collect();
    (s, Partitions::new(engines).expect("partitions"))
}

/// 30 members, each with purchases of 1, 2, 3, ... in time order, the
/// members interleaved; `e7` sent twice.
fn stream(s: &Schema) -> Vec<Event> {
    let mut events = Vec::new();
    for i in 0..300 {
        let (m, k) = (i % 30, i / 30 + 1);
        events.push(purchase(
            s,
            &format!("e{i}"),
            &format!("m{m}"),
            &format!("2026-03-{:02}", k + 1),
            k as f64,
        ));
    }
    events.push(events[7].clone());
    events
}

#[test]
fn a_batch_over_partitions_answers_in_its_order_and_gives_what_one_engine_gives() {
    let (s, mut one) = engines(1);
    let (_, mut three) = engines(3);
    let events = stream(&s);
    let members: Vec<usize> = (0..3)
        .map(|k| {
            (0..30)
                .filter(|m| partition_of(&format!("m{m}"), 3) == k)
                .count()
        })
        .collect();
    assert!(members.iter().all(|n| *n > 0), "{members:?}");
    let a = one.process(&events).expect("one");
    let b = three.process(&events).expect("three");
    assert_eq!(a.outcomes, b.outcomes);
    assert_eq!(b.outcomes[300], EventOutcome::Duplicate);
    assert_eq!(a.effects.len(), b.effects.len());
    for m in 0..30 {
        let id = format!("m{m}");
        let (x, y) = (
            one.member(&id).expect("read"),
            three.member(&id).expect("read"),
        );
        let (x, y) = (x.expect("member"), y.expect("member"));
        // Ten purchases in order, whichever partition holds the member.
        assert_eq!((x.points, y.points), (10, 10), "{id}");
        assert_eq!(x.orders, y.orders);
    }
    // Each partition holds its own members and no one else's.
    for (k, e) in three.engines().iter().enumerate() {
        let ids = e.store().member_ids().expect("ids");
        assert_eq!(ids.len(), members[k]);
        assert!(ids.iter().all(|id| partition_of(id, 3) == k));
    }
}

#[test]
fn the_pipeline_keeps_each_members_order_and_stops_at_a_writers_error() {
    let (s, mut three) = engines(3);
    let events = stream(&s);
    // Batches of 4: many commits per partition, in flight together.
    let mut seen = 0;
    three
        .pipeline(
            4,
            |router| {
                for (i, ev) in events.iter().enumerate() {
                    router.send(ev.clone(), i)?;
                }
                Ok::<(), StoreError>(())
            },
            |engine, b: Batch| {
                let c = engine.process(&b.events)?;
                Ok(c.outcomes.len())
            },
            &mut |n| seen += n,
        )
        .expect("pipeline");
    assert_eq!(seen, events.len());
    for m in 0..30 {
        let rec = three
            .member(&format!("m{m}"))
            .expect("read")
            .expect("member");
        assert_eq!(rec.points, 10, "m{m}: every purchase once, in order");
    }

    // A writer fails on its third batch: the feed stops with its error.
    let (_, mut three) = engines(3);
    let batches = std::sync::atomic::AtomicUsize::new(0);
    let mut done = 0;
    let r = three.pipeline(
        4,
        |router| {
            for (i, ev) in events.iter().enumerate() {
                router.send(ev.clone(), i)?;
            }
            Ok(())
        },
        |engine, b: Batch| {
            if batches.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 2 {
                return Err(StoreError::Io("the disk is full".into()));
            }
            engine.process(&b.events)?;
            Ok(b.events.len())
        },
        &mut |n| done += n,
    );
    assert!(
        matches!(&r, Err(StoreError::Io(m)) if m == "the disk is full"),
        "{r:?}"
    );
    assert!(done > 0 && done < events.len(), "{done}");
}

const GIFT: &str = "rule \"gift\" on purchase then award points 3 to event.category";

/// Partitions over `stores` (opened again: a restart), each store failing
/// commits while told to.
fn gifting(stores: &[SledStore]) -> (Arc<Schema>, Partitions<FaultyStore>) {
    let (s, r) = build(CONFIG, GIFT);
    let parts = faulty_partitions(&s, &r, stores);
    (s, parts)
}

/// Member `m<i>` buys and names `m<i+1>` (of 30) for the gift.
fn gifts(s: &Schema, round: usize) -> Vec<Event> {
    (0..30)
        .map(|i| {
            event_from_json(s, json!({"id": format!("g{round}-{i}"), "type": "purchase", "member": format!("m{i}"), "at": "2026-03-01T12:00:00Z", "amount": 1, "category": format!("m{}", (i + 1) % 30)})).expect("event")
        })
        .collect()
}

fn points<S: Store + Send>(parts: &Partitions<S>) -> Vec<i64> {
    (0..30)
        .map(|i| {
            parts
                .member(&format!("m{i}"))
                .expect("read")
                .map_or(0, |m| m.points)
        })
        .collect()
}

fn stored_relays(stores: &[SledStore]) -> usize {
    stores
        .iter()
        .map(|st| {
            st.meta_prefix("relay_out:", usize::MAX)
                .expect("meta")
                .len()
        })
        .sum()
}

#[test]
fn relays_reach_members_of_other_partitions_as_in_one() {
    let one = [SledStore::temporary().expect("store")];
    let (s, mut a) = gifting(&one);
    let three: Vec<SledStore> = (0..3)
        .map(|_| SledStore::temporary().expect("store"))
        .collect();
    let (_, mut b) = gifting(&three);
    let x = a.process(&gifts(&s, 0)).expect("one");
    let y = b.process(&gifts(&s, 0)).expect("three");
    assert_eq!(x.outcomes, y.outcomes);
    // Each recipient had its gift before the batch was answered.
    assert_eq!(points(&a), vec![3; 30]);
    assert_eq!(points(&b), vec![3; 30]);
    let keys = |c: &nudge::engine::Committed| {
        let mut k: Vec<(String, String)> = c
            .effects
            .iter()
            .map(|e| (e.key.clone(), e.member.clone()))
            .collect();
        k.sort();
        k
    };
    assert_eq!(keys(&x), keys(&y));
    // Each gift is in its recipient's partition's outbox.
    for (k, st) in three.iter().enumerate() {
        for (_, bytes) in st.outbox(0, 100).expect("outbox") {
            let e: Effect = serde_json::from_slice(&bytes).expect("effect");
            assert_eq!(partition_of(&e.member, 3), k, "{e:?}");
        }
    }
    // Copies stored for other partitions go with the next commits.
    assert!(stored_relays(&three) > 0);
    b.settle(true).expect("settle");
    assert_eq!(stored_relays(&three), 0);
}

#[test]
fn a_relay_arrives_once_after_a_failed_commit_and_after_a_stop() {
    let stores: Vec<SledStore> = (0..3)
        .map(|_| SledStore::temporary().expect("store"))
        .collect();
    let (s, mut parts) = gifting(&stores);
    // The recipients' partitions fail: the senders' commits store the
    // relays; applying them fails.
    let evs = gifts(&s, 0);
    let k0 = partition_of("m0", 3);
    let senders: Vec<Event> = evs
        .iter()
        .filter(|e| partition_of(&e.member, 3) == k0)
        .cloned()
        .collect();
    for (k, e) in parts.engines().iter().enumerate() {
        e.store().commits_broken.set(k != k0);
    }
    assert!(parts.process(&senders).is_err());
    let gifted: Vec<usize> = senders
        .iter()
        .map(|e| e.member[1..].parse::<usize>().expect("n") + 1)
        .filter(|n| partition_of(&format!("m{}", n % 30), 3) != k0)
        .collect();
    assert!(!gifted.is_empty());
    assert_eq!(stored_relays(&stores), gifted.len());
    // Stopped there: started again, the stored relays are applied once.
    drop(parts);
    let (_, mut parts) = gifting(&stores);
    parts.settle(false).expect("settle");
    let after = points(&parts);
    for n in &gifted {
        assert_eq!(after[n % 30], 3, "m{}", n % 30);
    }
    // Stopped before the senders dropped their copies: sent again, they
    // are duplicates where they were applied.
    assert_eq!(stored_relays(&stores), gifted.len());
    drop(parts);
    let (_, mut parts) = gifting(&stores);
    let effects = parts.settle(true).expect("settle");
    assert!(effects.is_empty(), "{effects:?}");
    assert_eq!(points(&parts), after);
    assert_eq!(stored_relays(&stores), 0);
    // The whole round again: the senders' events are duplicates, the
    // rest apply, and everyone has one gift.
    let c = parts.process(&evs).expect("process");
    assert_eq!(
        c.outcomes
            .iter()
            .filter(|o| **o == EventOutcome::Duplicate)
            .count(),
        senders.len()
    );
    assert_eq!(points(&parts), vec![3; 30]);
}

/// Ticks refit the repurchase models over every partition's members:
/// each partition's engine reads the one fit, as one engine fits it.
#[test]
fn ticks_on_partitions_fit_over_every_member() {
    let (s, r) = build(
        &format!("{CONFIG}storage:\n  partitions: 3\n"),
        "rule \"likely\" on tick when p_alive > 0.5 then tag \"likely\"",
    );
    let one = tempfile::tempdir().expect("tempdir");
    let three = tempfile::tempdir().expect("tempdir");
    let mut b = nudge::engine::partitions::open(&one.path().join("d"), &s, &r, None)
        .expect("a new folder of three");
    assert_eq!(b.len(), 3);
    // The CDNOW sample's purchases.
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cdnow/events.ndjson"),
    )
    .expect("events");
    let events: Vec<Event> = text
        .lines()
        .map(|l| event_from_json(&s, serde_json::from_str(l).expect("json")).expect("event"))
        .collect();
    let mut sorted = events.clone();
    sorted.sort_by_key(|e| e.at);
    b.process(&sorted).expect("process");
    let tick_day = day("1998-06-30");
    for e in b.engines_mut() {
        e.tick(tick_day).expect("tick");
    }
    let fits: Vec<u64> = b
        .engines()
        .iter()
        .map(|e| e.fit().expect("a fit").members)
        .collect();
    assert_eq!(
        fits,
        [2357, 2357, 2357],
        "every partition's members, in each"
    );
    let mut single = Engine::new(
        s.clone(),
        r.clone(),
        SledStore::open(three.path()).expect("open"),
    )
    .expect("engine");
    single.process(&sorted).expect("process");
    single.tick(tick_day).expect("tick");
    assert_eq!(single.fit(), b.first().fit(), "the fit one engine makes");
}

/// A stream of purchases naming members, phones and cards at random, so
/// that many events link members of different partitions (merges).
fn one_id_stream(s: &Schema, n: usize, seed: u64) -> Vec<Event> {
    let mut x = seed;
    let mut next = |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    (0..n)
        .map(|i| {
            let mut v = json!({"id": format!("e{i}"), "type": "purchase", "at": format!("2026-03-01T{:02}:{:02}:00Z", i / 60 % 24, i % 60), "amount": 1 + next(9)});
            let mut ids = serde_json::Map::new();
            if next(3) > 0 {
                v["member"] = json!(format!("m{}", next(40)));
            }
            if next(2) == 0 || v.get("member").is_none() {
                ids.insert("phone".into(), json!(format!("p{}", next(30))));
            }
            if next(4) == 0 {
                ids.insert("card".into(), json!(format!("c{}", next(30))));
            }
            if !ids.is_empty() {
                v["ids"] = serde_json::Value::Object(ids);
            }
            event_from_json(s, v).expect("event")
        })
        .collect()
}

/// Every member as `find_member` finds it by each name the stream used.
fn everyone(store: &dyn Store) -> Vec<(String, String, i64, u32)> {
    let mut names: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    names.extend((0..150).map(|i| format!("phone:p{i}")));
    names.extend((0..150).map(|i| format!("card:c{i}")));
    names
        .into_iter()
        .filter_map(|n| {
            let (id, rec) = nudge::engine::identity::find_member(store, &n).expect("read")?;
            Some((n, id, rec.points, rec.orders))
        })
        .collect()
}

#[test]
fn one_id_over_partitions_merges_as_one_partition_does() {
    // In requests of 25, as the daemon would take them, and in one batch.
    for size in [25, 600] {
        one_id_in_batches_of(size);
    }
}

fn one_id_in_batches_of(size: usize) {
    let config = format!("{CONFIG}ids: [phone, card]\nstorage:\n  partitions: 3\n");
    let (s, r) = build(
        &config,
        "rule \"pts\" on purchase then award points floor(event.amount)",
    );
    let events = one_id_stream(&s, 600, 0x9E37_79B9_7F4A_7C15);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut one = Engine::new(
        s.clone(),
        r.clone(),
        SledStore::open(&dir.path().join("one")).expect("open"),
    )
    .expect("engine");
    let mut three =
        nudge::engine::partitions::open(&dir.path().join("three"), &s, &r, None).expect("open");
    assert!(three.one_id());
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for chunk in events.chunks(size) {
        let x = one.process(chunk).expect("one");
        let y = three.process(chunk).expect("three");
        assert_eq!(x.outcomes, y.outcomes);
        a.extend(
            x.effects
                .into_iter()
                .map(|e| (e.key, e.member, e.value.map(|v| v.to_string()))),
        );
        b.extend(
            y.effects
                .into_iter()
                .map(|e| (e.key, e.member, e.value.map(|v| v.to_string()))),
        );
    }
    a.sort();
    b.sort();
    let merges = a.iter().filter(|e| e.2.is_some()).count();
    assert!(merges > 10, "{merges} merges");
    let only_a: Vec<_> = a.iter().filter(|x| !b.contains(x)).collect();
    let only_b: Vec<_> = b.iter().filter(|x| !a.contains(x)).collect();
    assert!(
        only_a.is_empty() && only_b.is_empty(),
        "one partition only: {only_a:?}\nthree only: {only_b:?}"
    );
    let folder = nudge::store::folder::Folder {
        parts: three.engines().iter().map(|e| e.store().clone()).collect(),
    };
    let want = everyone(one.store());
    assert!(want.len() > 90, "{}", want.len());
    assert_eq!(everyone(&folder), want);
    // Members merged across partitions were moved first: their homes
    // note where they went.
    let moved = (0..40)
        .map(|i| format!("m{i}"))
        .chain((0..30).map(|i| format!("phone:p{i}")))
        .filter(|m| {
            let home = nudge::store::folder::partition_of(m, 3);
            folder.parts[home]
                .identity(&format!("moved:{m}"))
                .expect("read")
                .is_some()
        })
        .count();
    assert!(moved > 5, "{moved} moved");
    // The same events again: all duplicates, in either.
    for chunk in events.chunks(100) {
        let x = one.process(chunk).expect("one");
        let y = three.process(chunk).expect("three");
        let odd: Vec<_> = chunk
            .iter()
            .zip(x.outcomes.iter().zip(&y.outcomes))
            .filter(|(_, (a, b))| **a != EventOutcome::Duplicate || **b != EventOutcome::Duplicate)
            .map(|(e, o)| (e.id.clone(), e.member.clone(), e.ids.clone(), o))
            .collect();
        assert!(odd.is_empty(), "{odd:?}");
    }
}

/// A One ID merge of members of two partitions stopped between the steps
/// of its move (the partition it leaves cannot write): started again, the
/// move is finished, and the event sent again merges them once.
#[test]
fn a_move_cut_short_is_finished_at_the_start() {
    let config = format!("{CONFIG}ids: [phone, card]\n");
    let (s, r) = build(
        &config,
        "rule \"pts\" on purchase then award points floor(event.amount)",
    );
    let stores: Vec<SledStore> = (0..3)
        .map(|_| SledStore::temporary().expect("store"))
        .collect();
    let open = || faulty_partitions(&s, &r, &stores);
    let (a, b) = (
        "m1",
        (2..40)
            .map(|m| format!("m{m}"))
            .find(|m| partition_of(m, 3) != partition_of("m1", 3))
            .expect("b"),
    );
    let ev = |id: &str, member: &str, ids: serde_json::Value, amount: u32| {
        event_from_json(&s, json!({"id": id, "type": "purchase", "member": member, "ids": ids, "at": "2026-03-01T12:00:00Z", "amount": amount})).expect("event")
    };
    let mut parts = open();
    parts
        .process(&[
            ev("1", a, json!({"phone": "1"}), 10),
            ev("2", &b, json!({"card": "9"}), 20),
        ])
        .expect("process");
    let link = [ev("3", &b, json!({"phone": "1"}), 5)];
    let from = partition_of(a, 3);
    parts.engines()[from].store().commits_broken.set(true);
    assert!(
        parts.process(&link).is_err(),
        "a's partition cannot let a go"
    );
    let to = partition_of(&b, 3);
    assert!(stores[to].member(a).expect("read").is_some(), "moved in");
    assert!(
        stores[from].member(a).expect("read").is_some(),
        "not let go yet"
    );
    drop(parts);
    let mut parts = open();
    assert!(
        stores[from].member(a).expect("read").is_none(),
        "let go at the start"
    );
    assert!(
        stores[to]
            .meta_prefix("moving:", 10)
            .expect("meta")
            .is_empty(),
        "the move is done"
    );
    let c = parts.process(&link).expect("process");
    assert_eq!(c.outcomes, [EventOutcome::Applied { effects: 1 }]);
    assert_eq!(
        c.effects[0].value,
        Some(json!({"merged": a})),
        "{:?}",
        c.effects
    );
    let folder = nudge::store::folder::Folder {
        parts: stores.clone(),
    };
    for name in [a, b.as_str(), "phone:1", "card:9"] {
        let (id, rec) = nudge::engine::identity::find_member(&folder, name)
            .expect("read")
            .expect(name);
        assert_eq!((id.as_str(), rec.points), (b.as_str(), 35), "{name}");
    }
    assert_eq!(folder.member_ids().expect("ids"), std::slice::from_ref(&b));
    drop(parts);
    // Sent again after all that: a duplicate.
    let mut parts = open();
    assert_eq!(
        parts.process(&link).expect("again").outcomes,
        [EventOutcome::Duplicate]
    );
}

/// `nudge ingest` of a One ID project on partitions commits in rounds on a
/// writer thread: a commit that fails stops the reading with its error,
/// after the rounds before it, and nothing waits for ever.
#[test]
fn ingest_in_rounds_stops_at_a_failed_commit() {
    let config = format!("{CONFIG}ids: [phone]\n");
    let (s, r) = build(&config, "rule \"pts\" on purchase then award points 1");
    let stores: Vec<SledStore> = (0..3)
        .map(|_| SledStore::temporary().expect("store"))
        .collect();
    let mut parts = faulty_partitions(&s, &r, &stores);
    assert!(parts.one_id());
    // Partition 0 commits one round's share, then its disk fails.
    parts.engines()[0].store().commits_left.set(1);
    let lines: String = (0..12_000)
        .map(|i| format!("{{\"id\":\"e{i}\",\"type\":\"purchase\",\"member\":\"m{}\",\"at\":\"2026-03-01T12:00:00Z\",\"amount\":1}}\n", i % 500))
        .collect();
    let mut rounds = 0;
    let r = nudge::io::ingest::ingest(&mut parts, lines.as_bytes(), false, None, &mut |_| {
        rounds += 1
    });
    assert!(
        matches!(
            r,
            Err(nudge::io::ingest::IngestError::Store(StoreError::Io(_)))
        ),
        "{r:?}"
    );
    assert_eq!(rounds, 1, "the first round, then the error");
    let applied: u32 = (0..500)
        .filter_map(|m| parts.member(&format!("m{m}")).expect("read"))
        .map(|m| m.orders)
        .sum();
    assert!(
        (3000..6000).contains(&applied),
        "the first round, and the other partitions' shares of the second: {applied}"
    );
    // The disk back, the same input again: each event once, all of them.
    parts.engines()[0].store().commits_left.set(usize::MAX);
    let report = nudge::io::ingest::ingest(&mut parts, lines.as_bytes(), false, None, &mut |_| {})
        .expect("ingest");
    assert_eq!(report.applied as u32 + applied, 12_000);
    let orders: u32 = (0..500)
        .filter_map(|m| parts.member(&format!("m{m}")).expect("read"))
        .map(|m| m.orders)
        .sum();
    assert_eq!(orders, 12_000);
}

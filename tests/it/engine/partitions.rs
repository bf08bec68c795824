//! `engine::partitions` through the library: a batch over three
//! partitions gives each event's outcome in the batch's order and each
//! member's state as one engine gives it; the pipeline keeps a member's
//! events in order, and a writer that fails stops the feed, with every
//! batch already sent finished and no thread left waiting.

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
                return Err("the disk is full".to_string());
            }
            engine.process(&b.events).map_err(|e| e.to_string())?;
            Ok(b.events.len())
        },
        &mut |n| done += n,
    );
    assert_eq!(r, Err("the disk is full".to_string()));
    assert!(done > 0 && done < events.len(), "{done}");
}

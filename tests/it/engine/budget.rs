//! Budgets and the control group: spent exactly, also across a restart
//! and over partitions (what a failed commit took is given back), and
//! reported.

use super::*;

#[test]
fn the_control_group_gets_nothing_and_budgets_are_reported() {
    let config = format!("{CONFIG}control_group: 20%\n");
    let (s, r) = build(
        &config,
        "rule \"bonus\" on purchase then award points 10 budget 1000",
    );
    let mut e = Engine::new(s.clone(), r, SledStore::temporary().expect("store")).expect("engine");
    let evs: Vec<Event> = (0..500)
        .map(|i| purchase(&s, &format!("e{i}"), &format!("m{i}"), "2026-01-01", 1.0))
        .collect();
    let c = e.process(&evs).expect("process");
    let held = c
        .effects
        .iter()
        .filter(|x| x.status == Status::HeldOut)
        .count();
    assert!(
        (60..140).contains(&held),
        "{held} of 500 in a 20% control group"
    );
    for x in c.effects.iter().filter(|x| x.status == Status::HeldOut) {
        assert!(nudge::engine::contact::in_control_group(&s, &x.member));
        assert_eq!(
            e.member(&x.member).expect("read").expect("member").points,
            0
        );
    }
    // Held-out firings spend no budget.
    let used = e.budgets(day("2026-01-01"));
    assert_eq!(
        used,
        [(
            "bonus".to_string(),
            rust_decimal::Decimal::from(500 - held),
            rust_decimal::Decimal::from(1000)
        )]
    );
}

#[test]
fn a_budget_is_exact_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, r) = build(
        CONFIG,
        "rule \"b\" on purchase then award points 1 budget 3\nrule \"up\" on purchase when tier == bronze then set tier silver",
    );
    let evs: Vec<Event> = (0..4)
        .map(|i| purchase(&s, &format!("e{i}"), &format!("m{i}"), "2026-01-01", 1.0))
        .collect();
    {
        let mut e = engine_at(dir.path(), &s, &r);
        e.process(&evs[..2]).expect("process");
    }
    let mut e = engine_at(dir.path(), &s, &r);
    let c = e.process(&evs[2..]).expect("process");
    let statuses: Vec<&str> = c
        .effects
        .iter()
        .filter(|x| x.rule == "b")
        .map(|x| x.status.as_str())
        .collect();
    assert_eq!(statuses, ["sent", "capped"]);
    // Tier changes are kept in the member's history.
    assert_eq!(
        e.member("m3").expect("read").expect("member").tier_history,
        [(day("2026-01-01"), 1)]
    );
}

/// Regression: a store error reading a budget was taken as "budget spent"
/// (the firing committed as `capped`, its points lost). Now the batch
/// fails, nothing of it is stored, and the same events apply in full once
/// the store reads again.
#[test]
fn a_budget_the_store_cannot_read_fails_the_batch_instead_of_capping() {
    let (s, r) = build(
        CONFIG,
        "rule \"b\" on purchase then award points 5 budget 100",
    );
    let store = FaultyStore::new(SledStore::temporary().expect("store"));
    store.broken.set(true);
    let mut e = Engine::new(s.clone(), r, store).expect("engine");
    let evs = [purchase(&s, "e1", "m1", "2026-01-01", 1.0)];
    assert!(matches!(e.process(&evs), Err(StoreError::Io(_))));
    assert!(
        e.member("m1").expect("read").is_none(),
        "nothing of the batch is stored"
    );
    e.store().broken.set(false);
    let c = e.process(&evs).expect("process");
    assert_eq!(c.outcomes, [EventOutcome::Applied { effects: 1 }]);
    assert_eq!(c.effects[0].status, Status::Sent);
    assert_eq!(e.member("m1").expect("read").expect("m1").points, 5);
}

/// Over three partitions, a budget is the sum of what each spent: a
/// partition whose commit failed gives back what its batch had taken, and
/// partitions opened again (a restart) start from what each stored.
#[test]
fn a_budget_over_partitions_is_spent_exactly_and_a_failed_commit_gives_back() {
    use nudge::store::folder::partition_of;
    let (s, r) = build(
        CONFIG,
        "rule \"b\" on purchase then award points 1 budget 10",
    );
    let stores: Vec<SledStore> = (0..3)
        .map(|_| SledStore::temporary().expect("store"))
        .collect();
    let open = |stores: &[SledStore]| faulty_partitions(&s, &r, stores);
    let evs: Vec<Event> = (0..30)
        .map(|i| purchase(&s, &format!("e{i}"), &format!("m{i}"), "2026-01-01", 1.0))
        .collect();
    let sent = |c: &nudge::engine::Committed| {
        c.effects
            .iter()
            .filter(|x| x.status == Status::Sent)
            .count()
    };
    let mut parts = open(&stores);
    // Partition 1's members first, with its disk failing: nothing stored.
    let of_1: Vec<Event> = evs
        .iter()
        .filter(|e| partition_of(&e.member, 3) == 1)
        .cloned()
        .collect();
    assert!(!of_1.is_empty());
    parts.engines()[1].store().commits_broken.set(true);
    assert!(matches!(parts.process(&of_1), Err(StoreError::Io(_))));
    parts.engines()[1].store().commits_broken.set(false);
    // Every member: ten sent in all, whatever partition they are in.
    let c = parts.process(&evs).expect("process");
    assert_eq!(sent(&c), 10, "the failed batch gave back what it took");
    assert_eq!(c.effects.len(), 30);
    let stored: rust_decimal::Decimal = stores
        .iter()
        .filter_map(|st| st.meta("budget:b:all").expect("meta"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .parse::<rust_decimal::Decimal>()
                .expect("number")
        })
        .sum();
    assert_eq!(stored, rust_decimal::Decimal::from(10));
    let today = day("2026-01-01");
    let usage = parts.engines()[2].budgets(today);
    assert_eq!(usage[0].1, rust_decimal::Decimal::from(10), "{usage:?}");
    drop(parts);
    // Opened again: the ledger is what the partitions stored.
    let mut parts = open(&stores);
    let more: Vec<Event> = (30..60)
        .map(|i| purchase(&s, &format!("e{i}"), &format!("m{i}"), "2026-01-01", 1.0))
        .collect();
    let c = parts.process(&more).expect("process");
    assert_eq!(sent(&c), 0);
    assert!(c.effects.iter().all(|x| x.status == Status::Capped));
}

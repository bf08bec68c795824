//! One ID: identifiers and merges, stored, counted and found by any
//! identifier; a merge combines every part of two records.

use super::*;

#[test]
fn one_id_merges_are_stored_counted_and_found_by_any_identifier() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!("{CONFIG}ids: [phone, card]\n");
    let (s, r) = build(&config, "rule \"pts\" on purchase then award points 1");
    let ev = |v: serde_json::Value| event_from_json(&s, v).expect("event");
    {
        let store = SledStore::open(dir.path()).expect("open");
        let mut e = Engine::new(s.clone(), r.clone(), store).expect("engine");
        e.process(&[
            ev(json!({"id": "1", "type": "purchase", "ids": {"phone": "138"}, "at": "2026-01-01T10:00:00Z", "amount": 1})),
            ev(json!({"id": "2", "type": "purchase", "member": "m2", "ids": {"card": "c"}, "at": "2026-01-02T10:00:00Z", "amount": 1})),
        ])
        .expect("process");
        assert_eq!(
            e.store()
                .meta_u64(nudge::store::keys::MEMBERS)
                .expect("meta"),
            2
        );
    }
    // After a restart, an event linking both merges m2 into phone:138 (joined first).
    let store = SledStore::open(dir.path()).expect("reopen");
    let mut e = Engine::new(s.clone(), r, store).expect("engine");
    let c = e
        .process(&[ev(json!({"id": "3", "type": "purchase", "ids": {"phone": "138", "card": "c"}, "at": "2026-01-03T10:00:00Z", "amount": 1}))])
        .expect("merge");
    assert_eq!(c.effects[0].action, Action::Merge);
    assert_eq!(c.effects[0].value, Some(json!({"merged": "m2"})));
    let st = e.store();
    assert_eq!(st.meta_u64(nudge::store::keys::MEMBERS).expect("meta"), 1);
    assert!(
        st.member("m2").expect("read").is_none(),
        "the merged record is gone"
    );
    let ids = st.member_ids().expect("ids");
    assert_eq!(ids, ["phone:138"]);
    for key in ["phone:138", "m2", "card:c"] {
        let (id, rec) = nudge::engine::identity::find_member(st, key)
            .expect("read")
            .expect("found");
        assert_eq!(id, "phone:138");
        assert_eq!(rec.points, 3);
        assert_eq!(rec.orders, 3);
        assert_eq!(rec.merged, ["m2"]);
    }
    // Later events for the merged member's id go to the survivor.
    e.process(&[ev(json!({"id": "4", "type": "purchase", "member": "m2", "at": "2026-01-04T10:00:00Z", "amount": 1}))])
        .expect("alias");
    assert_eq!(e.member("phone:138").expect("read").expect("m").points, 4);
    assert!(e.member("m2").expect("read").is_none());
    // Unknown kinds and wrong types are refused with the field path.
    let bad = event_from_json(
        &s,
        json!({"id": "5", "type": "purchase", "ids": {"email": "x"}, "at": "2026-01-04T10:00:00Z", "amount": 1}),
    );
    assert_eq!(bad.expect_err("kind").path, "ids.email");
    let bad = event_from_json(
        &s,
        json!({"id": "6", "type": "purchase", "ids": {"phone": true}, "at": "2026-01-04T10:00:00Z", "amount": 1}),
    );
    assert_eq!(bad.expect_err("type").path, "ids.phone");
    let bad = event_from_json(
        &s,
        json!({"id": "7", "type": "purchase", "at": "2026-01-04T10:00:00Z", "amount": 1}),
    );
    assert_eq!(bad.expect_err("none").path, "member");
}

#[test]
fn merging_combines_every_part_of_a_record() {
    use nudge::engine::identity::merge;
    use nudge::model::{MemberRecord, RuleState};
    let mut a = MemberRecord {
        joined: 10,
        first_purchase: Some(12),
        last_purchase: Some(20),
        purchase_days: 2,
        orders: 2,
        points: 5,
        tier: 1,
        tags: vec!["x".into()],
        consent: vec![("sms".into(), true)],
        rules: vec![RuleState {
            rule: 7,
            armed: false,
            fired: 1,
            recent: vec![20],
        }],
        ..MemberRecord::default()
    };
    let b = MemberRecord {
        joined: 5,
        first_purchase: Some(6),
        last_purchase: Some(15),
        purchase_days: 3,
        orders: 4,
        points: -2,
        tier: 2,
        tags: vec!["x".into(), "y".into()],
        consent: vec![("sms".into(), false), ("app".into(), true)],
        rules: vec![RuleState {
            rule: 7,
            armed: true,
            fired: 2,
            recent: vec![8, 14],
        }],
        ids: vec![("card".into(), "c".into())],
        ..MemberRecord::default()
    };
    merge(&mut a, b);
    assert_eq!(
        (a.joined, a.first_purchase, a.last_purchase),
        (5, Some(6), Some(20))
    );
    assert_eq!((a.purchase_days, a.orders, a.points, a.tier), (5, 6, 3, 2));
    assert_eq!(a.tags, ["x", "y"]);
    assert_eq!(
        a.consent,
        [("sms".to_string(), false), ("app".to_string(), true)]
    );
    assert_eq!(
        a.rules[0],
        RuleState {
            rule: 7,
            armed: true,
            fired: 3,
            recent: vec![8, 14, 20]
        }
    );
    assert_eq!(a.ids, [("card".to_string(), "c".to_string())]);
}

/// Regression: a gift to a member merged into another went to a new,
/// empty record under the merged id (a ghost member the survivor never
/// sees). It goes to the survivor, as events naming the merged id do.
#[test]
fn a_gift_to_a_merged_member_reaches_the_survivor() {
    let config = format!("{CONFIG}ids: [phone]\n");
    let (s, r) = build(
        &config,
        "rule \"gift\" on purchase when event.category is not null then award points 5 to event.category",
    );
    let ev = |v: serde_json::Value| event_from_json(&s, v).expect("event");
    let mut e = Engine::new(s.clone(), r, SledStore::temporary().expect("store")).expect("engine");
    e.process(&[
        ev(json!({"id": "1", "type": "purchase", "member": "a", "ids": {"phone": "1"}, "at": "2026-01-01T10:00:00Z", "amount": 1})),
        ev(json!({"id": "2", "type": "purchase", "member": "b", "ids": {"phone": "2"}, "at": "2026-01-02T10:00:00Z", "amount": 1})),
        // b is found to be a (b's phone): b merges into a, named.
        ev(json!({"id": "3", "type": "purchase", "member": "a", "ids": {"phone": "2"}, "at": "2026-01-03T10:00:00Z", "amount": 1})),
        // A friend names b.
        ev(json!({"id": "4", "type": "purchase", "member": "f", "category": "b", "at": "2026-01-04T10:00:00Z", "amount": 1})),
    ])
    .expect("process");
    assert!(e.member("b").expect("read").is_none(), "no ghost b");
    assert_eq!(e.member("a").expect("read").expect("a").points, 5);
    // The same in a later batch, read from the store.
    e.process(&[ev(json!({"id": "5", "type": "purchase", "member": "f", "category": "b", "at": "2026-01-05T10:00:00Z", "amount": 1}))])
        .expect("process");
    assert!(e.member("b").expect("read").is_none(), "no ghost b");
    assert_eq!(e.member("a").expect("read").expect("a").points, 10);
}

/// Regression: a named member that turned out to be another (`x`, whose
/// phone was already `phone:1`'s) kept leading to that member after it was
/// merged into a third (`y`): the next event naming `x` made a new, empty
/// `phone:1`. A name leads to the member it is now, however many merges
/// later; also when the alias was written before any merge.
#[test]
fn a_name_leads_to_its_member_after_later_merges() {
    let config = format!("{CONFIG}ids: [phone, card]\n");
    let (s, r) = build(&config, "rule \"pts\" on purchase then award points 1");
    let ev = |v: serde_json::Value| event_from_json(&s, v).expect("event");
    let mut e = Engine::new(s.clone(), r, SledStore::temporary().expect("store")).expect("engine");
    let at = |d: u32| format!("2026-01-{d:02}T10:00:00Z");
    e.process(&[
        ev(json!({"id": "1", "type": "purchase", "ids": {"phone": "1"}, "at": at(1), "amount": 1})),
        // x is phone:1's: an alias, no merge yet.
        ev(json!({"id": "2", "type": "purchase", "member": "x", "ids": {"phone": "1"}, "at": at(2), "amount": 1})),
    ])
    .expect("process");
    e.process(&[ev(
        json!({"id": "3", "type": "purchase", "member": "x", "at": at(3), "amount": 1}),
    )])
    .expect("process");
    assert!(e.member("x").expect("read").is_none(), "x is phone:1");
    assert_eq!(
        e.member("phone:1").expect("read").expect("phone:1").points,
        3
    );
    // y (with a card) turns out to have phone:1: phone:1 merges into y.
    e.process(&[
        ev(json!({"id": "4", "type": "purchase", "member": "y", "ids": {"card": "9"}, "at": at(4), "amount": 1})),
        ev(json!({"id": "5", "type": "purchase", "member": "y", "ids": {"phone": "1"}, "at": at(5), "amount": 1})),
    ])
    .expect("process");
    e.process(&[ev(
        json!({"id": "6", "type": "purchase", "member": "x", "at": at(6), "amount": 1}),
    )])
    .expect("process");
    assert!(
        e.member("phone:1").expect("read").is_none(),
        "no ghost phone:1"
    );
    assert_eq!(e.member("y").expect("read").expect("y").points, 6);
    let (id, _) = nudge::engine::identity::find_member(e.store(), "x")
        .expect("read")
        .expect("found");
    assert_eq!(id, "y");
}

/// Regression: ids of a busy member past its record's room are kept as
/// markers under its name; merged into another member, a redelivery of
/// one of them was applied again (looked up under the survivor's name).
#[test]
fn a_busy_members_events_stay_duplicates_after_it_is_merged() {
    let config = format!("{CONFIG}ids: [phone]\n");
    let (s, r) = build(&config, "rule \"pts\" on purchase then award points 1");
    let ev = |v: serde_json::Value| event_from_json(&s, v).expect("event");
    let mut e = Engine::new(s.clone(), r, SledStore::temporary().expect("store")).expect("engine");
    let busy: Vec<Event> = (0..300)
        .map(|i| ev(json!({"id": format!("a{i}"), "type": "purchase", "member": "a", "ids": {"phone": "1"}, "at": format!("2026-01-01T10:{:02}:{:02}Z", i / 60, i % 60), "amount": 1})))
        .collect();
    e.process(&busy).expect("process");
    e.process(&[
        ev(json!({"id": "b1", "type": "purchase", "member": "b", "at": "2026-01-01T12:00:00Z", "amount": 1})),
    ])
    .expect("process");
    // b turns out to have a's phone: a merges into b (named).
    e.process(&[ev(json!({"id": "b2", "type": "purchase", "member": "b", "ids": {"phone": "1"}, "at": "2026-01-01T12:01:00Z", "amount": 1}))])
        .expect("merge");
    assert!(e.member("a").expect("read").is_none());
    assert_eq!(e.member("b").expect("read").expect("b").points, 302);
    // Every one of a's events again, the first ones spilled: duplicates.
    let c = e.process(&busy).expect("again");
    assert!(
        c.outcomes.iter().all(|o| *o == EventOutcome::Duplicate),
        "{:?}",
        &c.outcomes[..5]
    );
    assert_eq!(e.member("b").expect("read").expect("b").points, 302);
}

/// Regression: a member's identifiers past the 64 its record lists still
/// lead to it, but merged into another member they led nowhere when
/// looked up (`nudge member card:...`, `GET /v1/members/...`): the lookup
/// follows the merged member's alias to the survivor.
#[test]
fn every_identifier_of_a_merged_member_finds_the_survivor() {
    let config = format!("{CONFIG}ids: [card]\n");
    let (s, r) = build(&config, "rule \"pts\" on purchase then award points 1");
    let ev = |v: serde_json::Value| event_from_json(&s, v).expect("event");
    let mut e = Engine::new(s.clone(), r, SledStore::temporary().expect("store")).expect("engine");
    let cards: Vec<Event> = (0..70)
        .map(|i| ev(json!({"id": format!("c{i}"), "type": "purchase", "member": "n3", "ids": {"card": format!("B-{i}")}, "at": "2026-01-01T10:00:00Z", "amount": 1})))
        .collect();
    e.process(&cards).expect("process");
    e.process(&[
        ev(json!({"id": "x", "type": "purchase", "member": "n0", "at": "2026-01-01T11:00:00Z", "amount": 1})),
    ])
    .expect("process");
    // n0 turns out to hold n3's first card: n3 merges into n0 (named).
    e.process(&[ev(json!({"id": "y", "type": "purchase", "member": "n0", "ids": {"card": "B-0"}, "at": "2026-01-01T12:00:00Z", "amount": 1}))])
        .expect("merge");
    for name in ["n3", "card:B-0", "card:B-63", "card:B-64", "card:B-69"] {
        let (id, rec) = nudge::engine::identity::find_member(e.store(), name)
            .expect("read")
            .unwrap_or_else(|| panic!("{name} found"));
        assert_eq!((id.as_str(), rec.points), ("n0", 72), "{name}");
    }
}

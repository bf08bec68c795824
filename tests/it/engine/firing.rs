//! Firing semantics with a simulated clock: order, groups, limits, tier
//! triggers, the rising edge, holdouts, dedup, determinism, coupon codes,
//! rewards for another member.

use super::*;

#[test]
fn firing_order_state_changes_groups_limits_and_tier_triggers() {
    let mut e = engine(
        "rule \"points\" on purchase priority 10 then award points floor(event.amount)\n\
         rule \"hundred\" on purchase when points >= 100 then tag \"hundred\"\n\
         rule \"silver\" on purchase when tier == bronze and spend >= 100 then set tier silver\n\
         rule \"gift\" on tier_up when tier == silver then send coupon 50-10 via sms\n\
         rule \"first of group\" on purchase priority 5 group \"g\" then tag \"g1\"\n\
         rule \"second of group\" on purchase priority 4 group \"g\" then tag \"g2\"\n\
         rule \"monthly\" on purchase then send coupon 30-6 limit once per 30d",
    );
    let s = e.schema.clone();
    let c = e
        .process(&[
            purchase(&s, "1", "m", "2026-01-01", 120.0),
            purchase(&s, "2", "m", "2026-01-10", 5.0),
            purchase(&s, "3", "m", "2026-02-01", 5.0),
        ])
        .expect("process");
    assert_eq!(
        summary(&c.effects),
        [
            "points m event:1 points 120 sent",
            "first of group m event:1 tag g1 sent",
            "hundred m event:1 tag hundred sent",
            "silver m event:1 tier silver sent",
            "monthly m event:1 coupon 30-6 sent",
            "gift m tier_up:event:1 coupon 50-10 sent",
            "points m event:2 points 5 sent",
            "points m event:3 points 5 sent",
            "monthly m event:3 coupon 30-6 sent",
        ]
    );
    let rec = e.member("m").expect("read").expect("member");
    assert_eq!((rec.points, rec.tier), (130, 1));
}

#[test]
fn the_example_rule_fires_on_the_rising_edge_only() {
    let mut e = engine(
        "when days_since_last_purchase > cycle*1.5 and tier >= silver then send coupon 30-6\nrule \"up\" on purchase when tier == bronze then set tier silver",
    );
    let s = e.schema.clone();
    e.process(&[
        purchase(&s, "1", "m", "2026-01-01", 1.0),
        purchase(&s, "2", "m", "2026-01-11", 1.0),
        purchase(&s, "3", "m", "2026-01-21", 1.0),
    ])
    .expect("process");
    let mut fired = Vec::new();
    for d in day("2026-01-22")..=day("2026-03-01") {
        fired.extend(e.tick(d).expect("tick"));
    }
    assert_eq!(summary(&fired), ["t:1 m tick:2026-02-06 coupon 30-6 sent"]);
}

#[test]
fn holdout_is_stable_and_changes_nothing() {
    let rules = "rule \"bonus\" on purchase then award points 10 holdout 30%";
    let mut e = engine(rules);
    let s = e.schema.clone();
    let evs: Vec<Event> = (0..400)
        .map(|i| purchase(&s, &format!("e{i}"), &format!("m{i}"), "2026-01-01", 1.0))
        .collect();
    let c = e.process(&evs).expect("process");
    let held: Vec<&Effect> = c
        .effects
        .iter()
        .filter(|x| x.status == Status::HeldOut)
        .collect();
    assert!(
        (80..160).contains(&held.len()),
        "{} held out of 400",
        held.len()
    );
    for h in &held {
        assert_eq!(
            e.member(&h.member).expect("read").expect("member").points,
            0,
            "held-out members get nothing"
        );
    }
    // Same members held out in a fresh run.
    let mut e2 = engine(rules);
    let c2 = e2.process(&evs).expect("process");
    let held2: Vec<&Effect> = c2
        .effects
        .iter()
        .filter(|x| x.status == Status::HeldOut)
        .collect();
    assert_eq!(
        held.iter().map(|x| &x.member).collect::<Vec<_>>(),
        held2.iter().map(|x| &x.member).collect::<Vec<_>>()
    );
}

#[test]
fn duplicates_change_nothing_and_conflicts_are_refused() {
    let mut e = engine("rule \"points\" on purchase then award points floor(event.amount)");
    let s = e.schema.clone();
    let ev = purchase(&s, "1", "m", "2026-01-01", 10.0);
    let c = e.process(&[ev.clone(), ev.clone()]).expect("process");
    assert_eq!(
        c.outcomes,
        [
            EventOutcome::Applied { effects: 1 },
            EventOutcome::Duplicate
        ]
    );
    let c = e.process(std::slice::from_ref(&ev)).expect("process");
    assert_eq!(c.outcomes, [EventOutcome::Duplicate]);
    let other = purchase(&s, "1", "m", "2026-01-01", 99.0);
    let c = e.process(&[other]).expect("process");
    assert!(matches!(c.outcomes[0], EventOutcome::Rejected(_)));
    assert!(c.effects.is_empty());
    assert_eq!(e.member("m").expect("read").expect("member").points, 10);
}

#[test]
fn effects_are_byte_for_byte_deterministic() {
    let rules = "rule \"points\" on purchase then award points floor(event.amount * 2), tag \"buyer\"\nwhen days_since_last_purchase > cycle*1.5 and tier >= bronze then send coupon 30-6";
    let run = || {
        let mut e = engine(rules);
        let s = e.schema.clone();
        let evs: Vec<Event> = (0..60)
            .map(|i| {
                purchase(
                    &s,
                    &format!("e{i}"),
                    &format!("m{}", i % 5),
                    &nudge::base::time::day_string(day("2026-01-01") + i * 3),
                    7.5,
                )
            })
            .collect();
        let fx = nudge::sim::replay::replay(&mut e, evs, Some(day("2026-12-31")), &mut |_| {})
            .expect("replay")
            .effects;
        let mut buf = Vec::new();
        for f in &fx {
            nudge::outbox::write_line(&mut buf, f);
        }
        buf
    };
    let a = run();
    assert!(!a.is_empty());
    assert_eq!(a, run());
    let _ = Path::new("unused");
}

#[test]
fn coupon_codes_are_hmac_sha256_of_the_key() {
    // Computed independently: HMAC-SHA256("secret", "effect-key"), first 8
    // bytes big-endian, 12 Crockford base32 digits from the low bits.
    assert_eq!(
        nudge::engine::contact::coupon_code("secret", "effect-key"),
        "6G8R7KRNTJFD"
    );
    assert_ne!(
        nudge::engine::contact::coupon_code("other", "effect-key"),
        "6G8R7KRNTJFD"
    );
}

#[test]
fn a_reward_for_another_member_is_applied_once_and_not_when_held_out() {
    let config = CONFIG.replace(
        "  signup:\n    city: string?",
        "  signup:\n    city: string?\n    referred_by: string?",
    );
    let rules = r#"
rule "refer" on signup then award points 100 to event.referred_by
rule "held" on signup then award points 7 to event.referred_by holdout 99.99%
"#;
    let (s, r) = build(&config, rules);
    let mut e = Engine::new(s.clone(), r, SledStore::temporary().expect("store")).expect("engine");
    let signup = |id: &str, m: &str, by: &str| {
        event_from_json(&s, json!({"id": id, "type": "signup", "member": m, "at": "2026-01-05T10:00:00Z", "referred_by": by})).expect("event")
    };
    let c = e
        .process(&[signup("s1", "bob", "ann"), signup("s2", "cid", "ann")])
        .expect("process");
    let statuses: Vec<(String, Status, Option<String>)> = c
        .effects
        .iter()
        .map(|x| (x.member.clone(), x.status, x.from.clone()))
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| s.1 == Status::Sent).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| s.1 == Status::HeldOut).count(),
        2,
        "{statuses:?}"
    );
    assert!(statuses.iter().all(|s| s.0 == "ann"), "{statuses:?}");
    let ann = |e: &Engine<SledStore>| e.member("ann").expect("read").expect("ann").points;
    assert_eq!(ann(&e), 200);
    // Redelivering the signups relays nothing again.
    let again = e.process(&[signup("s1", "bob", "ann")]).expect("again");
    assert!(again.effects.is_empty());
    assert_eq!(ann(&e), 200);
    // The referrer's own record was not given the referred member's reward.
    assert_eq!(e.member("bob").expect("read").expect("bob").points, 0);
    // Event ids of the engine's internal events are refused at the door.
    let bad = event_from_json(
        &s,
        json!({"id": "relay:x", "type": "signup", "member": "m", "at": "2026-01-05T10:00:00Z"}),
    );
    assert_eq!(bad.expect_err("reserved").path, "id");
}

/// An experiment in a group: every member the rule fires for (either arm,
/// or held out) uses up the group, so the group's next rule reaches only
/// members the experiment's condition leaves out. Each arm gets its share,
/// the holdout is the control (no variant), and an arm's coupon is charged
/// to a money budget at that arm's value.
#[test]
fn an_experiment_splits_members_and_uses_up_its_group() {
    let mut e = engine(
        "rule \"test\" on purchase priority 2 group \"g\" when event.amount >= 10\n\
           variant \"A\" 45% then send coupon 30-6\n\
           variant \"B\" 45% then send coupon 50-10\n\
           holdout 10%\n\
           budget 100000 per month\n\
         rule \"fallback\" on purchase priority 1 group \"g\" then tag \"fallback\"",
    );
    let s = e.schema.clone();
    let evs: Vec<_> = (0..400)
        .map(|i| purchase(&s, &format!("e{i}"), &format!("m{i}"), "2026-01-01", 10.0))
        .chain([purchase(&s, "small", "x", "2026-01-01", 5.0)])
        .collect();
    let c = e.process(&evs).expect("process");
    let arm = |v: &str| {
        c.effects
            .iter()
            .filter(|x| x.variant.as_deref() == Some(v))
            .count()
    };
    let held: Vec<_> = c
        .effects
        .iter()
        .filter(|x| x.status == nudge::model::Status::HeldOut)
        .collect();
    assert!((150..=210).contains(&arm("A")), "A: {}", arm("A"));
    assert!((150..=210).contains(&arm("B")), "B: {}", arm("B"));
    assert!((20..=60).contains(&held.len()), "held out: {}", held.len());
    assert!(held.iter().all(|x| x.variant.is_none()));
    assert_eq!(arm("A") + arm("B") + held.len(), 400);
    // The arms' coupons match their variant.
    for x in &c.effects {
        match x.variant.as_deref() {
            Some("A") => assert_eq!(x.discount.as_ref().map(|d| d.to_string()), Some("6".into())),
            Some("B") => assert_eq!(
                x.discount.as_ref().map(|d| d.to_string()),
                Some("10".into())
            ),
            _ => {}
        }
    }
    // Only the member the condition left out reaches the fallback.
    let fallback: Vec<_> = c.effects.iter().filter(|x| x.rule == "fallback").collect();
    assert_eq!(fallback.len(), 1);
    assert_eq!(fallback[0].member, "x");
    // The budget is charged each sent arm's own discount.
    let spent: i64 = (arm("A") * 6 + arm("B") * 10) as i64;
    let used = e.budgets(day("2026-01-01"));
    assert_eq!(
        used.iter()
            .find(|(r, _, _)| r == "test")
            .map(|(_, u, _)| u.to_string()),
        Some(spent.to_string())
    );
}

/// Changing an experiment's holdout (arms kept in proportion) moves nobody
/// from one arm to the other: only members moving into or out of the
/// holdout change.
#[test]
fn a_new_holdout_moves_nobody_between_arms() {
    let arms = |holdout: u32| {
        let arm = (100 - holdout) / 2;
        let mut e = engine(&format!(
            "rule \"test\" on purchase variant \"A\" {arm}% then tag \"a\" variant \"B\" {arm}% then tag \"b\" holdout {holdout}%"
        ));
        let s = e.schema.clone();
        let evs: Vec<_> = (0..400)
            .map(|i| purchase(&s, &format!("e{i}"), &format!("m{i}"), "2026-01-01", 1.0))
            .collect();
        let c = e.process(&evs).expect("process");
        c.effects
            .into_iter()
            .filter_map(|x| x.variant.map(|v| (x.member, v)))
            .collect::<std::collections::HashMap<_, _>>()
    };
    let (ten, twenty) = (arms(10), arms(20));
    let both: Vec<_> = twenty.keys().filter(|m| ten.contains_key(*m)).collect();
    assert!(both.len() > 250, "{}", both.len());
    let moved = both.iter().filter(|m| ten[**m] != twenty[**m]).count();
    assert_eq!(moved, 0, "members treated under both holdouts changed arm");
}

/// `explain` says which arm of an experiment a member is in, the arm the
/// member's firings carry.
#[test]
fn explain_names_the_members_arm() {
    let mut e = engine(
        "rule \"test\" on purchase variant \"A\" 50% then tag \"a\" variant \"B\" 50% then tag \"b\"",
    );
    let s = e.schema.clone();
    let rules = e.rules.clone();
    for m in ["m1", "m2", "m3", "m4"] {
        let c = e
            .process(&[purchase(&s, &format!("e{m}"), m, "2026-01-01", 1.0)])
            .expect("process");
        let arm = c.effects[0].variant.clone().expect("variant");
        let rec = e.member(m).expect("read").expect("member");
        let x =
            nudge::sim::explain::explain(&s, &rules, None, m, &rec, day("2026-01-02"), None, None)
                .expect("explain");
        assert!(
            x.rules[0]
                .now
                .ends_with(&format!("the member is in variant {arm})")),
            "{}",
            x.rules[0].now
        );
    }
}

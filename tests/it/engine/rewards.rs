//! Computed rewards, the wallet and the points mall through the engine:
//! a voucher for another member, the wallet in conditions, stock exact
//! across a restart, and `explain` on a voucher worth nothing.

use super::*;

const MALL: &str = r#"
timezone: UTC
tiers: [bronze, silver]
events:
  purchase:
    amount: money
    friend: string?
  order_reward:
    reward: string
rewards:
  lamp: { points: 10, stock: 1 }
"#;

fn order(s: &Schema, id: &str, member: &str) -> Event {
    event_from_json(
        s,
        json!({"id": id, "type": "order_reward", "member": member, "at": "2026-01-02T12:00:00Z", "reward": "lamp"}),
    )
    .expect("event")
}

#[test]
fn a_voucher_for_a_friend_arrives_as_the_friends_coupon() {
    let (s, r) = build(
        MALL,
        "rule \"gift\" on purchase when event.friend is not null then send voucher event.amount * 10% to event.friend",
    );
    let mut e = Engine::new(s.clone(), r, SledStore::temporary().expect("store")).expect("engine");
    let ev = event_from_json(
        &s,
        json!({"id": "1", "type": "purchase", "member": "giver", "at": "2026-01-01T12:00:00Z", "amount": 55.55, "friend": "pal"}),
    )
    .expect("event");
    let c = e.process(&[ev]).expect("process");
    assert_eq!(summary(&c.effects), ["gift pal event:1 coupon 0-5.56 sent"]);
    assert_eq!(c.effects[0].from.as_deref(), Some("giver"));
}

#[test]
fn the_wallet_is_a_member_field_rules_read() {
    let mut e = {
        let (s, r) = build(
            MALL,
            "rule \"top\" on purchase priority 1 then credit wallet event.amount\n\
             rule \"rich\" on purchase when wallet >= 10 then tag \"rich\"",
        );
        Engine::new(s, r, SledStore::temporary().expect("store")).expect("engine")
    };
    let s = e.schema.clone();
    let c = e
        .process(&[
            purchase(&s, "1", "m", "2026-01-01", 6.0),
            purchase(&s, "2", "m", "2026-01-02", 6.0),
        ])
        .expect("process");
    assert_eq!(
        summary(&c.effects),
        [
            "top m event:1 wallet  sent",
            "top m event:2 wallet  sent",
            "rich m event:2 tag rich sent"
        ]
    );
    assert_eq!(
        e.member("m").expect("read").expect("m").wallet.to_string(),
        "12"
    );
}

#[test]
fn stock_is_exact_across_a_restart() {
    let (s, r) = build(
        MALL,
        "rule \"points\" on purchase then award points 100\nrule \"mall\" on order_reward then redeem reward event.reward",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("data");
    let mut e = engine_at(&path, &s, &r);
    e.process(&[
        purchase(&s, "p1", "a", "2026-01-01", 1.0),
        purchase(&s, "p2", "b", "2026-01-01", 1.0),
    ])
    .expect("process");
    let c = e.process(&[order(&s, "o1", "a")]).expect("process");
    assert_eq!(c.effects[0].status, nudge::model::Status::Sent);
    assert_eq!(e.member("a").expect("read").expect("a").points, 90);
    drop(e);
    let mut e = engine_at(&path, &s, &r);
    let c = e.process(&[order(&s, "o2", "b")]).expect("process");
    assert_eq!(c.effects[0].status, nudge::model::Status::Refused);
    assert_eq!(c.effects[0].reason.as_deref(), Some("out_of_stock"));
    assert_eq!(e.member("b").expect("read").expect("b").points, 100);
}

#[test]
fn explain_says_when_a_voucher_comes_to_nothing() {
    let (s, r) = build(
        MALL,
        "rule \"back\" on tick when points >= 0 then send voucher points * 0.1%",
    );
    let rec = nudge::model::MemberRecord {
        points: 4,
        ..Default::default()
    };
    let x = nudge::sim::explain::explain(&s, &r, None, "m", &rec, day("2026-01-01"), None, None)
        .expect("explain");
    assert!(
        x.rules[0]
            .now
            .ends_with("but its voucher comes to 0.00: nothing is sent"),
        "{}",
        x.rules[0].now
    );
}

/// Regression: a gift card credited to a friend was applied after every
/// other event of the batch, so the friend's payment later in the same
/// request was refused. A relay now applies right after its cause.
#[test]
fn a_gift_card_pays_for_the_friends_next_purchase_in_the_same_batch() {
    let config = MALL.replace(
        "  order_reward:\n",
        "  gift:\n    friend: string\n  pay:\n    amount: money\n  order_reward:\n",
    );
    let (s, r) = build(
        &config,
        "rule \"card\" on gift then credit wallet 100 to event.friend\nrule \"pay\" on pay then debit wallet event.amount",
    );
    let mut e = Engine::new(s.clone(), r, SledStore::temporary().expect("store")).expect("engine");
    let ev = |v: serde_json::Value| event_from_json(&s, v).expect("event");
    let c = e
        .process(&[
            ev(json!({"id": "g", "type": "gift", "member": "giver", "at": "2026-01-01T04:00:00Z", "friend": "pal"})),
            ev(json!({"id": "p", "type": "pay", "member": "pal", "at": "2026-01-01T05:00:00Z", "amount": 60})),
        ])
        .expect("process");
    let statuses: Vec<_> = c
        .effects
        .iter()
        .map(|x| {
            (
                x.rule.as_str(),
                x.status,
                x.balance.as_ref().map(|b| b.to_string()),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("card", Status::Sent, Some("100".to_string())),
            ("pay", Status::Sent, Some("40".to_string()))
        ]
    );
}

//! Uplift per experiment arm: each arm against the holdout and against the
//! first arm, from known firings and purchases.

use nudge::model::Effect;
use nudge::sim::backtest::{Purchase, uplift};

fn effect(member: &str, status: &str, variant: Option<&str>) -> Effect {
    let mut v = serde_json::json!({
        "key": member, "at": "2026-01-01T00:00:00Z", "member": member, "rule": "test",
        "ruleset": "", "trigger": "tick:2026-01-01", "action": "coupon", "status": status,
    });
    if let Some(x) = variant {
        v["variant"] = x.into();
    }
    serde_json::from_value(v).expect("effect")
}

fn purchase(member: &str, day: u32, amount: i64) -> Purchase {
    Purchase {
        member: member.into(),
        at: format!("2026-01-{day:02}T12:00:00Z").parse().expect("time"),
        amount: amount.into(),
    }
}

#[test]
fn each_arm_is_measured_against_the_holdout_and_the_first_arm() {
    let mut effects = Vec::new();
    let mut purchases = Vec::new();
    // 10 members per arm and 10 held out. A: 6 buy 10 each; B: 3 buy 20
    // each; held out: 2 buy 10 each, and one buys after the window.
    for i in 0..10 {
        let (a, b, h) = (format!("a{i}"), format!("b{i}"), format!("h{i}"));
        effects.push(effect(&a, "sent", Some("A")));
        effects.push(effect(&b, "sent", Some("B")));
        effects.push(effect(&h, "held_out", None));
        if i < 6 {
            purchases.push(purchase(&a, 5, 10));
        }
        if i < 3 {
            purchases.push(purchase(&b, 5, 20));
        }
        if i < 2 {
            purchases.push(purchase(&h, 5, 10));
        }
    }
    purchases.push(purchase("h9", 31, 1000));
    let order = |arms: &[&str]| {
        [(
            "test".to_string(),
            arms.iter().map(|a| a.to_string()).collect(),
        )]
        .into_iter()
        .collect()
    };
    let us = uplift(&effects, &purchases, 14, &order(&["A", "B"]));
    assert_eq!(us.len(), 1);
    let u = &us[0];
    assert_eq!((u.treated.members, u.held_out.members), (20, 10));
    assert_eq!((u.treated.converted, u.held_out.converted), (9, 2));
    let names: Vec<&str> = u.arms.iter().map(|a| a.variant.as_str()).collect();
    assert_eq!(names, ["A", "B"]);
    let (a, b) = (&u.arms[0], &u.arms[1]);
    assert_eq!((a.group.members, a.group.converted), (10, 6));
    assert_eq!((b.group.members, b.group.converted), (10, 3));
    // A converts 60% against 20%: +40 points; B spends 6 a member against 2.
    assert!((a.conversion_diff.value - 0.4).abs() < 1e-9);
    assert!(a.conversion_diff.low > 0.0, "{:?}", a.conversion_diff);
    assert!((b.revenue_diff.value - 4.0).abs() < 1e-9);
    // B against A: -30 points of conversion, same revenue per member.
    assert_eq!(u.between.len(), 1);
    assert_eq!(
        (u.between[0].variant.as_str(), u.between[0].base.as_str()),
        ("B", "A")
    );
    assert!((u.between[0].conversion_diff.value + 0.3).abs() < 1e-9);
    assert!(u.between[0].revenue_diff.value.abs() < 1e-9);
    assert!(u.between[0].conversion_diff.low < u.between[0].conversion_diff.value);
    // Arms come in the order the rule writes them, not by name.
    let us = uplift(&effects, &purchases, 14, &order(&["B", "A"]));
    let names: Vec<&str> = us[0].arms.iter().map(|a| a.variant.as_str()).collect();
    assert_eq!(names, ["B", "A"]);
    assert_eq!(
        (
            us[0].between[0].variant.as_str(),
            us[0].between[0].base.as_str()
        ),
        ("A", "B")
    );
}

//! `explain`: each test of a rule with its values, and what stopped it.

use crate::engine::*;

#[test]
fn explain_shows_each_test_with_its_values_and_what_stopped_a_rule() {
    let rules = r#"
rule "late silver" on tick when days_since_last_purchase > cycle * 1.5 and tier >= silver then send coupon 30-6
rule "thanks" on purchase then award points 1 limit 2 per 30d
rule "big" on purchase then tag "big" group "g"
rule "bigger" on purchase then tag "bigger" group "g"
"#;
    let (s, r) = build(CONFIG, rules);
    let mut e =
        Engine::new(s.clone(), r.clone(), SledStore::temporary().expect("store")).expect("engine");
    for (i, date) in ["2026-01-01", "2026-01-11", "2026-01-21"]
        .iter()
        .enumerate()
    {
        e.process(&[purchase(&s, &format!("p{i}"), "m", date, 5.0)])
            .expect("process");
    }
    let rec = e.member("m").expect("read").expect("m");
    let x = nudge::sim::explain::explain(&s, &r, None, "m", &rec, day("2026-02-10"), None, None)
        .expect("explain");
    let late = &x.rules[0];
    assert_eq!(late.rule, "late silver");
    assert_eq!(late.result, Some(false));
    let tests: Vec<(&str, &str, Option<bool>)> = late
        .tests
        .iter()
        .map(|t| (t.text.as_str(), t.values.as_str(), t.result))
        .collect();
    assert_eq!(
        tests,
        [
            (
                "days_since_last_purchase > cycle * 1.5",
                "20 > 15",
                Some(true)
            ),
            ("tier >= silver", "bronze >= silver", Some(false)),
        ]
    );
    let history = |name: &str| -> Vec<String> {
        x.rules
            .iter()
            .find(|r| r.rule == name)
            .expect("rule")
            .history
            .iter()
            .map(|(d, w)| format!("{d} {w}"))
            .collect()
    };
    assert_eq!(
        history("thanks"),
        [
            "2026-01-01 fired",
            "2026-01-11 fired",
            "2026-01-21 stopped by its limit"
        ]
    );
    let stopped = "stopped: another rule of its group fired";
    assert_eq!(
        history("bigger"),
        ["2026-01-01", "2026-01-11", "2026-01-21"].map(|d| format!("{d} {stopped}"))
    );
    let thanks = |at: &str| {
        let x =
            nudge::sim::explain::explain(&s, &r, None, "m", &rec, day(at), Some("thanks"), None);
        x.expect("explain").rules[0].now.clone()
    };
    assert!(
        thanks("2026-01-25").contains("limit is reached (2 firings"),
        "{}",
        thanks("2026-01-25")
    );
    assert!(
        thanks("2026-02-10").starts_with("true: it fires"),
        "{}",
        thanks("2026-02-10")
    );
    // One rule, by name; a wrong name gets a hint.
    let one = nudge::sim::explain::explain(
        &s,
        &r,
        None,
        "m",
        &rec,
        day("2026-02-10"),
        Some("big"),
        None,
    )
    .expect("one");
    assert_eq!(one.rules.len(), 1);
    let err = nudge::sim::explain::explain(
        &s,
        &r,
        None,
        "m",
        &rec,
        day("2026-02-10"),
        Some("thank"),
        None,
    );
    assert!(
        err.expect_err("unknown")
            .to_string()
            .contains("did you mean `thanks`")
    );
}

/// A test written as one (`is not null`, `not in`, `between`) is shown
/// as one, with its own result: `is not null` once showed the result of
/// `is null` under its text, and `between` its two halves each under the
/// whole text.
#[test]
fn a_test_written_as_one_is_shown_with_its_own_result() {
    let rules = r#"
rule "known" on tick when cycle is not null then tag "known"
rule "not vip" on tick when tier not in [gold] then tag "nv"
rule "in range" on tick when days_since_last_purchase between 5 and 10 then tag "r"
rule "out of range" on tick when days_since_last_purchase not between 5 and 10 then tag "o"
"#;
    let (s, r) = build(CONFIG, rules);
    let mut e =
        Engine::new(s.clone(), r.clone(), SledStore::temporary().expect("store")).expect("engine");
    e.process(&[purchase(&s, "p0", "m", "2026-01-01", 5.0)])
        .expect("process");
    let rec = e.member("m").expect("read").expect("m");
    let x = nudge::sim::explain::explain(&s, &r, None, "m", &rec, day("2026-01-21"), None, None)
        .expect("explain");
    type Shown<'a> = (Option<bool>, Vec<(&'a str, &'a str, Option<bool>)>);
    let shown: Vec<Shown> = x
        .rules
        .iter()
        .map(|rule| {
            let tests = rule
                .tests
                .iter()
                .map(|t| (t.text.as_str(), t.values.as_str(), t.result))
                .collect();
            (rule.result, tests)
        })
        .collect();
    assert_eq!(
        shown,
        [
            (
                Some(false),
                vec![("cycle is not null", "cycle = null", Some(false))]
            ),
            (
                Some(true),
                vec![("tier not in [gold]", "tier = bronze", Some(true))]
            ),
            (
                Some(false),
                vec![(
                    "days_since_last_purchase between 5 and 10",
                    "days_since_last_purchase = 20",
                    Some(false)
                )]
            ),
            (
                Some(true),
                vec![(
                    "days_since_last_purchase not between 5 and 10",
                    "days_since_last_purchase = 20",
                    Some(true)
                )]
            ),
        ]
    );
}

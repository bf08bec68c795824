//! Folding events into member state: purchase cycle, days since the last
//! purchase, windowed aggregates and their bounded state, calendar days in
//! the configured time zone across DST.

use super::*;

#[test]
fn cycle_and_days_since_last_purchase() {
    let mut e = engine(
        "rule \"probe\" on tick when cycle == 10 and days_since_last_purchase == 16 and orders == 3 and spend == 60.30 and avg_order == 20.10 then tag \"probe\"",
    );
    let s = e.schema.clone();
    let evs = [
        purchase(&s, "1", "m", "2026-01-01", 20.1),
        purchase(&s, "2", "m", "2026-01-11", 20.1),
        purchase(&s, "3", "m", "2026-01-21", 20.1),
    ];
    e.process(&evs).expect("process");
    assert!(e.tick(day("2026-02-05")).expect("tick").is_empty());
    let fx = e.tick(day("2026-02-06")).expect("tick");
    assert_eq!(summary(&fx), ["probe m tick:2026-02-06 tag probe sent"]);
    let rec = e.member("m").expect("read").expect("member");
    assert_eq!(
        (rec.first_purchase, rec.last_purchase, rec.purchase_days),
        (Some(day("2026-01-01")), Some(day("2026-01-21")), 3)
    );
}

#[test]
fn cycle_counts_distinct_days() {
    // Two orders on one day are one purchase day.
    let mut e =
        engine("rule \"probe\" on purchase when cycle == 5 and orders == 3 then tag \"probe\"");
    let s = e.schema.clone();
    let evs = [
        purchase(&s, "1", "m", "2026-01-01", 1.0),
        purchase(&s, "2", "m", "2026-01-01", 1.0),
        purchase(&s, "3", "m", "2026-01-06", 1.0),
    ];
    let c = e.process(&evs).expect("process");
    assert_eq!(summary(&c.effects), ["probe m event:3 tag probe sent"]);
}

#[test]
fn windowed_aggregates_and_their_bounded_state() {
    let mut e = engine(
        "rule \"three in 30d\" on purchase when count(purchase, 30d) == 3 and sum(purchase.amount, 30d) > 29 then tag \"three\"\n\
         rule \"milk\" on purchase when count(purchase where event.category == \"milk\", 60d) >= 2 then tag \"milk\"",
    );
    let s = e.schema.clone();
    let mk = |id: &str, date: &str, cat: &str| {
        event_from_json(&s, json!({"id": id, "type": "purchase", "member": "m", "at": format!("{date}T12:00:00Z"), "amount": 10, "category": cat})).expect("event")
    };
    // Days 0, 10, 20 -> 3 in the window; day 35 -> (5, 35] holds 10, 20, 35.
    let c = e
        .process(&[
            mk("a", "2026-01-01", "milk"),
            mk("b", "2026-01-11", "tea"),
            mk("c", "2026-01-21", "milk"),
            mk("d", "2026-02-05", "tea"),
        ])
        .expect("process");
    assert_eq!(
        summary(&c.effects),
        [
            "three in 30d m event:c tag three sent",
            "milk m event:c tag milk sent"
        ]
    );
    // A purchase every day for three years keeps at most a window of buckets.
    let mut evs = Vec::new();
    for i in 0..1000 {
        let date = nudge::base::time::day_string(day("2026-03-01") + i);
        evs.push(mk(&format!("x{i}"), &date, "tea"));
    }
    e.process(&evs).expect("process");
    let rec = e.member("m").expect("read").expect("member");
    for agg in &rec.aggregates {
        assert!(agg.buckets.len() <= 60, "{} buckets", agg.buckets.len());
    }
    assert!(
        rec.encode().len() < 4096,
        "record is {} bytes",
        rec.encode().len()
    );
}

#[test]
fn calendar_days_follow_the_time_zone_across_dst() {
    let (s, _) = build(CONFIG, "when tier >= silver then tag \"x\"");
    let at = |t: &str| t.parse::<jiff::Timestamp>().expect("ts");
    // 23:30 UTC on 28 March is 00:30 on 29 March in Berlin (CET, +1).
    assert_eq!(
        clock::local_day(&s, at("2026-03-28T23:30:00Z")),
        day("2026-03-29")
    );
    assert_eq!(
        clock::local_day(&s, at("2026-03-28T22:30:00Z")),
        day("2026-03-28")
    );
    // After the switch to CEST (+2) on 29 March, 22:30 UTC is already 30 March.
    assert_eq!(
        clock::local_day(&s, at("2026-03-29T22:30:00Z")),
        day("2026-03-30")
    );
    assert_eq!(
        clock::tick_instant(&s, day("2026-03-28")),
        at("2026-03-28T08:00:00Z")
    );
    assert_eq!(
        clock::tick_instant(&s, day("2026-03-30")),
        at("2026-03-30T07:00:00Z")
    );
    // A tick time that does not exist on the DST day runs after the jump.
    let (s2, _) = build(
        &CONFIG.replace("\"09:00\"", "\"02:30\""),
        "when tier >= silver then tag \"x\"",
    );
    assert_eq!(
        clock::tick_instant(&s2, day("2026-03-29")),
        at("2026-03-29T01:30:00Z")
    );
    // days_since_last_purchase counts calendar days, not 24-hour periods.
    let mut e =
        engine("rule \"probe\" on tick when days_since_last_purchase == 1 then tag \"probe\"");
    let ev = event_from_json(&e.schema, json!({"id": "1", "type": "purchase", "member": "m", "at": "2026-03-28T22:30:00Z", "amount": 1})).expect("event");
    e.process(&[ev]).expect("process");
    assert_eq!(
        summary(&e.tick(day("2026-03-29")).expect("tick")),
        ["probe m tick:2026-03-29 tag probe sent"]
    );
}

/// Purchases of earlier days that arrive after a later one (a till that
/// was offline, an export sent late) count as the purchase days they are:
/// within the dedup window, the record comes out as if they had come in
/// order. A second purchase on a day already counted is not a new day.
#[test]
fn late_purchases_within_the_window_fold_as_if_in_order() {
    let mut e = engine("rule \"probe\" on tick when cycle == 1 then tag \"probe\"");
    let s = e.schema.clone();
    let first = day("2026-03-01") - 29;
    e.process(&[purchase(&s, "live", "m", "2026-03-01", 10.0)])
        .expect("process");
    // The 29 days before, oldest first, then one of them again.
    let mut late: Vec<_> = (0..29)
        .map(|i| {
            let date = nudge::base::time::day_string(first + i);
            purchase(&s, &format!("late{i}"), "m", &date, 1.0)
        })
        .collect();
    let again = nudge::base::time::day_string(first + 3);
    late.push(purchase(&s, "again", "m", &again, 1.0));
    let c = e.process(&late).expect("process");
    assert!(
        c.outcomes
            .iter()
            .all(|o| matches!(o, EventOutcome::Applied { .. })),
        "{:?}",
        c.outcomes
    );
    let rec = e.member("m").expect("read").expect("member");
    assert_eq!(
        (
            rec.first_purchase,
            rec.last_purchase,
            rec.purchase_days,
            rec.orders
        ),
        (Some(first), Some(day("2026-03-01")), 30, 31)
    );
    assert_eq!(rec.joined, first, "first seen on its first purchase");
    // Cycle 29 days / 29 gaps: the rule reading it fires on the next tick.
    let fx = e.tick(day("2026-03-02")).expect("tick");
    assert_eq!(summary(&fx), ["probe m tick:2026-03-02 tag probe sent"]);
}

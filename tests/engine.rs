//! The engine through the library: state folding (cycle, windows, time
//! zones across DST), firing semantics with a simulated clock, dedup,
//! restarts, storage errors, and the file sink.

use nudge::engine::{Engine, Outcome, clock};
use nudge::model::{Effect, Event, event_from_json};
use nudge::schema::Schema;
use nudge::store::{SledStore, Store, StoreError, WriteSet};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;

const CONFIG: &str = r#"
timezone: Europe/Berlin
tiers: [bronze, silver, gold]
attributes:
  city: string
events:
  purchase:
    amount: money
    category: string?
  signup:
    city: string?
schedule:
  daily_at: "09:00"
channels:
  sms: {}
"#;

fn build(config: &str, rules: &str) -> (Arc<Schema>, Arc<nudge::lang::RuleSet>) {
    let l = nudge::load::load_texts(config, &[("t.rules", rules)]);
    let errors: Vec<String> = l
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.message.clone())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    (
        Arc::new(l.schema.expect("schema")),
        Arc::new(l.rules.expect("rules")),
    )
}

fn engine(rules: &str) -> Engine<SledStore> {
    let (s, r) = build(CONFIG, rules);
    Engine::new(s, r, SledStore::temporary().expect("store")).expect("engine")
}

/// An engine on the data folder at `path` (a restart when opened again).
fn engine_at(path: &Path, s: &Arc<Schema>, r: &Arc<nudge::lang::RuleSet>) -> Engine<SledStore> {
    Engine::new(s.clone(), r.clone(), SledStore::open(path).expect("open")).expect("engine")
}

fn day(date: &str) -> i32 {
    nudge::lang::parse::parse_date(date).expect("date")
}

/// A purchase at noon UTC on `date`.
fn purchase(schema: &Schema, id: &str, member: &str, date: &str, amount: f64) -> Event {
    event_from_json(schema, json!({"id": id, "type": "purchase", "member": member, "at": format!("{date}T12:00:00Z"), "amount": amount})).expect("event")
}

fn summary(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .map(|e| {
            let what = e
                .coupon
                .clone()
                .or(e.tag.clone())
                .or(e.tier.clone())
                .or(e.points.map(|p| p.to_string()))
                .unwrap_or_default();
            format!(
                "{} {} {} {} {} {}",
                e.rule, e.member, e.trigger, e.action, what, e.status
            )
        })
        .collect()
}

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
        let date = nudge::model::day_string(day("2026-03-01") + i);
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
        .filter(|x| x.status == "held_out")
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
        .filter(|x| x.status == "held_out")
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
        [Outcome::Applied { effects: 1 }, Outcome::Duplicate]
    );
    let c = e.process(std::slice::from_ref(&ev)).expect("process");
    assert_eq!(c.outcomes, [Outcome::Duplicate]);
    let other = purchase(&s, "1", "m", "2026-01-01", 99.0);
    let c = e.process(&[other]).expect("process");
    assert!(matches!(c.outcomes[0], Outcome::Rejected(_)));
    assert!(c.effects.is_empty());
    assert_eq!(e.member("m").expect("read").expect("member").points, 10);
}

#[test]
fn a_restart_continues_where_it_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = "rule \"points\" on purchase then award points floor(event.amount)";
    let (s, r) = build(CONFIG, rules);
    let evs: Vec<Event> = (0..50)
        .map(|i| {
            purchase(
                &s,
                &format!("e{i}"),
                &format!("m{}", i % 7),
                "2026-01-01",
                3.0,
            )
        })
        .collect();
    {
        let mut e = engine_at(dir.path(), &s, &r);
        e.process(&evs[..30]).expect("process");
    }
    let mut e = engine_at(dir.path(), &s, &r);
    let before: Vec<_> = (0..7)
        .map(|m| e.member(&format!("m{m}")).expect("read"))
        .collect();
    let c = e.process(&evs[..30]).expect("redeliver");
    assert!(c.outcomes.iter().all(|o| *o == Outcome::Duplicate));
    assert!(c.effects.is_empty());
    let after: Vec<_> = (0..7)
        .map(|m| e.member(&format!("m{m}")).expect("read"))
        .collect();
    assert_eq!(before, after);
    e.process(&evs[30..]).expect("rest");
    let total: i64 = (0..7)
        .map(|m| {
            e.member(&format!("m{m}"))
                .expect("read")
                .expect("member")
                .points
        })
        .sum();
    assert_eq!(total, 150);
    // The outbox kept counting across the restart: 50 effects, 50 entries.
    assert_eq!(e.outbox(0, 1000).expect("outbox").len(), 50);
    assert_eq!(
        e.store()
            .meta_u64(nudge::engine::MEMBERS_KEY)
            .expect("meta"),
        7,
        "members counted once each"
    );
}

#[test]
fn a_second_process_on_the_same_folder_is_told_it_is_locked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = SledStore::open(dir.path()).expect("open");
    match SledStore::open(dir.path()) {
        Err(StoreError::Locked { .. }) => {}
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("opened a locked folder"),
    }
}

/// A data folder that says it was written in store format `version`.
fn folder_of_format(version: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = SledStore::open(dir.path()).expect("open");
    s.commit(WriteSet {
        meta: vec![("schema_version".into(), version.to_le_bytes().to_vec())],
        ..WriteSet::default()
    })
    .expect("commit");
    dir
}

#[test]
fn a_folder_from_a_newer_nudge_is_refused() {
    let dir = folder_of_format(99);
    match SledStore::open(dir.path()) {
        Err(e @ StoreError::NewerVersion { .. }) => assert!(e.to_string().contains("newer nudge")),
        Err(other) => panic!("expected NewerVersion, got {other}"),
        Ok(_) => panic!("opened a newer folder"),
    }
}

#[test]
fn the_file_sink_writes_each_effect_once_even_after_a_torn_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut e = engine("rule \"points\" on purchase then award points 1");
    let s = e.schema.clone();
    let file = dir.path().join("out/effects.ndjson");
    e.process(&[
        purchase(&s, "1", "a", "2026-01-01", 1.0),
        purchase(&s, "2", "b", "2026-01-01", 1.0),
    ])
    .expect("process");
    assert_eq!(
        nudge::sinks::drain_to_file(&mut e, &file).expect("drain"),
        2
    );
    assert_eq!(
        nudge::sinks::drain_to_file(&mut e, &file).expect("drain"),
        0
    );
    // A crash after writing but before committing leaves bytes past the
    // committed length: they are cut and the entries written again.
    e.process(&[purchase(&s, "3", "c", "2026-01-02", 1.0)])
        .expect("process");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"torn\":"))
        .expect("tear");
    assert_eq!(
        nudge::sinks::drain_to_file(&mut e, &file).expect("drain"),
        1
    );
    let text = std::fs::read_to_string(&file).expect("read");
    let keys: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["key"].to_string())
        .collect();
    assert_eq!(keys.len(), 3);
    let mut unique = keys.clone();
    unique.dedup();
    assert_eq!(unique.len(), 3);
    // Without a sink in the config, nothing is released.
    nudge::sinks::release(&mut e).expect("release");
    assert_eq!(e.outbox(0, 10).expect("outbox").len(), 3);
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
                    &nudge::model::day_string(day("2026-01-01") + i * 3),
                    7.5,
                )
            })
            .collect();
        let fx = nudge::replay::replay(&mut e, evs, Some(day("2026-12-31")), &mut |_| {})
            .expect("replay")
            .effects;
        let mut buf = Vec::new();
        for f in &fx {
            nudge::sinks::write_line(&mut buf, f);
        }
        buf
    };
    let a = run();
    assert!(!a.is_empty());
    assert_eq!(a, run());
    let _ = Path::new("unused");
}

#[test]
fn the_daily_schedule_follows_the_injected_clock() {
    use nudge::engine::clock::{CatchUp, SimClock};
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, r) = build(
        CONFIG,
        "rule \"probe\" on tick when days_since_last_purchase >= 0 then tag \"seen\"",
    );
    let at = |t: &str| t.parse::<jiff::Timestamp>().expect("ts");
    let clock = SimClock::new(at("2026-01-05T07:00:00Z")); // 08:00 in Berlin: before the 09:00 tick
    {
        let mut e = engine_at(dir.path(), &s, &r);
        e.process(&[purchase(&s, "1", "m", "2026-01-04", 1.0)])
            .expect("process");
        let days = e
            .run_due_ticks(&clock, CatchUp::Once, &mut |_| {})
            .expect("ticks");
        assert_eq!(
            days,
            [day("2026-01-04")],
            "the first run ticks the latest due day"
        );
        assert!(
            e.run_due_ticks(&clock, CatchUp::Once, &mut |_| {})
                .expect("ticks")
                .is_empty(),
            "nothing is due twice"
        );
        clock.set(at("2026-01-05T08:00:00Z"));
        assert_eq!(
            e.run_due_ticks(&clock, CatchUp::Once, &mut |_| {})
                .expect("ticks"),
            [day("2026-01-05")]
        );
    }
    // Down for a week: after a restart the schedule catches up once.
    clock.set(at("2026-01-12T12:00:00Z"));
    let mut e = engine_at(dir.path(), &s, &r);
    assert_eq!(e.last_tick().expect("meta"), Some(day("2026-01-05")));
    assert_eq!(
        e.run_due_ticks(&clock, CatchUp::Once, &mut |_| {})
            .expect("ticks"),
        [day("2026-01-12")]
    );
    // Replay-style catch-up runs every missed day.
    clock.set(at("2026-01-15T12:00:00Z"));
    assert_eq!(
        e.run_due_ticks(&clock, CatchUp::EveryDay, &mut |_| {})
            .expect("ticks"),
        [day("2026-01-13"), day("2026-01-14"), day("2026-01-15")]
    );
}

#[test]
fn coupon_codes_are_hmac_sha256_of_the_key() {
    // Computed independently: HMAC-SHA256("secret", "effect-key"), first 8
    // bytes big-endian, 12 Crockford base32 digits from the low bits.
    assert_eq!(
        nudge::engine::fire::coupon_code("secret", "effect-key"),
        "6G8R7KRNTJFD"
    );
    assert_ne!(
        nudge::engine::fire::coupon_code("other", "effect-key"),
        "6G8R7KRNTJFD"
    );
}

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
    let held = c.effects.iter().filter(|x| x.status == "held_out").count();
    assert!(
        (60..140).contains(&held),
        "{held} of 500 in a 20% control group"
    );
    for x in c.effects.iter().filter(|x| x.status == "held_out") {
        assert!(nudge::engine::fire::in_control_group(&s, &x.member));
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

#[test]
fn a_deferred_message_survives_a_restart_and_reaches_the_sink_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = CONFIG.replace("sms: {}", "sms: { quiet_hours: \"21:00-09:00\" }");
    let (s, r) = build(
        &config,
        "rule \"thanks\" on purchase then send message \"hi\" via sms",
    );
    // 23:00 in Berlin (22:00Z): quiet until 09:00 local, 08:00Z.
    let late = event_from_json(&s, json!({"id": "p", "type": "purchase", "member": "m", "at": "2026-01-05T22:00:00Z", "amount": 1})).expect("event");
    let file = dir.path().join("effects.ndjson");
    {
        let store = SledStore::open(&dir.path().join("data")).expect("open");
        let mut e = Engine::new(s.clone(), r.clone(), store).expect("engine");
        let c = e.process(&[late]).expect("process");
        assert_eq!(c.effects[0].status, "deferred");
        assert_eq!(
            c.effects[0].deliver_at.as_deref(),
            Some("2026-01-06T08:00:00Z")
        );
        nudge::sinks::drain_to_file(&mut e, &file).expect("drain");
        assert!(!e.deferred_due("2026-01-06T07:59:59Z".parse().expect("time")));
    }
    // Nothing reached the sink yet: a deferred record is not delivered.
    assert_eq!(std::fs::read_to_string(&file).expect("read"), "");
    let store = SledStore::open(&dir.path().join("data")).expect("reopen");
    let mut e = Engine::new(s, r, store).expect("engine");
    assert!(e.deferred_due("2026-01-06T08:00:00Z".parse().expect("time")));
    let early = e.release_deferred("2026-01-06T07:00:00Z".parse().expect("time"));
    assert!(early.expect("release").is_empty());
    let released = e
        .release_deferred("2026-01-06T10:00:00Z".parse().expect("time"))
        .expect("release");
    assert_eq!(summary(&released), ["thanks m event:p message  sent"]);
    assert_eq!(released[0].at, "2026-01-06T08:00:00Z");
    // Released once: a second release finds nothing.
    let again = e.release_deferred("2026-01-07T10:00:00Z".parse().expect("time"));
    assert!(again.expect("release").is_empty());
    nudge::sinks::drain_to_file(&mut e, &file).expect("drain");
    let text = std::fs::read_to_string(&file).expect("read");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("\"status\":\"sent\""), "{text}");
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
    let statuses: Vec<(String, String, Option<String>)> = c
        .effects
        .iter()
        .map(|x| (x.member.clone(), x.status.clone(), x.from.clone()))
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| s.1 == "sent").count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| s.1 == "held_out").count(),
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
                .meta_u64(nudge::engine::MEMBERS_KEY)
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
    assert_eq!(c.effects[0].action, "merge");
    assert_eq!(c.effects[0].value, Some(json!({"merged": "m2"})));
    let st = e.store();
    assert_eq!(st.meta_u64(nudge::engine::MEMBERS_KEY).expect("meta"), 1);
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

#[test]
fn a_limit_window_holds_across_a_restart_in_its_middle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, r) = build(
        CONFIG,
        "rule \"monthly\" on purchase then send coupon 30-6 limit 2 per 30d",
    );
    let open = || engine_at(dir.path(), &s, &r);
    let fired = |e: &mut Engine<SledStore>, id: &str, date: &str| {
        let c = e
            .process(&[purchase(&s, id, "m", date, 1.0)])
            .expect("process");
        c.effects.len()
    };
    {
        let mut e = open();
        assert_eq!(fired(&mut e, "1", "2026-01-01"), 1);
        assert_eq!(fired(&mut e, "2", "2026-01-10"), 1);
    }
    // Restarted in the middle of the window: the two firings still count.
    let mut e = open();
    assert_eq!(fired(&mut e, "3", "2026-01-20"), 0);
    assert_eq!(
        fired(&mut e, "4", "2026-01-30"),
        0,
        "01-01 is still inside (30 days)"
    );
    drop(e);
    let mut e = open();
    assert_eq!(
        fired(&mut e, "5", "2026-01-31"),
        1,
        "01-01 has left the window"
    );
    assert_eq!(
        fired(&mut e, "6", "2026-02-08"),
        0,
        "01-10 and 01-31 are inside"
    );
    assert_eq!(fired(&mut e, "7", "2026-02-09"), 1);
}

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
    let x =
        nudge::explain::explain(&s, &r, None, "m", &rec, day("2026-02-10"), None).expect("explain");
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
        let x = nudge::explain::explain(&s, &r, None, "m", &rec, day(at), Some("thanks"));
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
    let one = nudge::explain::explain(&s, &r, None, "m", &rec, day("2026-02-10"), Some("big"))
        .expect("one");
    assert_eq!(one.rules.len(), 1);
    let err = nudge::explain::explain(&s, &r, None, "m", &rec, day("2026-02-10"), Some("thank"));
    assert!(
        err.expect_err("unknown")
            .to_string()
            .contains("did you mean `thanks`")
    );
}

#[test]
fn a_folder_from_an_older_nudge_is_refused_with_what_to_do() {
    let dir = folder_of_format(1);
    match SledStore::open(dir.path()) {
        Err(e @ StoreError::OlderVersion { .. }) => {
            assert!(e.to_string().contains("ingest its events again"), "{e}")
        }
        Err(other) => panic!("expected OlderVersion, got {other}"),
        Ok(_) => panic!("opened an older folder"),
    }
}

#[test]
fn the_outbox_reads_across_batches_and_keeps_a_batch_until_all_of_it_is_delivered() {
    let s = SledStore::temporary().expect("store");
    let entry = |i: u64| (i, format!("e{i}").into_bytes());
    // Three commits: entries 0-2, 3-4, 5.
    for range in [0..3, 3..5, 5..6] {
        s.commit(WriteSet {
            outbox: range.map(entry).collect(),
            ..WriteSet::default()
        })
        .expect("commit");
    }
    let seqs = |from, limit| -> Vec<u64> {
        s.outbox(from, limit)
            .expect("read")
            .into_iter()
            .map(|(q, _)| q)
            .collect()
    };
    assert_eq!(seqs(0, 100), [0, 1, 2, 3, 4, 5]);
    assert_eq!(seqs(1, 3), [1, 2, 3]);
    assert_eq!(seqs(4, 100), [4, 5]);
    assert_eq!(s.outbox(4, 1).expect("read"), [(4, b"e4".to_vec())]);
    assert!(seqs(6, 10).is_empty());
    // Delivered below 4: the first batch goes; 3-4 stays (4 is not delivered).
    s.commit(WriteSet {
        delivered_below: Some(4),
        ..WriteSet::default()
    })
    .expect("release");
    assert_eq!(seqs(0, 100), [3, 4, 5]);
    s.commit(WriteSet {
        delivered_below: Some(6),
        ..WriteSet::default()
    })
    .expect("release");
    assert!(seqs(0, 100).is_empty());
}

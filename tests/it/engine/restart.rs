//! Restarts: the engine continues where it stopped (ticks, deferred
//! messages, limit windows), with the daily schedule on the injected clock.

use super::*;

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
    assert!(c.outcomes.iter().all(|o| *o == EventOutcome::Duplicate));
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
            .meta_u64(nudge::store::keys::MEMBERS)
            .expect("meta"),
        7,
        "members counted once each"
    );
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
        assert_eq!(c.effects[0].status, Status::Deferred);
        assert_eq!(
            c.effects[0].deliver_at.as_deref(),
            Some("2026-01-06T08:00:00Z")
        );
        nudge::outbox::drain_to_file(&mut e, &file).expect("drain");
        assert!(!e.deferred_due("2026-01-06T07:59:59Z".parse().expect("time")));
        assert_eq!(e.deferred_waiting(), 1, "counted as it commits");
    }
    // Nothing reached the sink yet: a deferred record is not delivered.
    assert_eq!(std::fs::read_to_string(&file).expect("read"), "");
    let store = SledStore::open(&dir.path().join("data")).expect("reopen");
    let mut e = Engine::new(s, r, store).expect("engine");
    assert_eq!(e.deferred_waiting(), 1, "counted from the store at open");
    assert!(e.deferred_due("2026-01-06T08:00:00Z".parse().expect("time")));
    let early = e.release_deferred("2026-01-06T07:00:00Z".parse().expect("time"));
    assert!(early.expect("release").is_empty());
    let released = e
        .release_deferred("2026-01-06T10:00:00Z".parse().expect("time"))
        .expect("release");
    assert_eq!(summary(&released), ["thanks m event:p message  sent"]);
    assert_eq!(released[0].at, "2026-01-06T08:00:00Z");
    assert_eq!(e.deferred_waiting(), 0, "released");
    // Released once: a second release finds nothing.
    let again = e.release_deferred("2026-01-07T10:00:00Z".parse().expect("time"));
    assert!(again.expect("release").is_empty());
    nudge::outbox::drain_to_file(&mut e, &file).expect("drain");
    let text = std::fs::read_to_string(&file).expect("read");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("\"status\":\"sent\""), "{text}");
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

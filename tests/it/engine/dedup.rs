//! The dedup window: a redelivery within `storage.dedup_window` (of event
//! time) is a duplicate, an event older than the window is refused, the
//! seen events of days past the window go from the member records (and
//! the markers of a folder of store format 3 from the store), and with no
//! sink the outbox keeps `storage.outbox_retention` days.

use super::*;

const STORAGE: &str = "storage:\n  dedup_window: 10d\n  outbox_retention: 3d\n";

/// The window's config (10 days) and one rule: a point a purchase.
fn one_point_a_purchase() -> (Arc<Schema>, Arc<nudge::lang::RuleSet>) {
    build(
        &format!("{CONFIG}{STORAGE}"),
        "rule \"p\" on purchase then award points 1",
    )
}

fn date(base: &str, plus: i32) -> String {
    nudge::base::time::day_string(day(base) + plus)
}

#[test]
fn a_redelivery_within_the_window_is_a_duplicate_and_older_events_are_refused() {
    let (s, r) = one_point_a_purchase();
    let mut e = Engine::new(s.clone(), r, SledStore::temporary().expect("store")).expect("engine");
    let first = purchase(&s, "e1", "m1", "2026-03-01", 5.0);
    e.process(std::slice::from_ref(&first)).expect("process");
    // Nine days later the first event comes again: within the window.
    let later = purchase(&s, "e2", "m1", "2026-03-10", 5.0);
    let c = e.process(&[later, first.clone()]).expect("process");
    assert_eq!(
        c.outcomes,
        [
            EventOutcome::Applied { effects: 1 },
            EventOutcome::Duplicate
        ]
    );
    // Once the newest event is 11 days past it, it is refused, not applied.
    let c = e
        .process(&[purchase(&s, "e3", "m2", "2026-03-12", 5.0), first])
        .expect("process");
    assert_eq!(c.outcomes[0], EventOutcome::Applied { effects: 1 });
    match &c.outcomes[1] {
        EventOutcome::Rejected(r @ nudge::engine::Rejected::TooOld { window: 10, .. }) => {
            let msg = r.to_string();
            assert!(
                msg.contains("\"e1\"") && msg.contains("2026-03-12"),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.member("m1").expect("read").expect("m1").points, 2);
    // A new event just inside the window is taken.
    let edge = purchase(&s, "e4", "m3", "2026-03-02", 5.0);
    let c = e.process(&[edge]).expect("process");
    assert_eq!(c.outcomes, [EventOutcome::Applied { effects: 1 }]);
}

#[test]
fn seen_events_past_the_window_go_and_recent_ones_stay_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, r) = one_point_a_purchase();
    {
        let mut e = engine_at(dir.path(), &s, &r);
        // 40 days of 5 new events a day, one batch a day.
        for d in 0..40 {
            let evs: Vec<Event> = (0..5)
                .map(|i| {
                    purchase(
                        &s,
                        &format!("d{d}-{i}"),
                        &format!("m{i}"),
                        &date("2026-01-01", d),
                        1.0,
                    )
                })
                .collect();
            e.process(&evs).expect("process");
        }
        // Day 39 is the newest: days before 29 are past the window. Each
        // member keeps the ids of its events of days 29 to 39.
        let seen: Vec<u64> = e
            .member("m4")
            .expect("read")
            .expect("m4")
            .seen
            .into_iter()
            .map(|s| s.id)
            .collect();
        let want: Vec<u64> = (29..40)
            .map(|d| nudge::model::SeenEvent::id_hash(&format!("d{d}-4")))
            .collect();
        assert_eq!(seen, want);
    }
    // After a restart the window still holds: a redelivery is a duplicate,
    // an event from day 20 is refused.
    let mut e = engine_at(dir.path(), &s, &r);
    let c = e
        .process(&[
            purchase(&s, "d35-1", "m1", &date("2026-01-01", 35), 1.0),
            purchase(&s, "d20-1", "m1", &date("2026-01-01", 20), 1.0),
        ])
        .expect("process");
    assert_eq!(c.outcomes[0], EventOutcome::Duplicate);
    assert!(matches!(
        c.outcomes[1],
        EventOutcome::Rejected(nudge::engine::Rejected::TooOld { .. })
    ));
    // A window raised later cannot bring back removed markers: day 20 is
    // still refused (it would be applied a second time), day 30 is not.
    drop(e);
    let (s, r) = build(
        &format!("{CONFIG}storage:\n  dedup_window: 100d\n"),
        "rule \"p\" on purchase then award points 1",
    );
    let mut e = engine_at(dir.path(), &s, &r);
    let c = e
        .process(&[
            purchase(&s, "d20-1", "m1", &date("2026-01-01", 20), 1.0),
            purchase(&s, "d30-1", "m1", &date("2026-01-01", 30), 1.0),
        ])
        .expect("process");
    match &c.outcomes[0] {
        EventOutcome::Rejected(r @ nudge::engine::Rejected::TooOld { .. }) => {
            let want = format!(
                "which starts at {} (UTC; where it started before the window was raised",
                date("2026-01-01", 29)
            );
            assert!(r.to_string().contains(&want), "{r}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.outcomes[1], EventOutcome::Duplicate);
}

#[test]
fn with_no_sink_the_outbox_keeps_its_retention_of_event_time() {
    let (s, r) = one_point_a_purchase();
    assert!(s.sinks.is_empty());
    let mut e = Engine::new(s.clone(), r, SledStore::temporary().expect("store")).expect("engine");
    for d in 0..10 {
        let ev = purchase(&s, &format!("e{d}"), "m1", &date("2026-05-01", d), 1.0);
        e.process(&[ev]).expect("process");
        nudge::outbox::trim_delivered(&mut e).expect("trim");
    }
    // The newest event is of day 9: entries of days 6 to 9 stay.
    let kept: Vec<String> = e
        .outbox(0, 100)
        .expect("outbox")
        .into_iter()
        .map(|(_, x)| x.at[..10].to_string())
        .collect();
    assert_eq!(
        kept,
        (6..10).map(|d| date("2026-05-01", d)).collect::<Vec<_>>()
    );
}

/// The store stays bounded under steady traffic: 60 days of new events
/// (unique ids, daily ticks, no sink) leave as many entries as 30 days do,
/// within 10%: seen events, outbox entries and due index entries go as
/// fast as they come once the windows are full.
#[test]
fn the_store_stays_bounded_under_steady_traffic() {
    let rules = "rule \"p\" on purchase then award points 1\n\
                 rule \"late\" on tick when days_since_last_purchase > 5 then tag \"late\"";
    let (s, r) = build(&format!("{CONFIG}{STORAGE}"), rules);
    let mut e = Engine::new(s.clone(), r, SledStore::temporary().expect("store")).expect("engine");
    // The store's keys, and the seen events the member records hold.
    let entries = |e: &Engine<SledStore>| {
        let keys = nudge::store::backup::export(e.store(), &mut std::io::sink())
            .expect("export")
            .entries;
        let seen: usize = (0..100)
            .filter_map(|i| e.member(&format!("m{i}")).expect("read"))
            .map(|m| m.seen.len())
            .sum();
        keys as usize + seen
    };
    let mut at_30 = 0;
    for d in 0..60 {
        let evs: Vec<Event> = (0..50)
            .map(|i| {
                let member = format!("m{}", (d * 7 + i * 13) % 100);
                purchase(
                    &s,
                    &format!("d{d}-{i}"),
                    &member,
                    &date("2026-01-01", d),
                    1.0,
                )
            })
            .collect();
        e.process(&evs).expect("process");
        nudge::outbox::trim_delivered(&mut e).expect("trim");
        e.tick(day("2026-01-01") + d + 1).expect("tick");
        if d == 29 {
            at_30 = entries(&e);
        }
    }
    let at_60 = entries(&e);
    // 100 members and 10 days of 50 events seen, at least.
    assert!(at_30 > 600, "{at_30}");
    assert!(
        (at_60 as f64) <= at_30 as f64 * 1.1,
        "{at_30} entries after 30 days, {at_60} after 60"
    );
}

/// A data folder of store format 3 kept a marker of its own per event: it
/// stays format 3 (and its backups restore) until its first write makes it
/// format 4, its markers still tell redeliveries, and they go once the
/// window has passed them.
#[test]
fn a_folder_of_store_format_3_keeps_its_markers_until_the_window_passes() {
    use nudge::store::keys;
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, r) = one_point_a_purchase();
    let old = purchase(&s, "e1", "m1", "2026-03-01", 5.0);
    let format_key = [&[keys::META][..], keys::FORMAT.as_bytes()].concat();
    {
        let store = SledStore::open(dir.path()).expect("store");
        let utc = nudge::base::time::utc_day(old.at);
        store
            .raw_insert(vec![
                (keys::seen(utc, "e1"), old.body_hash.to_le_bytes().to_vec()),
                (format_key.clone(), 3u32.to_le_bytes().to_vec()),
            ])
            .expect("insert");
    }
    let format = |store: &SledStore| store.meta(keys::FORMAT).expect("meta");
    {
        // Read, exported and restored, it is still format 3.
        let store = SledStore::open(dir.path()).expect("store");
        assert_eq!(store.older_format(), Some(3));
        let mut backup = Vec::new();
        nudge::store::backup::export(&store, &mut backup).expect("export");
        assert!(backup.starts_with(br#"{"nudge_backup":1,"store_format":3}"#));
        let restored = SledStore::temporary().expect("store");
        nudge::store::backup::import(&restored, &|| Ok(Box::new(backup.as_slice())))
            .expect("a backup of format 3 restores");
        assert_eq!(format(&restored), Some(3u32.to_le_bytes().to_vec()));
        drop(store);
        let store = SledStore::open(dir.path()).expect("store");
        assert_eq!(format(&store), Some(3u32.to_le_bytes().to_vec()));
    }
    let mut e = engine_at(dir.path(), &s, &r);
    let other = purchase(&s, "e1", "m1", "2026-03-01", 6.0);
    let c = e.process(&[old, other]).expect("process");
    assert_eq!(c.outcomes[0], EventOutcome::Duplicate);
    assert!(
        matches!(
            c.outcomes[1],
            EventOutcome::Rejected(nudge::engine::Rejected::Conflict { .. })
        ),
        "{:?}",
        c.outcomes[1]
    );
    assert!(e.store().has_seen_markers().expect("markers"));
    assert_eq!(
        format(e.store()),
        Some(nudge::store::FORMAT_VERSION.to_le_bytes().to_vec())
    );
    e.process(&[purchase(&s, "e2", "m2", "2026-03-12", 5.0)])
        .expect("process");
    assert!(!e.store().has_seen_markers().expect("markers"));
}

/// A member with more events within the window than its record keeps ids
/// for (a shared "guest" id at the tills): the rest are markers of their
/// own, and every redelivery is still a duplicate, in its batch, in a
/// later one and after a restart; another body is still a conflict.
#[test]
fn a_member_with_more_events_than_its_record_keeps_ids_for_spills_into_markers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, r) = one_point_a_purchase();
    let n = nudge::model::SEEN_IN_RECORD + 50;
    let events: Vec<Event> = (0..n)
        .map(|i| purchase(&s, &format!("g{i}"), "guest", "2026-04-01", 1.0))
        .collect();
    {
        let mut e = engine_at(dir.path(), &s, &r);
        // The last event comes twice in its own batch.
        let mut first = events.clone();
        first.push(events[n - 1].clone());
        let c = e.process(&first).expect("process");
        assert_eq!(c.outcomes[n], EventOutcome::Duplicate);
        let rec = e.member("guest").expect("read").expect("guest");
        assert_eq!(rec.points, n as i64);
        assert_eq!(rec.seen.len(), nudge::model::SEEN_IN_RECORD);
        assert!(e.store().has_seen_markers().expect("markers"));
    }
    let mut e = engine_at(dir.path(), &s, &r);
    let c = e.process(&events).expect("process");
    assert!(
        c.outcomes.iter().all(|o| *o == EventOutcome::Duplicate),
        "{:?}",
        c.outcomes
    );
    let changed = purchase(&s, &format!("g{}", n - 1), "guest", "2026-04-01", 2.0);
    let c = e.process(&[changed]).expect("process");
    assert!(matches!(
        c.outcomes[0],
        EventOutcome::Rejected(nudge::engine::Rejected::Conflict { .. })
    ));
    assert_eq!(
        e.member("guest").expect("read").expect("guest").points,
        n as i64
    );
    // Past the window the markers go with their day.
    e.process(&[purchase(&s, "later", "other", "2026-04-20", 1.0)])
        .expect("process");
    assert!(!e.store().has_seen_markers().expect("markers"));
}

/// Two busy members with the same event ids on the same day: their
/// spilled markers are each member's, so each member's redeliveries are
/// duplicates and neither is taken for a conflict of the other's.
#[test]
fn two_busy_members_with_the_same_ids_keep_their_own_markers() {
    let (s, r) = one_point_a_purchase();
    let mut e = Engine::new(s.clone(), r, SledStore::temporary().expect("store")).expect("engine");
    let n = nudge::model::SEEN_IN_RECORD + 20;
    let of = |member: &str, amount: f64| -> Vec<Event> {
        (0..n)
            .map(|i| purchase(&s, &format!("g{i}"), member, "2026-04-01", amount))
            .collect()
    };
    for member in ["guest", "guest2"] {
        let c = e
            .process(&of(member, 1.0 + member.len() as f64))
            .expect("process");
        assert!(
            c.outcomes
                .iter()
                .all(|o| matches!(o, EventOutcome::Applied { .. }))
        );
    }
    for member in ["guest", "guest2"] {
        let c = e
            .process(&of(member, 1.0 + member.len() as f64))
            .expect("process");
        assert!(
            c.outcomes.iter().all(|o| *o == EventOutcome::Duplicate),
            "{member}"
        );
        let rec = e.member(member).expect("read").expect("member");
        assert_eq!(rec.points, n as i64);
    }
}

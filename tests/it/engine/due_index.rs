//! The tick's due index visits only the members whose tick rules can
//! change that day. Property: over random purchases, days, rule edits and
//! restarts (clean, with the index saved and taken up, or crashes), an engine with the index gives exactly the effects (bytes) of
//! an engine that visits every member every day, for rules that turn on
//! day counts (`>`, `<`, `==`, `between`, against constants and against
//! `cycle * k`), on windows (alone and compared with each other),
//! birthdays, point expiry and the calendar (`day_of_month(today)`, a
//! date, `member_days % 9`).

use nudge::engine::Engine;
use nudge::io::event::event_from_json;
use nudge::store::SledStore;
use proptest::prelude::*;
use serde_json::json;
use std::sync::Arc;

const CONFIG: &str = "timezone: UTC\ntiers: [bronze, silver]\nchannels:\n  app: {}\npoints:\n  expire_after: 20d\nevents:\n  purchase:\n    amount: money\n  signup:\n    birthday: date\n";

/// Tick rules of every timing: fixed, day counts, daily.
const RULES: &[&str] = &[
    "rule \"late\" on tick when days_since_last_purchase > cycle * 1.5 then send coupon 30-6",
    "rule \"gone\" on tick when days_since_last_purchase > 9 and points >= 5 then tag \"gone\"",
    "rule \"fresh\" on tick when days_since_last_purchase < 4 then tag \"fresh\"",
    "rule \"exact\" on tick when days_since_last_purchase == 6 then award points 1",
    "rule \"band\" on tick when days_since_last_purchase between 3 and 5 then untag \"fresh\"",
    "rule \"anniversary\" on tick when member_days == 12 then award points 2",
    "rule \"rich\" on tick when spend > 40 then tag \"rich\"",
    "rule \"window\" on tick when count(purchase, 7d) == 0 and orders > 0 then tag \"quiet\"",
    "rule \"birthday\" on tick when days_to_birthday == 3 then send message \"soon\" via app",
    "rule \"month\" on tick when birthday_month == 2 and days_since_last_purchase > 2 then tag \"feb\"",
    "rule \"state\" when days_since_last_purchase >= 8 then award points 3",
    "rule \"monthly\" on tick when day_of_month(today) == 8 and days_since_last_purchase <= 30 then award points 4",
    "rule \"date\" on tick when today == 2026-01-20 and orders >= 1 then tag \"jan20\"",
    "rule \"every 9\" on tick when member_days > 0 and member_days % 9 == 0 then award points 5",
    "rule \"slowing\" on tick when count(purchase, 14d) >= 2 and count(purchase, 7d) * 2 < count(purchase, 14d) then tag \"slowing\"",
    "rule \"expiring\" on tick when points_expiring(5d) > 0 then send message \"expiring\" via app",
    "rule \"kind late\" on tick when days_since_last(purchase where event.amount > 10) > cycle(purchase where event.amount > 10) then tag \"kind late\"",
    "rule \"kind cycle\" on tick when cycle(purchase where event.amount > 10) < 4 then award points 6",
    "rule \"campaign\" on tick when orders >= 1 then tag \"campaign\" active 2026-01-10 to 2026-01-15",
    "rule \"pts\" on purchase then award points floor(event.amount)",
];

#[derive(Clone, Debug)]
enum Op {
    Purchase {
        member: u8,
        amount: u8,
    },
    Signup {
        member: u8,
        birthday: u16,
    },
    Advance(u8),
    /// A clean stop (the due index saved and taken up again) or a crash.
    Restart(bool),
    /// Swap in a subset of the rules (bit mask over RULES).
    Rules(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u8..6, 1u8..30).prop_map(|(member, amount)| Op::Purchase { member, amount }),
        1 => (0u8..6, 0u16..40).prop_map(|(member, birthday)| Op::Signup { member, birthday }),
        5 => (1u8..6).prop_map(Op::Advance),
        1 => any::<bool>().prop_map(Op::Restart),
        1 => any::<u32>().prop_map(Op::Rules),
    ]
}

fn load(mask: u32) -> (Arc<nudge::config::Schema>, Arc<nudge::lang::RuleSet>) {
    let text: String = RULES
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0 || *i == RULES.len() - 1)
        .map(|(_, r)| format!("{r}\n"))
        .collect();
    let loaded = nudge::project::load::load_texts(CONFIG, &[("r.rules", &text)]);
    assert_eq!(loaded.errors(), 0, "{:?}", loaded.diagnostics);
    (
        Arc::new(loaded.schema.expect("schema")),
        Arc::new(loaded.rules.expect("rules")),
    )
}

const DAY0: i64 = 20_454; // 2026-01-01

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let mut mask = u32::MAX;
    let open = |dir: &std::path::Path, mask: u32, full: bool| {
        let (schema, rules) = load(mask);
        let e = Engine::new(schema, rules, SledStore::open(dir).expect("open")).expect("engine");
        if full { e.full_ticks() } else { e }
    };
    let (mut a, mut b) = (
        Some(open(dir_a.path(), mask, false)),
        Some(open(dir_b.path(), mask, true)),
    );
    let mut day = DAY0;
    let mut n = 0;
    for op in ops {
        let (ea, eb) = (a.as_mut().expect("a"), b.as_mut().expect("b"));
        match op {
            Op::Purchase { .. } | Op::Signup { .. } => {
                n += 1;
                let at = nudge::base::time::day_string(day as i32);
                let v = match op {
                    Op::Purchase { member, amount } => {
                        json!({"id": format!("e{n}"), "type": "purchase", "member": format!("m{member}"), "at": format!("{at}T12:00:00Z"), "amount": amount})
                    }
                    Op::Signup { member, birthday } => {
                        let bday = nudge::base::time::day_string(
                            (DAY0 - 9000 + i64::from(birthday)) as i32,
                        );
                        json!({"id": format!("e{n}"), "type": "signup", "member": format!("m{member}"), "at": format!("{at}T09:00:00Z"), "birthday": bday})
                    }
                    _ => unreachable!("matched above"),
                };
                let ev = event_from_json(&ea.schema, v).expect("event");
                let (x, y) = (
                    ea.process(std::slice::from_ref(&ev)).expect("a"),
                    eb.process(&[ev]).expect("b"),
                );
                prop_assert_eq!(
                    serde_json::to_string(&x.effects).ok(),
                    serde_json::to_string(&y.effects).ok()
                );
            }
            Op::Advance(k) => {
                for _ in 0..k {
                    day += 1;
                    let x = ea.tick(day as i32).expect("tick a");
                    let y = eb.tick(day as i32).expect("tick b");
                    prop_assert_eq!(
                        serde_json::to_string(&x).ok(),
                        serde_json::to_string(&y).ok(),
                        "day {}",
                        day
                    );
                }
            }
            Op::Restart(clean) => {
                if clean {
                    ea.save_due().expect("save");
                }
                drop(a.take());
                drop(b.take());
                a = Some(open(dir_a.path(), mask, false));
                b = Some(open(dir_b.path(), mask, true));
            }
            Op::Rules(m) => {
                mask = m;
                let (schema, rules) = load(mask);
                ea.swap(schema.clone(), rules.clone(), None).expect("swap");
                eb.swap(schema, rules, None).expect("swap");
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_due_index_gives_the_effects_of_visiting_everyone(ops in prop::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}

/// The index does skip: on a quiet day only members whose counts cross a
/// bound are visited.
#[test]
fn a_quiet_day_visits_only_the_members_due() {
    let (schema, rules) = load(0b11); // late, gone
    let dir = tempfile::tempdir().expect("dir");
    let mut e = Engine::new(
        schema.clone(),
        rules,
        SledStore::open(dir.path()).expect("open"),
    )
    .expect("engine");
    for m in 0..100 {
        for (k, d) in [(0, 0), (1, 10 + m % 7)] {
            let v = json!({"id": format!("e{m}-{k}"), "type": "purchase", "member": format!("m{m}"), "at": format!("{}T12:00:00Z", nudge::base::time::day_string((DAY0 + d) as i32)), "amount": 10});
            e.process(&[event_from_json(&schema, v).expect("event")])
                .expect("process");
        }
    }
    let day = (DAY0 + 17) as i32;
    e.tick(day).expect("full tick");
    let next = e.due_on(day + 1).expect("ready");
    assert!(next < 100 / 2, "{next} of 100 members due the next day");
    // A clean stop saves the index: after the restart the first tick
    // visits only the members due, and members written since are due at
    // once. Without the save (a crash), the next tick visits everyone.
    e.save_due().expect("save");
    drop(e);
    let reopen = |rules| {
        Engine::new(
            schema.clone(),
            rules,
            SledStore::open(dir.path()).expect("open"),
        )
        .expect("engine")
    };
    let mut e = reopen(load(0b11).1);
    assert_eq!(e.due_on(day + 1), Some(next));
    let v = json!({"id": "late-1", "type": "purchase", "member": "m0", "at": format!("{}T12:00:00Z", nudge::base::time::day_string(day + 1)), "amount": 10});
    e.process(&[event_from_json(&schema, v).expect("event")])
        .expect("process");
    let with_m0 = e.due_on(day + 1).expect("ready");
    assert!(with_m0 == next || with_m0 == next + 1, "{with_m0}");
    e.tick(day + 1).expect("tick");
    // Crashed (no save): the snapshot was taken up at the start, so it is
    // not used again, stale.
    drop(e);
    let mut e = reopen(load(0b11).1);
    assert_eq!(e.due_on(day + 2), None);
    e.tick(day + 2).expect("full tick");
    // Saved under other rules: not used.
    e.save_due().expect("save");
    drop(e);
    let commits = || {
        use nudge::store::Store;
        let s = SledStore::open(dir.path()).expect("open");
        (
            s.meta_u64(nudge::store::keys::COMMIT_SEQ).expect("seq"),
            s.meta(nudge::store::keys::DUE_SNAPSHOT).expect("snapshot"),
        )
    };
    let before = commits();
    let e = reopen(load(0b111).1);
    assert_eq!(e.due_on(day + 3), None);
    assert!(e.last_tick().expect("read").is_some());
    drop(e);
    // An engine that only read (`nudge explain`, `nudge member`) wrote
    // nothing: the members are as saved, so the snapshot still holds for
    // its own rules.
    assert_eq!(
        commits(),
        before,
        "an engine that only reads writes nothing"
    );
    let mut e = reopen(load(0b111).1);
    assert_eq!(e.due_on(day + 3), None);
    // Its first write takes the snapshot with it: members change from here.
    e.tick(day + 3).expect("full tick");
    drop(e);
    let e = reopen(load(0b11).1);
    assert_eq!(
        e.due_on(day + 4),
        None,
        "gone with the first write under other rules"
    );
}

/// A balance rule is re-armed (due again tomorrow while true) only when
/// its actions write what its condition reads, tag by tag: tagging
/// "coupon" when the condition reads the tag "mom" is not, so the members
/// it fired for are not visited every day.
#[test]
fn only_rules_that_write_what_they_read_are_rearmed() {
    let text = "rule \"other tag\" when \"mom\" in tags then tag \"coupon\"\n\
                rule \"same tag\" when \"mom\" in tags then untag \"mom\"\n\
                rule \"balance\" when points >= 10 then deduct points 10\n\
                rule \"edge\" when points >= 10 then tag \"rich\"\n";
    let loaded = nudge::project::load::load_texts(CONFIG, &[("r.rules", text)]);
    assert_eq!(loaded.errors(), 0, "{:?}", loaded.diagnostics);
    let rules = loaded.rules.expect("rules");
    let rearm: Vec<(&str, bool)> = rules
        .rules
        .iter()
        .map(|r| (r.name.as_str(), r.rearm))
        .collect();
    assert_eq!(
        rearm,
        [
            ("other tag", false),
            ("same tag", true),
            ("balance", true),
            ("edge", false)
        ]
    );
}

/// A tick that visits everyone, or a day on which a calendar rule turns
/// for everyone, reads the store's keys in order, a chunk of 10,000 at a
/// time, not from a list of every id: over 25,001 members (three chunks)
/// each is visited once, on the first tick, the day after (the rule turns
/// false) and a month later.
#[test]
fn ticks_that_visit_most_members_read_the_store_in_chunks() {
    // No points expiry: the points given on the 8th would expire by the
    // next month's.
    let config = CONFIG.replace("points:\n  expire_after: 20d\n", "");
    let loaded = nudge::project::load::load_texts(
        &config,
        &[(
            "r.rules",
            "rule \"eighth\" on tick when day_of_month(today) == 8 then award points 1\n",
        )],
    );
    assert_eq!(loaded.errors(), 0, "{:?}", loaded.diagnostics);
    let (schema, rules) = (
        Arc::new(loaded.schema.expect("schema")),
        Arc::new(loaded.rules.expect("rules")),
    );
    let mut e = Engine::new(
        schema.clone(),
        rules,
        SledStore::temporary().expect("store"),
    )
    .expect("engine");
    let n = 25_001;
    let events: Vec<_> = (0..n)
        .map(|m| {
            let v = json!({"id": format!("e{m}"), "type": "purchase", "member": format!("m{m}"), "at": "2026-01-02T12:00:00Z", "amount": 10});
            event_from_json(&schema, v).expect("event")
        })
        .collect();
    for batch in events.chunks(1_000) {
        e.process(batch).expect("process");
    }
    let members = |effects: Vec<nudge::model::Effect>| {
        let all = effects.len();
        let distinct: std::collections::BTreeSet<String> =
            effects.into_iter().map(|x| x.member).collect();
        (all, distinct.len())
    };
    let eighth = (DAY0 + 7) as i32; // 2026-01-08
    assert_eq!(members(e.tick(eighth).expect("tick")), (n, n));
    assert_eq!(e.tick_visits(), n as u64);
    // Everyone again on the 9th, when the rule turns false (and can rise
    // again), with nothing to send; then on 8 February.
    assert_eq!(members(e.tick(eighth + 1).expect("tick")), (0, 0));
    assert_eq!(e.tick_visits(), 2 * n as u64);
    assert_eq!(e.due_on(eighth + 30), Some(0));
    assert_eq!(e.due_on(eighth + 31), Some(n));
    assert_eq!(members(e.tick(eighth + 31).expect("tick")), (n, n));
    assert_eq!(e.tick_visits(), 3 * n as u64);
}

//! Model-based property test: random sequences of purchases, daily ticks,
//! redeliveries and restarts give the same effects as a small in-memory
//! model of the same semantics (per-event rules, a rising-edge rule, a
//! windowed count with a limit), written independently with integers.

use nudge::engine::Engine;
use nudge::io::event::event_from_json;
use nudge::model::{Effect, Event};
use nudge::store::SledStore;
use proptest::prelude::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

const CONFIG: &str = "timezone: UTC\ntiers: [basic]\nevents:\n  purchase:\n    amount: money\n";
const RULES: &str = "rule \"pts\" on purchase then award points floor(event.amount)\n\
when days_since_last_purchase > cycle*1.5 and points >= 10 then send coupon 30-6\n\
rule \"regular\" on purchase when count(purchase, 7d) >= 2 then send coupon 10-2 limit once per 14d\n";
const DAY0: i64 = 20_454; // 2026-01-01

#[derive(Clone, Debug)]
enum Op {
    Purchase { member: u8, amount: u8 },
    Advance(u8),
    Redeliver(usize),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, 1u8..30).prop_map(|(member, amount)| Op::Purchase { member, amount }),
        3 => (1u8..12).prop_map(Op::Advance),
        1 => (0usize..100).prop_map(Op::Redeliver),
        1 => Just(Op::Restart),
    ]
}

#[derive(Default, Clone)]
struct M {
    points: i64,
    first: Option<i64>,
    last: Option<i64>,
    days: i64,
    armed: bool,
    purchases: Vec<i64>,
    regular_fired: Vec<i64>,
}

fn date(day: i64) -> String {
    nudge::base::time::day_string(day as i32)
}

/// Effects as comparable lines.
fn line(rule: &str, member: &str, trigger: &str, what: &str) -> String {
    format!("{rule} {member} {trigger} {what}")
}

fn actual(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .map(|e| {
            line(
                &e.rule,
                &e.member,
                &e.trigger,
                &e.coupon
                    .clone()
                    .or(e.points.map(|p| p.to_string()))
                    .unwrap_or_default(),
            )
        })
        .collect()
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let loaded = nudge::project::load::load_texts(CONFIG, &[("m.rules", RULES)]);
    let (schema, rules) = (
        Arc::new(loaded.schema.expect("schema")),
        Arc::new(loaded.rules.expect("rules")),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || {
        Engine::new(
            schema.clone(),
            rules.clone(),
            SledStore::open(dir.path()).expect("open"),
        )
        .expect("engine")
    };
    let mut engine = Some(open());
    let mut model: BTreeMap<String, M> = BTreeMap::new();
    let mut day = DAY0;
    let mut sent: Vec<Event> = Vec::new();
    let (mut want, mut got) = (Vec::new(), Vec::new());
    for op in ops {
        let e = engine.as_mut().expect("engine");
        match op {
            Op::Purchase { member, amount } => {
                let id = format!("e{}", sent.len());
                let m = format!("m{member}");
                let ev = event_from_json(&schema, json!({"id": id, "type": "purchase", "member": m, "at": format!("{}T12:00:00Z", date(day)), "amount": amount})).expect("event");
                got.extend(actual(
                    &e.process(std::slice::from_ref(&ev))
                        .expect("process")
                        .effects,
                ));
                sent.push(ev);
                let s = model.entry(m.clone()).or_default();
                let trig = format!("event:{id}");
                match s.last {
                    Some(l) if day > l => {
                        s.last = Some(day);
                        s.days += 1;
                    }
                    Some(_) => {}
                    None => {
                        s.first = Some(day);
                        s.last = Some(day);
                        s.days = 1;
                    }
                }
                s.purchases.push(day);
                s.points += amount as i64;
                want.push(line("pts", &m, &trig, &amount.to_string()));
                s.armed = false; // 0 days late at a purchase
                let recent = s.purchases.iter().filter(|&&p| p > day - 7).count();
                let limited = s.regular_fired.iter().any(|&f| f > day - 14);
                if recent >= 2 && !limited {
                    s.regular_fired.push(day);
                    want.push(line("regular", &m, &trig, "10-2"));
                }
            }
            Op::Advance(n) => {
                for _ in 0..n {
                    day += 1;
                    got.extend(actual(&e.tick(day as i32).expect("tick")));
                    for (m, s) in model.iter_mut() {
                        let late = match (s.first, s.last) {
                            (Some(f), Some(l)) if s.days >= 2 => {
                                2 * (day - l) * (s.days - 1) > 3 * (l - f)
                            }
                            _ => false,
                        };
                        let now = late && s.points >= 10;
                        if now && !s.armed {
                            want.push(line("m:2", m, &format!("tick:{}", date(day)), "30-6"));
                        }
                        s.armed = now;
                    }
                }
            }
            Op::Redeliver(k) => {
                if let Some(ev) = sent.get(k % sent.len().max(1)).cloned() {
                    let c = e.process(&[ev]).expect("process");
                    prop_assert!(c.effects.is_empty(), "a redelivered event had effects");
                }
            }
            Op::Restart => {
                drop(engine.take());
                engine = Some(open());
            }
        }
    }
    prop_assert_eq!(got, want);
    // The stored points equal the model's.
    let e = engine.as_ref().expect("engine");
    for (m, s) in &model {
        prop_assert_eq!(e.member(m).expect("read").expect("member").points, s.points);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]
    #[test]
    fn engine_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}

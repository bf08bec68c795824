//! The engine through the library, by feature. This file holds the
//! helpers the feature modules share.

pub(crate) use nudge::config::Schema;
pub(crate) use nudge::engine::{Engine, EventOutcome, clock};
pub(crate) use nudge::io::event::event_from_json;
pub(crate) use nudge::model::{Action, Effect, Event, Status};
pub(crate) use nudge::store::{SledStore, Store, StoreError, WriteSet};
pub(crate) use serde_json::json;
pub(crate) use std::path::Path;
pub(crate) use std::sync::Arc;

mod budget;
mod dedup;
mod due_index;
mod firing;
mod fold;
mod identity;
mod partitions;
mod against_model;
mod restart;
mod rewards;

pub(crate) const CONFIG: &str = r#"
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

pub(crate) fn build(config: &str, rules: &str) -> (Arc<Schema>, Arc<nudge::lang::RuleSet>) {
    let l = nudge::project::load::load_texts(config, &[("t.rules", rules)]);
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

pub(crate) fn engine(rules: &str) -> Engine<SledStore> {
    let (s, r) = build(CONFIG, rules);
    Engine::new(s, r, SledStore::temporary().expect("store")).expect("engine")
}

/// An engine on the data folder at `path` (a restart when opened again).
pub(crate) fn engine_at(
    path: &Path,
    s: &Arc<Schema>,
    r: &Arc<nudge::lang::RuleSet>,
) -> Engine<SledStore> {
    Engine::new(s.clone(), r.clone(), SledStore::open(path).expect("open")).expect("engine")
}

pub(crate) fn day(date: &str) -> i32 {
    nudge::base::time::parse_date(date).expect("date")
}

/// A purchase at noon UTC on `date`.
pub(crate) fn purchase(schema: &Schema, id: &str, member: &str, date: &str, amount: f64) -> Event {
    event_from_json(schema, json!({"id": id, "type": "purchase", "member": member, "at": format!("{date}T12:00:00Z"), "amount": amount})).expect("event")
}

pub(crate) fn summary(effects: &[Effect]) -> Vec<String> {
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

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

/// A store whose budget reads fail while `broken` is set, and whose
/// commits fail while `commits_broken` is.
pub(crate) struct FaultyStore {
    pub(crate) inner: SledStore,
    pub(crate) broken: std::cell::Cell<bool>,
    pub(crate) commits_broken: std::cell::Cell<bool>,
    /// Commits that succeed before the rest fail.
    pub(crate) commits_left: std::cell::Cell<usize>,
}

impl FaultyStore {
    pub(crate) fn new(inner: SledStore) -> FaultyStore {
        FaultyStore {
            inner,
            broken: std::cell::Cell::new(false),
            commits_broken: std::cell::Cell::new(false),
            commits_left: std::cell::Cell::new(usize::MAX),
        }
    }
}

impl Store for FaultyStore {
    fn member(&self, id: &str) -> Result<Option<nudge::model::MemberRecord>, StoreError> {
        self.inner.member(id)
    }
    fn seen(&self, day: i32, id: &str) -> Result<Option<u128>, StoreError> {
        self.inner.seen(day, id)
    }
    fn seen_of(&self, day: i32, prefix: &str) -> Result<Vec<(String, u128)>, StoreError> {
        self.inner.seen_of(day, prefix)
    }
    fn member_seen(&self, id: &str) -> Result<Option<nudge::store::SeenIds>, StoreError> {
        self.inner.member_seen(id)
    }
    fn format_3_markers_until(&self) -> Result<Option<i32>, StoreError> {
        self.inner.format_3_markers_until()
    }
    fn commit(&self, w: WriteSet) -> Result<(), StoreError> {
        let left = self.commits_left.get();
        if self.commits_broken.get() || left == 0 {
            return Err(StoreError::Io("disk write failed".into()));
        }
        self.commits_left.set(left.saturating_sub(1));
        self.inner.commit(w)
    }
    fn member_ids(&self) -> Result<Vec<String>, StoreError> {
        self.inner.member_ids()
    }
    fn each_member(
        &self,
        visit: &mut dyn FnMut(&str, nudge::model::MemberRecord) -> bool,
    ) -> Result<(), StoreError> {
        self.inner.each_member(visit)
    }
    fn member_ranges(&self, want: usize) -> Result<Vec<nudge::store::IdRange>, StoreError> {
        self.inner.member_ranges(want)
    }
    fn each_member_bytes(
        &self,
        range: &nudge::store::IdRange,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        self.inner.each_member_bytes(range, visit)
    }
    fn outbox(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.inner.outbox(from, limit)
    }
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if self.broken.get() && key.starts_with("budget:") {
            return Err(StoreError::Io("disk read failed".into()));
        }
        self.inner.meta(key)
    }
    fn identity(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.inner.identity(key)
    }
    fn meta_prefix(&self, p: &str, limit: usize) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.meta_prefix(p, limit)
    }
    fn meta_count(&self, p: &str) -> Result<u64, StoreError> {
        self.inner.meta_count(p)
    }
}

/// Partitions over `stores` (opened again: a restart), each store failing
/// reads or commits while told to.
pub(crate) fn faulty_partitions(
    s: &Arc<Schema>,
    r: &Arc<nudge::lang::RuleSet>,
    stores: &[SledStore],
) -> nudge::engine::partitions::Partitions<FaultyStore> {
    let engines = stores
        .iter()
        .map(|st| Engine::new(s.clone(), r.clone(), FaultyStore::new(st.clone())).expect("engine"))
        .collect();
    nudge::engine::partitions::Partitions::new(engines).expect("partitions")
}

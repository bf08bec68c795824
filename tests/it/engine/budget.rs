//! Budgets and the control group: spent exactly, also across a restart,
//! and reported.

use super::*;

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
    let held = c
        .effects
        .iter()
        .filter(|x| x.status == Status::HeldOut)
        .count();
    assert!(
        (60..140).contains(&held),
        "{held} of 500 in a 20% control group"
    );
    for x in c.effects.iter().filter(|x| x.status == Status::HeldOut) {
        assert!(nudge::engine::contact::in_control_group(&s, &x.member));
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

/// A store whose budget reads fail while `broken` is set.
struct BrokenBudgets {
    inner: SledStore,
    broken: std::cell::Cell<bool>,
}

impl Store for BrokenBudgets {
    fn member(&self, id: &str) -> Result<Option<nudge::model::MemberRecord>, StoreError> {
        self.inner.member(id)
    }
    fn seen(&self, day: i32, id: &str) -> Result<Option<u128>, StoreError> {
        self.inner.seen(day, id)
    }
    fn member_seen(&self, id: &str) -> Result<Option<nudge::store::SeenIds>, StoreError> {
        self.inner.member_seen(id)
    }
    fn format_3_markers_until(&self) -> Result<Option<i32>, StoreError> {
        self.inner.format_3_markers_until()
    }
    fn commit(&self, w: WriteSet) -> Result<(), StoreError> {
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
}

/// Regression: a store error reading a budget was taken as "budget spent"
/// (the firing committed as `capped`, its points lost). Now the batch
/// fails, nothing of it is stored, and the same events apply in full once
/// the store reads again.
#[test]
fn a_budget_the_store_cannot_read_fails_the_batch_instead_of_capping() {
    let (s, r) = build(
        CONFIG,
        "rule \"b\" on purchase then award points 5 budget 100",
    );
    let store = BrokenBudgets {
        inner: SledStore::temporary().expect("store"),
        broken: std::cell::Cell::new(true),
    };
    let mut e = Engine::new(s.clone(), r, store).expect("engine");
    let evs = [purchase(&s, "e1", "m1", "2026-01-01", 1.0)];
    assert!(matches!(e.process(&evs), Err(StoreError::Io(_))));
    assert!(
        e.member("m1").expect("read").is_none(),
        "nothing of the batch is stored"
    );
    e.store().broken.set(false);
    let c = e.process(&evs).expect("process");
    assert_eq!(c.outcomes, [EventOutcome::Applied { effects: 1 }]);
    assert_eq!(c.effects[0].status, Status::Sent);
    assert_eq!(e.member("m1").expect("read").expect("m1").points, 5);
}

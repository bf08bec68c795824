//! Rule budgets: `budget 5000` (firings in all) and `budget 30000 per month`
//! (coupon discount value per calendar period, local time). Kept in the
//! store's meta, one key per rule and period, cached here; the writer is
//! the only one spending, so the count is exact. Updates are committed with
//! the batch that spent them. Points-mall stock is counted the same way
//! (`stock:<reward>`: how many have gone).
//!
//! On a data folder of partitions each partition's meta holds what that
//! partition spent, and the writers share a [`Ledger`] of the totals: a
//! writer takes from it (under its lock) before it spends, and gives back
//! what a batch that failed to commit had taken. The budget is the sum over
//! the partitions, so it stays exact after a crash too: what was not
//! committed was not spent, and its effects do not exist.
//!
//! In cluster mode the partitions are on different nodes and draw from an
//! [`Allotment`] instead: one entry per key, shared by every node, saying
//! how much of it each partition has been given. A partition spends from
//! what it was given and draws another block when that is used up. What a
//! partition was given stays its own (whichever node holds it), so a crash
//! loses nothing: the new holder rebuilds the partition's spend from the
//! stream and spends the rest. A draw that finds less left than it needs
//! takes what is left, so once a budget runs short no more is handed out:
//! a holder replaying the partition's history then caps exactly the
//! firings the old holder capped.

use crate::config::Schema;
use crate::lang::check::{BudgetSpec, CouponSpec, Period};
use crate::lang::compile::{Action, CompiledRule};
use crate::store::{Store, StoreError};
use rust_decimal::Decimal;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
pub struct Budgets {
    /// What this partition spent of each key (committed and not), as read
    /// from its meta and spent since.
    own: HashMap<String, Decimal>,
    dirty: BTreeMap<String, Decimal>,
    /// Taken from the shared ledger by the batch not yet committed.
    pending: HashMap<String, Decimal>,
    /// The totals over every partition; none on a folder of one, where the
    /// partition's own spend is the total.
    ledger: Option<Ledger>,
    /// What this partition has been given of each key (cluster mode; may
    /// lag behind the allotment, never run ahead of it).
    given: HashMap<String, Decimal>,
    /// A store error met taking stock inside an action: the batch fails.
    pub failed: Option<StoreError>,
}

/// What [`Budgets`] had spent at a point of a batch.
#[derive(Clone)]
pub struct Spent {
    own: HashMap<String, Decimal>,
    dirty: BTreeMap<String, Decimal>,
    pending: HashMap<String, Decimal>,
}

/// Where the partitions' writers take budgets and stock from.
#[derive(Clone)]
pub enum Ledger {
    /// Every budget's and reward stock's spend summed over the partitions
    /// of a data folder, shared by their writers in one process.
    Totals(Arc<Mutex<HashMap<String, Decimal>>>),
    /// Blocks drawn by partition `partition` from an allotment shared by
    /// the nodes of a cluster.
    Drawn {
        from: Arc<dyn Allotment>,
        partition: usize,
    },
}

/// One partition's request for more of a budget or stock key: at least
/// `need` in all, taken in a block of at least `block` where `limit` leaves
/// room; when it does not, the partition is given what is left.
pub struct Draw<'a> {
    pub key: &'a str,
    pub partition: usize,
    pub need: Decimal,
    pub block: Decimal,
    pub limit: Decimal,
}

/// Budgets and stock handed out to partitions in blocks (cluster mode,
/// `cluster::allot`): one entry per key saying what each partition has
/// been given, changed only by compare-and-set.
pub trait Allotment: Send + Sync {
    /// Gives the partition at least `need` of the key in all (see
    /// [`Draw`]); returns what the partition has now been given.
    fn draw(&self, d: &Draw<'_>) -> Result<Decimal, String>;

    /// What has been given out of `key` to every partition, as this node
    /// last saw it (spent, or held in a partition's block).
    fn given_out(&self, key: &str) -> Option<Decimal>;
}

impl Ledger {
    /// The sums of what each store's meta says its partition spent. Every
    /// key spent from later goes through the ledger, so a key it lacks has
    /// spent nothing.
    pub fn load<'a>(stores: impl Iterator<Item = &'a dyn Store>) -> Result<Ledger, StoreError> {
        let mut totals: HashMap<String, Decimal> = HashMap::new();
        for store in stores {
            for prefix in [
                crate::store::keys::BUDGET_PREFIX,
                crate::store::keys::STOCK_PREFIX,
            ] {
                for (k, v) in store.meta_prefix(prefix, usize::MAX)? {
                    *totals.entry(k).or_default() += parse(&v);
                }
            }
        }
        Ok(Ledger::Totals(Arc::new(Mutex::new(totals))))
    }
}

// A writer that panicked holding the lock left the totals whole: each
// change is one `+=`.
fn lock(totals: &Mutex<HashMap<String, Decimal>>) -> MutexGuard<'_, HashMap<String, Decimal>> {
    totals.lock().unwrap_or_else(|e| e.into_inner())
}

/// How much a partition draws at a time: 1% of the limit, at least one
/// unit. Small enough that the partitions holding blocks near the end keep
/// little from the others, large enough that a budget is drawn about a
/// hundred times, not once per firing.
fn block(limit: Decimal) -> Decimal {
    (limit / Decimal::from(100)).floor().max(Decimal::ONE)
}

fn parse(b: &[u8]) -> Decimal {
    Decimal::from_str(&String::from_utf8_lossy(b)).unwrap_or_default()
}

/// The meta key of a rule's budget for the period containing `today`.
pub fn budget_key(rule: &CompiledRule, today: i32) -> Option<String> {
    let period = match rule.budget.as_ref()? {
        BudgetSpec::Firings(_) => "all".to_string(),
        BudgetSpec::Money { period, .. } => {
            let d = super::clock::day_date(today);
            match period {
                Period::Day => d.to_string(),
                Period::Week => {
                    let w = d.iso_week_date();
                    format!("{}-W{:02}", w.year(), w.week())
                }
                Period::Month => format!("{}-{:02}", d.year(), d.month()),
                Period::Year => d.year().to_string(),
            }
        }
    };
    Some(crate::store::keys::budget(&rule.name, &period))
}

/// What one firing of `rule` running `actions` (all of them, or an
/// experiment arm's) costs its budget: 1 firing, or the discount value of
/// its coupon actions.
pub fn cost(rule: &CompiledRule, actions: &[Action], schema: &Schema) -> Decimal {
    match rule.budget {
        Some(BudgetSpec::Money { .. }) => actions.iter().map(|a| discount(a, schema)).sum(),
        _ => Decimal::ONE,
    }
}

/// The discount of a coupon action (for this member or another).
fn discount(a: &Action, schema: &Schema) -> Decimal {
    match a {
        Action::For { action, .. } => discount(action, schema),
        Action::Coupon {
            coupon: CouponSpec::Template(i),
            ..
        } => schema.coupons[*i].discount,
        Action::Coupon {
            coupon: CouponSpec::Literal { discount, .. },
            ..
        } => *discount,
        _ => Decimal::ZERO,
    }
}

fn limit(rule: &CompiledRule) -> Decimal {
    match rule.budget {
        Some(BudgetSpec::Firings(n)) => Decimal::from(n),
        Some(BudgetSpec::Money { amount, .. }) => amount,
        None => Decimal::MAX,
    }
}

impl Budgets {
    /// Spends from `ledger`, the totals of every partition, from now on.
    pub fn share(&mut self, ledger: Ledger) {
        self.ledger = Some(ledger);
    }

    /// The ledger this partition spends from, if shared.
    pub fn ledger(&self) -> Option<Ledger> {
        self.ledger.clone()
    }

    /// What this partition spent of `key`.
    fn own(&mut self, key: &str, store: &dyn Store) -> Result<Decimal, StoreError> {
        if let Some(v) = self.own.get(key) {
            return Ok(*v);
        }
        let v = store.meta(key)?.map(|b| parse(&b)).unwrap_or_default();
        self.own.insert(key.to_string(), v);
        Ok(v)
    }

    /// What every partition spent of `key`.
    fn used(&mut self, key: &str, store: &dyn Store) -> Result<Decimal, StoreError> {
        match &self.ledger {
            Some(Ledger::Totals(t)) => Ok(lock(t).get(key).copied().unwrap_or_default()),
            Some(Ledger::Drawn { from, .. }) => Ok(from.given_out(key).unwrap_or_default()),
            None => self.own(key, store),
        }
    }

    /// Spends `cost` of `key` if the total stays within `limit`.
    fn spend(
        &mut self,
        key: String,
        cost: Decimal,
        limit: Decimal,
        store: &dyn Store,
    ) -> Result<bool, StoreError> {
        let own = self.own(&key, store)?;
        match &self.ledger {
            Some(Ledger::Totals(t)) => {
                let mut totals = lock(t);
                let total = totals.entry(key.clone()).or_default();
                if *total + cost > limit {
                    return Ok(false);
                }
                *total += cost;
                *self.pending.entry(key.clone()).or_default() += cost;
            }
            Some(Ledger::Drawn { from, partition }) => {
                let need = own + cost;
                let given = self.given.get(&key).copied().unwrap_or_default();
                if need > given {
                    let draw = Draw {
                        key: &key,
                        partition: *partition,
                        need,
                        block: block(limit),
                        limit,
                    };
                    let now = from
                        .draw(&draw)
                        .map_err(|e| StoreError::Io(format!("drawing from `{key}`: {e}")))?;
                    self.given.insert(key.clone(), now);
                    if need > now {
                        return Ok(false);
                    }
                }
            }
            None if own + cost > limit => return Ok(false),
            None => {}
        }
        self.own.insert(key.clone(), own + cost);
        self.dirty.insert(key, own + cost);
        Ok(true)
    }

    /// Spends one firing's cost if the budget has room; `false` if spent.
    pub fn try_spend(
        &mut self,
        rule: &CompiledRule,
        actions: &[Action],
        schema: &Schema,
        today: i32,
        store: &dyn Store,
    ) -> Result<bool, StoreError> {
        let Some(key) = budget_key(rule, today) else {
            return Ok(true);
        };
        self.spend(key, cost(rule, actions, schema), limit(rule), store)
    }

    /// Takes one of a reward's `stock`; `false` when none is left.
    pub fn take_stock(
        &mut self,
        reward: &str,
        stock: u64,
        store: &dyn Store,
    ) -> Result<bool, StoreError> {
        let key = crate::store::keys::stock(reward);
        self.spend(key, Decimal::ONE, Decimal::from(stock), store)
    }

    /// What has been spent so far, for [`Budgets::undo`].
    pub fn mark(&self) -> Spent {
        Spent {
            own: self.own.clone(),
            dirty: self.dirty.clone(),
            pending: self.pending.clone(),
        }
    }

    /// Takes back what was spent since `mark` (a firing undone by a
    /// failed custom action); the shared totals give it back too. What a
    /// cluster node drew stays drawn: it is this node's to spend later.
    pub fn undo(&mut self, mark: Spent) {
        if let Some(Ledger::Totals(t)) = &self.ledger {
            let mut totals = lock(t);
            for (k, v) in &self.pending {
                let since = *v - mark.pending.get(k).copied().unwrap_or_default();
                if let Some(t) = totals.get_mut(k) {
                    *t -= since;
                }
            }
        }
        self.own = mark.own;
        self.dirty = mark.dirty;
        self.pending = mark.pending;
    }

    /// The updates to commit with the batch.
    pub fn take_dirty(&mut self) -> Vec<(String, Vec<u8>)> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|(k, v)| (k, v.to_string().into_bytes()))
            .collect()
    }

    /// The batch's updates are stored: what it took from the ledger is
    /// spent for good.
    pub fn committed(&mut self) {
        self.pending.clear();
    }

    /// After a failed commit the cache may be ahead of the store, and the
    /// ledger holds what the batch took: both go back to what is stored.
    pub fn forget(&mut self) {
        if let Some(Ledger::Totals(t)) = &self.ledger {
            let mut totals = lock(t);
            for (k, v) in self.pending.drain() {
                if let Some(t) = totals.get_mut(&k) {
                    *t -= v;
                }
            }
        }
        self.own.clear();
        self.dirty.clear();
        self.pending.clear();
        self.failed = None;
    }

    /// Used and total of every rule with a budget, for the current period.
    pub fn usage(
        &mut self,
        rules: &[CompiledRule],
        today: i32,
        store: &dyn Store,
    ) -> Vec<(String, Decimal, Decimal)> {
        rules
            .iter()
            .filter_map(|r| {
                let key = budget_key(r, today)?;
                Some((
                    r.name.clone(),
                    self.used(&key, store).unwrap_or_default(),
                    limit(r),
                ))
            })
            .collect()
    }
}

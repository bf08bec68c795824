//! Rule budgets: `budget 5000` (firings in all) and `budget 30000 per month`
//! (coupon discount value per calendar period, local time). Kept in the
//! store's meta, one key per rule and period, cached here; the writer is
//! the only one spending, so the count is exact. Updates are committed with
//! the batch that spent them. Points-mall stock is counted the same way
//! (`stock:<reward>`: how many have gone).

use crate::config::Schema;
use crate::lang::check::{BudgetSpec, CouponSpec, Period};
use crate::lang::compile::{Action, CompiledRule};
use crate::store::{Store, StoreError};
use rust_decimal::Decimal;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

#[derive(Default)]
pub struct Budgets {
    cache: HashMap<String, Decimal>,
    dirty: BTreeMap<String, Decimal>,
    /// A store error met taking stock inside an action: the batch fails.
    pub failed: Option<StoreError>,
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
    fn used(&mut self, key: &str, store: &dyn Store) -> Result<Decimal, StoreError> {
        if let Some(v) = self.cache.get(key) {
            return Ok(*v);
        }
        let v = store
            .meta(key)?
            .and_then(|b| Decimal::from_str(&String::from_utf8_lossy(&b)).ok())
            .unwrap_or_default();
        self.cache.insert(key.to_string(), v);
        Ok(v)
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
        let used = self.used(&key, store)?;
        let after = used + cost(rule, actions, schema);
        if after > limit(rule) {
            return Ok(false);
        }
        self.cache.insert(key.clone(), after);
        self.dirty.insert(key, after);
        Ok(true)
    }

    /// Takes one of a reward's `stock`; `false` when none is left.
    pub fn take_stock(
        &mut self,
        reward: &str,
        stock: u64,
        store: &dyn Store,
    ) -> Result<bool, StoreError> {
        let key = crate::store::keys::stock(reward);
        let gone = self.used(&key, store)?;
        if gone >= Decimal::from(stock) {
            return Ok(false);
        }
        self.cache.insert(key.clone(), gone + Decimal::ONE);
        self.dirty.insert(key, gone + Decimal::ONE);
        Ok(true)
    }

    /// The updates to commit with the batch.
    pub fn take_dirty(&mut self) -> Vec<(String, Vec<u8>)> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|(k, v)| (k, v.to_string().into_bytes()))
            .collect()
    }

    /// After a failed commit the cache may be ahead of the store.
    pub fn forget(&mut self) {
        self.cache.clear();
        self.dirty.clear();
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

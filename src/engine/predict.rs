//! Repurchase prediction over a data folder: members' histories as the
//! models read them, fitting BG/NBD and Gamma-Gamma on them (`nudge fit`,
//! the daemon's daily refit) and keeping the fit in the store, and the
//! predictions for one member. The models are `crate::predict`'s.

use crate::model::MemberRecord;
pub use crate::predict::Fit;
use crate::predict::{FitError, History, fit_bgnbd, fit_gamma_gamma};
use crate::store::{Store, StoreError, WriteSet, keys};
use rust_decimal::prelude::ToPrimitive;

#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error(transparent)]
    Fit(#[from] FitError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "{members} members bought after {day}, and a member record keeps no history to count back to it: fit on the store's last day or later, or replay the events with `--until {day}` into a new data folder and fit that"
    )]
    Later { members: u64, day: String },
}

/// The member's history as BG/NBD reads it on `day`: repeat purchase
/// days, days from the first to the last, and from the first to `day`.
/// `None` without a purchase by then.
/// Also `None` when the member bought after `day`: the record keeps no
/// history to count back to it.
pub fn history(rec: &MemberRecord, day: i32) -> Option<History> {
    let (first, last) = (rec.first_purchase?, rec.last_purchase?);
    if first > day || last > day {
        return None;
    }
    Some(History {
        x: f64::from(rec.purchase_days.saturating_sub(1)),
        t_x: f64::from(last.min(day) - first),
        t: f64::from(day - first),
    })
}

/// Repeat purchase days and their mean spend (the first day's left
/// out), for Gamma-Gamma; `None` when unknown or without repeats.
pub fn repeat_spend(rec: &MemberRecord) -> Option<(f64, f64)> {
    let x = rec.purchase_days.checked_sub(1).filter(|x| *x > 0)?;
    let repeat = rec.spend - rec.first_day_spend?;
    let m = repeat.to_f64()? / f64::from(x);
    (m > 0.0).then_some((f64::from(x), m))
}

/// What a fit reads of a store's members on a day: their histories and
/// repeat buyers' spend. In cluster mode each partition's holder
/// publishes its partition's, and the fit is made from them all.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Histories {
    /// Each (repeat purchase days, days first to last, days first to the
    /// day), with how many members have it; in order.
    pub days: Vec<((u32, u32, u32), u64)>,
    /// Repeat buyers' repeat purchase days and mean spend, in order.
    pub buyers: Vec<(f64, f64)>,
    /// Members who bought after the day (the record cannot count back).
    pub later: u64,
}

/// The histories of every member of `store` with a purchase by `day`.
pub fn histories(store: &dyn Store, day: i32) -> Result<Histories, StoreError> {
    let mut days = std::collections::BTreeMap::<(u32, u32, u32), u64>::new();
    let mut h = Histories::default();
    store.each_member(&mut |_, rec| {
        h.later += u64::from(rec.last_purchase.is_some_and(|l| l > day));
        if let Some(x) = history(&rec, day) {
            *days
                .entry((x.x as u32, x.t_x as u32, x.t as u32))
                .or_default() += 1;
            if let Some((x, m)) = repeat_spend(&rec).filter(|(x, m)| *x > 0.0 && *m > 0.0) {
                h.buyers.push((x, m));
            }
        }
        true
    })?;
    h.days = days.into_iter().collect();
    h.buyers
        .sort_by(|(x, m), (y, n)| x.total_cmp(y).then(m.total_cmp(n)));
    Ok(h)
}

/// Fits both models on every member of `store` with a purchase by `day`
/// (histories counted to it).
pub fn fit(store: &dyn Store, day: i32) -> Result<Fit, PredictError> {
    fit_union(&[histories(store, day)?], day)
}

/// Fits both models on the members of every part. In one order whatever
/// the parts and their order (histories counted together, buyers sorted):
/// sums of floats depend on it, and the same members must give the same
/// fit, on one partition, a folder of them, or a cluster.
pub fn fit_union(parts: &[Histories], day: i32) -> Result<Fit, PredictError> {
    let later: u64 = parts.iter().map(|p| p.later).sum();
    if later > 0 {
        return Err(PredictError::Later {
            members: later,
            day: crate::base::time::day_string(day),
        });
    }
    let mut days = std::collections::BTreeMap::<(u32, u32, u32), u64>::new();
    for (k, n) in parts.iter().flat_map(|p| &p.days) {
        *days.entry(*k).or_default() += n;
    }
    let total: u64 = days.values().sum();
    let histories: crate::predict::Weighted<History> = days
        .into_iter()
        .map(|((x, t_x, t), n)| {
            let h = History {
                x: f64::from(x),
                t_x: f64::from(t_x),
                t: f64::from(t),
            };
            (h, n as f64)
        })
        .collect();
    let mut buyers: Vec<((f64, f64), f64)> = parts
        .iter()
        .flat_map(|p| p.buyers.iter().map(|b| (*b, 1.0)))
        .collect();
    buyers.sort_by(|((x, m), _), ((y, n), _)| x.total_cmp(y).then(m.total_cmp(n)));
    let (bgnbd, bgnbd_ll) = fit_bgnbd(&histories)?;
    let gg = fit_gamma_gamma(&buyers).ok();
    Ok(Fit {
        bgnbd,
        bgnbd_ll,
        gamma_gamma: gg.map(|g| g.0),
        gamma_gamma_ll: gg.map(|g| g.1),
        fitted_on: crate::base::time::day_string(day),
        members: total,
        repeat_buyers: buyers.len() as u64,
    })
}

/// The fit of a data folder of partitions: over every partition's
/// members, kept in each partition (the engines read their own copy). The
/// partitions' engines share it: the first to refit for a day fits over
/// the whole folder, the others take that fit.
#[derive(Clone)]
pub struct FitShare {
    whole: std::sync::Arc<dyn Store + Send + Sync>,
    last: std::sync::Arc<std::sync::Mutex<Option<Fit>>>,
}

impl FitShare {
    /// Fits over `whole` (every partition, read as one store).
    pub fn new(whole: std::sync::Arc<dyn Store + Send + Sync>) -> FitShare {
        FitShare {
            whole,
            last: Default::default(),
        }
    }

    /// The fit for `day`: made once, then shared.
    pub fn fit(&self, day: i32) -> Result<Fit, PredictError> {
        // A panic holding the lock left it whole: it is one assignment.
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let on = crate::base::time::day_string(day);
        if let Some(f) = last.as_ref().filter(|f| f.fitted_on == on) {
            return Ok(f.clone());
        }
        let f = fit(self.whole.as_ref(), day)?;
        *last = Some(f.clone());
        Ok(f)
    }
}

/// Keeps `fit` in the store (one durable commit).
pub fn save(store: &dyn Store, fit: &Fit) -> Result<(), StoreError> {
    let json = serde_json::to_vec(fit).map_err(|e| StoreError::Io(e.to_string()))?;
    store.commit(WriteSet {
        meta: vec![(keys::MODEL.to_string(), json)],
        ..WriteSet::default()
    })
}

/// The day the store's member state is as of: its last daily tick (for
/// a folder kept by `nudge replay --data`, the `--until` day), else
/// `today`. Predictions shown for a member are for this day.
pub fn as_of(store: &dyn Store, today: i32) -> i32 {
    store
        .meta_day(keys::LAST_TICK)
        .ok()
        .flatten()
        .unwrap_or(today)
}

/// The fit kept in the store, if any.
pub fn load(store: &dyn Store) -> Result<Option<Fit>, StoreError> {
    Ok(store
        .meta(keys::MODEL)?
        .and_then(|b| serde_json::from_slice(&b).ok()))
}

/// A member's predictions on `day` from `fit`: `None` without a purchase.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Predictions {
    pub p_alive: f64,
    pub churn_risk: f64,
    /// Days from `day` to the expected next purchase; `None` beyond ten years.
    pub expected_next_purchase: Option<f64>,
}

pub fn predictions(fit: &Fit, rec: &MemberRecord, day: i32) -> Option<(History, Predictions)> {
    let h = history(rec, day)?;
    let p_alive = fit.bgnbd.p_alive(&h);
    Some((
        h,
        Predictions {
            p_alive,
            churn_risk: 1.0 - p_alive,
            expected_next_purchase: fit.bgnbd.days_to_next(&h),
        },
    ))
}

/// `p_alive` alone: a few logarithms (rules read it on every evaluation).
pub fn p_alive(fit: &Fit, rec: &MemberRecord, day: i32) -> Option<f64> {
    Some(fit.bgnbd.p_alive(&history(rec, day)?))
}

/// Expected purchases in the next `days`.
pub fn expected_purchases(fit: &Fit, rec: &MemberRecord, day: i32, days: u32) -> Option<f64> {
    Some(fit.bgnbd.expected(&history(rec, day)?, f64::from(days)))
}

/// Expected purchases in the next `days` times the expected spend per
/// purchase (undiscounted); `None` without a Gamma-Gamma fit.
pub fn predicted_clv(fit: &Fit, rec: &MemberRecord, day: i32, days: u32) -> Option<f64> {
    let n = expected_purchases(fit, rec, day, days)?;
    Some(n * fit.spend(repeat_spend(rec))?)
}

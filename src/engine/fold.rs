//! Folding an event into a member record: purchase counters, the dates the
//! repurchase cycle comes from, and the windowed aggregates the rule set
//! uses (one bucket per day, pruned to the window, so a member's state for a
//! window never outgrows it).

use super::Plan;
use crate::lang::RuleSet;
use crate::lang::program::{Env, Value};
use crate::model::{AggShare, AggState, Bucket, Event, MemberRecord};
use rust_decimal::Decimal;

/// Folds `ev` (on local `day`) into `rec`; returns what it added to each
/// windowed aggregate (a refund takes that back).
pub fn fold(
    rec: &mut MemberRecord,
    ev: &Event,
    day: i32,
    plan: &Plan,
    rules: &RuleSet,
) -> Vec<AggShare> {
    // First seen: a late event can be older than the first one that came.
    rec.joined = rec.joined.min(day);
    if Some(ev.kind) == plan.purchase_kind {
        let amount = match ev.fields.get(plan.purchase_amount) {
            Some(Value::Dec(d)) => *d,
            _ => Decimal::ZERO,
        };
        rec.orders += 1;
        rec.spend = rec.spend.saturating_add(amount);
        fold_purchase_day(rec, day, amount, plan.recent_days);
    }
    fold_aggregates(rec, ev, day, plan, rules)
}

/// The purchase days: first, last, how many, and the recent ones that tell
/// a late purchase's day from one already counted. `recent_days` holds
/// every purchase day from its first entry on; a day older than that entry
/// (older than the dedup window, or in a record from before the list) is
/// not counted as new, which makes the cycle come out slightly long.
fn fold_purchase_day(rec: &mut MemberRecord, day: i32, amount: Decimal, horizon: i32) {
    let (Some(first), Some(last)) = (rec.first_purchase, rec.last_purchase) else {
        rec.first_purchase = Some(day);
        rec.last_purchase = Some(day);
        rec.purchase_days = 1;
        rec.first_day_spend = Some(amount);
        rec.recent_days = vec![day];
        return;
    };
    let days = &mut rec.recent_days;
    if days.is_empty() {
        // A record from before the list: only the last day is known to
        // have nothing after it.
        days.push(last);
    }
    let known_since = days[0];
    let new = if day < first {
        // Nothing between it and the first day; the list stays whole from
        // the new day on only if it was whole from the first day.
        if known_since == first {
            days.insert(0, day);
        }
        rec.first_purchase = Some(day);
        rec.first_day_spend = Some(amount);
        true
    } else if day >= known_since {
        match days.binary_search(&day) {
            Ok(_) => false,
            Err(i) => {
                days.insert(i, day);
                true
            }
        }
    } else {
        false
    };
    if day == first {
        rec.first_day_spend = rec.first_day_spend.map(|s| s.saturating_add(amount));
    }
    if new {
        rec.purchase_days += 1;
        rec.last_purchase = Some(last.max(day));
    }
    let from = last.max(day).saturating_sub(horizon);
    let old = days.partition_point(|&d| d < from);
    days.drain(..old);
}

fn fold_aggregates(
    rec: &mut MemberRecord,
    ev: &Event,
    day: i32,
    plan: &Plan,
    rules: &RuleSet,
) -> Vec<AggShare> {
    let mut shares = Vec::new();
    // Keep only the aggregates this rule set uses.
    rec.aggregates.retain(|a| plan.agg_keys.contains(&a.key));
    let slots = plan.event_slots(ev);
    for (i, spec) in rules.layout.aggregates.iter().enumerate() {
        if spec.event_type != ev.kind {
            continue;
        }
        if let Some(filter) = &rules.aggregate_filters[i] {
            let env = Env {
                member: &[],
                tags: &[],
                tag_names: &[],
                event: &slots,
                today: day,
                host: None,
                rule: "",
            };
            if filter.eval(&env) != Some(true) {
                continue;
            }
        }
        let value = match spec.field {
            Some(s) => match slots.get(s as usize) {
                Some(Value::Dec(d)) => *d,
                Some(Value::Int(n)) => Decimal::from(*n),
                _ => continue,
            },
            None => Decimal::ZERO,
        };
        let key = plan.agg_keys[i];
        if !spec.func.is_history() {
            shares.push(AggShare { key, value });
        }
        let state = match rec.aggregates.iter_mut().position(|a| a.key == key) {
            Some(p) => &mut rec.aggregates[p],
            None => {
                rec.aggregates.push(AggState {
                    key,
                    buckets: Vec::new(),
                });
                let last = rec.aggregates.len() - 1;
                &mut rec.aggregates[last]
            }
        };
        if spec.func.is_history() {
            history_bucket(&mut state.buckets, day);
            continue;
        }
        match state.buckets.binary_search_by_key(&day, |b| b.day) {
            Ok(p) => {
                let b = &mut state.buckets[p];
                b.count += 1;
                b.sum = b.sum.saturating_add(value);
                b.min = b.min.min(value);
                b.max = b.max.max(value);
            }
            Err(p) => state.buckets.insert(
                p,
                Bucket {
                    day,
                    count: 1,
                    sum: value,
                    min: value,
                    max: value,
                },
            ),
        }
        // Days that have left the window for good (relative to the newest day).
        let newest = state.buckets.last().map_or(day, |b| b.day);
        let horizon = newest - spec.window_days as i32;
        state.buckets.retain(|b| b.day > horizon);
    }
    shares
}

/// The state of `cycle(...)` and `days_since_last(...)`: one bucket whose
/// `day` is the last matching day, `min` the first (as a number) and
/// `count` the distinct days. Bounded whatever the history: two numbers
/// and a count. A late event between the first and last day is not a new
/// day (as for the member's own `cycle`).
fn history_bucket(buckets: &mut Vec<Bucket>, day: i32) {
    if buckets.len() > 1 {
        // Two members merged: one bucket again.
        let first = buckets.iter().map(|b| b.min).min().unwrap_or_default();
        let last = buckets.iter().map(|b| b.day).max().unwrap_or(day);
        let count = buckets.iter().map(|b| b.count).sum();
        buckets.clear();
        buckets.push(Bucket {
            day: last,
            count,
            sum: Decimal::ZERO,
            min: first,
            max: Decimal::from(last),
        });
    }
    let Some(b) = buckets.first_mut() else {
        buckets.push(Bucket {
            day,
            count: 1,
            sum: Decimal::ZERO,
            min: Decimal::from(day),
            max: Decimal::from(day),
        });
        return;
    };
    if day > b.day {
        b.day = day;
        b.max = Decimal::from(day);
        b.count += 1;
    } else if Decimal::from(day) < b.min {
        b.min = Decimal::from(day);
        b.count += 1;
    }
}

/// Takes back what a purchase added, for a refund of `amount` of it (the
/// whole rest when `None`): spend, the order (once fully refunded), its
/// share of every windowed aggregate, and its points in proportion.
/// Returns the points taken back; `None` when the purchase is unknown (not
/// this member's, or older than `refund.within`) or already refunded.
pub fn refund(
    rec: &mut MemberRecord,
    purchase: &str,
    amount: Option<Decimal>,
    expiring_lots: bool,
) -> Option<i64> {
    let id = xxhash_rust::xxh3::xxh3_64(purchase.as_bytes());
    let entry = rec.purchases.iter_mut().find(|p| p.event == id)?;
    let rest = entry.amount - entry.refunded;
    let take = amount.unwrap_or(rest).min(rest);
    if take <= Decimal::ZERO {
        return None;
    }
    entry.refunded += take;
    let full = entry.refunded >= entry.amount;
    let fraction = if entry.amount.is_zero() {
        Decimal::ONE
    } else {
        take / entry.amount
    };
    let points = if full {
        entry.points
    } else {
        (Decimal::from(entry.points) * take / entry.amount)
            .round()
            .try_into()
            .unwrap_or(0i64)
            .min(entry.points)
    };
    entry.points -= points;
    let (day, shares) = (entry.day, entry.aggregates.clone());
    rec.spend = (rec.spend - take).max(Decimal::ZERO);
    if full {
        rec.orders = rec.orders.saturating_sub(1);
    }
    for share in shares {
        let Some(agg) = rec.aggregates.iter_mut().find(|a| a.key == share.key) else {
            continue;
        };
        if let Ok(p) = agg.buckets.binary_search_by_key(&day, |b| b.day) {
            let b = &mut agg.buckets[p];
            b.sum -= share.value * fraction;
            if full {
                b.count = b.count.saturating_sub(1);
            }
            if b.count == 0 {
                agg.buckets.remove(p);
            }
        }
    }
    // Points already spent leave the balance below zero: the member owes them.
    rec.points -= points;
    if expiring_lots {
        super::points::take_from_lots(&mut rec.point_lots, points);
    }
    Some(points)
}

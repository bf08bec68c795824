//! The member as rules see it: slot values computed from a member record
//! for one evaluation day (derived fields like `days_since_last_purchase`,
//! `cycle` and windowed aggregates), and tags as bits. Buffers are reused
//! between evaluations.

use crate::base::value::Value;
use crate::lang::ast::AggFn;
use crate::lang::check::{Layout, slot};
use crate::model::{AggState, MemberRecord};
use rust_decimal::Decimal;

/// Reusable slot and tag buffers.
#[derive(Default)]
pub struct View {
    pub member: Vec<Value>,
    pub tags: Vec<u64>,
    pub tag_names: Vec<crate::model::Name>,
    /// Scratch for evaluating a list of rules' conditions.
    pub scratch: crate::lang::conditions::Scratch,
}

impl View {
    /// What a tick condition reads of the view on `today`: no event, no
    /// plugins (the due index and the evaluator; firing adds them).
    pub fn tick_env(&self, today: i32) -> crate::lang::program::Env<'_> {
        crate::lang::program::Env {
            member: &self.member,
            tags: &self.tags,
            tag_names: &self.tag_names,
            event: &[],
            today,
            host: None,
            rule: "",
        }
    }

    /// Fills the buffers for `rec` on `today`, computing the attributes and
    /// aggregates `need` marks (all without it).
    // Long because one match over the built-in slots, each arm one computed field.
    pub fn fill(
        &mut self,
        rec: &MemberRecord,
        layout: &Layout,
        plan: &super::Plan,
        need: Option<&[bool]>,
        today: i32,
        expire: Option<i32>,
    ) {
        let (agg_keys, n_builtin) = (&plan.agg_keys, plan.n_builtin);
        // Reset to null; slots already null (most, between members) are
        // left as they are.
        if self.member.len() == layout.fields.len() {
            for v in self.member.iter_mut() {
                if !matches!(v, Value::Null) {
                    *v = Value::Null;
                }
            }
        } else {
            self.member.clear();
            self.member.resize(layout.fields.len(), Value::Null);
        }
        // Only what the evaluation's rules read: lookups, divisions and
        // sums cost, and most rules read a few fields.
        let needed = |slot: usize| need.is_none_or(|n| n.get(slot).copied().unwrap_or(true));
        let want = |s: u16| needed(s as usize);
        let m = &mut self.member;
        let set = |m: &mut Vec<Value>, s: u16, v: Value| m[s as usize] = v;
        if let Some(last) = rec.last_purchase {
            if want(slot::DAYS_SINCE_LAST_PURCHASE) {
                set(
                    m,
                    slot::DAYS_SINCE_LAST_PURCHASE,
                    Value::Int((today - last) as i64),
                );
            }
            if want(slot::LAST_PURCHASE_AT) {
                set(m, slot::LAST_PURCHASE_AT, Value::Date(last));
            }
        }
        if want(slot::CYCLE)
            && let (Some(first), Some(last)) = (rec.first_purchase, rec.last_purchase)
        {
            set(m, slot::CYCLE, mean_gap(first, last, rec.purchase_days));
        }
        if want(slot::FIRST_PURCHASE_AT)
            && let Some(first) = rec.first_purchase
        {
            set(m, slot::FIRST_PURCHASE_AT, Value::Date(first));
        }
        if want(slot::ORDERS) {
            set(m, slot::ORDERS, Value::Int(rec.orders as i64));
        }
        if want(slot::SPEND) {
            set(m, slot::SPEND, Value::Dec(rec.spend));
        }
        if want(slot::AVG_ORDER) && rec.orders > 0 {
            set(
                m,
                slot::AVG_ORDER,
                Value::Dec(rec.spend / Decimal::from(rec.orders)),
            );
        }
        if want(slot::WALLET) {
            set(m, slot::WALLET, Value::Dec(rec.wallet));
        }
        if let Some(fit) = &plan.fit {
            predict(m, rec, layout, fit, today, &want);
        }
        if want(slot::POINTS) {
            set(m, slot::POINTS, Value::Int(rec.points));
        }
        if want(slot::TIER) {
            set(m, slot::TIER, Value::Tier(rec.tier));
        }
        if want(slot::MEMBER_DAYS) {
            set(
                m,
                slot::MEMBER_DAYS,
                Value::Int((today - rec.joined) as i64),
            );
        }
        if want(slot::JOINED_AT) {
            set(m, slot::JOINED_AT, Value::Date(rec.joined));
        }
        if let Some(b) = rec.birthday {
            if want(slot::BIRTHDAY) {
                set(m, slot::BIRTHDAY, Value::Date(b));
            }
            if want(slot::DAYS_TO_BIRTHDAY) {
                let (days, month) = birthday_info(b, today);
                set(m, slot::DAYS_TO_BIRTHDAY, Value::Int(days));
                set(m, slot::BIRTHDAY_MONTH, Value::Int(month));
            } else if want(slot::BIRTHDAY_MONTH) {
                set(m, slot::BIRTHDAY_MONTH, Value::Int(civil(b).1));
            }
        }
        if want(slot::COUPONS_OPEN) || want(slot::COUPONS_REDEEMED) {
            let open = rec
                .coupons
                .iter()
                .filter(|c| c.redeemed.is_none() && c.valid_until >= today)
                .count();
            let redeemed = rec.coupons.iter().filter(|c| c.redeemed.is_some()).count();
            set(m, slot::COUPONS_OPEN, Value::Int(open as i64));
            set(m, slot::COUPONS_REDEEMED, Value::Int(redeemed as i64));
        }
        for (i, (name, _)) in layout
            .fields
            .iter()
            .enumerate()
            .skip(n_builtin)
            .take(layout.fields.len() - n_builtin - layout.computed())
        {
            if !needed(i) {
                continue;
            }
            match rec.attribute(name) {
                Some(v) => m[i] = v.into(),
                None => {
                    if let Some((_, d)) = layout.defaults.iter().find(|(s, _)| *s as usize == i) {
                        m[i] = d.clone();
                    }
                }
            }
        }
        for &(slot, days) in layout.expiring.iter().filter(|(s, _)| needed(*s as usize)) {
            // A lot earned on day d expires on d + expire_after; lots are only
            // kept when points expire, so `expire` is known here.
            let soon: i64 = rec
                .point_lots
                .iter()
                .filter(|(d, _)| {
                    expire.is_some_and(|e| d + e > today && d + e <= today + days as i32)
                })
                .map(|(_, n)| n)
                .sum();
            m[slot as usize] = Value::Int(soon);
        }
        for (spec, key) in layout.aggregates.iter().zip(agg_keys) {
            if !needed(spec.slot as usize) {
                continue;
            }
            let state = rec.aggregates.iter().find(|a| a.key == *key);
            m[spec.slot as usize] = aggregate_value(
                spec.func,
                state,
                spec.window_days,
                today,
                &layout.fields[spec.slot as usize].1,
            );
        }
        // Tag names are for plugins given `member`, which makes `need` all.
        if need.is_none() {
            self.tag_names.clone_from(&rec.tags);
        } else {
            self.tag_names.clear();
        }
        self.tags.clear();
        self.tags.resize(layout.tags.len().div_ceil(64), 0);
        for t in &rec.tags {
            if let Some(&bit) = plan.tag_bits.get(t.as_str()) {
                self.tags[bit as usize / 64] |= 1 << (bit % 64);
            }
        }
    }
}

/// The prediction slots the evaluation reads, from the current fit (null
/// without a purchase by `today`).
fn predict(
    m: &mut [Value],
    rec: &MemberRecord,
    layout: &Layout,
    fit: &crate::predict::Fit,
    today: i32,
    want: &dyn Fn(u16) -> bool,
) {
    use super::predict::{expected_purchases, p_alive, predicted_clv, predictions};
    let dec =
        |x: f64| Decimal::from_f64_retain(x).map_or(Value::Null, |d| Value::Dec(d.round_dp(6)));
    // The next purchase day is a search over windows: only when read.
    if want(slot::EXPECTED_NEXT_PURCHASE)
        && let Some((_, p)) = predictions(fit, rec, today)
        && let Some(d) = p.expected_next_purchase
    {
        m[slot::EXPECTED_NEXT_PURCHASE as usize] = Value::Int(d as i64);
    }
    if (want(slot::P_ALIVE) || want(slot::CHURN_RISK))
        && let Some(p) = p_alive(fit, rec, today)
    {
        m[slot::P_ALIVE as usize] = dec(p);
        m[slot::CHURN_RISK as usize] = dec(1.0 - p);
    }
    for &(s, what, days) in layout.predicted.iter().filter(|(s, _, _)| want(*s)) {
        let v = match what {
            crate::lang::check::Predicted::Purchases => expected_purchases(fit, rec, today, days),
            crate::lang::check::Predicted::Clv => predicted_clv(fit, rec, today, days),
        };
        m[s as usize] = v.map_or(Value::Null, |x| match what {
            crate::lang::check::Predicted::Clv => {
                Decimal::from_f64_retain(x).map_or(Value::Null, |d| Value::Dec(d.round_dp(2)))
            }
            crate::lang::check::Predicted::Purchases => dec(x),
        });
    }
}

/// Days until the next birthday (0 on the day) and the birthday's month.
/// A 29 February birthday falls on 28 February in other years. Plain
/// calendar arithmetic: this runs for every member on every tick.
pub(super) fn birthday_info(birthday: i32, today: i32) -> (i64, i64) {
    let (_, bm, bd) = civil(birthday);
    let (ty, _, _) = civil(today);
    let on = |year: i64| {
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        let day = if bm == 2 && bd == 29 && !leap { 28 } else { bd };
        days_from_civil(year, bm, day)
    };
    let mut next = on(ty);
    if next < today as i64 {
        next = on(ty + 1);
    }
    (next - today as i64, bm)
}

/// (year, month, day) of a day number (days since 1970-01-01), after
/// Howard Hinnant's `civil_from_days`.
fn civil(day: i32) -> (i64, i64, i64) {
    let z = day as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The day number of a civil date (Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An aggregate over the days in `(today - window, today]`.
pub fn aggregate_value(
    func: AggFn,
    state: Option<&AggState>,
    window: u32,
    today: i32,
    ty: &crate::lang::check::Ty,
) -> Value {
    let from = today - window as i32;
    let mut count = 0u32;
    let mut sum = Decimal::ZERO;
    let mut min: Option<Decimal> = None;
    let mut max: Option<Decimal> = None;
    for b in state.map_or(&[][..], |s| &s.buckets[..]) {
        if b.day > from && b.day <= today {
            count += b.count;
            sum += b.sum;
            min = Some(min.map_or(b.min, |m| m.min(b.min)));
            max = Some(max.map_or(b.max, |m| m.max(b.max)));
        }
    }
    let num = |d: Decimal| match ty {
        crate::lang::check::Ty::Int => i64::try_from(d).map(Value::Int).unwrap_or(Value::Null),
        _ => Value::Dec(d),
    };
    match func {
        AggFn::Count => Value::Int(count as i64),
        AggFn::Sum => num(sum),
        AggFn::Avg if count > 0 => Value::Dec(sum / Decimal::from(count)),
        AggFn::Avg => Value::Null,
        AggFn::Min => min.map_or(Value::Null, num),
        AggFn::Max => max.map_or(Value::Null, num),
        AggFn::Cycle | AggFn::DaysSinceLast => history_value(func, state, today),
    }
}

/// `cycle(...)` and `days_since_last(...)` from a history state (see
/// `fold::history_bucket`): the first day is the least `min`, the last
/// the greatest `day`, the distinct days the sum of `count` (a merge of
/// two members leaves a bucket each).
fn history_value(func: AggFn, state: Option<&AggState>, today: i32) -> Value {
    let buckets = state.map_or(&[][..], |s| &s.buckets[..]);
    let (Some(first), Some(last)) = (
        buckets.iter().map(|b| b.min).min(),
        buckets.iter().map(|b| b.day).max(),
    ) else {
        return Value::Null;
    };
    let days: u32 = buckets.iter().map(|b| b.count).sum();
    match func {
        AggFn::DaysSinceLast if last <= today => Value::Int((today - last) as i64),
        AggFn::Cycle => i32::try_from(first).map_or(Value::Null, |f| mean_gap(f, last, days)),
        _ => Value::Null,
    }
}

/// The mean gap in days between `days` distinct days from `first` to
/// `last`: a cycle (null before a second day).
fn mean_gap(first: i32, last: i32, days: u32) -> Value {
    let span = Decimal::from(last - first);
    match days {
        0 | 1 => Value::Null,
        2 => Value::Dec(span),
        n => Value::Dec(span / Decimal::from(n - 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_arithmetic_agrees_with_jiff_over_centuries() {
        for day in (-800_000..800_000).step_by(37) {
            let d = super::super::clock::day_date(day);
            let (y, m, dd) = civil(day);
            assert_eq!(
                (y, m, dd),
                (d.year() as i64, d.month() as i64, d.day() as i64)
            );
            assert_eq!(days_from_civil(y, m, dd), day as i64);
        }
        // 29 February: the 28th in other years.
        let feb29 = days_from_civil(2000, 2, 29) as i32;
        let today = days_from_civil(2001, 2, 20) as i32;
        assert_eq!(birthday_info(feb29, today), (8, 2));
        assert_eq!(
            birthday_info(feb29, days_from_civil(2004, 2, 29) as i32),
            (0, 2)
        );
    }
}

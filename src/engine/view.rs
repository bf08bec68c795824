//! The member as rules see it: slot values computed from a member record
//! for one evaluation day (derived fields like `days_since_last_purchase`,
//! `cycle` and windowed aggregates), and tags as bits. Buffers are reused
//! between evaluations.

use crate::lang::ast::AggFn;
use crate::lang::check::{Layout, slot};
use crate::lang::program::Value;
use crate::model::{AggState, MemberRecord};
use rust_decimal::Decimal;

/// Reusable slot and tag buffers.
#[derive(Default)]
pub struct View {
    pub member: Vec<Value>,
    pub tags: Vec<u64>,
    pub tag_names: Vec<String>,
}

impl View {
    /// Fills the buffers for `rec` on `today`, computing the attributes and
    /// aggregates `need` marks (all without it).
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
        self.member.clear();
        self.member.resize(layout.fields.len(), Value::Null);
        // Attributes and aggregates cost lookups and sums: only the ones
        // the evaluation's rules read.
        let needed = |slot: usize| need.is_none_or(|n| n.get(slot).copied().unwrap_or(true));
        let m = &mut self.member;
        let set = |m: &mut Vec<Value>, s: u16, v: Value| m[s as usize] = v;
        if let Some(last) = rec.last_purchase {
            set(
                m,
                slot::DAYS_SINCE_LAST_PURCHASE,
                Value::Int((today - last) as i64),
            );
            set(m, slot::LAST_PURCHASE_AT, Value::Date(last));
        }
        if let (Some(first), Some(last)) = (rec.first_purchase, rec.last_purchase)
            && rec.purchase_days >= 2
        {
            let gaps = Decimal::from(rec.purchase_days - 1);
            set(
                m,
                slot::CYCLE,
                Value::Dec(Decimal::from(last - first) / gaps),
            );
        }
        if let Some(first) = rec.first_purchase {
            set(m, slot::FIRST_PURCHASE_AT, Value::Date(first));
        }
        set(m, slot::ORDERS, Value::Int(rec.orders as i64));
        set(m, slot::SPEND, Value::Dec(rec.spend));
        if rec.orders > 0 {
            set(
                m,
                slot::AVG_ORDER,
                Value::Dec(rec.spend / Decimal::from(rec.orders)),
            );
        }
        set(m, slot::POINTS, Value::Int(rec.points));
        set(m, slot::TIER, Value::Tier(rec.tier));
        set(
            m,
            slot::MEMBER_DAYS,
            Value::Int((today - rec.joined) as i64),
        );
        set(m, slot::JOINED_AT, Value::Date(rec.joined));
        if let Some(b) = rec.birthday {
            set(m, slot::BIRTHDAY, Value::Date(b));
            let (days, month) = birthday_info(b, today);
            set(m, slot::DAYS_TO_BIRTHDAY, Value::Int(days));
            set(m, slot::BIRTHDAY_MONTH, Value::Int(month));
        }
        let open = rec
            .coupons
            .iter()
            .filter(|c| c.redeemed.is_none() && c.valid_until >= today)
            .count();
        let redeemed = rec.coupons.iter().filter(|c| c.redeemed.is_some()).count();
        set(m, slot::COUPONS_OPEN, Value::Int(open as i64));
        set(m, slot::COUPONS_REDEEMED, Value::Int(redeemed as i64));
        for (i, (name, _)) in
            layout.fields.iter().enumerate().skip(n_builtin).take(
                layout.fields.len() - n_builtin - layout.aggregates.len() - layout.expiring.len(),
            )
        {
            if needed(i)
                && let Some(v) = rec.attribute(name)
            {
                m[i] = v.into();
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
        self.tag_names.clone_from(&rec.tags);
        self.tags.clear();
        self.tags.resize(layout.tags.len().div_ceil(64), 0);
        for t in &rec.tags {
            if let Some(bit) = layout.tags.iter().position(|x| x == t) {
                self.tags[bit / 64] |= 1 << (bit % 64);
            }
        }
    }
}

/// Days until the next birthday (0 on the day) and the birthday's month.
/// A 29 February birthday falls on 28 February in other years.
fn birthday_info(birthday: i32, today: i32) -> (i64, i64) {
    let b = super::clock::day_date(birthday);
    let t = super::clock::day_date(today);
    let on = |year: i16| {
        let day =
            if b.month() == 2 && b.day() == 29 && !jiff::civil::date(year, 1, 1).in_leap_year() {
                28
            } else {
                b.day()
            };
        jiff::civil::Date::new(year, b.month(), day).unwrap_or(t)
    };
    let mut next = on(t.year());
    if next < t {
        next = on(t.year() + 1);
    }
    ((next - t).get_days() as i64, b.month() as i64)
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
    }
}

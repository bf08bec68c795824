//! The due index: for each member, the first day its daily tick can do
//! anything. A tick rule fires on the rising edge of its condition, so a
//! member whose record does not change needs a visit only on a day when a
//! tick rule's condition can turn (or a point lot expires). Most conditions
//! turn only when a day count crosses a bound (`days_since_last_purchase >
//! cycle * 1.5`), and that day can be computed; the rest are due daily.
//!
//! Owns the per-member due days (in memory: built by a full tick under the
//! running rules, kept by every commit after it) and computing them; the
//! tick (`engine/tick.rs`) decides whom to visit. A clean stop saves the
//! index as one value (`Engine::save_due`) and the next start under the
//! same rules takes it up, so it needs no full tick; after a crash, a
//! full tick rebuilds it.

use super::ctx::Ctx;
use super::view::View;
use crate::base::value::Value;
use crate::lang::program::BoolCode;
use crate::lang::timing::{Mover, Timing};
use crate::model::{MemberRecord, Name};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use std::collections::HashMap;

/// The first day each member must be visited on. Members not in it are
/// visited by the next full tick only, so every member the engine writes
/// is put in (due at once) after its commit.
#[derive(Default)]
pub struct Due {
    /// Ids are held inline (up to 24 bytes): at 10,000,000 members a
    /// heap string each would add hundreds of megabytes.
    days: HashMap<Name, i32>,
}

impl Due {
    /// The members due on or before `day`, in id order (ticks are
    /// deterministic).
    pub fn on(&self, day: i32) -> Vec<String> {
        let mut out: Vec<String> = self
            .days
            .iter()
            .filter(|(_, d)| **d <= day)
            .map(|(m, _)| m.to_string())
            .collect();
        out.sort_unstable();
        out
    }

    /// How many members are due on or before `day`.
    pub fn count_on(&self, day: i32) -> usize {
        self.days.values().filter(|d| **d <= day).count()
    }

    /// Whether `member` is due on or before `day` (one not in the index
    /// waits for the next full tick).
    pub fn is_due(&self, member: &str, day: i32) -> bool {
        self.days.get(member).is_some_and(|d| *d <= day)
    }

    /// How many members the index holds.
    pub fn len(&self) -> usize {
        self.days.len()
    }

    pub fn is_empty(&self) -> bool {
        self.days.is_empty()
    }

    pub fn set(&mut self, member: &str, day: i32) {
        match self.days.get_mut(member) {
            Some(d) => *d = day,
            None => {
                self.days.insert(Name::from(member), day);
            }
        }
    }

    /// A member whose record changed: visited by the next tick.
    pub fn touch(&mut self, member: &str) {
        self.set(member, i32::MIN);
    }

    pub fn forget(&mut self, member: &str) {
        self.days.remove(member);
    }

    /// The index as one value (see `store::keys::DUE_SNAPSHOT`): the
    /// version of the rules it was built under, then each member and day
    /// (postcard, as member records are).
    pub fn encode(&self, version: &str) -> Vec<u8> {
        let mut days: Vec<(&Name, &i32)> = self.days.iter().collect();
        days.sort_unstable();
        postcard::to_allocvec(&(version, days)).unwrap_or_default()
    }

    /// The index a snapshot holds, when it was built under `version`
    /// (else, or when it does not decode, `None`: a full tick rebuilds it).
    pub fn decode(bytes: &[u8], version: &str) -> Option<Due> {
        let (v, days): (String, Vec<(Name, i32)>) = postcard::from_bytes(bytes).ok()?;
        (v == version).then(|| Due {
            days: days.into_iter().collect(),
        })
    }
}

/// The first day after `today` on which `rec`'s tick can do anything, with
/// `view` filled for `rec` on `today` for the tick rules.
pub fn next_due(cx: &Ctx<'_>, rec: &MemberRecord, view: &View, today: i32) -> i32 {
    let tomorrow = today.saturating_add(1);
    let mut due = i32::MAX;
    if let Some(after) = cx.schema.points.expire_after_days
        && let Some(first) = rec.point_lots.iter().map(|(d, _)| *d).min()
    {
        due = due.min(first.saturating_add(after as i32));
    }
    let env = view.tick_env(today);
    for &ri in &cx.rules.on_tick {
        let rule = &cx.rules.rules[ri as usize];
        if !rule.edge_triggered() {
            return tomorrow;
        }
        // A re-armed rule fires again tomorrow while its condition holds.
        let key = cx.plan.rule_keys[ri as usize];
        if rule.rearm
            && !rec.rules.iter().any(|r| r.rule == key && r.armed)
            && rule.matches(&env) == Some(true)
        {
            return tomorrow;
        }
        match &cx.rules.timing[ri as usize] {
            Timing::Fixed => {}
            Timing::Daily => return tomorrow,
            Timing::Moves(movers) => {
                for m in movers.iter() {
                    if let Some(day) = next_move(cx, rec, view, m, today) {
                        due = due.min(day);
                    }
                }
            }
        }
    }
    due.max(tomorrow)
}

/// How far ahead a test reading the day itself is evaluated for the day
/// it changes. A test that does not change within it (`today ==
/// 2027-02-14`, months away) has the member visited again then, to look
/// further: two months of days cost a few microseconds per member
/// visited, and a visit every two months costs nothing.
const SCAN_DAYS: i32 = 62;

/// The first day after `today` on which the mover `m` can change for
/// `rec`; `None` when it cannot by itself.
fn next_move(cx: &Ctx<'_>, rec: &MemberRecord, view: &View, m: &Mover, today: i32) -> Option<i32> {
    let after = |days: &mut dyn Iterator<Item = i32>| days.filter(|d| *d > today).min();
    match m {
        Mover::Count(c) => {
            // A count that is null (no purchase yet) stays null until an
            // event, which makes the member due anyway.
            let Value::Int(v) = view.member[c.slot as usize] else {
                return None;
            };
            let k = next_step(v, &c.bound.value(&view.tick_env(today)))?;
            let day = (today as i64).saturating_add(k - v);
            Some(day.clamp(i32::MIN as i64, i32::MAX as i64) as i32)
        }
        Mover::Window(i) => {
            let spec = cx.rules.layout.aggregates.get(*i as usize)?;
            let key = cx.plan.agg_keys.get(*i as usize)?;
            let state = rec.aggregates.iter().find(|a| a.key == *key)?;
            // A day is in the window `(today - window, today]`: it enters
            // on its day and leaves `window` days later.
            let w = spec.window_days as i32;
            after(
                &mut state
                    .buckets
                    .iter()
                    .flat_map(|b| [b.day, b.day.saturating_add(w)]),
            )
        }
        Mover::Expiring(i) => {
            let (_, horizon) = cx.rules.layout.expiring.get(*i as usize)?;
            let expire = cx.schema.points.expire_after_days? as i32;
            // A lot of day d expires on d + expire, and is within the
            // horizon from `horizon` days before.
            after(&mut rec.point_lots.iter().flat_map(|(d, _)| {
                let expires = d.saturating_add(expire);
                [expires.saturating_sub(*horizon as i32), expires]
            }))
        }
        Mover::Scan(test) => Some(scan(rec, view, test, today)),
    }
}

/// The first day after `today` (within [`SCAN_DAYS`]) on which `test`
/// gives another result: the day counts and the birthday countdown moved
/// on to that day, everything else as today.
fn scan(rec: &MemberRecord, view: &View, test: &BoolCode, today: i32) -> i32 {
    use crate::lang::check::slot::{DAYS_SINCE_LAST_PURCHASE, DAYS_TO_BIRTHDAY, MEMBER_DAYS};
    let now = test.eval(&view.tick_env(today));
    let mut member = view.member.clone();
    let last = today.saturating_add(SCAN_DAYS);
    for day in today.saturating_add(1)..=last {
        let k = (day - today) as i64;
        for s in [DAYS_SINCE_LAST_PURCHASE, MEMBER_DAYS] {
            if let Value::Int(v) = view.member[s as usize] {
                member[s as usize] = Value::Int(v.saturating_add(k));
            }
        }
        if let (Value::Int(_), Some(b)) = (&view.member[DAYS_TO_BIRTHDAY as usize], rec.birthday) {
            member[DAYS_TO_BIRTHDAY as usize] = Value::Int(super::view::birthday_info(b, day).0);
        }
        let env = crate::lang::program::Env {
            member: &member,
            today: day,
            ..view.tick_env(day)
        };
        if test.eval(&env) != now {
            return day;
        }
    }
    last
}

/// The count's next value (above `v`, rising by one a day) at which a
/// comparison with `bound` can turn: a test `count OP bound` has the same
/// result for every count strictly between two of the steps `ceil(bound)`
/// and `floor(bound) + 1`. `None` when no step is ahead.
fn next_step(v: i64, bound: &Value) -> Option<i64> {
    let (lo, hi) = match bound {
        Value::Int(b) => (*b, b.saturating_add(1)),
        Value::Dec(d) => (
            d.ceil().to_i64().unwrap_or(i64::MAX),
            (d.floor() + Decimal::ONE).to_i64().unwrap_or(i64::MAX),
        ),
        // A bound of another type, or null, never moves: the test's result
        // cannot change by itself.
        _ => return None,
    };
    [lo, hi].into_iter().filter(|k| *k > v).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_where_a_comparison_can_turn() {
        // days > 40 turns between 40 and 41: the step is 41 (and 40).
        assert_eq!(next_step(10, &Value::Int(40)), Some(40));
        assert_eq!(next_step(40, &Value::Int(40)), Some(41));
        assert_eq!(next_step(41, &Value::Int(40)), None);
        // days > 22.5 turns between 22 and 23.
        let b = Value::Dec(Decimal::new(225, 1));
        assert_eq!(next_step(3, &b), Some(23));
        assert_eq!(next_step(23, &b), None);
        assert_eq!(next_step(5, &Value::Null), None);
    }

    #[test]
    fn a_snapshot_round_trips_under_its_version_only() {
        let mut due = Due::default();
        due.set("m1", 20_500);
        due.touch("m2");
        let bytes = due.encode("v1");
        let back = Due::decode(&bytes, "v1").expect("decodes");
        assert_eq!(back.days, due.days);
        assert!(Due::decode(&bytes, "v2").is_none());
        assert!(Due::decode(&bytes[..bytes.len() - 1], "v1").is_none());
        assert!(Due::decode(&[], "v1").is_none());
    }
}

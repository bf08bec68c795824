//! How a rule's condition moves with the day (its [`Timing`]), from its
//! checked tree: which tests only an event changes, which turn on days a
//! member's record tells ahead, and which may turn any day. The tick's due
//! index (`engine::due`) computes the days; this only classes the tests.

use super::check::{Layout, TExpr, TKind};
use super::program::{AnyCode, BoolCode};

/// The compiler's code makers, for the tests a timing keeps (passed in:
/// `compile` uses this module, not the other way round).
pub struct Codes {
    pub bool: fn(&TExpr) -> BoolCode,
    pub any: fn(&TExpr) -> AnyCode,
}

/// Pushes the operands of `e` (plugin arguments included).
pub(super) fn push_children<'e>(e: &'e TExpr, stack: &mut Vec<&'e TExpr>) {
    match &e.kind {
        TKind::Lit(_)
        | TKind::Slot(_)
        | TKind::Event(_)
        | TKind::Today
        | TKind::HasTag(_)
        | TKind::Member => {}
        TKind::Neg(a) | TKind::Not(a) | TKind::IsNull(a) | TKind::Func(_, a) | TKind::Named(a) => {
            stack.push(a)
        }
        TKind::And(a, b) | TKind::Or(a, b) | TKind::Arith(_, a, b) | TKind::Cmp(_, a, b) => {
            stack.push(a);
            stack.push(b);
        }
        TKind::In(a, list) => {
            stack.push(a);
            stack.extend(list);
        }
        TKind::Plugin { args, .. } => stack.extend(args),
    }
}

/// How a rule's condition can change from one day to the next for a
/// member whose record stays as it is. Lets the daily tick visit only the
/// members whose tick rules can change that day (see `engine::due`).
#[derive(Clone, Debug)]
pub enum Timing {
    /// It cannot: it reads nothing that moves with the day.
    Fixed,
    /// Only on the days its movers can change, which each member's record
    /// tells ahead.
    Moves(Box<[Mover]>),
    /// Any day: it reads open coupons or a plugin, or mixes windows with
    /// the day itself in one test.
    Daily,
}

/// A test of a condition that moves with the day in a way a member's
/// record tells ahead; the condition can only change on a day one of its
/// movers does.
#[derive(Clone, Debug)]
pub enum Mover {
    /// A day count against a bound that does not move.
    Count(DayCount),
    /// A windowed aggregate (`layout.aggregates` index): it changes on the
    /// days one of its days enters or leaves the window.
    Window(u16),
    /// Points expiring within a horizon (`layout.expiring` index): it
    /// changes when a lot comes within the horizon and when it expires.
    Expiring(u16),
    /// A test reading the day itself (`today`, its calendar parts), day
    /// counts or the birthday countdown, and otherwise fields that do not
    /// move: evaluated ahead day by day (`engine::due`).
    Scan(BoolCode),
}

/// A day count compared with a bound (`days_since_last_purchase > cycle * 1.5`).
#[derive(Clone, Debug)]
pub struct DayCount {
    pub slot: u16,
    pub bound: AnyCode,
}

/// Member fields that do not move with the day by themselves.
fn fixed_slot(s: u16, layout: &Layout) -> bool {
    use crate::lang::check::slot::*;
    // `birthday_month` is the birth date's month: fixed. Open coupons
    // expire with the day.
    // Predictions move with the day (T grows) and with each refit.
    let moving = [
        DAYS_SINCE_LAST_PURCHASE,
        MEMBER_DAYS,
        DAYS_TO_BIRTHDAY,
        COUPONS_OPEN,
        P_ALIVE,
        CHURN_RISK,
        EXPECTED_NEXT_PURCHASE,
    ];
    !moving.contains(&s)
        && !layout.aggregates.iter().any(|a| a.slot == s)
        && !layout.expiring.iter().any(|(e, _)| *e == s)
        && !layout.predicted.iter().any(|(p, _, _)| *p == s)
}

fn is_count(e: &TExpr) -> Option<u16> {
    use crate::lang::check::slot::*;
    match e.kind {
        TKind::Slot(s) if s == DAYS_SINCE_LAST_PURCHASE || s == MEMBER_DAYS => Some(s),
        _ => None,
    }
}

/// Whether `e` has the same value every day for an unchanged member.
fn is_fixed(e: &TExpr, layout: &Layout) -> bool {
    let mut stack = vec![e];
    while let Some(e) = stack.pop() {
        match &e.kind {
            TKind::Today | TKind::Member | TKind::Plugin { .. } => return false,
            TKind::Slot(s) if !fixed_slot(*s, layout) => return false,
            _ => push_children(e, &mut stack),
        }
    }
    true
}

/// How `cond` can change by itself (see [`Timing`]).
pub(super) fn timing(cond: Option<&TExpr>, layout: &Layout, codes: &Codes) -> Timing {
    let mut movers = Vec::new();
    let mut stack: Vec<&TExpr> = cond.into_iter().collect();
    while let Some(e) = stack.pop() {
        match &e.kind {
            TKind::And(a, b) | TKind::Or(a, b) => {
                stack.push(a);
                stack.push(b);
            }
            TKind::Not(a) | TKind::Named(a) => stack.push(a),
            TKind::Cmp(_, a, b) if count_test(a, b, layout, codes).is_some() => {
                movers.extend(count_test(a, b, layout, codes));
            }
            _ => match test_movers(e, layout, codes) {
                Some(m) => movers.extend(m),
                None => return Timing::Daily,
            },
        }
    }
    if movers.is_empty() {
        Timing::Fixed
    } else {
        Timing::Moves(movers.into())
    }
}

/// A day count compared with a bound that does not move, either way round.
fn count_test(a: &TExpr, b: &TExpr, layout: &Layout, codes: &Codes) -> Option<Mover> {
    let (slot, bound) = match (is_count(a), is_count(b)) {
        (Some(s), None) if is_fixed(b, layout) => (s, b),
        (None, Some(s)) if is_fixed(a, layout) => (s, a),
        _ => return None,
    };
    Some(Mover::Count(DayCount {
        slot,
        bound: (codes.any)(bound),
    }))
}

/// The movers of one test (no `and`, `or`, `not` above it); `None` when
/// it can change any day.
fn test_movers(test: &TExpr, layout: &Layout, codes: &Codes) -> Option<Vec<Mover>> {
    use crate::lang::check::slot::*;
    let (mut windows, mut scan) = (Vec::new(), false);
    let mut stack = vec![test];
    while let Some(e) = stack.pop() {
        match &e.kind {
            TKind::Member | TKind::Plugin { .. } => return None,
            TKind::Today => scan = true,
            TKind::Slot(s)
                if [DAYS_SINCE_LAST_PURCHASE, MEMBER_DAYS, DAYS_TO_BIRTHDAY].contains(s) =>
            {
                scan = true
            }
            TKind::Slot(s) => {
                if let Some(i) = layout.aggregates.iter().position(|a| a.slot == *s) {
                    match layout.aggregates[i].func {
                        // Changes only with events.
                        crate::lang::ast::AggFn::Cycle => {}
                        // A day count: moves every day.
                        crate::lang::ast::AggFn::DaysSinceLast => return None,
                        _ => windows.push(Mover::Window(i as u16)),
                    }
                } else if let Some(i) = layout.expiring.iter().position(|(x, _)| x == s) {
                    windows.push(Mover::Expiring(i as u16));
                } else if !fixed_slot(*s, layout) {
                    return None;
                }
            }
            _ => push_children(e, &mut stack),
        }
    }
    match (scan, windows.is_empty()) {
        (false, _) => Some(windows),
        (true, true) => Some(vec![Mover::Scan((codes.bool)(test))]),
        // The day itself and a window in one test: no cheap way ahead.
        (true, false) => None,
    }
}

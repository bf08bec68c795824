//! Points on the engine's side: the effects of awards and deductions,
//! lots that expire (oldest first), and the rule names the engine gives
//! the effects it makes itself.

use super::ctx::{Ctx, effect_key, engine_effect};
use crate::model::{Effect, MemberRecord};

/// Expires the member's point lots that are `points.expire_after` old by
/// `today`, oldest first; the effect (rule `points expiry`) says how many.
pub fn expire_points(
    cx: &Ctx<'_>,
    rec: &mut MemberRecord,
    member: &str,
    trigger: &str,
    at: jiff::Timestamp,
    today: i32,
) -> Option<Effect> {
    let after = cx.schema.points.expire_after_days? as i32;
    let expired: i64 = rec
        .point_lots
        .iter()
        .filter(|(d, _)| d + after <= today)
        .map(|(_, n)| n)
        .sum();
    rec.point_lots.retain(|(d, _)| d + after > today);
    let taken = expired.min(rec.points.max(0));
    if taken == 0 {
        return None;
    }
    rec.points -= taken;
    Some(points_effect(cx, EXPIRY_RULE, member, trigger, at, -taken))
}

/// A points change the engine made itself (expiry, refund), under `rule`.
pub fn points_effect(
    cx: &Ctx<'_>,
    rule: &str,
    member: &str,
    trigger: &str,
    at: jiff::Timestamp,
    points: i64,
) -> Effect {
    let key = effect_key(rule, member, trigger, 0);
    let mut e = engine_effect(
        cx,
        rule,
        member,
        trigger,
        at,
        crate::model::Action::Points,
        key,
    );
    e.points = Some(points);
    e
}

/// The rule name refund effects carry.
pub const REFUND_RULE: &str = "refund";

/// The rule name expiry effects carry.
pub const EXPIRY_RULE: &str = "points expiry";

/// Takes `n` points from the oldest lots first.
pub fn take_from_lots(lots: &mut Vec<(i32, i64)>, mut n: i64) {
    while n > 0 && !lots.is_empty() {
        let take = lots[0].1.min(n);
        lots[0].1 -= take;
        n -= take;
        if lots[0].1 == 0 {
            lots.remove(0);
        }
    }
}

//! What a set of effects amounts to: firings per rule and status, effects
//! sent by action, members reached. Shared by ingest, replay, the report
//! and the command line.

use super::effect::Action;
use super::effect::Effect;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

/// The statuses summaries show, in order (`redeemed` counts redemptions).
pub const STATUSES: [&str; 6] = [
    "sent",
    "deferred",
    "held_out",
    "capped",
    "no_consent",
    "redeemed",
];

/// What a set of effects amounts to. Built one effect at a time, so a
/// stream of any length is summed in flat memory (`Summary::streaming`
/// leaves out the one part that grows with members: reach).
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    /// Per rule: firings per status, and `redeemed` (its coupons redeemed).
    /// A firing is what one rule did for one member on one trigger, however
    /// many effects (a gift rule with a coupon and a message is one firing).
    pub by_rule: BTreeMap<String, BTreeMap<String, usize>>,
    /// Effects that went out (`sent`), per action (`coupon`, `points`, ...).
    pub sent_by_action: BTreeMap<String, usize>,
    /// Per rule: coupons that went out.
    pub coupons_by_rule: BTreeMap<String, usize>,
    /// Members sent at least one coupon, points award or message (tags,
    /// attributes and tier changes are bookkeeping, not contact); `None`
    /// when not counted (a streaming summary).
    pub members_reached: Option<usize>,
    pub coupons: usize,
    pub coupon_value: Decimal,
    pub points_awarded: i64,
    /// Effects refused (a debit over the wallet, a reward the member could
    /// not have), by reason.
    pub refused: BTreeMap<String, usize>,
    reached: Option<BTreeSet<String>>,
    /// The firing the last effect belonged to: (rule, member, trigger, status).
    last: Option<(String, String, String, String)>,
}

impl Summary {
    /// A summary that also counts the members reached.
    pub fn new() -> Summary {
        Summary {
            reached: Some(BTreeSet::new()),
            members_reached: Some(0),
            ..Summary::default()
        }
    }

    /// A summary without reach: its memory does not grow with members.
    pub fn streaming() -> Summary {
        Summary::default()
    }

    /// A rule's response rate: its coupons redeemed per coupon sent.
    pub fn response_rate(&self, rule: &str) -> Option<f64> {
        let sent = *self.coupons_by_rule.get(rule)?;
        let redeemed = self
            .by_rule
            .get(rule)
            .and_then(|c| c.get("redeemed"))
            .copied()
            .unwrap_or(0);
        (sent > 0).then(|| redeemed as f64 / sent as f64)
    }

    /// Counts one effect. A deferred effect counts as `deferred` when
    /// decided and as `sent` when released; only what went out (`sent`)
    /// counts as reach, coupons and points. The effects of one firing come
    /// one after another, so a firing is counted when its key changes.
    pub fn add(&mut self, e: &Effect) {
        let status = if e.action == Action::Redeem {
            "redeemed"
        } else {
            e.status.as_str()
        };
        let same = self.last.as_ref().is_some_and(|(r, m, t, st)| {
            *r == e.rule && *m == e.member && *t == e.trigger && st == status
        });
        if !same {
            *self
                .by_rule
                .entry(e.rule.clone())
                .or_default()
                .entry(status.to_string())
                .or_default() += 1;
            self.last = Some((
                e.rule.clone(),
                e.member.clone(),
                e.trigger.clone(),
                status.to_string(),
            ));
        }
        if e.status == super::effect::Status::Refused {
            let why = e.reason.clone().unwrap_or_default();
            *self.refused.entry(why).or_default() += 1;
        }
        if status != "sent" {
            return;
        }
        *self
            .sent_by_action
            .entry(e.action.as_str().to_string())
            .or_default() += 1;
        let contact =
            e.action.contacts() && (e.action != Action::Points || e.points.unwrap_or(0) > 0);
        if contact && let Some(reached) = &mut self.reached {
            reached.insert(e.member.clone());
            self.members_reached = Some(reached.len());
        }
        if e.action == Action::Coupon {
            self.coupons += 1;
            *self.coupons_by_rule.entry(e.rule.clone()).or_default() += 1;
            self.coupon_value += e
                .discount
                .as_ref()
                .and_then(|d| Decimal::from_str(&d.to_string()).ok())
                .unwrap_or_default();
        }
        if e.action == Action::Points {
            self.points_awarded = self
                .points_awarded
                .saturating_add(e.points.unwrap_or(0).max(0));
        }
    }
}

/// Sums a whole list of effects, reach included.
pub fn summarize(effects: &[Effect]) -> Summary {
    let mut s = Summary::new();
    for e in effects {
        s.add(e);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn effect(rule: &str, member: &str, action: &str, status: &str) -> Effect {
        serde_json::from_value(serde_json::json!({
            "key": format!("{rule}{member}{action}"), "at": "", "member": member, "rule": rule,
            "ruleset": "", "trigger": "", "action": action, "status": status,
            "discount": 6,
        }))
        .expect("effect")
    }

    #[test]
    fn deferred_effects_count_once_and_redemptions_give_the_response_rate() {
        let effects = [
            effect("w", "a", "coupon", "deferred"),
            effect("w", "a", "coupon", "sent"),
            effect("w", "b", "coupon", "sent"),
            effect("w", "c", "coupon", "held_out"),
            effect("w", "d", "coupon", "no_consent"),
            effect("w", "e", "coupon", "capped"),
            effect("w", "a", "redeem", "sent"),
        ];
        let s = summarize(&effects);
        assert_eq!(s.coupons, 2);
        assert_eq!(s.coupon_value, Decimal::from(12));
        assert_eq!(s.members_reached, Some(2));
        assert_eq!(s.by_rule["w"]["redeemed"], 1);
        assert_eq!(s.by_rule["w"]["sent"], 2);
        assert_eq!(s.response_rate("w"), Some(0.5));
        assert_eq!(s.response_rate("none"), None);
    }

    #[test]
    fn a_firing_with_two_effects_counts_once_and_tags_do_not_reach() {
        let mut gift = effect("gift", "a", "coupon", "sent");
        gift.trigger = "tick:2026-01-01".into();
        let mut note = effect("gift", "a", "message", "sent");
        note.trigger = gift.trigger.clone();
        let effects = [gift, note, effect("vip", "b", "tag", "sent")];
        let s = summarize(&effects);
        assert_eq!(s.by_rule["gift"]["sent"], 1);
        assert_eq!(s.sent_by_action["coupon"], 1);
        assert_eq!(s.sent_by_action["message"], 1);
        assert_eq!(s.sent_by_action["tag"], 1);
        assert_eq!(s.members_reached, Some(1));
        assert_eq!(Summary::streaming().members_reached, None);
    }
}

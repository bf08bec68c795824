//! Refunds on the event path: whether a refund can apply, taking back
//! what its purchase added, and remembering purchases while they can be
//! refunded.

use super::{Engine, fold, points};
use crate::base::value::Value;
use crate::model::Status;
use crate::model::{Effect, Event, MemberRecord};
use crate::store::Store;

impl<S: Store> Engine<S> {
    /// Whether a refund event can apply: its purchase is this member's,
    /// known, not after the refund and not longer ago than `refund.within`.
    /// A refund that arrives before its purchase is refused (and can be
    /// sent again), not accepted and silently lost.
    pub(super) fn refundable(
        &self,
        rec: &MemberRecord,
        ev: &Event,
        member: &str,
        day: i32,
    ) -> Result<(), String> {
        let Some(policy) = self.schema.refund.as_ref() else {
            return Ok(());
        };
        if ev.kind != policy.event {
            return Ok(());
        }
        let Some(Value::Str(purchase)) = ev.fields.get(policy.purchase_field) else {
            return Ok(());
        };
        let key = xxhash_rust::xxh3::xxh3_64(purchase.as_bytes());
        let Some(entry) = rec.purchases.iter().find(|p| p.event == key) else {
            return Err(format!(
                "purchase \"{purchase}\" is not known for member \"{member}\" (not yet received, another member's, or older than refund.within); send the refund after its purchase"
            ));
        };
        if day < entry.day {
            return Err(format!(
                "dated {} but its purchase \"{purchase}\" is of {}",
                crate::base::time::day_string(day),
                crate::base::time::day_string(entry.day)
            ));
        }
        if day > entry.day + policy.within_days {
            return Err(format!(
                "{} days after its purchase \"{purchase}\"; refunds count within {} days (refund.within)",
                day - entry.day,
                policy.within_days
            ));
        }
        Ok(())
    }

    /// A refund event: takes back what the purchase it names added.
    pub(super) fn refund(&self, rec: &mut MemberRecord, ev: &Event) -> Option<i64> {
        let policy = self.schema.refund.as_ref()?;
        if ev.kind != policy.event {
            return None;
        }
        let Some(Value::Str(purchase)) = ev.fields.get(policy.purchase_field) else {
            return None;
        };
        let amount = match policy.amount_field.and_then(|f| ev.fields.get(f)) {
            Some(Value::Dec(d)) => Some(*d),
            _ => None,
        };
        let expiring = self.schema.points.expire_after_days.is_some();
        fold::refund(rec, purchase, amount, expiring).filter(|&p| p != 0)
    }

    /// Remembers what a purchase added (its aggregate shares, and the
    /// points its own rules awarded), while it can be refunded.
    pub(super) fn keep_purchase(
        &self,
        rec: &mut MemberRecord,
        ev: &Event,
        day: i32,
        aggregates: Vec<crate::model::AggShare>,
        trigger: &str,
        effects: &[Effect],
    ) {
        let Some(policy) = &self.schema.refund else {
            return;
        };
        rec.purchases.retain(|p| p.day + policy.within_days >= day);
        if Some(ev.kind) != self.plan.purchase_kind {
            return;
        }
        let points = effects
            .iter()
            .filter(|e| {
                e.trigger == trigger && e.status == Status::Sent && e.rule != points::EXPIRY_RULE
            })
            .filter_map(|e| e.points)
            .filter(|&n| n > 0)
            .sum();
        let amount = match ev.fields.get(self.plan.purchase_amount) {
            Some(Value::Dec(d)) => *d,
            _ => rust_decimal::Decimal::ZERO,
        };
        rec.purchases.push(crate::model::PurchaseEntry {
            event: xxhash_rust::xxh3::xxh3_64(ev.id.as_bytes()),
            day,
            amount,
            refunded: rust_decimal::Decimal::ZERO,
            points,
            aggregates,
        });
        let excess = rec
            .purchases
            .len()
            .saturating_sub(crate::model::MAX_REFUNDABLE);
        rec.purchases.drain(..excess);
    }
}

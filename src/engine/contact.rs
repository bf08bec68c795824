//! Whether and when an effect may reach its member: rule holdouts, the
//! control group, frequency caps, consent and quiet hours; and the signed
//! code of a coupon.

use crate::config::Schema;
use crate::lang::compile::CompiledRule;
use crate::model::Status;
use crate::model::{Effect, MemberRecord};

/// In the config's global control group: no marketing effect at all.
pub fn in_control_group(schema: &Schema, member: &str) -> bool {
    schema.control_group_ppm > 0
        && control_hash(member) % 1_000_000 < schema.control_group_ppm as u64
}

/// A stable hash of the member for the control group (no allocation: it
/// runs for every firing).
pub(super) fn control_hash(member: &str) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(b"control\0");
    h.update(member.as_bytes());
    h.digest()
}

/// Consent and frequency caps for an effect on a channel: `no_consent` if
/// the member has not consented (opt-in channels) or has withdrawn;
/// `capped` if the channel's cap is reached; otherwise the contact counts.
pub(super) fn reach(schema: &Schema, rec: &mut MemberRecord, e: &mut Effect, today: i32) {
    let Some(name) = e.channel.clone() else {
        return;
    };
    let Some((_, ch)) = schema.channel(&name) else {
        return;
    };
    let consent = rec
        .consent
        .iter()
        .find(|(c, _)| *c == name)
        .map(|(_, g)| *g);
    if consent == Some(false) || (ch.opt_in && consent != Some(true)) {
        e.status = Status::NoConsent;
        return;
    }
    if let Some(cap) = ch.cap {
        let window_days = (cap.per_secs / 86_400).max(1) as i32;
        rec.contacts
            .retain(|(c, d)| *c != name || *d > today - window_days);
        let recent = rec.contacts.iter().filter(|(c, _)| *c == name).count();
        if recent >= cap.count as usize {
            e.status = Status::Capped;
            e.reason = Some("cap".into());
            return;
        }
        rec.contacts.push((name, today));
    }
}

/// Quiet hours: a contact that would go out while its channel is quiet is
/// `deferred` to the end of the quiet hours (the engine releases it then).
pub(super) fn defer(schema: &Schema, e: &mut Effect, at: jiff::Timestamp) {
    if e.status != Status::Sent {
        return;
    }
    let Some((_, ch)) = e.channel.as_deref().and_then(|c| schema.channel(c)) else {
        return;
    };
    if let Some(until) = ch
        .quiet_hours
        .and_then(|q| super::clock::quiet_until(schema, q, at))
    {
        e.status = Status::Deferred;
        e.deliver_at = Some(until.to_string());
    }
}

/// A coupon code: the effect key signed with the config's secret
/// (HMAC-SHA256), 12 characters of Crockford base32. The same effect (a
/// re-issue) gives the same code; without the secret, codes cannot be
/// made up.
pub fn coupon_code(secret: &str, key: &str) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(key.as_bytes());
    let bytes = mac.finalize().into_bytes();
    let mut bits = u64::from_be_bytes(bytes[..8].try_into().unwrap_or([0; 8]));
    (0..12)
        .map(|_| {
            let c = ALPHABET[(bits & 31) as usize] as char;
            bits >>= 5;
            c
        })
        .collect()
}

/// Held out by a stable hash of (rule, member): the same member is held out
/// of the same rule every time, whatever else changes.
pub fn held_out(rule: &CompiledRule, member: &str) -> bool {
    if rule.holdout_ppm == 0 {
        return false;
    }
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(rule.name.as_bytes());
    h.update(&[0]);
    h.update(member.as_bytes());
    (h.digest() % 1_000_000) < rule.holdout_ppm as u64
}

//! Relays: what a rule gives another member (`award points 5 to
//! referred_by`), applied to that member's record as an internal event
//! `relay:<effect key>`, once (a relay its recipient has seen is skipped).
//!
//! For a member of the same partition the relay is applied in the batch's
//! own commit, before the batch's next event. For a member of another
//! partition of the data folder it cannot be: the sender's commit stores
//! it (`relay_out:<key>` in meta) and [`Mail`] hands it on
//! (`engine::partitions` routes it); the recipient's partition applies it
//! in its next commit, then the sender's next commit drops the stored copy.
//! A crash anywhere in between leaves the stored copy, which is sent again
//! after the start and found as a duplicate where it was applied. This
//! module does not route: it keeps one engine's side of the exchange.

use super::{Engine, Uncommitted, act, clock};
use crate::model::{Effect, Status};
use crate::store::folder::partition_of;
use crate::store::{Store, StoreError, WriteSet, keys};

/// One partition's relays in transit.
#[derive(Default)]
pub(super) struct Mail {
    /// From other partitions, for this partition's next commit.
    incoming: Vec<Effect>,
    /// Stored by this partition for members of others, not handed on yet.
    outgoing: Vec<Effect>,
    /// Applied here (or found applied before): key and sending member, to
    /// confirm to the sender.
    applied: Vec<(String, String)>,
    /// Keys the recipients have applied: the stored copies go with the
    /// next commit.
    confirmed: Vec<String>,
}

/// What of the mail a batch took: its new relays for other partitions,
/// how many incoming it applied, how many confirmations it wrote.
pub(super) struct Taken {
    outgoing: Vec<Effect>,
    incoming: usize,
    confirmed: usize,
}

impl<S: Store> Engine<S> {
    /// Relays a previous run stored and may not have handed on: sent again
    /// (a recipient that has them finds them duplicates).
    pub(super) fn load_mail(&mut self) -> Result<(), StoreError> {
        for (_, v) in self.store.meta_prefix(keys::RELAY_OUT_PREFIX, usize::MAX)? {
            let e = serde_json::from_slice(&v)
                .map_err(|err| StoreError::Io(format!("reading a stored relay: {err}")))?;
            self.mail.outgoing.push(e);
        }
        Ok(())
    }

    /// Applies what rules of the batch gave other members: those of this
    /// partition now, those of others stored for them.
    pub(super) fn settle_relays(&mut self, p: &mut Uncommitted) -> Result<(), StoreError> {
        for e in std::mem::take(&mut p.out.relays) {
            // Another partition's member, or one of this partition's that a
            // One ID merge moved away (its home notes where).
            let elsewhere = match self.partition {
                // Only the directory knows where a member is.
                Some(_) if self.in_cluster && !self.schema.id_kinds.is_empty() => true,
                Some((k, n)) => {
                    partition_of(&e.member, n) != k || self.moved_to(&e.member)?.is_some()
                }
                None => false,
            };
            match elsewhere {
                true => p.outgoing.push(e),
                false => self.apply_relay(e, false, p)?,
            }
        }
        Ok(())
    }

    /// Applies the relays other partitions sent (first in a batch).
    pub(super) fn take_incoming(&mut self, p: &mut Uncommitted) -> Result<(), StoreError> {
        p.incoming = self.mail.incoming.len();
        for e in self.mail.incoming.clone() {
            self.apply_relay(e, true, p)?;
        }
        Ok(())
    }

    fn apply_relay(
        &mut self,
        mut e: Effect,
        from_elsewhere: bool,
        p: &mut Uncommitted,
    ) -> Result<(), StoreError> {
        let id = format!("relay:{}", e.key);
        let hash = xxhash_rust::xxh3::xxh3_64(e.key.as_bytes());
        let at: jiff::Timestamp = e.at.parse().unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let utc = crate::base::time::utc_day(at);
        let day = clock::local_day(&self.schema, at);
        // A recipient merged into another member: the survivor gets it.
        e.member = self.canonical(&e.member, p)?;
        let mut rec = self.record(&e.member, day, p)?;
        if self
            .known_in(&e.member, (&rec.seen, &rec.seen_spilled), &id, utc, p)?
            .is_some()
        {
            Self::forget_new(&e.member, p);
            return Ok(());
        }
        if from_elsewhere && self.seen_floor.is_some_and(|f| utc < f) {
            // Older than this partition's dedup window (its history ran
            // ahead of the sender's): it cannot be told from one applied
            // before, so it is refused, as an event that old would be.
            Self::forget_new(&e.member, p);
            e.status = Status::Refused;
            e.reason = Some("too_old".into());
            p.out.effects.push(e);
            return Ok(());
        }
        // Whether the relay or the member's own first event comes first
        // differs between a folder and a cluster (relays travel through
        // the stream there): the earlier day stands either way.
        rec.joined = rec.joined.min(day);
        act::apply_relay(&self.ctx(), &mut rec, &mut e, day);
        self.remember((&e.member, &mut rec), &id, utc, hash, p);
        if !p.members.contains_key(&e.member) {
            p.order.push(e.member.clone());
        }
        p.members.insert(e.member.clone(), rec);
        p.out.effects.push(e);
        Ok(())
    }

    /// The batch's part of the mail, before its commit.
    pub(super) fn mail_taken(&self, p: &mut Uncommitted) -> Taken {
        Taken {
            outgoing: std::mem::take(&mut p.outgoing),
            incoming: p.incoming,
            confirmed: self.mail.confirmed.len(),
        }
    }

    /// The batch's relays for other partitions stored, and the copies
    /// their recipients applied dropped.
    pub(super) fn mail_writes(&self, t: &Taken, w: &mut WriteSet) -> Result<(), StoreError> {
        for e in &t.outgoing {
            let v = serde_json::to_vec(e)
                .map_err(|err| StoreError::Io(format!("encoding a relay: {err}")))?;
            w.meta.push((keys::relay_out(&e.key), v));
        }
        w.meta_removed.extend(
            self.mail.confirmed[..t.confirmed]
                .iter()
                .map(|k| keys::relay_out(k)),
        );
        Ok(())
    }

    /// After the commit: the stored relays go out, the applied ones are to
    /// be confirmed.
    pub(super) fn mail_committed(&mut self, t: Taken) {
        self.mail.outgoing.extend(t.outgoing);
        for e in self.mail.incoming.drain(..t.incoming) {
            if let Some(from) = e.from {
                self.mail.applied.push((e.key, from));
            }
        }
        self.mail.confirmed.drain(..t.confirmed);
    }

    /// Relays stored for members of other partitions, to hand on.
    pub fn take_outgoing(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.mail.outgoing)
    }

    /// Relays whose sending failed, to send again later.
    pub fn resend(&mut self, relays: Vec<Effect>) {
        self.mail.outgoing.extend(relays);
    }

    /// Relays delivered for a commit that failed: they come again (from
    /// the stream, in cluster mode) rather than with the next commit.
    pub fn drop_incoming(&mut self) {
        self.mail.incoming.clear();
    }

    /// Relays applied here since the last call: (key, sending member).
    pub fn take_applied(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.mail.applied)
    }

    /// Relays from other partitions, applied with the next commit.
    pub fn deliver(&mut self, relays: Vec<Effect>) {
        self.mail.incoming.extend(relays);
    }

    /// Relays (by key) their recipients applied: the stored copies go with
    /// the next commit.
    pub fn confirm(&mut self, keys: Vec<String>) {
        self.mail.confirmed.extend(keys);
    }

    /// Whether relays wait to be applied here.
    pub fn has_incoming(&self) -> bool {
        !self.mail.incoming.is_empty()
    }

    /// Whether a commit would apply relays or drop confirmed copies.
    pub fn has_mail(&self) -> bool {
        self.has_incoming() || !self.mail.confirmed.is_empty()
    }
}

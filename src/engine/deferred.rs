//! Effects held by a channel's quiet hours: kept under meta keys in due
//! order and released to the outbox (as `sent`) once their time comes.

use super::Engine;
use crate::model::Effect;
use crate::model::Status;
use crate::store::{Store, StoreError, WriteSet, keys};

impl<S: Store> Engine<S> {
    /// How many effects wait for their channel's quiet hours to end.
    pub fn deferred_waiting(&self) -> u64 {
        self.deferred_waiting
    }

    /// Whether a deferred effect is due at `now`.
    pub fn deferred_due(&self, now: jiff::Timestamp) -> bool {
        self.next_deferred.is_some_and(|t| t <= now)
    }

    /// Releases the deferred effects due at `now` (see
    /// [`Engine::release_deferred_each`]) and returns them.
    pub fn release_deferred(&mut self, now: jiff::Timestamp) -> Result<Vec<Effect>, StoreError> {
        let mut released = Vec::new();
        self.release_deferred_each(now, &mut |e| released.push(e))?;
        Ok(released)
    }

    /// Releases the deferred effects due at `now` (their quiet hours are
    /// over): each goes to the outbox as `sent`, with its key and its
    /// `deliver_at` as `at`, so the release gives the same output whenever
    /// it runs, and to `released`. A commit per 4,096, so a night's worth
    /// of held messages is never in memory at once; returns how many.
    pub fn release_deferred_each(
        &mut self,
        now: jiff::Timestamp,
        released: &mut dyn FnMut(Effect),
    ) -> Result<usize, StoreError> {
        let mut count = 0;
        loop {
            let due = self.store.meta_prefix(keys::DEFERRED_PREFIX, 4096)?;
            let mut w = WriteSet::default();
            let mut seq = self.next_seq;
            let mut next = None;
            for (k, v) in due {
                match deferred_key_time(&k) {
                    Some(at) if at <= now => {}
                    at => {
                        next = at;
                        break;
                    }
                }
                if let Ok(e) = serde_json::from_slice::<Effect>(&v) {
                    w.outbox.push((seq, v));
                    seq += 1;
                    released(e);
                    count += 1;
                }
                w.meta_removed.push(k);
            }
            let more = next.is_none() && !w.meta_removed.is_empty();
            let gone = w.meta_removed.len() as u64;
            if seq != self.next_seq {
                w.meta
                    .push((keys::OUTBOX_NEXT.into(), seq.to_le_bytes().to_vec()));
            }
            self.persist(w)?;
            self.next_seq = seq;
            self.deferred_waiting = self.deferred_waiting.saturating_sub(gone);
            if !more {
                self.next_deferred = match next {
                    Some(t) => Some(t),
                    None => self.first_deferred()?,
                };
                return Ok(count);
            }
        }
    }

    /// When the earliest deferred effect is due.
    pub(super) fn first_deferred(&self) -> Result<Option<jiff::Timestamp>, StoreError> {
        Ok(self
            .store
            .meta_prefix(keys::DEFERRED_PREFIX, 1)?
            .first()
            .and_then(|(k, _)| deferred_key_time(k)))
    }
}

pub(super) fn deferred_until(e: &Effect) -> Option<jiff::Timestamp> {
    if e.status != Status::Deferred {
        return None;
    }
    e.deliver_at.as_deref()?.parse().ok()
}

/// Seconds are offset by 2^62 so that times before 1970 sort first too.
pub(super) fn deferred_key(at: jiff::Timestamp, seq: u64) -> String {
    let secs = (at.as_second() + (1i64 << 62)) as u64;
    format!("{}{secs:020}:{seq:020}", keys::DEFERRED_PREFIX)
}

pub(super) fn deferred_key_time(key: &str) -> Option<jiff::Timestamp> {
    let secs: u64 = key
        .strip_prefix(keys::DEFERRED_PREFIX)?
        .get(..20)?
        .parse()
        .ok()?;
    jiff::Timestamp::from_second(secs as i64 - (1i64 << 62)).ok()
}

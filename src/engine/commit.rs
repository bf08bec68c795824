//! Group commit: a batch's members, seen markers, outbox entries, deferred
//! effects and counters in one atomic write; then the caches and the due
//! index follow. Also reading and trimming the outbox.

use super::deferred::{deferred_key, deferred_until};
use super::{Engine, Uncommitted};
use crate::model::Effect;
use crate::model::Status;
use crate::store::{Store, StoreError, WriteSet, keys};

impl<S: Store> Engine<S> {
    pub(super) fn commit(
        &mut self,
        mut p: Uncommitted,
        meta: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<Effect>, StoreError> {
        let mail = self.mail_taken(&mut p);
        let result = match p.out.failed.take() {
            Some(e) => Err(e),
            None => self.write(p, &mail, meta),
        };
        match result {
            Ok(_) => {
                self.budgets.borrow_mut().committed();
                self.mail_committed(mail);
            }
            // The batch is not stored: what its rules spent is not spent.
            Err(_) => self.budgets.borrow_mut().forget(),
        }
        result
    }

    // Long because it is one write set, built part by part (members, the
    // window, outbox, deferred effects, counters), then the caches after it.
    fn write(
        &mut self,
        p: Uncommitted,
        mail: &super::relay::Taken,
        meta: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<Effect>, StoreError> {
        let mut w = WriteSet {
            meta,
            ..WriteSet::default()
        };
        self.mail_writes(mail, &mut w)?;
        let mut members = p.members;
        let mut written = Vec::with_capacity(p.order.len());
        for id in p.order {
            if let Some(rec) = members.remove(&id) {
                w.members.push((id.clone(), rec.encode()));
                written.push((id, rec));
            }
        }
        w.seen = p
            .spilled
            .into_iter()
            .map(|((day, id), hash)| (day, id, u128::from(hash)))
            .collect();
        w.seen.sort();
        let newest = p.newest_day.or(self.newest_day);
        if let Some(day) = p.newest_day {
            w.meta
                .push((keys::NEWEST_EVENT_DAY.into(), day.to_le_bytes().to_vec()));
        }
        // The days before the window go (a bounded part per commit); the
        // window's start is kept so that it never moves back.
        let floor = newest.map(|n| self.window_start(n));
        if floor != self.seen_floor
            && let Some(f) = floor
        {
            w.meta
                .push((keys::SEEN_FLOOR.into(), f.to_le_bytes().to_vec()));
        }
        w.seen_before = floor;
        let mut seq = self.next_seq;
        let mut next_deferred = self.next_deferred;
        let mut deferred = 0;
        // An effect that cannot be encoded fails the commit: an empty
        // outbox entry would be an effect lost without a word.
        let encode = |e: &Effect| {
            serde_json::to_vec(e)
                .map_err(|err| StoreError::Io(format!("encoding an effect: {err}")))
        };
        for e in &p.out.effects {
            w.outbox.push((seq, encode(e)?));
            if let Some(at) = deferred_until(e) {
                let mut later = e.clone();
                later.status = Status::Sent;
                later.at = at.to_string();
                w.meta.push((deferred_key(at, seq), encode(&later)?));
                next_deferred = Some(next_deferred.map_or(at, |n| n.min(at)));
                deferred += 1;
            }
            seq += 1;
        }
        if seq != self.next_seq {
            w.meta
                .push((keys::OUTBOX_NEXT.into(), seq.to_le_bytes().to_vec()));
        }
        w.meta.extend(self.budgets.borrow_mut().take_dirty());
        let removed = p.removed.len() as u64;
        let added = p.new_members.len() as u64;
        if added > 0 || removed > 0 {
            let total = (self.store.meta_u64(keys::MEMBERS)? + added).saturating_sub(removed);
            w.meta
                .push((keys::MEMBERS.into(), total.to_le_bytes().to_vec()));
        }
        if removed > 0 {
            w.meta.push((
                keys::MERGES.into(),
                (self.merges + removed).to_le_bytes().to_vec(),
            ));
        }
        let aliased = p.aliased;
        if aliased > 0 {
            w.meta.push((
                keys::ALIASES.into(),
                (self.aliases + aliased).to_le_bytes().to_vec(),
            ));
        }
        w.identities = p.identities.into_iter().collect();
        w.identities.sort();
        let w_removed = p.removed.clone();
        w.members_removed = p.removed;
        self.persist(w)?;
        self.next_seq = seq;
        self.next_deferred = next_deferred;
        self.deferred_waiting += deferred;
        self.merges += removed;
        self.aliases += aliased;
        self.newest_day = newest;
        self.seen_floor = floor;
        // Written members are due at once (an event may have made a tick
        // rule's condition turn), unless this batch's tick just placed them.
        // Until a full tick has read every member from the store, the next
        // tick scans the store anyway: the index is only kept from then on,
        // so an import without ticks does not hold every member in memory.
        if self.due_complete {
            for id in written.iter().map(|(id, _)| id).chain(&p.new_members) {
                self.due.touch(id);
            }
        }
        if let Some(cache) = &self.cache {
            let mut c = cache.borrow_mut();
            for id in &w_removed {
                c.remove(id);
            }
            c.extend(written);
        }
        for (id, day) in &p.due {
            self.due.set(id, *day);
        }
        for id in w_removed.iter().chain(&p.gone) {
            self.due.forget(id);
        }
        Ok(p.out.effects)
    }

    /// Commits `w` with the meta writes held back until the engine's first
    /// write, so that a command that only reads (`nudge explain`, `nudge
    /// member`) writes nothing: no commit, no store format upgrade, and the
    /// due snapshot kept for the daemon's next start.
    pub(super) fn persist(&self, mut w: WriteSet) -> Result<(), StoreError> {
        let held = std::mem::take(&mut *self.held.borrow_mut());
        if held.is_empty() {
            return self.store.commit(w);
        }
        // First, so that a write of the same key in `w` wins.
        w.meta.splice(0..0, held.iter().cloned());
        let result = self.store.commit(w);
        if result.is_err() {
            *self.held.borrow_mut() = held;
        }
        result
    }

    /// Saves the due index for the next start (a clean stop: the daemon's
    /// shutdown, the end of `nudge ingest`), when it holds every member
    /// under the running rules. Any commit after it makes it stale, so
    /// call it last.
    pub fn save_due(&mut self) -> Result<(), StoreError> {
        if !(self.due_ready && self.due_complete) {
            return Ok(());
        }
        self.persist(WriteSet {
            meta: vec![(
                keys::DUE_SNAPSHOT.into(),
                self.due.encode(&self.rules.version),
            )],
            ..WriteSet::default()
        })
    }

    /// The newest event day (UTC) committed, if any event was.
    pub fn newest_day(&self) -> Option<i32> {
        self.newest_day
    }

    /// Outbox entries not yet delivered, from `from` on.
    pub fn outbox(&self, from: u64, limit: usize) -> Result<Vec<(u64, Effect)>, StoreError> {
        Ok(self
            .store
            .outbox(from, limit)?
            .into_iter()
            .filter_map(|(s, b)| serde_json::from_slice(&b).ok().map(|e| (s, e)))
            .collect())
    }

    /// Removes the outbox entries below `below` (every sink has them) and
    /// records sink progress, atomically.
    pub fn delivered(
        &mut self,
        below: Option<u64>,
        meta: Vec<(String, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        self.persist(WriteSet {
            delivered_below: below,
            meta,
            ..WriteSet::default()
        })
    }

    /// Removes meta entries (a forgotten sink's cursor and marker).
    pub fn remove_meta(&mut self, keys: Vec<String>) -> Result<(), StoreError> {
        self.persist(WriteSet {
            meta_removed: keys,
            ..WriteSet::default()
        })
    }
}

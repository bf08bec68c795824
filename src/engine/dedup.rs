//! The dedup window: an event older than it is refused, and a
//! redelivery within it is found among its member's seen ids (or the
//! markers a busy member's ids spilled into, or a folder of store format
//! 3's) and is a duplicate, or a conflict under another body. Owns finding
//! and remembering ids; `process_one` decides what happens to the event.

use super::{Engine, EventOutcome, Rejected, Uncommitted, identity};
use crate::model::{Event, MemberRecord, SEEN_IN_RECORD, SeenEvent};
use crate::store::{Store, StoreError};

impl<S: Store> Engine<S> {
    /// The first day of the dedup window when the newest event is of `newest`.
    pub(super) fn window_start(&self, newest: i32) -> i32 {
        let start = newest.saturating_sub(self.schema.dedup_window_days);
        self.seen_floor.map_or(start, |f| f.max(start))
    }

    /// An event older than the dedup window is refused: a redelivery that
    /// old could no longer be told from a new event.
    pub(super) fn too_old(&self, ev: &Event, utc: i32, p: &Uncommitted) -> Option<EventOutcome> {
        let newest = p.newest_day.or(self.newest_day)?;
        let from = self.window_start(newest);
        if utc >= from {
            return None;
        }
        Some(EventOutcome::Rejected(Rejected::TooOld {
            id: ev.id.clone(),
            at: ev.at.to_string(),
            from: crate::base::time::day_string(from),
            why: if from > newest.saturating_sub(self.schema.dedup_window_days) {
                "where it started before the window was raised: the markers before it are gone"
                    .into()
            } else {
                format!(
                    "{} days before the newest event seen, {}",
                    self.schema.dedup_window_days,
                    crate::base::time::day_string(newest)
                )
            },
            window: self.schema.dedup_window_days,
        }))
    }

    /// The body hash of event `id` of UTC day `utc` if a member's `seen`
    /// events hold it, or a marker of its own (its ids of that day spilled,
    /// or a folder of store format 3).
    pub(super) fn known_in(
        &self,
        member: &str,
        (seen, spilled): (&[SeenEvent], &[i32]),
        id: &str,
        utc: i32,
        p: &Uncommitted,
    ) -> Result<Option<u64>, StoreError> {
        let hashed = SeenEvent::id_hash(id);
        if let Some(s) = seen.iter().rev().find(|s| s.day == utc && s.id == hashed) {
            return Ok(Some(s.hash));
        }
        if spilled.contains(&utc) {
            let key = spilled_id(member, id);
            if let Some(h) = p.spilled.get(&(utc, key.clone())) {
                return Ok(Some(*h));
            }
            if let Some(h) = self.store.seen(utc, &key)? {
                return Ok(Some(h as u64));
            }
        }
        if self.format_3_until.is_some_and(|d| utc <= d) {
            return Ok(self.store.seen(utc, id)?.map(|h| h as u64));
        }
        Ok(None)
    }

    /// A repeat found by reading only the ids at the front of a member's
    /// stored record: a redelivery to a member the batch has not read
    /// yet does not decode its whole record (a busy member's is large).
    pub(super) fn repeat_in_store(
        &self,
        member: &str,
        ev: &Event,
        utc: i32,
        p: &Uncommitted,
    ) -> Result<Option<EventOutcome>, StoreError> {
        if p.members.contains_key(member) {
            return Ok(None);
        }
        Ok(match self.store.member_seen(member)? {
            Some((seen, spilled)) => Self::repeated(
                ev,
                self.known_in(member, (&seen, &spilled), &ev.id, utc, p)?,
            ),
            None => None,
        })
    }

    /// The body hash of `ev` if a member it can be for has seen it: its
    /// named member, or a member one of its identifiers leads to. Reads
    /// only; for a check before a batch (the daemon's conflicts) and for
    /// events whose member follows from identifiers, whose resolving may
    /// merge members.
    pub fn known(&self, ev: &Event) -> Result<Option<u64>, StoreError> {
        self.known_among(ev, &Uncommitted::default())
    }

    pub(super) fn known_among(
        &self,
        ev: &Event,
        p: &Uncommitted,
    ) -> Result<Option<u64>, StoreError> {
        let utc = crate::base::time::utc_day(ev.at);
        let mut members = Vec::with_capacity(1 + ev.ids.len());
        if !ev.member.is_empty() {
            members.push(self.canonical(&ev.member, p)?);
        }
        for (kind, value) in &ev.ids {
            let key = identity::id_key(kind, value);
            let owner = match p.identities.get(&key) {
                Some(m) => Some(m.clone()),
                None => self.store.identity(&key)?,
            };
            if let Some(o) = owner {
                members.push(self.canonical(&o, p)?);
            }
        }
        for m in &members {
            let known = match p.members.get(m) {
                Some(rec) => self.known_in(m, (&rec.seen, &rec.seen_spilled), &ev.id, utc, p)?,
                None => match self.store.member_seen(m)? {
                    Some((seen, spilled)) => self.known_in(m, (&seen, &spilled), &ev.id, utc, p)?,
                    None => None,
                },
            };
            if known.is_some() {
                return Ok(known);
            }
        }
        if members.is_empty() && self.format_3_until.is_some_and(|d| utc <= d) {
            return Ok(self.store.seen(utc, &ev.id)?.map(|h| h as u64));
        }
        Ok(None)
    }

    /// What is decided before an event is resolved to its member: too old
    /// for the window, or, for an event with identifiers, a repeat. Resolving
    /// identifiers can merge members, so a repeat must be found before (an
    /// event naming only its member resolves by reading).
    pub(super) fn screen(
        &self,
        ev: &Event,
        utc: i32,
        p: &Uncommitted,
    ) -> Result<Option<EventOutcome>, StoreError> {
        if let Some(old) = self.too_old(ev, utc, p) {
            return Ok(Some(old));
        }
        if ev.ids.is_empty() {
            return Ok(None);
        }
        Ok(Self::repeated(ev, self.known_among(ev, p)?))
    }

    /// A duplicate (the same body) or a conflict (another body under the
    /// same id) when `known` holds a hash.
    pub(super) fn repeated(ev: &Event, known: Option<u64>) -> Option<EventOutcome> {
        match known {
            Some(h) if h == ev.body_hash as u64 => Some(EventOutcome::Duplicate),
            Some(_) => Some(EventOutcome::Rejected(Rejected::Conflict {
                id: ev.id.clone(),
            })),
            None => None,
        }
    }

    /// Puts event `id` in the record's seen events (a marker of its own
    /// when the record has no room), and lets those before the window go.
    pub(super) fn remember(
        &self,
        (member, rec): (&str, &mut MemberRecord),
        id: &str,
        utc: i32,
        hash: u64,
        p: &mut Uncommitted,
    ) {
        let newest = p.newest_day.or(self.newest_day).map_or(utc, |n| n.max(utc));
        let floor = self.window_start(newest);
        rec.seen.retain(|s| s.day >= floor);
        rec.seen_spilled.retain(|d| *d >= floor);
        if rec.seen.len() < SEEN_IN_RECORD {
            rec.seen.push(SeenEvent {
                day: utc,
                id: SeenEvent::id_hash(id),
                hash,
            });
            return;
        }
        if !rec.seen_spilled.contains(&utc) {
            rec.seen_spilled.push(utc);
        }
        p.spilled.insert((utc, spilled_id(member, id)), hash);
    }
}

impl<S: Store> Engine<S> {
    /// The ids of `member` that spilled into markers on `days` (stored,
    /// and this batch's): UTC day, event id, body hash.
    pub(super) fn spilled_of(
        &self,
        member: &str,
        days: &[i32],
        p: &Uncommitted,
    ) -> Result<Vec<(i32, String, u64)>, StoreError> {
        let prefix = spilled_id(member, "");
        let mut out = Vec::new();
        for &day in days {
            for (key, hash) in self.store.seen_of(day, &prefix)? {
                out.push((day, key[prefix.len()..].to_string(), hash as u64));
            }
        }
        for ((day, key), hash) in &p.spilled {
            if days.contains(day)
                && let Some(id) = key.strip_prefix(&prefix)
            {
                out.push((*day, id.to_string(), *hash));
            }
        }
        Ok(out)
    }

    /// Keeps spilled ids under `member`'s name (a merge's survivor, or the
    /// member moved here): a redelivery of them is still a duplicate.
    pub(super) fn respill(&self, member: &str, ids: Vec<(i32, String, u64)>, p: &mut Uncommitted) {
        for (day, id, hash) in ids {
            p.spilled.insert((day, spilled_id(member, &id)), hash);
        }
    }
}

/// The id a spilled seen marker is kept under: its member's and its own,
/// so that two members' events with one id are two markers (the length
/// first, so no member and id run into another pair).
fn spilled_id(member: &str, id: &str) -> String {
    format!("{}:{member}{id}", member.len())
}

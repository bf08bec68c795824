//! Where an event goes on a data folder of partitions when the config has
//! One ID identifiers (`ids`): a member's identifiers and the aliases of
//! the members merged into it live in the member's partition, so an event
//! that names identifiers goes to the partition that holds them (looked
//! up in each), and one that names a member to the partition the member
//! is in (its home, `partition_of`, unless its home notes that a merge
//! moved it: `moved:<id>`).
//!
//! An event whose member and identifiers lead to members of two
//! partitions merges them. The partitions cannot do that alone: what came
//! before the event in the batch is committed, the members to be merged
//! are moved into the survivor's partition (`engine::moves`), and the
//! event goes there, where the merge is the one a folder of one partition
//! makes. The merge rules themselves stay `engine::identity`'s.

use super::partitions::Partitions;
use super::{Committed, identity};
use crate::model::Event;
use crate::store::folder::partition_of;
use crate::store::{Store, StoreError};
use std::collections::HashMap;

impl<S: Store + Send> Partitions<S> {
    /// Whether events are routed by One ID identifiers.
    pub fn one_id(&self) -> bool {
        self.len() > 1 && !self.first().schema.id_kinds.is_empty()
    }

    /// The partition `member` is in: its home, or where its home's note
    /// says a merge moved it.
    pub fn locate(&self, member: &str) -> Result<usize, StoreError> {
        let home = partition_of(member, self.len());
        Ok(self.engines()[home].moved_to(member)?.unwrap_or(home))
    }

    /// Identifier `key`'s member now, the partition the member is in and
    /// the partition that holds the entry. They differ when the entry was
    /// left behind by a move (a member's identifiers past its record's
    /// list, `identity::MAX_IDS`): [`Self::bring_together`] brings it along.
    fn owner(&self, key: &str) -> Result<Option<(String, usize, usize)>, StoreError> {
        for (f, e) in self.engines().iter().enumerate() {
            if let Some(m) = e.store().identity(key)? {
                let k = self.locate(&m)?;
                return Ok(Some((self.canonical_in(k, &m)?, k, f)));
            }
        }
        Ok(None)
    }

    /// Where `ev` goes, with `links` the identifiers this batch has linked
    /// so far (not committed yet); `None` when it leads to members of more
    /// than one partition.
    fn place(
        &self,
        ev: &Event,
        links: &HashMap<String, usize>,
    ) -> Result<Option<usize>, StoreError> {
        let mut at: Vec<usize> = Vec::new();
        if !ev.member.is_empty() {
            at.push(self.locate(&ev.member)?);
        }
        for (kind, value) in &ev.ids {
            let key = identity::id_key(kind, value);
            let k = match links.get(&key) {
                Some(k) => Some(*k),
                None => match self.owner(&key)? {
                    // An entry left behind: brought along first.
                    Some((_, k, f)) if k != f => return Ok(None),
                    found => found.map(|(_, k, _)| k),
                },
            };
            at.extend(k);
        }
        at.dedup();
        match at.as_slice() {
            [] => identity::new_member_id(&ev.ids)
                .map_or(Ok(0), |id| self.locate(&id))
                .map(Some),
            [k] => Ok(Some(*k)),
            [first, rest @ ..] => Ok(rest.iter().all(|k| k == first).then_some(*first)),
        }
    }

    /// A batch on One ID: each event's partition found in order; at an
    /// event that merges members of two partitions, what came before is
    /// committed and the members brought into one first.
    pub(super) fn process_one_id(&mut self, events: &[Event]) -> Result<Committed, StoreError> {
        let mut out = Committed::default();
        let (mut start, mut targets, mut links) = (0, Vec::new(), HashMap::new());
        for (i, ev) in events.iter().enumerate() {
            let k = match self.place(ev, &links)? {
                Some(k) => k,
                None => {
                    let before = self.commit_routed(&events[start..i], &targets[start..i])?;
                    out.outcomes.extend(before.outcomes);
                    out.effects.extend(before.effects);
                    (start, links) = (i, HashMap::new());
                    self.bring_together(ev)?
                }
            };
            for (kind, value) in &ev.ids {
                links.insert(identity::id_key(kind, value), k);
            }
            targets.push(k);
        }
        let rest = self.commit_routed(&events[start..], &targets[start..])?;
        out.outcomes.extend(rest.outcomes);
        out.effects.extend(rest.effects);
        Ok(out)
    }

    /// For an event that merges members of several partitions (everything
    /// before it committed): the survivor as a folder of one partition
    /// picks it (the named member if it exists, else the one that joined
    /// first, then the smallest id), the others moved into its partition,
    /// and a named member that does not exist noted there too. Returns the
    /// survivor's partition.
    fn bring_together(&mut self, ev: &Event) -> Result<usize, StoreError> {
        let mut found: Vec<(String, usize)> = Vec::new();
        if !ev.member.is_empty() {
            let k = self.locate(&ev.member)?;
            found.push((self.canonical_in(k, &ev.member)?, k));
        }
        let mut entries = Vec::new();
        for (kind, value) in &ev.ids {
            let key = identity::id_key(kind, value);
            if let Some((m, k, f)) = self.owner(&key)? {
                entries.push((key, m.clone(), f));
                found.push((m, k));
            }
        }
        found.dedup();
        let mut existing = Vec::new();
        for (m, k) in &found {
            if let Some(rec) = self.engines()[*k].member(m)? {
                existing.push((m.clone(), *k, rec.joined));
            }
        }
        let named = found.first().filter(|_| !ev.member.is_empty()).cloned();
        let survivor = match &named {
            Some((n, k)) if existing.iter().any(|(m, _, _)| m == n) => (n.clone(), *k),
            _ => match existing.iter().min_by(|a, b| (a.2, &a.0).cmp(&(b.2, &b.0))) {
                Some((m, k, _)) => (m.clone(), *k),
                // No one exists: the named member, else the first
                // identifier's new member, as one partition makes it.
                None => match named {
                    Some(n) => n,
                    None => {
                        let id = identity::new_member_id(&ev.ids).unwrap_or_default();
                        let k = self.locate(&id)?;
                        (id, k)
                    }
                },
            },
        };
        let t = survivor.1;
        for (m, k, _) in &existing {
            if *k != t {
                self.move_member(m, *k, t)?;
            }
        }
        // The event's identifiers held elsewhere (left behind by a move)
        // are brought along, so that the survivor's partition finds them.
        for (key, m, f) in entries {
            if f != t {
                self.engines_mut()[t].link_identity(&key, &m)?;
                self.engines_mut()[f].unlink_identity(&key)?;
            }
        }
        if !ev.member.is_empty() && !existing.iter().any(|(m, _, _)| *m == ev.member) {
            let home = partition_of(&ev.member, self.len());
            self.engines_mut()[home].forward(std::slice::from_ref(&ev.member), t)?;
        }
        Ok(t)
    }

    /// The member `member` was merged into, by the aliases partition `k`
    /// holds (itself when none).
    fn canonical_in(&self, k: usize, member: &str) -> Result<String, StoreError> {
        Ok(self.engines()[k]
            .store()
            .identity(&identity::alias_key(member))?
            .unwrap_or_else(|| member.to_string()))
    }

    /// Moves `member` from partition `from` to partition `to`
    /// (`engine::moves`, steps 1 to 4).
    fn move_member(&mut self, member: &str, from: usize, to: usize) -> Result<(), StoreError> {
        let Some(m) = self.engines()[from].moving_out(member)? else {
            return Ok(());
        };
        self.engines_mut()[to].move_in(&m, from)?;
        self.finish_move(member, from, to)
    }

    /// Steps 2 to 4 of a move into `to`: also what a start does for a move
    /// a crash left marked.
    fn finish_move(&mut self, member: &str, from: usize, to: usize) -> Result<(), StoreError> {
        self.engines_mut()[from].move_out(member)?;
        let merged = self.engines()[to]
            .member(member)?
            .map(|r| r.merged)
            .unwrap_or_default();
        let n = self.len();
        let mut homes: HashMap<usize, Vec<String>> = HashMap::new();
        for m in merged.into_iter().chain([member.to_string()]) {
            homes.entry(partition_of(&m, n)).or_default().push(m);
        }
        for (home, members) in homes {
            self.engines_mut()[home].forward(&members, to)?;
        }
        self.engines_mut()[to].moved_in(member)
    }

    /// Finishes the moves a crash left marked (at the start).
    pub(super) fn finish_moves(&mut self) -> Result<(), StoreError> {
        for to in 0..self.len() {
            for (member, from) in self.engines()[to].moves_in_progress()? {
                if from < self.len() {
                    self.finish_move(&member, from, to)?;
                }
            }
        }
        Ok(())
    }
}

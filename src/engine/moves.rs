//! Moving a member between the partitions of a data folder: a One ID merge
//! of members in two partitions first brings them into one
//! (`engine::route` decides when and where). This module owns one
//! partition's part of a move; the steps are the caller's to run in order:
//!
//! 1. the receiving partition writes the record, the identifiers and
//!    aliases that lead to it and its spilled event ids, with a mark of the
//!    move (`moving:<id>`, the partition it came from): [`Engine::move_in`];
//! 2. the partition it came from removes them: [`Engine::move_out`];
//! 3. the member's home partition (and the home of every member merged
//!    into it) records where it is now (`moved:<id>`): [`Engine::forward`];
//! 4. the mark goes: [`Engine::moved_in`].
//!
//! Each step is one commit that can run again, and a start finishes a move
//! whose mark is still there (steps 2 to 4), so a crash between two steps
//! leaves the member in one place or, for a moment, two copies of which
//! the marked one is the member.

use super::{Engine, Uncommitted, identity};
use crate::model::MemberRecord;
use crate::store::{Store, StoreError, WriteSet, keys};

/// A member as it moves: its record and the identity entries (identifiers
/// and merged members' aliases) that lead to it.
pub struct Moving {
    pub member: String,
    pub record: MemberRecord,
    pub identities: Vec<String>,
    /// Its event ids past the record's room (`engine::dedup`): day, id,
    /// body hash.
    spilled: Vec<(i32, String, u64)>,
}

impl Moving {
    /// How many of its identity entries are aliases of merged members.
    fn aliases(&self) -> u64 {
        self.identities
            .iter()
            .filter(|k| k.starts_with("member:"))
            .count() as u64
    }
}

impl<S: Store> Engine<S> {
    /// What this partition holds of `member`, to move: `None` when it does
    /// not hold the member. Identifiers past the record's list
    /// (`identity::MAX_IDS`) stay behind.
    pub fn moving_out(&self, member: &str) -> Result<Option<Moving>, StoreError> {
        let Some(record) = self.load(member)? else {
            return Ok(None);
        };
        let keys = record
            .ids
            .iter()
            .map(|(k, v)| identity::id_key(k, v))
            .chain(record.merged.iter().map(|m| identity::alias_key(m)));
        let mut identities = Vec::new();
        for k in keys {
            if self.store.identity(&k)?.as_deref() == Some(member) {
                identities.push(k);
            }
        }
        let spilled = self.spilled_of(member, &record.seen_spilled, &Uncommitted::default())?;
        Ok(Some(Moving {
            member: member.to_string(),
            record,
            identities,
            spilled,
        }))
    }

    /// Step 1: takes in a member moving here from partition `from`.
    pub fn move_in(&mut self, m: &Moving, from: usize) -> Result<(), StoreError> {
        let mut p = Uncommitted::default();
        if self.load(&m.member)?.is_none() {
            p.new_members.push(m.member.clone());
        }
        p.order.push(m.member.clone());
        p.members.insert(m.member.clone(), m.record.clone());
        for k in &m.identities {
            p.identities.insert(k.clone(), m.member.clone());
        }
        self.respill(&m.member, m.spilled.clone(), &mut p);
        // Aliases moved in: events here look them up from now on.
        p.aliased = m.aliases();
        let meta = vec![(moving_key(&m.member), from.to_string().into_bytes())];
        self.commit(p, meta).map(drop)
    }

    /// Step 2: lets go of a member moved to another partition (nothing to
    /// do when it is gone already).
    pub fn move_out(&mut self, member: &str) -> Result<(), StoreError> {
        let Some(m) = self.moving_out(member)? else {
            return Ok(());
        };
        let members = self.store.meta_u64(keys::MEMBERS)?.saturating_sub(1);
        self.persist(WriteSet {
            members_removed: vec![m.member.clone()],
            identities_removed: m.identities,
            meta: vec![(keys::MEMBERS.into(), members.to_le_bytes().to_vec())],
            ..WriteSet::default()
        })?;
        if let Some(cache) = &self.cache {
            cache.borrow_mut().remove(member);
        }
        self.due.forget(member);
        Ok(())
    }

    /// Step 3, in the home partition of `members`: they are in partition
    /// `at` now (this one: no note needed).
    pub fn forward(&mut self, members: &[String], at: usize) -> Result<(), StoreError> {
        let here = self.partition.map_or(0, |(k, _)| k);
        let mut w = WriteSet::default();
        for m in members {
            match at == here {
                true => w.identities_removed.push(keys::moved(m)),
                false => w.identities.push((keys::moved(m), at.to_string())),
            }
        }
        self.persist(w)
    }

    /// Identifier entry `key` leads to `member`, here (an entry a move left
    /// behind, brought along).
    pub fn link_identity(&mut self, key: &str, member: &str) -> Result<(), StoreError> {
        self.persist(WriteSet {
            identities: vec![(key.to_string(), member.to_string())],
            ..WriteSet::default()
        })
    }

    /// Identifier entry `key` is not this partition's any more.
    pub fn unlink_identity(&mut self, key: &str) -> Result<(), StoreError> {
        self.persist(WriteSet {
            identities_removed: vec![key.to_string()],
            ..WriteSet::default()
        })
    }

    /// Step 4: the move of `member` here is done.
    pub fn moved_in(&mut self, member: &str) -> Result<(), StoreError> {
        self.persist(WriteSet {
            meta_removed: vec![moving_key(member)],
            ..WriteSet::default()
        })
    }

    /// Moves into this partition not known to be done: member and the
    /// partition it came from.
    pub fn moves_in_progress(&self) -> Result<Vec<(String, usize)>, StoreError> {
        Ok(self
            .store
            .meta_prefix(keys::MOVING_PREFIX, usize::MAX)?
            .into_iter()
            .filter_map(|(k, v)| {
                let member = k.strip_prefix(keys::MOVING_PREFIX)?.to_string();
                let from = String::from_utf8_lossy(&v).parse().ok()?;
                Some((member, from))
            })
            .collect())
    }

    /// Where `member` is, by this partition's note (read in its home
    /// partition): `None` when it is here, at home.
    pub fn moved_to(&self, member: &str) -> Result<Option<usize>, StoreError> {
        crate::store::folder::moved_to(&self.store, member)
    }
}

fn moving_key(member: &str) -> String {
    format!("{}{member}", keys::MOVING_PREFIX)
}

/// Cluster mode's move (One ID, `engine::directory`): what a partition
/// gives up of a group of names, put in NATS by its holder and taken in
/// by the partition the group went to. The partitions are on different
/// nodes, so each side is one commit of its own partition, at its place
/// in that partition's stream: the giver lets go ([`Engine::let_go`])
/// once the handover is stored, the taker takes it in
/// ([`Engine::take_in`]) before the event that joined the group.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct Handover {
    pub members: Vec<Handed>,
    /// Identity entries: identifier or alias, and the member it leads to.
    pub identities: Vec<(String, String)>,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Handed {
    pub member: String,
    pub record: MemberRecord,
    spilled: Vec<(i32, String, u64)>,
}

impl<S: Store> Engine<S> {
    /// What this partition holds of `names` (identifiers, `member:ID`):
    /// the members they lead to and every identity entry of theirs.
    pub fn handover(&self, names: &[String]) -> Result<Handover, StoreError> {
        let mut members: Vec<String> = Vec::new();
        let mut identities: Vec<(String, String)> = Vec::new();
        for n in names {
            if let Some(m) = self.store.identity(n)? {
                identities.push((n.clone(), m.clone()));
                members.push(m);
            }
            if let Some(id) = n.strip_prefix("member:") {
                members.push(id.to_string());
            }
        }
        let mut out = Handover::default();
        for m in members {
            if out.members.iter().any(|h| h.member == m) {
                continue;
            }
            let Some(moving) = self.moving_out(&m)? else {
                continue;
            };
            identities.extend(moving.identities.into_iter().map(|k| (k, m.clone())));
            out.members.push(Handed {
                member: m,
                record: moving.record,
                spilled: moving.spilled,
            });
        }
        identities.sort();
        identities.dedup();
        out.identities = identities;
        Ok(out)
    }

    /// Lets go of a handover this partition stored (with `noted`).
    pub fn let_go(
        &mut self,
        h: &Handover,
        noted: Vec<(String, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let members = self
            .store
            .meta_u64(keys::MEMBERS)?
            .saturating_sub(h.members.len() as u64);
        let mut meta = noted;
        meta.push((keys::MEMBERS.into(), members.to_le_bytes().to_vec()));
        self.persist(WriteSet {
            members_removed: h.members.iter().map(|m| m.member.clone()).collect(),
            identities_removed: h.identities.iter().map(|(k, _)| k.clone()).collect(),
            meta,
            ..WriteSet::default()
        })?;
        for m in &h.members {
            if let Some(cache) = &self.cache {
                cache.borrow_mut().remove(&m.member);
            }
            self.due.forget(&m.member);
        }
        Ok(())
    }

    /// Takes in a handover from another partition (with `noted`).
    pub fn take_in(
        &mut self,
        h: Handover,
        noted: Vec<(String, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let mut p = Uncommitted::default();
        for m in h.members {
            if self.load(&m.member)?.is_none() {
                p.new_members.push(m.member.clone());
            }
            p.order.push(m.member.clone());
            p.members.insert(m.member.clone(), m.record);
            self.respill(&m.member, m.spilled, &mut p);
        }
        for (k, m) in h.identities {
            if k.starts_with("member:") {
                p.aliased += 1;
            }
            p.identities.insert(k, m);
        }
        self.commit(p, noted).map(drop)
    }
}

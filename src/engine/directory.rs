//! One ID in cluster mode: the directory that says which partition each
//! member's group of names is in, kept by partition 0, which routes every
//! event and relay (`daemon::apply`). A node holds only some partitions,
//! so no node can look an identifier up in every partition the way one
//! data folder does (`engine::route`); the directory is one ordered place
//! that can.
//!
//! The directory is a union-find over names: identifiers (`phone:138...`)
//! and members (`member:ID`). Every event joins its named member and its
//! identifiers into one group, since after the event they are one member
//! (or already were); a group is in one partition. It may join more than
//! the engine merges (an event the engine refuses still joins its names):
//! that only keeps members in one partition that could have been apart,
//! which is harmless, while joining less would split a member. When an
//! event joins groups of different partitions, the smaller groups' members
//! are moved into the largest group's partition before the event is
//! applied there ([`Place::from`]); where it is applied, the merge is the
//! one a folder of one partition makes.
//!
//! Entries live in partition 0's identity tree under names no identifier
//! kind can have: `~at:<name>` is the name's group (its root name), and
//! `~group:<root>` the group's partition and names, one per line. This
//! module owns the decisions and their writes, not the moving.

use super::identity::{alias_key, id_key, new_member_id};
use crate::model::Event;
use crate::store::folder::partition_of;
use crate::store::{Store, StoreError};
use std::collections::HashMap;

const AT: &str = "~at:";
const GROUP: &str = "~group:";

/// Where an event or relay goes.
#[derive(Debug, PartialEq, Eq)]
pub struct Place {
    pub partition: usize,
    /// Partitions whose members of the event's names move to `partition`
    /// first, each with the names it gives up.
    pub from: Vec<(usize, Vec<String>)>,
}

/// A group: its partition and names.
#[derive(Clone, Debug)]
struct Group {
    partition: usize,
    names: Vec<String>,
}

impl Group {
    fn decode(v: &str) -> Option<Group> {
        let mut lines = v.lines();
        let partition = lines.next()?.parse().ok()?;
        Some(Group {
            partition,
            names: lines.map(str::to_string).collect(),
        })
    }

    fn encode(&self) -> String {
        let mut s = self.partition.to_string();
        for n in &self.names {
            s.push('\n');
            s.push_str(n);
        }
        s
    }
}

/// The directory as of a batch being routed: the store's entries and the
/// batch's changes over them.
pub struct Directory<'a, S: Store + ?Sized> {
    store: &'a S,
    partitions: usize,
    changed: HashMap<String, Option<String>>,
}

impl<'a, S: Store + ?Sized> Directory<'a, S> {
    pub fn new(store: &'a S, partitions: usize) -> Self {
        Directory {
            store,
            partitions,
            changed: HashMap::new(),
        }
    }

    fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        match self.changed.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.store.identity(key),
        }
    }

    /// The root and group of `name`, if it is in one.
    fn group_of(&self, name: &str) -> Result<Option<(String, Group)>, StoreError> {
        let Some(root) = self.get(&format!("{AT}{name}"))? else {
            return Ok(None);
        };
        let group = self.get(&format!("{GROUP}{root}"))?;
        Ok(group.as_deref().and_then(Group::decode).map(|g| (root, g)))
    }

    /// The partition member or identifier `id` is in (as `GET
    /// /v1/members/{id}` names one): its group's, else its home.
    pub fn locate(&self, id: &str) -> Result<usize, StoreError> {
        let mut names = vec![alias_key(id)];
        if id.contains(':') {
            // `kind:value` is an identifier first, as for events.
            names.insert(0, id.to_string());
        }
        for n in names {
            if let Some((_, g)) = self.group_of(&n)? {
                return Ok(g.partition);
            }
        }
        Ok(partition_of(id, self.partitions))
    }

    /// Where `ev` goes, its names joined into one group.
    pub fn place_event(&mut self, ev: &Event) -> Result<Place, StoreError> {
        let mut names: Vec<String> = Vec::new();
        if !ev.member.is_empty() {
            names.push(alias_key(&ev.member));
        }
        names.extend(ev.ids.iter().map(|(k, v)| id_key(k, v)));
        let home = match ev.member.is_empty() {
            false => ev.member.clone(),
            true => new_member_id(&ev.ids).unwrap_or_default(),
        };
        if ev.ids.is_empty() {
            // No identifiers: nothing to join.
            return self.locate(&ev.member).map(|partition| Place {
                partition,
                from: Vec::new(),
            });
        }
        self.place(names, &home, ev.member.is_empty())
    }

    /// Where a relay for `member` goes (it joins nothing).
    pub fn place_relay(&self, member: &str) -> Result<usize, StoreError> {
        match self.group_of(&alias_key(member))? {
            Some((_, g)) => Ok(g.partition),
            None => Ok(partition_of(member, self.partitions)),
        }
    }

    /// Joins `names` into one group in the partition of the largest of
    /// their groups (the first on a tie). A member name in no group is
    /// one at its home (a member never joined to anything lives there);
    /// when no name has a group, the group is made at the home of `home`
    /// (the member the event names, else the member its first identifier
    /// makes), with that new member's name too when `new` says the event
    /// names no member.
    fn place(&mut self, names: Vec<String>, home: &str, new: bool) -> Result<Place, StoreError> {
        let mut groups: Vec<(String, Group)> = Vec::new();
        let mut loose: Vec<String> = Vec::new();
        for n in names {
            match self.group_of(&n)? {
                Some((root, g)) => {
                    if !groups.iter().any(|(r, _)| *r == root) {
                        groups.push((root, g));
                    }
                }
                None => loose.push(n),
            }
        }
        if groups.is_empty() {
            if new && let Some(m) = Some(alias_key(home)).filter(|m| !loose.contains(m)) {
                loose.push(m);
            }
            let partition = partition_of(home, self.partitions);
            let root = loose[0].clone();
            self.write(
                &root,
                Group {
                    partition,
                    names: Vec::new(),
                },
                loose,
            );
            return Ok(Place {
                partition,
                from: Vec::new(),
            });
        }
        // A member name without a group may have a record at its home.
        let mut singles: Vec<(usize, String)> = Vec::new();
        for n in &loose {
            if let Some(m) = n.strip_prefix("member:") {
                singles.push((partition_of(m, self.partitions), n.clone()));
            }
        }
        let (big, _) = groups
            .iter()
            .enumerate()
            .max_by(|(i, a), (j, b)| a.1.names.len().cmp(&b.1.names.len()).then(j.cmp(i)))
            .map(|(i, g)| (i, g.1.partition))
            .unwrap_or((0, 0));
        let (root, mut group) = groups.swap_remove(big);
        let target = group.partition;
        let mut from: Vec<(usize, Vec<String>)> = Vec::new();
        let mut give = |p: usize, names: &[String]| {
            if p == target {
                return;
            }
            match from.iter_mut().find(|(q, _)| *q == p) {
                Some((_, all)) => all.extend_from_slice(names),
                None => from.push((p, names.to_vec())),
            }
        };
        let mut joined = loose;
        for (r, g) in groups {
            give(g.partition, &g.names);
            self.changed.insert(format!("{GROUP}{r}"), None);
            joined.extend(g.names);
        }
        for (p, n) in singles {
            give(p, std::slice::from_ref(&n));
        }
        from.sort_by_key(|(p, _)| *p);
        group.partition = target;
        self.write(&root, group, joined);
        Ok(Place {
            partition: target,
            from,
        })
    }

    /// Writes group `root` with `more` names added (each pointed at it).
    fn write(&mut self, root: &str, mut group: Group, more: Vec<String>) {
        for n in more {
            self.changed
                .insert(format!("{AT}{n}"), Some(root.to_string()));
            group.names.push(n);
        }
        self.changed
            .insert(format!("{GROUP}{root}"), Some(group.encode()));
    }

    /// The batch's changes: entries to write and entries to remove.
    pub fn into_writes(self) -> (Vec<(String, String)>, Vec<String>) {
        let (mut put, mut gone) = (Vec::new(), Vec::new());
        for (k, v) in self.changed {
            match v {
                Some(v) => put.push((k, v)),
                None => gone.push(k),
            }
        }
        put.sort();
        gone.sort();
        (put, gone)
    }
}

impl<S: Store> super::Engine<S> {
    /// Stores a routed batch's directory changes (partition 0) with
    /// `noted`, the stream sequence it covers.
    pub fn keep_directory(
        &mut self,
        (put, gone): (Vec<(String, String)>, Vec<String>),
        noted: Vec<(String, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        self.persist(crate::store::WriteSet {
            identities: put,
            identities_removed: gone,
            meta: noted,
            ..crate::store::WriteSet::default()
        })
    }
}

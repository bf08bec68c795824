//! One ID: which member an event is for when it names identifiers (`ids`:
//! phone, card number, platform open-id ...), and merging two members when
//! an event links identifiers of both. Owns the merge rules for every part
//! of a member record; the engine owns the reads and writes around them.

use super::{Engine, IDENTITY_RULE, Uncommitted, ctx};
use crate::model::{Event, MemberRecord};
use crate::store::{Store, StoreError};

/// Identifiers kept in a member's record at most; merged members stay
/// reachable through their `member:ID` alias beyond that.
pub const MAX_IDS: usize = 64;

/// The index key of an identifier.
pub fn id_key(kind: &str, value: &str) -> String {
    format!("{kind}:{value}")
}

/// The index key that leads a merged member's id to the member it joined.
pub fn alias_key(member: &str) -> String {
    format!("member:{member}")
}

/// The member a new member named only by identifiers gets: its first
/// identifier (in the config's kind order), as `kind:value`.
pub fn new_member_id(ids: &[(String, String)]) -> Option<String> {
    ids.first().map(|(k, v)| id_key(k, v))
}

/// Both members' recent purchase days, whole from the later of the two
/// lists' starts (each is whole from its own); empty, as in a record from
/// before the list, when either side's is not known.
fn merged_days(a: &MemberRecord, b: &MemberRecord) -> Vec<i32> {
    let known = |r: &MemberRecord| match (r.last_purchase, r.recent_days.first()) {
        (None, _) => Some(i32::MIN),
        (Some(_), Some(&since)) => Some(since),
        (Some(_), None) => None,
    };
    let (Some(sa), Some(sb)) = (known(a), known(b)) else {
        return Vec::new();
    };
    let since = sa.max(sb);
    let mut days: Vec<i32> = a
        .recent_days
        .iter()
        .chain(&b.recent_days)
        .copied()
        .filter(|&d| d >= since)
        .collect();
    days.sort_unstable();
    days.dedup();
    days
}

/// Folds `from` into `into` (the member that stays). Counters and points
/// add up; dates widen (first earliest, last latest); the higher tier
/// stays; tags, coupons, contacts, point lots and refundable purchases are
/// combined; attributes and the birthday of `into` win, `from` fills gaps;
/// a consent withdrawn on either side stays withdrawn; windowed aggregates
/// add up day by day; rule states combine (firings add up, so limits count
/// both members' firings; a rule armed for either stays armed). The cycle
/// follows from the combined dates and purchase days (days both bought on
/// count twice).
pub fn merge(into: &mut MemberRecord, mut from: MemberRecord) {
    into.recent_days = merged_days(into, &from);
    // A redelivery of an event the absorbed member had is still a duplicate.
    into.seen.append(&mut from.seen);
    into.seen_spilled.append(&mut from.seen_spilled);
    into.joined = into.joined.min(from.joined);
    into.first_day_spend = match into.first_purchase.cmp(&from.first_purchase) {
        _ if from.first_purchase.is_none() => into.first_day_spend,
        _ if into.first_purchase.is_none() => from.first_day_spend,
        std::cmp::Ordering::Less => into.first_day_spend,
        std::cmp::Ordering::Greater => from.first_day_spend,
        std::cmp::Ordering::Equal => into
            .first_day_spend
            .zip(from.first_day_spend)
            .map(|(a, b)| a.saturating_add(b)),
    };
    into.wallet = into.wallet.saturating_add(from.wallet);
    into.first_purchase = min_opt(into.first_purchase, from.first_purchase);
    into.last_purchase = into.last_purchase.max(from.last_purchase);
    into.purchase_days += from.purchase_days;
    into.orders += from.orders;
    into.spend = into.spend.saturating_add(from.spend);
    into.points = into.points.saturating_add(from.points);
    into.tier = into.tier.max(from.tier);
    for t in from.tags {
        if !into.has_tag(&t) {
            into.tags.push(t);
        }
    }
    into.birthday = into.birthday.or(from.birthday);
    for (name, v) in from.attributes {
        if into.attribute(&name).is_none() {
            into.attributes.push((name, v));
        }
    }
    for a in from.aggregates {
        match into.aggregates.iter_mut().find(|x| x.key == a.key) {
            None => into.aggregates.push(a),
            Some(mine) => {
                for b in a.buckets {
                    match mine.buckets.binary_search_by_key(&b.day, |x| x.day) {
                        Ok(p) => {
                            let m = &mut mine.buckets[p];
                            m.count += b.count;
                            m.sum = m.sum.saturating_add(b.sum);
                            m.min = m.min.min(b.min);
                            m.max = m.max.max(b.max);
                        }
                        Err(p) => mine.buckets.insert(p, b),
                    }
                }
            }
        }
    }
    for r in from.rules {
        match into.rules.iter_mut().find(|x| x.rule == r.rule) {
            None => into.rules.push(r),
            Some(mine) => {
                mine.armed |= r.armed;
                mine.fired = mine.fired.saturating_add(r.fired);
                mine.recent.extend(r.recent);
                mine.recent.sort_unstable();
            }
        }
    }
    into.contacts.extend(from.contacts);
    for (channel, granted) in from.consent {
        match into.consent.iter_mut().find(|(c, _)| *c == channel) {
            Some(mine) => mine.1 &= granted,
            None => into.consent.push((channel, granted)),
        }
    }
    into.tier_history.extend(from.tier_history);
    into.tier_history.sort_by_key(|(d, _)| *d);
    let excess = into.tier_history.len().saturating_sub(32);
    into.tier_history.drain(..excess);
    into.coupons.extend(from.coupons);
    into.point_lots.extend(from.point_lots);
    into.point_lots.sort_by_key(|(d, _)| *d);
    into.purchases.extend(from.purchases);
    into.purchases.sort_by_key(|p| p.day);
    let excess = into
        .purchases
        .len()
        .saturating_sub(crate::model::MAX_REFUNDABLE);
    into.purchases.drain(..excess);
    for id in from.ids {
        link(into, id);
    }
    into.merged.extend(from.merged);
    into.history.extend(from.history);
    into.history.sort_by_key(|d| d.day);
    let excess = into.history.len().saturating_sub(crate::model::HISTORY_LEN);
    into.history.drain(..excess);
}

/// Links the event's identifiers to the member's record, and keeps a named
/// member that turned out to be this one (`alias`) with it, so that later
/// merges and moves take its alias along.
pub fn link_names(rec: &mut MemberRecord, ev: &Event, alias: Option<String>) {
    for id in &ev.ids {
        link(rec, id.clone());
    }
    if let Some(n) = alias
        && !rec.merged.contains(&n)
    {
        rec.merged.push(n);
    }
}

/// Records an identifier in the member's list (bounded).
pub fn link(rec: &mut MemberRecord, id: (String, String)) {
    if !rec.ids.contains(&id) && rec.ids.len() < MAX_IDS {
        rec.ids.push(id);
    }
}

fn min_opt(a: Option<i32>, b: Option<i32>) -> Option<i32> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// Finds a member by id, by the id of a member merged into it, or by an
/// identifier (`phone:13800000000`); returns the member's id and record.
pub fn find_member<S: crate::store::Store + ?Sized>(
    store: &S,
    id: &str,
) -> Result<Option<(String, MemberRecord)>, crate::store::StoreError> {
    // `kind:value` is an identifier first (events treat it so too).
    if id.contains(':')
        && let Some(m) = store.identity(id)?
        && let Some(found) = existing_or_survivor(store, &m)?
    {
        return Ok(Some(found));
    }
    if let Some(rec) = store.member(id)? {
        return Ok(Some((id.to_string(), rec)));
    }
    for key in [alias_key(id), id.to_string()] {
        if let Some(m) = store.identity(&key)?
            && let Some(found) = existing_or_survivor(store, &m)?
        {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Member `m`, or the member it was merged into: an identifier past the
/// 64 a record lists still names the member it was linked to.
fn existing_or_survivor<S: crate::store::Store + ?Sized>(
    store: &S,
    m: &str,
) -> Result<Option<(String, MemberRecord)>, crate::store::StoreError> {
    if let Some(rec) = store.member(m)? {
        return Ok(Some((m.to_string(), rec)));
    }
    Ok(match store.identity(&alias_key(m))? {
        Some(s) => store.member(&s)?.map(|rec| (s, rec)),
        None => None,
    })
}

impl<S: Store> Engine<S> {
    /// One ID: the member an event is for. A named member that was merged
    /// into another leads to that one. The event's identifiers lead to their
    /// members; when they lead to more than one (or to another member than
    /// the named one), those members are merged into one: the named member
    /// if it exists, else the one that joined first (then the smallest id).
    /// Each merge is an effect (`rule: identity`, `action: merge`). Also
    /// returns the named member when it turned out to be the survivor
    /// without ever existing (its alias is new).
    pub(super) fn resolve(
        &mut self,
        ev: &Event,
        day: i32,
        p: &mut Uncommitted,
    ) -> Result<(String, Option<String>), StoreError> {
        let named = if ev.member.is_empty() {
            None
        } else {
            Some(self.canonical(&ev.member, p)?)
        };
        if ev.ids.is_empty()
            && let Some(n) = named
        {
            return Ok((n, None));
        }
        let mut found: Vec<String> = Vec::new();
        for (kind, value) in &ev.ids {
            let key = id_key(kind, value);
            let owner = match p.identities.get(&key) {
                Some(m) => Some(m.clone()),
                None => self.store.identity(&key)?,
            };
            if let Some(o) = owner {
                let o = self.canonical(&o, p)?;
                if !found.contains(&o) {
                    found.push(o);
                }
            }
        }
        let mut existing = Vec::new();
        for m in named.iter().chain(&found) {
            if let Some(rec) = self.existing(m, p)?
                && !existing
                    .iter()
                    .any(|(x, _): &(String, MemberRecord)| x == m)
            {
                existing.push((m.clone(), rec));
            }
        }
        let survivor = match (&named, existing.is_empty()) {
            (Some(n), _) if existing.iter().any(|(m, _)| m == n) => n.clone(),
            (_, false) => existing
                .iter()
                .min_by(|a, b| (a.1.joined, &a.0).cmp(&(b.1.joined, &b.0)))
                .map(|(m, _)| m.clone())
                .unwrap_or_default(),
            (Some(n), true) => n.clone(),
            (None, true) => new_member_id(&ev.ids).unwrap_or_default(),
        };
        // A named member that does not exist yet becomes an alias of the
        // member its identifiers lead to.
        let mut alias = None;
        if let Some(n) = &named
            && *n != survivor
            && !existing.iter().any(|(m, _)| m == n)
        {
            p.identities.insert(alias_key(n), survivor.clone());
            p.aliased += 1;
            alias = Some(n.clone());
        }
        let trigger = format!("event:{}", ev.id);
        for (i, (absorbed, rec)) in existing.into_iter().enumerate() {
            if absorbed != survivor {
                self.merge(&survivor, &absorbed, rec, day, p)?;
                let key = ctx::effect_key(IDENTITY_RULE, &survivor, &trigger, i);
                let cx = self.ctx();
                let mut e = ctx::engine_effect(
                    &cx,
                    IDENTITY_RULE,
                    &survivor,
                    &trigger,
                    ev.at,
                    crate::model::Action::Merge,
                    key,
                );
                e.value = Some(serde_json::json!({ "merged": absorbed }));
                p.out.effects.push(e);
            }
        }
        for (kind, value) in &ev.ids {
            p.identities.insert(id_key(kind, value), survivor.clone());
        }
        Ok((survivor, alias))
    }

    /// Follows a merged member's alias to the member it joined.
    pub(super) fn canonical(&self, member: &str, p: &Uncommitted) -> Result<String, StoreError> {
        if self.aliases == 0 && p.aliased == 0 {
            return Ok(member.to_string());
        }
        let key = alias_key(member);
        Ok(match p.identities.get(&key) {
            Some(m) => m.clone(),
            None => self
                .store
                .identity(&key)?
                .unwrap_or_else(|| member.to_string()),
        })
    }

    /// A member's record if it exists (in the batch or the store).
    pub(super) fn existing(
        &self,
        member: &str,
        p: &Uncommitted,
    ) -> Result<Option<MemberRecord>, StoreError> {
        match p.members.get(member) {
            Some(r) => Ok(Some(r.clone())),
            None => self.load(member),
        }
    }

    /// Merges `absorbed` (with its record) into `survivor`: its record is
    /// folded in and deleted, and its id, the members it had absorbed and
    /// its identifiers lead to `survivor` from now on.
    pub(super) fn merge(
        &mut self,
        survivor: &str,
        absorbed: &str,
        from: MemberRecord,
        day: i32,
        p: &mut Uncommitted,
    ) -> Result<(), StoreError> {
        let mut into = self.record(survivor, day, p)?;
        // The absorbed member's spilled ids, under the survivor's name.
        let spilled = self.spilled_of(absorbed, &from.seen_spilled, p)?;
        self.respill(survivor, spilled, p);
        for m in from.merged.iter().map(String::as_str).chain([absorbed]) {
            p.identities.insert(alias_key(m), survivor.to_string());
            p.aliased += 1;
        }
        for (kind, value) in &from.ids {
            p.identities
                .insert(id_key(kind, value), survivor.to_string());
        }
        merge(&mut into, from);
        into.merged.push(absorbed.to_string());
        if p.members.remove(absorbed).is_some() {
            p.order.retain(|m| m != absorbed);
        }
        p.removed.push(absorbed.to_string());
        if !p.members.contains_key(survivor) {
            p.order.push(survivor.to_string());
        }
        p.members.insert(survivor.to_string(), into);
        Ok(())
    }
}

//! One ID: which member an event is for when it names identifiers (`ids`:
//! phone, card number, platform open-id ...), and merging two members when
//! an event links identifiers of both. Owns the merge rules for every part
//! of a member record; the engine owns the reads and writes around them.

use crate::model::MemberRecord;

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

/// Folds `from` into `into` (the member that stays). Counters and points
/// add up; dates widen (first earliest, last latest); the higher tier
/// stays; tags, coupons, contacts, point lots and refundable purchases are
/// combined; attributes and the birthday of `into` win, `from` fills gaps;
/// a consent withdrawn on either side stays withdrawn; windowed aggregates
/// add up day by day; rule states combine (firings add up, so limits count
/// both members' firings; a rule armed for either stays armed). The cycle
/// follows from the combined dates and purchase days (days both bought on
/// count twice).
pub fn merge(into: &mut MemberRecord, from: MemberRecord) {
    into.joined = into.joined.min(from.joined);
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
        && let Some(rec) = store.member(&m)?
    {
        return Ok(Some((m, rec)));
    }
    if let Some(rec) = store.member(id)? {
        return Ok(Some((id.to_string(), rec)));
    }
    for key in [alias_key(id), id.to_string()] {
        if let Some(m) = store.identity(&key)?
            && let Some(rec) = store.member(&m)?
        {
            return Ok(Some((m, rec)));
        }
    }
    Ok(None)
}

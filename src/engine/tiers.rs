//! The tier list a data folder's members refer to (by position): kept in
//! the store, and a change that would re-map members refused.

use super::Engine;
use crate::store::{Store, StoreError, keys};

/// What reading `store` with the tier list `tiers` would re-map, if
/// anything: `Some(why)` when the store's list is not the start of it.
pub fn tier_change<S: Store + ?Sized>(
    store: &S,
    tiers: &[String],
) -> Result<Option<String>, StoreError> {
    Ok(stored_tiers(store)?.and_then(|old| remap(&old, tiers)))
}

pub(super) fn stored_tiers<S: Store + ?Sized>(
    store: &S,
) -> Result<Option<Vec<String>>, StoreError> {
    Ok(store
        .meta(keys::TIERS)?
        .and_then(|b| serde_json::from_slice(&b).ok()))
}

/// Why going from `old` to `tiers` would re-map members, if it would.
pub(super) fn remap(old: &[String], tiers: &[String]) -> Option<String> {
    if tiers.starts_with(old) {
        return None;
    }
    let moves: Vec<String> = old
        .iter()
        .enumerate()
        .filter(|(i, t)| tiers.get(*i) != Some(t))
        .map(|(i, t)| match tiers.get(i) {
            Some(n) => format!("members in `{t}` would read as `{n}`"),
            None => format!("members in `{t}` would have no tier"),
        })
        .collect();
    Some(format!(
        "the tier list changed from [{}] to [{}]: {}; members keep their tier by position, so tiers may only be added after the last one (move them back, or start a new data folder)",
        old.join(", "),
        tiers.join(", "),
        moves.join(", ")
    ))
}

impl<S: Store> Engine<S> {
    /// Members keep their tier by its position in the config's list, so a
    /// new list must keep the old one as its start (tiers may only be added
    /// at the top): inserting, removing or reordering would re-map every
    /// member (gold read as silver) without a word. The list is kept in the
    /// store; a change that would re-map is refused, saying what it would do.
    pub(super) fn keep_tiers(&mut self, tiers: &[String]) -> Result<(), StoreError> {
        let old = stored_tiers(&self.store)?;
        if let Some(why) = old.as_deref().and_then(|o| remap(o, tiers)) {
            return Err(StoreError::TiersChanged(why));
        }
        if old.as_deref() == Some(tiers) {
            return Ok(());
        }
        // Kept with the first write: until members are written under the
        // new list, the stored one still describes them.
        let list = serde_json::to_vec(tiers).map_err(|e| StoreError::Io(e.to_string()))?;
        self.held.borrow_mut().push((keys::TIERS.into(), list));
        Ok(())
    }
}

//! An event as the engine takes it: validated, typed, in the schema's
//! field order; and why an event was refused. Reading events from JSON is
//! `io::event`'s job.

use crate::base::value::Value;
use rust_decimal::Decimal;
use std::fmt;

/// Longest event id, member id or string field accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;
pub const MAX_STRING_BYTES: usize = 4096;

/// The largest magnitude a money or decimal field may have: 10^12 (a
/// trillion in any currency unit, rupiah and won included). Why a bound at
/// all: member state adds amounts up (spend, windowed sums, merges), and
/// rust_decimal tops out near 7.9 * 10^28; with every amount at most 10^12,
/// a member would need more than 10^16 purchases to overflow. An event past
/// the bound is refused at validation, naming the field, instead of
/// poisoning the member's next fold.
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(0xD4A5_1000, 0xE8, 0, false, 0);

/// A validated event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: String,
    /// Index into `Schema::events`.
    pub kind: usize,
    /// The member, as given; empty when the event names its member by `ids`
    /// only (the engine resolves it).
    pub member: String,
    /// Identifiers (kind, value) for One ID, in the config's kind order.
    pub ids: Vec<(String, String)>,
    pub at: jiff::Timestamp,
    /// The declared fields, in the schema's order (null when left out).
    pub fields: Vec<Value>,
    /// Hash of the event as received, to tell a repeat from a conflict.
    pub body_hash: u128,
}

/// Why an event was refused. Names the event and the field path.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub struct EventError {
    /// 1-based line in an NDJSON input, when there is one.
    pub line: Option<usize>,
    pub id: Option<String>,
    /// The field path (`amount`, `at`), empty for the whole event.
    pub path: String,
    pub message: String,
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = self.line {
            write!(f, "line {l}: ")?;
        }
        match &self.id {
            Some(id) => write!(f, "event \"{id}\"")?,
            None => write!(f, "event")?,
        }
        if !self.path.is_empty() {
            write!(f, ", field `{}`", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

//! The data nudge moves, as plain types: events in, member records kept
//! in the store (and their compact encoding), effects out, and the
//! vocabulary of fields. No evaluation and no I/O happens here.

pub mod effect;
pub mod event;
pub mod fields;
pub mod member;
mod encoding;
pub use encoding::decode_seen;
pub mod summary;

pub use effect::{Action, Effect, Status, json_number, value_json};
pub use event::{Event, EventError};
pub use member::*;

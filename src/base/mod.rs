//! The ground floor: what every layer may use and that imports nothing of
//! nudge. Diagnostics as data, positions in YAML, the `Value` of a slot,
//! calendar days and durations, and the names the language reserves.

pub mod diag;
pub mod names;
pub mod time;
pub mod value;
pub mod yaml;

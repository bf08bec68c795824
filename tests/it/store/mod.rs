//! The data folder: the store against a model, its format and lock,
//! storage faults under the daemon, and the crash harness.

mod crash;
mod faults;
mod format;
mod ranges;
mod against_model;

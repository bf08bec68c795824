//! The command line through the real binary: the engine commands and
//! broken input to `nudge check`.

mod bad_input;
mod partitions;
mod commands;
mod segments;

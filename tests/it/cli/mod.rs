//! The command line through the real binary: the engine commands and
//! broken input to `nudge check`.

mod bad_input;
mod commands;
mod segments;

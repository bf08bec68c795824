//! The edge: what each command does with the library, and the rendering of
//! diagnostics and summaries for people (miette) and tools (JSON). Nothing
//! below this layer prints.

pub mod commands;
pub mod ingest;
pub mod render;
pub mod holdout;
pub mod predict;
pub mod segment;
pub mod backup;

//! nudge: a rules engine for member (loyalty) marketing.
//!
//! The library holds everything but the command line: the rule language
//! (`lang`), the config (`schema`), loading from disk (`load`) and
//! diagnostics as data (`diag`). The `nudge` binary (src/main.rs) parses
//! arguments and renders diagnostics; nothing here prints.

pub mod backtest;
pub mod backup;
pub mod daemon;
pub mod diag;
pub mod engine;
pub mod explain;
pub mod html;
pub mod import;
pub mod ingest;
pub mod init;
pub mod lang;
pub mod load;
pub mod model;
pub mod plugins;
pub mod replay;
pub mod schema;
pub mod sinks;
pub mod store;
pub mod testcase;
pub mod yaml;

//! nudge: a rules engine for member (loyalty) marketing.
//!
//! The library holds everything but the command line. Its modules are
//! layers, listed here from the bottom up: a module imports only from its
//! own layer or the layers listed before it (the tidy test in `tests/it/tidy.rs` reads
//! this table and enforces it). The `nudge` binary (`src/main.rs` and
//! `src/cli/`) sits on top: it parses arguments and renders diagnostics;
//! nothing in the library prints.

/// Diagnostics, YAML positions, `Value`, days and durations, reserved names.
pub mod base;
/// Plain data: events, member records, built-in fields, effects, summaries.
pub mod model;
/// Buy-till-you-die models (BG/NBD, Gamma-Gamma): fitting and predictions.
pub mod predict;
/// `nudge.yaml` -> `Schema`, validated section by section.
pub mod config;
/// Rule text and YAML -> a checked, compiled `RuleSet`.
pub mod lang;
/// The sled store, every key and meta name, backup.
pub mod store;
/// The sandboxed rhai host.
pub mod plugins;
/// A project folder on disk: config, rules and plugins loaded together.
pub mod project;
/// The event path, points, ticks, firing, folding, budgets, the clock.
pub mod engine;
/// Committed effects out: sink cursors, the file sink, trimming.
pub mod outbox;
/// Events in: JSON validation, NDJSON ingest, CSV import.
pub mod io;
/// Replay, backtest and uplift, rule test cases, explain.
pub mod sim;
/// The HTML report and member JSON.
pub mod report;
/// Cluster mode: partitions over NATS JetStream (streams, leases).
pub mod cluster;
/// The long-running service: writer, HTTP, watcher, dispatch.
pub mod daemon;
/// `nudge lsp`: the language server for rule files.
pub mod lsp;

/// mimalloc instead of the system allocator, for the binary, the tests and
/// the benches alike (so a bench's baseline runs on it too). sled copies a
/// leaf on every change it applies, and glibc's malloc spent a third of a
/// durable ingest's time on those copies (`perf`, `benches/ingest.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

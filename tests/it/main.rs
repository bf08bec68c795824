//! nudge's integration tests, one binary, by feature: the module for a
//! feature is named after it (`engine::identity`, `daemon::reload`,
//! `store::crash`). Test data stays beside this folder: `tests/lang/`
//! (diagnostic and evaluation cases), `tests/cases/` (rule test cases),
//! `tests/configs/`, `tests/fmt/`.

mod cli;
mod cluster;
mod common;
mod daemon;
mod docs;
mod engine;
mod lang;
mod lsp;
mod outbox;
mod plugins;
mod sim;
mod store;
mod tidy;

//! `nudge run`, the real binary: the service (HTTP, members, status,
//! metrics, live edits, SIGTERM), hostile HTTP input, and live reload under
//! stress.

mod hostile_http;
mod partitions;
mod predict;
mod reload;
mod rewards;
mod segments;
mod service;
mod ticks;

//! Durable ingest benchmark: 1,000,000 members of the peer workload in
//! sled, a stream of purchase events for uniformly random members, 20
//! playbook rules (points by tier, tier upgrades, club tags, a win-back
//! re-arm, a welcome-back coupon), processed in group commits of 1,000
//! events through `Engine::process` (an event counts only once its batch
//! is flushed). In the same run, a raw sled loop with no rules: per event
//! get, decode, add the amount, encode, insert; one flushed batch per 1,000
//! events. Prints events/s, p50/p99 batch latency, bytes on disk per
//! member, and the ratio.
//!
//! Run: `cargo bench --bench ingest` (`NUDGE_BENCH_MEMBERS`,
//! `NUDGE_BENCH_EVENTS` for other sizes). Targets: at least 40,000
//! events/s and 0.7x the raw loop.

// A benchmark prints its figures.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use nudge::engine::Engine;
use nudge::store::SledStore;
use std::time::Instant;

const BATCH: usize = 1000;

fn main() {
    let n = common::env_size("NUDGE_BENCH_MEMBERS", 1_000_000);
    let events = common::env_size("NUDGE_BENCH_EVENTS", 200_000);
    let (schema, rules) = common::purchases::load();
    let people = common::members(n);

    let stream = common::purchases::stream(&schema, n, events);

    let dir = tempfile::tempdir().expect("tempdir");
    let store = SledStore::open(&dir.path().join("nudge")).expect("store");
    common::preload(&store, &people);
    let loaded = store.size_on_disk() as f64 / n as f64;
    let mut engine = Engine::new(schema.clone(), rules, store).expect("engine");
    let mut latencies = Vec::new();
    let start = Instant::now();
    for batch in stream.chunks(BATCH) {
        let t = Instant::now();
        engine.process(batch).expect("process");
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let nudge_s = start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    let bytes = engine.store().size_on_disk() as f64 / n as f64;
    let rss_mb = peak_rss_mb();
    drop(engine);

    let (raw_s, raw_bytes) = common::purchases::raw_loop(&people, &stream, BATCH);
    let (ours, base) = (events as f64 / nudge_s, events as f64 / raw_s);
    println!(
        "{{\"bench\":\"ingest\",\"members\":{n},\"events\":{events},\"batch\":{BATCH},\"rules\":20,\"events_per_s\":{ours:.0},\"p50_batch_ms\":{:.2},\"p99_batch_ms\":{:.2},\"bytes_on_disk_per_member_loaded\":{loaded:.0},\"bytes_on_disk_per_member\":{bytes:.0},\"raw_events_per_s\":{base:.0},\"raw_bytes_on_disk_per_member\":{raw_bytes:.0},\"ratio\":{:.3},\"peak_rss_mb\":{rss_mb}}}",
        p(0.5),
        p(0.99),
        ours / base
    );
}

/// The process's peak resident memory in MiB (Linux), after the nudge part:
/// the engine, sled's cache, and the bench's own generated data.
fn peak_rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

//! Daily tick benchmark: 1,000,000 members of the peer workload stored in
//! sled (the member records `nudge run` keeps), the 20 reference rules as
//! tick rules, and the daily tick through `Engine::tick`, the path the
//! daemon's schedule takes: every member read, evaluated, and written back
//! only when something changed, effects to the outbox, one durable commit
//! per 10,000 members. The first tick fires every rule that is true (all
//! rising edges: 2.5 million effects); the next day's tick is the steady
//! state, where only conditions that became true fire. The first tick
//! visits every member and gives each a due day (the first day its tick
//! rules can turn); later ticks visit only the members due.
//!
//! Run: `cargo bench --bench tick` (`NUDGE_BENCH_MEMBERS` for fewer;
//! `NUDGE_BENCH_CACHE=1` keeps members decoded in memory, as replay does;
//! `NUDGE_BENCH_FULL=1` visits every member every day, without the index).
//! Target: a full daily tick over 1,000,000 members in under 2 s.

// A benchmark prints its figures.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use nudge::engine::Engine;
use nudge::store::SledStore;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bench");
    let n = common::env_size("NUDGE_BENCH_MEMBERS", 1_000_000);
    let (schema, rules) = common::load_rules(&bench, "r20");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SledStore::open(&dir.path().join("data")).expect("store");
    let people = common::members(n);
    let start = Instant::now();
    common::preload(&store, &people);
    let load_s = start.elapsed().as_secs_f64();
    let bytes = store.size_on_disk();
    let (schema, rules) = (Arc::new(schema), Arc::new(rules));
    let cached = std::env::var_os("NUDGE_BENCH_CACHE").is_some();
    let full = std::env::var_os("NUDGE_BENCH_FULL").is_some();
    let open = |store: SledStore| {
        let mut engine = Engine::new(schema.clone(), rules.clone(), store).expect("engine");
        if cached {
            engine = engine.cache_members();
        }
        if full {
            engine = engine.full_ticks();
        }
        engine
    };
    let mut engine = open(store);
    // The first tick after a restart reads the due index from the store.
    for (label, day) in [
        ("first", common::TODAY),
        ("steady", common::TODAY + 1),
        ("steady", common::TODAY + 2),
        ("after_restart", common::TODAY + 3),
    ] {
        if label == "after_restart" {
            // A clean stop: the due index is saved and taken up again.
            engine.save_due().expect("save the due index");
            drop(engine);
            engine = open(SledStore::open(&dir.path().join("data")).expect("store"));
        }
        let visited = if full {
            n
        } else {
            engine.due_on(day).unwrap_or(n)
        };
        let start = Instant::now();
        let effects = engine.tick(day).expect("tick");
        let s = start.elapsed().as_secs_f64();
        println!(
            "{{\"bench\":\"tick\",\"cache\":{cached},\"due_index\":{},\"tick\":\"{label}\",\"rules\":20,\"members\":{n},\"visited\":{visited},\"seconds\":{s:.3},\"members_per_s\":{:.0},\"effects\":{}}}",
            !full,
            n as f64 / s,
            effects.len()
        );
    }
    println!(
        "{{\"bench\":\"tick_load\",\"members\":{n},\"seconds\":{load_s:.3},\"bytes_on_disk_per_member\":{:.0}}}",
        bytes as f64 / n as f64
    );
}

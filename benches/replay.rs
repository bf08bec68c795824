//! Replay benchmark: the CDNOW sample (6,919 purchases, 2,357 customers,
//! 546 daily ticks) replayed with a simulated clock through the same path
//! `nudge replay` takes (a temporary store, members kept decoded), once
//! with the CDNOW example rules and once with the playbook (`rules/` and
//! the example `nudge.yaml`). Prints one JSON line per rule set: events/s
//! and member-days/s (members visited by the daily ticks, per second).
//!
//! Run: `cargo bench --bench replay`.

// A benchmark prints its figures.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use nudge::engine::Engine;
use nudge::project::load::{LoadOptions, load};
use nudge::store::SledStore;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const RUNS: usize = 5;

fn bench(name: &str, config: &Path, rules: &Path, plugins: &Path, events: &Path) {
    let l = load(&LoadOptions {
        builtin_config: false,
        config_only: false,
        config: config.into(),
        rules: Some(rules.into()),
        plugins: Some(plugins.into()),
        ..Default::default()
    });
    assert_eq!(l.errors(), 0, "the {name} rules load");
    let (schema, rules) = (
        Arc::new(l.schema.expect("schema")),
        Arc::new(l.rules.expect("rules")),
    );
    let file = std::fs::File::open(events).expect("events");
    let (evs, bad) = nudge::io::ingest::read_all(&schema, std::io::BufReader::new(file));
    assert!(bad.is_empty());
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..RUNS {
        let store = SledStore::temporary().expect("store");
        let mut engine = Engine::new(schema.clone(), rules.clone(), store)
            .expect("engine")
            .with_plugins(l.plugins.clone())
            .cache_members();
        let start = Instant::now();
        let r = nudge::sim::replay::replay(&mut engine, evs.clone(), None, &mut |_| {})
            .expect("replay");
        times.push(start.elapsed().as_secs_f64());
        last = Some(r);
    }
    times.sort_by(f64::total_cmp);
    let median = times[RUNS / 2];
    let r = last.expect("a run");
    println!(
        "{{\"bench\":\"replay\",\"rules\":\"{name}\",\"events\":{},\"member_days\":{},\"effects\":{},\"seconds\":{median:.3},\"events_per_s\":{:.0},\"member_days_per_s\":{:.0}}}",
        r.applied,
        r.member_days,
        r.effects.len(),
        r.applied as f64 / median,
        r.member_days as f64 / median
    );
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let events = root.join("examples/cdnow/events.ndjson");
    bench(
        "cdnow example",
        &root.join("examples/cdnow/nudge.yaml"),
        &root.join("examples/cdnow/rules"),
        &root.join("examples/cdnow/plugins"),
        &events,
    );
    bench(
        "playbook",
        &root.join("nudge.yaml"),
        &root.join("rules"),
        &root.join("plugins"),
        &events,
    );
}

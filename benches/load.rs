//! Load benchmark: parse + check + compile a folder of 1,000 generated
//! rules (10 files of 100), through the same loader `nudge check` and the
//! daemon's reload use. Prints one JSON line per figure.
//!
//! Then a reload as the daemon does it: load aside, swap into a running
//! engine.
//!
//! Run: `cargo bench --bench load`. Targets: load under 100 ms, reload
//! under 200 ms, for 1,000 rules.

// A benchmark prints its figures.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fmt::Write as _;
use std::time::Instant;

#[path = "common/rules.rs"]
mod rules;
use rules::rule;

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).expect("mkdir");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/nudge.yaml");
    for f in 0..10 {
        let mut text = String::new();
        for i in 0..100 {
            let _ = writeln!(text, "{}", rule(f * 100 + i));
        }
        std::fs::write(rules.join(format!("gen{f:02}.rules")), text).expect("write");
    }
    let opts = nudge::project::load::LoadOptions {
        builtin_config: false,
        config_only: false,
        config: config.into(),
        rules: Some(rules),
        plugins: Some(dir.path().join("plugins")),
        ..Default::default()
    };

    let mut times = Vec::new();
    let mut n_rules = 0;
    for _ in 0..15 {
        let t = Instant::now();
        let l = nudge::project::load::load(&opts);
        times.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(l.errors(), 0, "generated rules must check clean");
        n_rules = l.rules.as_ref().map_or(0, |r| r.rules.len());
    }
    assert_eq!(n_rules, 1000);
    times.sort_by(f64::total_cmp);
    println!(
        "{{\"bench\":\"load\",\"rules\":{n_rules},\"files\":10,\"median_ms\":{:.1},\"min_ms\":{:.1},\"max_ms\":{:.1},\"target_ms\":100}}",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );

    // A reload as the daemon's writer does it: load, check and compile
    // aside, then swap into a running engine (which rebuilds its plan).
    let store = nudge::store::SledStore::temporary().expect("store");
    let first = nudge::project::load::load(&opts);
    let mut engine = nudge::engine::Engine::new(
        std::sync::Arc::new(first.schema.expect("schema")),
        std::sync::Arc::new(first.rules.expect("rules")),
        store,
    )
    .expect("engine");
    let mut reloads = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        let l = nudge::project::load::load(&opts);
        let (schema, rules) = (l.schema.expect("schema"), l.rules.expect("rules"));
        engine
            .swap(
                std::sync::Arc::new(schema),
                std::sync::Arc::new(rules),
                l.plugins,
            )
            .expect("swap");
        reloads.push(t.elapsed().as_secs_f64() * 1e3);
    }
    reloads.sort_by(f64::total_cmp);
    println!(
        "{{\"bench\":\"reload\",\"rules\":{n_rules},\"median_ms\":{:.1},\"max_ms\":{:.1},\"target_ms\":200}}",
        reloads[reloads.len() / 2],
        reloads[reloads.len() - 1]
    );
}

//! The cost of a rule whose condition calls a trivial plugin function,
//! per evaluation, through the engine's real evaluation path (compiled
//! condition -> plugin host -> sandboxed rhai call). Prints JSON lines.
//!
//! Run: `cargo bench --bench plugin_call`. Target: under 5 µs per call.

// A benchmark prints its figures.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use nudge::lang::program::{Env, PluginHost, Value};
use std::time::Instant;

const CONFIG: &str =
    "timezone: UTC\ntiers: [bronze, silver]\nevents:\n  purchase:\n    amount: money\n";

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("nudge.yaml"), CONFIG).expect("config");
    std::fs::create_dir(dir.path().join("rules")).expect("rules");
    std::fs::create_dir(dir.path().join("plugins")).expect("plugins");
    std::fs::write(
        dir.path().join("plugins/p.rhai"),
        "fn yes(x) { x > 1 }\nfn vip(member) { member.points > 100 }\n",
    )
    .expect("plugin");
    std::fs::write(dir.path().join("rules/r.rules"), "rule \"scalar\" on purchase when p.yes(points) then tag \"a\"\nrule \"member\" on purchase when p.vip(member) then tag \"b\"\n").expect("rules");
    let l = nudge::project::load::load(&nudge::project::load::LoadOptions {
        builtin_config: false,
        config_only: false,
        config: dir.path().join("nudge.yaml"),
        rules: None,
        plugins: None,
        ..Default::default()
    });
    assert_eq!(l.errors(), 0);
    let rules = l.rules.expect("rules");
    let plugins = l.plugins.expect("plugins");
    let mut member = vec![Value::Null; rules.layout.fields.len()];
    member[nudge::lang::check::slot::POINTS as usize] = Value::Int(500);
    for rule in &rules.rules {
        let env = Env {
            member: &member,
            tags: &[],
            tag_names: &[],
            event: &[],
            today: 0,
            host: Some(&*plugins as &dyn PluginHost),
            rule: &rule.name,
        };
        let n = 100_000;
        let mut fired = 0;
        for _ in 0..1000 {
            fired += (rule.matches(&env) == Some(true)) as usize;
        }
        let start = Instant::now();
        for _ in 0..n {
            fired += (rule.matches(&env) == Some(true)) as usize;
        }
        let per = start.elapsed().as_secs_f64() * 1e6 / n as f64;
        assert_eq!(fired, n + 1000, "the condition is true");
        assert_eq!(plugins.failures(), 0);
        println!(
            "{{\"bench\":\"plugin_call\",\"rule\":\"{}\",\"calls\":{n},\"us_per_call\":{per:.2},\"target_us\":5}}",
            rule.name
        );
    }
}

//! Evaluation benchmark: the peer workload of `../shared/bench/README.md`.
//! 1,000,000 members generated exactly as specified (mulberry32, seed
//! 0x5EED0001), the 20- and 200-rule sets translated mechanically into
//! nudge rule files, loaded through the real loader (parse, check,
//! compile), and every rule evaluated for every member through the
//! engine's evaluation path (the member view of the day, then each compiled
//! condition: what firing runs, without state or storage). Match counts and
//! checksums are checked against the reference (a mismatch fails the
//! bench). In the same run, a hand-written baseline: one closure per rule
//! over plain structs, tags as a bitmask. Prints one JSON line per rule set.
//!
//! Run: `cargo bench --bench eval` (`NUDGE_BENCH_MEMBERS=100000` for a
//! shorter run, `NUDGE_BENCH_SETS=r20` for one rule set). Target: at
//! least 0.5x the baseline.

// A benchmark prints its figures.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use common::{Member, TAGS, TODAY, members, record};
use nudge::engine::Evaluator;
use nudge::model::MemberRecord;
use serde_json::Value as J;
use std::path::Path;
use std::time::Instant;

/// A condition of the hand-written baseline: plain data, matched directly.
enum Cond {
    Int(fn(&Member) -> i64, fn(i64, i64) -> bool, i64),
    Overdue(f64),
    Tag(u32, bool),
    Any(Vec<Cond>),
}

impl Cond {
    #[inline]
    fn test(&self, m: &Member) -> bool {
        match self {
            Cond::Int(get, cmp, v) => cmp(get(m), *v),
            Cond::Overdue(f) => m.days as f64 > m.cycle as f64 * f,
            Cond::Tag(bit, want) => (m.tags & bit != 0) == *want,
            Cond::Any(cs) => cs.iter().any(|c| c.test(m)),
        }
    }
}

fn cond(c: &J) -> Cond {
    let (kind, v) = c
        .as_object()
        .and_then(|o| o.iter().next())
        .expect("condition");
    let cmp = |op: &str| -> fn(i64, i64) -> bool {
        match op {
            "Eq" => |a, b| a == b,
            "Lt" => |a, b| a < b,
            "Le" => |a, b| a <= b,
            "Gt" => |a, b| a > b,
            _ => |a, b| a >= b,
        }
    };
    match kind.as_str() {
        "Int" => {
            let get: fn(&Member) -> i64 = match v["field"].as_str().expect("field") {
                "Tier" => |m| m.tier,
                "Days" => |m| m.days,
                "Points" => |m| m.points,
                "Orders90d" => |m| m.orders_90d,
                _ => |m| m.birthday_month,
            };
            Cond::Int(
                get,
                cmp(v["op"].as_str().expect("op")),
                v["value"].as_i64().expect("value"),
            )
        }
        "Spend" => Cond::Int(
            |m| m.spend_cents,
            cmp(v["op"].as_str().expect("op")),
            v["value"].as_i64().expect("value") * 100,
        ),
        "Overdue" => Cond::Overdue(v["factor"].as_f64().expect("factor")),
        "HasTag" | "NotHasTag" => {
            let bit = 1u32
                << TAGS
                    .iter()
                    .position(|t| *t == v["tag"].as_str().expect("tag"))
                    .expect("known tag");
            Cond::Tag(bit, kind == "HasTag")
        }
        _ => Cond::Any(
            v["conds"]
                .as_array()
                .expect("conds")
                .iter()
                .map(cond)
                .collect(),
        ),
    }
}

/// One closure per rule, as a hand-written engine would have it.
type Test = Box<dyn Fn(&Member) -> bool>;

fn rule_closure(r: &J) -> Test {
    let conds: Vec<Cond> = r["all"].as_array().expect("all").iter().map(cond).collect();
    Box::new(move |m| conds.iter().all(|c| c.test(m)))
}

fn reference(bench: &Path, set: &str) -> Vec<(usize, u64, u64)> {
    let r: J = serde_json::from_str(
        &std::fs::read_to_string(bench.join("reference.json")).expect("reference.json"),
    )
    .expect("json");
    r["counts"][set]
        .as_object()
        .expect("counts")
        .iter()
        .map(|(n, v)| {
            (
                n.parse().expect("n"),
                v[0].as_u64().expect("matches"),
                v[1].as_u64().expect("checksum"),
            )
        })
        .collect()
}

fn run(bench: &Path, set: &str, people: &[Member], records: &[MemberRecord]) {
    let spec: J = serde_json::from_str(
        &std::fs::read_to_string(bench.join(format!("rules_{set}.json"))).expect("rules"),
    )
    .expect("json");
    let spec = spec.as_array().expect("rules");
    // The rules as a nudge rule file, through the real loader.
    let (schema, rules) = common::load_rules(bench, set);
    // Rule index in the file: evaluation order is priority then file order,
    // and no rule has a priority, so the compiled index is the file index.
    assert_eq!(rules.rules.len(), spec.len());
    let mut ev = Evaluator::new(&schema, &rules);
    let refs = reference(bench, set);

    let n = records.len();
    let start = Instant::now();
    let (mut matches, mut checksum) = (0u64, 0u64);
    for (i, rec) in records.iter().enumerate() {
        ev.tick_matches(&rules, rec, TODAY, |r| {
            matches += 1;
            checksum += r as u64 + 1;
        });
        check(&refs, i + 1, matches, checksum, set, "nudge");
    }
    let nudge_s = start.elapsed().as_secs_f64();

    let closures: Vec<Test> = spec.iter().map(rule_closure).collect();
    let start = Instant::now();
    let (mut bm, mut bc) = (0u64, 0u64);
    for (i, m) in people.iter().enumerate() {
        for (r, test) in closures.iter().enumerate() {
            if test(m) {
                bm += 1;
                bc += r as u64 + 1;
            }
        }
        check(&refs, i + 1, bm, bc, set, "baseline");
    }
    let base_s = start.elapsed().as_secs_f64();
    let (ours, base) = (n as f64 / nudge_s, n as f64 / base_s);
    println!(
        "{{\"bench\":\"eval\",\"rules\":{},\"members\":{n},\"member_evals_per_s\":{ours:.0},\"matches\":{matches},\"checksum\":{checksum},\"baseline_member_evals_per_s\":{base:.0},\"ratio\":{:.3}}}",
        spec.len(),
        ours / base
    );
}

/// Compares with the reference after the counts it gives.
fn check(refs: &[(usize, u64, u64)], done: usize, m: u64, c: u64, set: &str, who: &str) {
    for &(n, rm, rc) in refs {
        if n == done {
            assert_eq!(
                (m, c),
                (rm, rc),
                "{who}: {set} after {n} members: matches/checksum differ from the reference"
            );
        }
    }
}

fn main() {
    let bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bench");
    let n = common::env_size("NUDGE_BENCH_MEMBERS", 1_000_000);
    let people = members(n);
    let records: Vec<MemberRecord> = people.iter().map(record).collect();
    let sets = std::env::var("NUDGE_BENCH_SETS").unwrap_or_else(|_| "r20,r200".into());
    for set in sets.split(',') {
        run(&bench, set, &people, &records);
    }
}

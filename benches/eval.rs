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

use nudge::engine::Evaluator;
use nudge::model::{MemberRecord, Stored};
use serde_json::Value as J;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

const TAGS: [&str; 20] = [
    "mom", "dad", "student", "football", "coffee", "tea", "gamer", "runner", "yoga", "pets",
    "travel", "foodie", "fashion", "beauty", "tech", "books", "music", "outdoor", "kids", "wine",
];
const TIERS: [&str; 4] = ["bronze", "silver", "gold", "diamond"];

struct Rng(u32);

impl Rng {
    fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_add(0x6D2B_79F5);
        let a = self.0;
        let mut t = (a ^ (a >> 15)).wrapping_mul(1 | a);
        t = (t.wrapping_add((t ^ (t >> 7)).wrapping_mul(61 | t))) ^ t;
        t ^ (t >> 14)
    }
    fn below(&mut self, n: u32) -> u32 {
        self.next_u32() % n
    }
}

/// A generated member, as the hand-written baseline sees it.
#[derive(Clone)]
struct Member {
    tier: i64,
    days: i64,
    cycle: i64,
    points: i64,
    spend_cents: i64,
    orders_90d: i64,
    birthday_month: i64,
    tags: u32,
}

fn members(n: usize) -> Vec<Member> {
    let mut r = Rng(0x5EED_0001);
    (0..n)
        .map(|_| {
            let v = r.below(100);
            let tier = match v {
                0..50 => 0,
                50..80 => 1,
                80..95 => 2,
                _ => 3,
            };
            let days = r.below(401) as i64;
            let cycle = 5 + r.below(86) as i64;
            let points = r.below(20_001) as i64;
            let spend_cents = r.below(5_000_001) as i64;
            let orders_90d = r.below(31) as i64;
            let birthday_month = 1 + r.below(12) as i64;
            let k = r.below(5);
            let mut tags = 0u32;
            for _ in 0..k {
                tags |= 1 << r.below(20);
            }
            Member {
                tier,
                days,
                cycle,
                points,
                spend_cents,
                orders_90d,
                birthday_month,
                tags,
            }
        })
        .collect()
}

/// The evaluation day of the bench (any day works: dates are relative).
const TODAY: i32 = 20_000;

/// A member record with exactly the generated values: the last purchase
/// `days` ago, the first one `cycle` days before it over two purchase days
/// (so the cycle is `cycle`), a birthday in the drawn month.
fn record(m: &Member) -> MemberRecord {
    let last = TODAY - m.days as i32;
    let birthday =
        nudge::lang::parse::parse_date(&format!("1990-{:02}-15", m.birthday_month)).expect("date");
    MemberRecord {
        joined: last - m.cycle as i32,
        first_purchase: Some(last - m.cycle as i32),
        last_purchase: Some(last),
        purchase_days: 2,
        orders: 2,
        spend: rust_decimal::Decimal::new(m.spend_cents, 2),
        points: m.points,
        tier: m.tier as u8,
        tags: (0..20)
            .filter(|i| m.tags & (1 << i) != 0)
            .map(|i| TAGS[i].to_string())
            .collect(),
        birthday: Some(birthday),
        attributes: vec![("orders_90d".into(), Stored::Int(m.orders_90d))],
        ..MemberRecord::default()
    }
}

fn op_text(op: &str) -> &'static str {
    match op {
        "Eq" => "==",
        "Lt" => "<",
        "Le" => "<=",
        "Gt" => ">",
        "Ge" => ">=",
        other => panic!("unknown op {other}"),
    }
}

/// One condition of the reference rules as nudge text.
fn cond_text(c: &J) -> String {
    let (kind, v) = c
        .as_object()
        .and_then(|o| o.iter().next())
        .expect("condition");
    match kind.as_str() {
        "Int" => {
            let value = v["value"].as_i64().expect("value");
            let field = match v["field"].as_str().expect("field") {
                "Tier" => {
                    return format!(
                        "tier {} {}",
                        op_text(v["op"].as_str().expect("op")),
                        TIERS[value as usize]
                    );
                }
                "Days" => "days_since_last_purchase",
                "Points" => "points",
                "Orders90d" => "orders_90d",
                "BirthdayMonth" => "birthday_month",
                other => panic!("unknown field {other}"),
            };
            format!("{field} {} {value}", op_text(v["op"].as_str().expect("op")))
        }
        "Spend" => format!(
            "spend {} {}",
            op_text(v["op"].as_str().expect("op")),
            v["value"]
        ),
        "Overdue" => format!("days_since_last_purchase > cycle * {}", v["factor"]),
        "HasTag" => format!("{} in tags", v["tag"]),
        "NotHasTag" => format!("{} not in tags", v["tag"]),
        "AnyOf" => format!(
            "({})",
            v["conds"]
                .as_array()
                .expect("conds")
                .iter()
                .map(cond_text)
                .collect::<Vec<_>>()
                .join(" or ")
        ),
        other => panic!("unknown condition {other}"),
    }
}

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

const CONFIG: &str = "timezone: UTC\ntiers: [bronze, silver, gold, diamond]\nattributes:\n  orders_90d: int\nevents:\n  purchase:\n    amount: money\n";

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
    let mut text = String::new();
    for r in spec {
        let conds: Vec<String> = r["all"]
            .as_array()
            .expect("all")
            .iter()
            .map(cond_text)
            .collect();
        let _ = writeln!(
            text,
            "rule \"{}\"\n  on tick\n  when {}\n  then tag \"{}\"\n",
            r["name"].as_str().expect("name"),
            conds.join(" and "),
            r["action"].as_str().expect("action")
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("nudge.yaml"), CONFIG).expect("config");
    std::fs::create_dir(dir.path().join("rules")).expect("mkdir");
    std::fs::write(dir.path().join(format!("rules/{set}.rules")), &text).expect("rules");
    let l = nudge::load::load(&nudge::load::LoadOptions {
        config: dir.path().join("nudge.yaml"),
        rules: Some(dir.path().join("rules")),
        plugins: Some(dir.path().join("plugins")),
    });
    assert_eq!(l.errors(), 0, "{:?}", l.diagnostics);
    let (schema, rules) = (l.schema.expect("schema"), l.rules.expect("rules"));
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
    let n: usize = std::env::var("NUDGE_BENCH_MEMBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let people = members(n);
    let records: Vec<MemberRecord> = people.iter().map(record).collect();
    let sets = std::env::var("NUDGE_BENCH_SETS").unwrap_or_else(|_| "r20,r200".into());
    for set in sets.split(',') {
        run(&bench, set, &people, &records);
    }
}

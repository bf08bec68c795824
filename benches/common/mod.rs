//! The peer workload's members (`../shared/bench/README.md`), shared by
//! the benches that need them: generated with mulberry32 exactly as
//! specified, and as nudge member records with the same values.
#![allow(dead_code)]

pub mod purchases;

use nudge::model::{MemberRecord, Stored};
use serde_json::Value as J;
use std::fmt::Write as _;
use std::path::Path;

pub const TAGS: [&str; 20] = [
    "mom", "dad", "student", "football", "coffee", "tea", "gamer", "runner", "yoga", "pets",
    "travel", "foodie", "fashion", "beauty", "tech", "books", "music", "outdoor", "kids", "wine",
];
pub const TIERS: [&str; 4] = ["bronze", "silver", "gold", "diamond"];

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
pub struct Member {
    pub tier: i64,
    pub days: i64,
    pub cycle: i64,
    pub points: i64,
    pub spend_cents: i64,
    pub orders_90d: i64,
    pub birthday_month: i64,
    pub tags: u32,
}

pub fn members(n: usize) -> Vec<Member> {
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
pub const TODAY: i32 = 20_000;

/// A member record with exactly the generated values: the last purchase
/// `days` ago, the first one `cycle` days before it over two purchase days
/// (so the cycle is `cycle`), a birthday in the drawn month.
pub fn record(m: &Member) -> MemberRecord {
    let last = TODAY - m.days as i32;
    let birthday =
        nudge::base::time::parse_date(&format!("1990-{:02}-15", m.birthday_month)).expect("date");
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
            .map(|i| TAGS[i].into())
            .collect(),
        birthday: Some(birthday),
        attributes: vec![("orders_90d".into(), Stored::Int(m.orders_90d))],
        ..MemberRecord::default()
    }
}

pub const CONFIG: &str = "timezone: UTC\ntiers: [bronze, silver, gold, diamond]\nattributes:\n  orders_90d: int\nevents:\n  purchase:\n    amount: money\n    category: string?\nchannels:\n  sms: {}\n";

pub fn op_text(op: &str) -> &'static str {
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
pub fn cond_text(c: &J) -> String {
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

/// The reference rule set `set` (`r20`, `r200`) as a nudge rule file of tick
/// rules, loaded through the real loader with the bench config.
pub fn load_rules(bench: &Path, set: &str) -> (nudge::config::Schema, nudge::lang::RuleSet) {
    let text = rules_text(bench, set);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("nudge.yaml"), CONFIG).expect("config");
    std::fs::create_dir(dir.path().join("rules")).expect("mkdir");
    std::fs::write(dir.path().join(format!("rules/{set}.rules")), &text).expect("rules");
    let l = nudge::project::load::load(&nudge::project::load::LoadOptions {
        builtin_config: false,
        config_only: false,
        config: dir.path().join("nudge.yaml"),
        rules: Some(dir.path().join("rules")),
        plugins: Some(dir.path().join("plugins")),
        ..Default::default()
    });
    assert_eq!(l.errors(), 0, "{:?}", l.diagnostics);
    (l.schema.expect("schema"), l.rules.expect("rules"))
}

/// The reference rule set `set` as the text of a nudge rule file.
pub fn rules_text(bench: &Path, set: &str) -> String {
    let spec: J = serde_json::from_str(
        &std::fs::read_to_string(bench.join(format!("rules_{set}.json"))).expect("rules"),
    )
    .expect("json");
    let mut text = String::new();
    for r in spec.as_array().expect("rules") {
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
    text
}

/// The member id of the `i`-th generated member.
pub fn member_id(i: usize) -> String {
    format!("m{i:07}")
}

/// Writes the members into `store`, 10,000 to a commit.
pub fn preload(store: &nudge::store::SledStore, people: &[Member]) {
    use nudge::store::Store;
    for (c, chunk) in people.chunks(10_000).enumerate() {
        let members = chunk
            .iter()
            .enumerate()
            .map(|(i, m)| (member_id(c * 10_000 + i), record(m).encode()))
            .collect();
        store
            .commit(nudge::store::WriteSet {
                members,
                ..nudge::store::WriteSet::default()
            })
            .expect("load");
    }
}

/// sled opened as nudge opens it (its mode, cache and no timed flush),
/// for the baselines written on sled directly.
pub fn raw_sled(dir: &Path) -> sled::Db {
    sled::Config::new()
        .path(dir)
        .mode(sled::Mode::HighThroughput)
        .cache_capacity(nudge::store::DEFAULT_CACHE_BYTES)
        .flush_every_ms(None)
        .open()
        .expect("sled")
}

/// A size from the environment (`NUDGE_BENCH_MEMBERS`, ...), else `default`.
pub fn env_size(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Starts the release `nudge run` in `dir` (stderr to `stderr`); returns
/// the child and the address it listens on.
pub fn start_daemon(dir: &Path, stderr: std::process::Stdio) -> (std::process::Child, String) {
    start_daemon_with(dir, &[], stderr)
}

/// [`start_daemon`] with more arguments to `nudge run`.
pub fn start_daemon_with(
    dir: &Path,
    args: &[&str],
    stderr: std::process::Stdio,
) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nudge"))
        .current_dir(dir)
        .arg("run")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("line");
    let addr = line
        .trim()
        .trim_start_matches("nudge listening on http://")
        .to_string();
    (child, addr)
}

/// The example project (`nudge.yaml`, `rules/`, `plugins/`) copied into a
/// fresh folder, its daemon to listen on a free port.
pub fn example_project() -> tempfile::TempDir {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let config = std::fs::read_to_string(root.join("nudge.yaml"))
        .expect("config")
        .replace("listen: 127.0.0.1:8080", "listen: 127.0.0.1:0");
    std::fs::write(d.join("nudge.yaml"), config).expect("config");
    for folder in ["rules", "plugins"] {
        std::fs::create_dir(d.join(folder)).expect("mkdir");
        for f in std::fs::read_dir(root.join(folder)).expect("folder") {
            let f = f.expect("entry").path();
            std::fs::copy(&f, d.join(folder).join(f.file_name().expect("name"))).expect("copy");
        }
    }
    dir
}

/// Waits for `child`: its exit code and peak RSS in KiB (the kernel's
/// rusage of that child alone).
pub fn wait(child: &std::process::Child) -> (i32, u64) {
    let (mut status, mut usage): (i32, libc::rusage) = (0, unsafe { std::mem::zeroed() });
    // SAFETY: waits for our own child; both out-pointers are ours.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, usage.ru_maxrss.max(0) as u64)
}

/// Writes purchase `i` (id `{prefix}{i}`) of `member` on day `on` as an
/// NDJSON line: minutes apart, amounts from 20.00 to 319.99.
pub fn purchase_line(
    out: &mut impl std::io::Write,
    prefix: &str,
    i: usize,
    member: &str,
    on: &str,
) {
    writeln!(
        out,
        r#"{{"id":"{prefix}{i}","type":"purchase","member":"{member}","at":"{on}T{:02}:{:02}:00Z","amount":{}.{:02}}}"#,
        (i / 60) % 24,
        i % 60,
        20 + i % 300,
        i % 100
    )
    .expect("write");
}

/// Waits for a `nudge ingest -` child that was fed `n` events (its stdin
/// closed): checks it applied them all; its peak RSS in KiB.
pub fn finish_ingest(mut child: std::process::Child, n: usize) -> u64 {
    use std::io::Read;
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    let (status, peak) = wait(&child);
    assert!(status == 0, "ingest failed: {out}");
    assert!(out.contains(&format!("{n} applied")), "{out}");
    peak
}

/// The release `nudge ingest -` in `d`, and its stdin (stderr dropped);
/// [`finish_ingest`] reaps it.
pub fn spawn_ingest(
    d: &Path,
) -> (
    std::process::Child,
    std::io::BufWriter<std::process::ChildStdin>,
) {
    use std::process::Stdio;
    #[allow(clippy::zombie_processes)] // reason: reaped by wait4 in `wait`
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nudge"))
        .current_dir(d)
        .args(["ingest", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ingest");
    let stdin = std::io::BufWriter::new(child.stdin.take().expect("stdin"));
    (child, stdin)
}

/// One HTTP/1.1 request on a connection of its own: the whole answer.
pub fn http(addr: &str, method: &str, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    resp
}

/// Purchases `first..first + n` as the JSON array of one `POST
/// /v1/events`: ids `e<k>`, members `m0` to `m49999`, amounts 0.5 to
/// 299.5, at noon on `day`.
pub fn purchases_body(first: usize, n: usize, day: &str) -> String {
    let events: Vec<String> = (first..first + n)
        .map(|k| {
            format!(
                r#"{{"id":"e{k}","type":"purchase","member":"m{}","at":"{day}T12:00:00Z","amount":{}.5}}"#,
                k % 50_000,
                k % 300
            )
        })
        .collect();
    format!("[{}]", events.join(","))
}

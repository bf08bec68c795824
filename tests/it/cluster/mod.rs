//! Cluster mode: real `nudge run --cluster` nodes on a real `nats-server`
//! (JetStream) that each test starts on a free loopback port. What the
//! nodes end with is checked against `nudge ingest` of the same events on
//! one node: every member equal, and the effects stream holding each
//! effect key of the single-node run exactly once.

mod chaos;
mod failover;
mod nats_cluster;
mod one_id;
mod ticks;

use crate::common::{Daemon, daemon_cmd, http, refused, start_cmd, wait_until};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A `nats-server` with JetStream on a loopback port, alone or one of a
/// cluster, its log in `nats.log` beside its store; killed when dropped.
pub struct Nats {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
    log: PathBuf,
    pub url: String,
    _store: Option<tempfile::TempDir>,
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill("-KILL");
    }
}

/// A loopback port that was free a moment ago, below the kernel's
/// ephemeral range (32768 and up).
///
/// Why not `bind(0)`: that hands out an ephemeral port and lets it go, and
/// until nats-server binds it the kernel may give it to any of the other
/// tests' connections or `:0` listeners (CI once saw a server of three
/// never listen). Ports below the range are only ever given by this
/// function, each once per process; the pid keeps two test processes apart.
fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (std::process::id().wrapping_mul(7919).wrapping_add(n)) % 12_000;
        let port = u16::try_from(port).expect("below 32000");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `nats-server` from the PATH, or where Debian's package puts it.
fn nats_server() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/nats-server");
    if sbin.exists() {
        sbin
    } else {
        PathBuf::from("nats-server")
    }
}

impl Nats {
    /// A server alone, storing in a folder of its own.
    pub fn start() -> Nats {
        let store = tempfile::tempdir().expect("tempdir");
        let mut nats = Nats::on(store.path(), Vec::new());
        nats._store = Some(store);
        nats
    }

    /// A server on a free port storing in `store`, with `more` args; started.
    fn on(store: &Path, more: Vec<String>) -> Nats {
        let port = free_port();
        let mut args: Vec<String> = ["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(store.display().to_string());
        args.extend(more);
        std::fs::create_dir_all(store).expect("the server's store");
        let mut nats = Nats {
            child: None,
            port,
            args,
            log: store.join("nats.log"),
            url: format!("nats://127.0.0.1:{port}"),
            _store: None,
        };
        nats.run();
        nats
    }

    /// Starts the server (again, on the same port and store) and waits
    /// until it listens; if it exits first, says what it logged.
    fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("nats.log");
        let mut child = Command::new(nats_server())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server (scripts/test installs Debian's package)");
        let addr = format!("127.0.0.1:{}", self.port);
        let said = || std::fs::read_to_string(&self.log).unwrap_or_default();
        wait_until(Duration::from_secs(30), "nats-server listens", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "nats-server exited ({status}) before it listened:\n{}",
                    said()
                );
            }
            std::net::TcpStream::connect(&addr).is_ok()
        });
        self.child = Some(child);
    }

    /// Sends `signal` (`-TERM`, `-KILL`) and waits for the server to exit.
    fn kill(&mut self, signal: &str) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args([signal, &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

/// A project for the cluster: four partitions, a file sink (which the
/// single-node run writes per partition, and each cluster node as the
/// node's own file of what it delivered), rules
/// that award points (to the buyer, and to a friend the purchase names,
/// often in another partition), tag, and set tiers, and a message with a
/// budget of
/// [`BUDGET`] firings (which members get it depends on which partition
/// asks first, so it changes nothing in the member).
pub fn project() -> tempfile::TempDir {
    project_with_sinks("")
}

/// [`project`] with more sinks (YAML list items) after the file sink.
pub fn project_with_sinks(more: &str) -> tempfile::TempDir {
    let config = format!(
        "timezone: UTC\ntiers: [bronze, silver]\nchannels:\n  email: {{}}\nevents:\n  purchase:\n    amount: money\n    friend: string?\nstorage:\n  partitions: 4\nhttp:\n  listen: 127.0.0.1:0\nsinks:\n  - kind: file\n    path: out/effects.ndjson\n{more}"
    );
    let rules = r#"rule "points"
  on purchase
  then award points 10

rule "big spender"
  on purchase
  when event.amount > 150
  then tag "big"

rule "silver"
  on purchase
  when orders >= 3 and tier < silver
  then set tier silver

rule "friend"
  on purchase
  when event.friend is not null
  then award points 5 to event.friend

rule "thanks"
  on purchase
  when event.amount > 200
  then send message "thanks" via email
  budget 300
"#;
    crate::common::project_with(&config, rules)
}

/// Starts node `name` of the project in `dir`, its data in `dir/<name>`.
pub fn node(dir: &Path, nats: &str, name: &str, lease: &str) -> Daemon {
    node_with(dir, nats, name, lease, &[])
}

/// Nodes a, b and c (lease 2 s), once they share the partitions.
pub fn three_nodes(dir: &Path, nats: &str) -> Vec<Daemon> {
    let nodes: Vec<Daemon> = ["a", "b", "c"].map(|n| node(dir, nats, n, "2")).into();
    wait_for_spread(&nodes.iter().collect::<Vec<_>>());
    nodes
}

/// [`node`] with more `nudge run` options.
pub fn node_with(dir: &Path, nats: &str, name: &str, lease: &str, more: &[&str]) -> Daemon {
    let mut cmd = daemon_cmd(dir);
    cmd.args(more);
    cmd.args([
        "--data",
        name,
        "--cluster",
        nats,
        "--node",
        name,
        "--lease",
        lease,
    ]);
    start_cmd(cmd, Some(dir.join(format!("{name}.log"))))
}

/// `n` purchases over `members` members, in time order; one in ten names
/// a friend.
pub fn events(n: usize, members: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let friend = match i % 10 {
                0 => format!(r#","friend":"m{}""#, (i * 31 + 1) % members),
                _ => String::new(),
            };
            format!(
                r#"{{"id":"e{i}","type":"purchase","member":"m{}","at":"2026-11-{:02}T{:02}:{:02}:00Z","amount":{}{friend}}}"#,
                (i * 7919) % members,
                1 + i * 20 / n,
                (i / 60) % 24,
                i % 60,
                20 + (i * 37) % 200
            )
        })
        .collect()
}

/// Posts `events` in requests of `per` to the nodes in turn; every
/// request answered 202.
pub fn post(nodes: &[&Daemon], events: &[String], per: usize) {
    for (i, chunk) in events.chunks(per).enumerate() {
        let node = nodes[i % nodes.len()];
        let (code, body) = http(
            &node.addr,
            "POST",
            "/v1/events",
            &format!("[{}]", chunk.join(",")),
        );
        assert_eq!(code, 202, "{body}");
    }
}

/// What `nudge ingest` of `events` into a single node's folder gives: each
/// member's JSON, and the effect keys.
pub struct Reference {
    pub members: BTreeMap<String, serde_json::Value>,
    pub keys: BTreeSet<String>,
    /// Firings of the budgeted rule that went out.
    pub thanks_sent: usize,
}

/// The budget of the project's rule "thanks".
pub const BUDGET: usize = 300;

pub fn reference(dir: &Path, events: &[String], members: usize) -> Reference {
    std::fs::write(dir.join("all.ndjson"), events.join("\n") + "\n").expect("events");
    let out = Command::new(env!("CARGO_BIN_EXE_nudge"))
        .current_dir(dir)
        .args(["--data", "single", "ingest", "all.ndjson"])
        .output()
        .expect("nudge ingest");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut keys = BTreeSet::new();
    let mut thanks_sent = 0;
    for p in 0..4 {
        let file = dir.join(format!("out/effects-p{p}.ndjson"));
        for line in std::fs::read_to_string(&file).unwrap_or_default().lines() {
            let e: serde_json::Value = serde_json::from_str(line).expect("effect");
            assert!(keys.insert(e["key"].as_str().expect("key").to_string()));
            thanks_sent += usize::from(is_thanks_sent(&e));
        }
    }
    // Read through a single node's daemon on that folder (one process,
    // not one `nudge member` per member).
    let mut cmd = daemon_cmd(dir);
    cmd.args(["--data", "single"]);
    let mut single = start_cmd(cmd, None);
    let members = (0..members)
        .map(|m| {
            let id = format!("m{m}");
            let (code, body) = http(&single.addr, "GET", &format!("/v1/members/{id}"), "");
            assert_eq!(code, 200, "{body}");
            (
                id,
                comparable(serde_json::from_str(&body).expect("member json")),
            )
        })
        .collect();
    single.stop();
    Reference {
        members,
        keys,
        thanks_sent,
    }
}

fn is_thanks_sent(effect: &serde_json::Value) -> bool {
    effect["rule"] == "thanks" && effect["status"] == "sent"
}

/// A member's JSON without what depends on the day it is read.
fn comparable(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("predictions");
        o.remove("as_of");
    }
    v
}

/// Waits until every member read through `node` (from whichever node holds
/// it) equals the reference.
pub fn wait_for_members(node: &Daemon, want: &Reference) {
    let mut last = String::new();
    let mut same = || {
        want.members.iter().all(|(id, m)| {
            let (code, body) = http(&node.addr, "GET", &format!("/v1/members/{id}"), "");
            let got = serde_json::from_str(&body).map(comparable).ok();
            let ok = code == 200 && got.as_ref() == Some(m);
            if !ok {
                last = format!("{id}: {code} {body}\nwant {m}");
            }
            ok
        })
    };
    let start = std::time::Instant::now();
    while !same() {
        if start.elapsed() > Duration::from_secs(60) {
            let (_, view) = http(&node.addr, "GET", "/v1/cluster", "");
            panic!("members differ: {last}\ncluster: {view}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The effects stream: how often each key is there, and the firings of
/// rule "thanks" by partition.
pub struct Published {
    pub counts: BTreeMap<String, usize>,
    /// Firings of "thanks" that went out, by partition.
    pub thanks_sent: BTreeMap<usize, usize>,
    /// Firings of "thanks" capped by its budget, by partition.
    pub thanks_capped: BTreeMap<usize, usize>,
}

/// `f` run to its end on a runtime of its own (the tests' NATS clients).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Every effect key in the effects stream, with how often it is there.
pub fn published(nats: &str) -> Published {
    // Read again after a JetStream error or a wait: right after a NATS
    // server died the stream may still be electing its leader, or the
    // reading consumer be placed on the dead server (never answering).
    let started = std::time::Instant::now();
    loop {
        let wait = Duration::from_secs(10);
        match block_on(async { tokio::time::timeout(wait, read_published(nats)).await }) {
            Ok(Ok(counts)) => return counts,
            Ok(Err(e)) => assert!(
                started.elapsed() < Duration::from_secs(60),
                "cannot read the effects stream: {e}"
            ),
            Err(_) => assert!(
                started.elapsed() < Duration::from_secs(60),
                "cannot read the effects stream in time"
            ),
        }
    }
}

async fn read_published(nats: &str) -> Result<Published, async_nats::Error> {
    use tokio_stream::StreamExt;
    let client = async_nats::connect(nats).await?;
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("nudge_effects").await?;
    let last = stream.info().await?.state.last_sequence;
    let mut got = Published {
        counts: BTreeMap::new(),
        thanks_sent: BTreeMap::new(),
        thanks_capped: BTreeMap::new(),
    };
    if last == 0 {
        return Ok(got);
    }
    // The keys are the messages' ids (the effect's `key`).
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await?;
    let mut messages = consumer.messages().await?;
    while let Some(m) = messages.next().await {
        let m = m?;
        let key = m.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id"));
        let key = key.ok_or("an effect without Nats-Msg-Id")?.to_string();
        let n = got.counts.entry(key).or_insert(0);
        *n += 1;
        let effect: serde_json::Value = serde_json::from_slice(&m.payload)?;
        if *n == 1 && effect["rule"] == "thanks" {
            let partition: usize = m.subject.rsplit('.').next().unwrap_or("").parse()?;
            let by = match effect["status"].as_str() {
                Some("sent") => &mut got.thanks_sent,
                _ => &mut got.thanks_capped,
            };
            *by.entry(partition).or_default() += 1;
        }
        if m.info()?.stream_sequence >= last {
            break;
        }
    }
    Ok(got)
}

/// What each partition was given of rule "thanks"'s budget, as the
/// budgets bucket's stream leader has it.
fn budget_given(nats: &str) -> BTreeMap<usize, usize> {
    block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(nats).await.expect("connect"));
        let stream = js.get_stream("KV_nudge_budgets").await.expect("budgets");
        let m = stream
            .get_last_raw_message_by_subject("$KV.nudge_budgets.budget=3Athanks=3Aall")
            .await
            .expect("the budget's entry");
        let entry: serde_json::Value = serde_json::from_slice(&m.payload).expect("json");
        entry["given"]
            .as_object()
            .expect("given")
            .iter()
            .map(|(p, n)| {
                let n = n.as_str().and_then(|n| n.parse().ok()).expect("a count");
                (p.parse().expect("a partition"), n)
            })
            .collect()
    })
}

/// Waits until the effects stream holds exactly the reference's keys,
/// each once (fails at once on a key twice or one not in the reference),
/// and the budgeted rule's firings went out as on one node: every one
/// while the budget lasted there; when it ran out there, never more than
/// the budget, each partition sent what it was given (blocks of it), and
/// a partition left something unsent only if none of its firings was
/// capped (it fired no more after its last block; nothing else may go
/// missing). Firings of the rule that went out.
pub fn wait_for_effects(nats: &str, want: &Reference) -> usize {
    let got = wait_for_keys(nats, want);
    let sent: usize = got.thanks_sent.values().sum();
    if want.thanks_sent < BUDGET {
        assert_eq!(sent, want.thanks_sent, "firings of a budgeted rule");
        return sent;
    }
    let given = budget_given(nats);
    assert_eq!(
        given.values().sum::<usize>(),
        BUDGET,
        "budget given out: {given:?}"
    );
    for (p, g) in &given {
        let s = got.thanks_sent.get(p).copied().unwrap_or_default();
        let capped = got.thanks_capped.get(p).copied().unwrap_or_default();
        assert!(
            s == *g || (s < *g && capped == 0),
            "partition {p} was given {g} of the budget, sent {s} and capped {capped}"
        );
    }
    sent
}

/// Waits until the effects stream holds exactly the reference's keys,
/// each once; how many firings of the budgeted rule went out.
pub fn wait_for_keys(nats: &str, want: &Reference) -> Published {
    let start = std::time::Instant::now();
    loop {
        let published = published(nats);
        let got = &published.counts;
        let twice: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "effects published twice: {twice:?}");
        let extra: Vec<_> = got.keys().filter(|k| !want.keys.contains(*k)).collect();
        assert!(extra.is_empty(), "effects no single node made: {extra:?}");
        if got.len() == want.keys.len() {
            return published;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{} of {} effects published",
            got.len(),
            want.keys.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the nodes' files of the file sink (`out/effects-<node>.ndjson`)
/// hold every effect of the reference between them, each once in all
/// (fails at once on an effect written twice).
pub fn wait_for_files(dir: &Path, nodes: &[&str], want: &Reference) {
    let start = std::time::Instant::now();
    loop {
        let mut got = BTreeMap::<String, usize>::new();
        for n in nodes {
            let file = dir.join(format!("out/effects-{n}.ndjson"));
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            // A line being written (no newline yet) is read next round.
            for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
                let e: serde_json::Value = serde_json::from_str(line).expect("an effect");
                *got.entry(e["key"].as_str().expect("key").to_string())
                    .or_default() += 1;
            }
        }
        let twice: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "effects written twice: {twice:?}");
        if got.keys().eq(want.keys.iter()) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{} of {} effects in the files",
            got.len(),
            want.keys.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until a webhook receiver got every effect of the reference (at
/// least once: a node that dies mid-batch leaves it to be sent again) and
/// nothing else; how many requests repeated an effect.
pub fn wait_for_hook(received: &crate::common::Received, want: &Reference) -> usize {
    let start = std::time::Instant::now();
    loop {
        let got: Vec<String> = received
            .lock()
            .expect("received")
            .iter()
            .filter(|(_, _, code)| *code == 200)
            .map(|(_, body, _)| {
                let e: serde_json::Value = serde_json::from_str(body).expect("an effect");
                e["key"].as_str().expect("key").to_string()
            })
            .collect();
        let keys: BTreeSet<String> = got.iter().cloned().collect();
        let extra: Vec<_> = keys.difference(&want.keys).collect();
        assert!(extra.is_empty(), "effects no single node made: {extra:?}");
        if keys.len() == want.keys.len() {
            return got.len() - keys.len();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{} of {} effects delivered",
            keys.len(),
            want.keys.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The partitions `node` holds (its `/v1/cluster`).
pub fn held(node: &Daemon) -> Vec<u64> {
    let (code, body) = http(&node.addr, "GET", "/v1/cluster", "");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    v["held_here"]
        .as_array()
        .expect("held_here")
        .iter()
        .filter_map(|p| p.as_u64())
        .collect()
}

/// Waits until the nodes hold every partition between them, each node
/// at least one.
pub fn wait_for_spread(nodes: &[&Daemon]) {
    wait_until(
        Duration::from_secs(30),
        "partitions spread over the nodes",
        || {
            let all: Vec<Vec<u64>> = nodes.iter().map(|n| held(n)).collect();
            let union: BTreeSet<u64> = all.iter().flatten().copied().collect();
            union.len() == 4 && all.iter().all(|h| !h.is_empty())
        },
    );
}

#[test]
fn nodes_apply_every_event_as_one_node_would() {
    let nats = Nats::start();
    let dir = project();
    let d = dir.path();
    let (a, b, c) = (
        node(d, &nats.url, "a", "2"),
        node(d, &nats.url, "b", "2"),
        node(d, &nats.url, "c", "2"),
    );
    wait_for_spread(&[&a, &b, &c]);
    let events = events(1200, 40);
    post(&[&a, &b, &c], &events, 50);
    // Sent again: JetStream knows the ids, nothing changes.
    let (code, body) = http(
        &b.addr,
        "POST",
        "/v1/events",
        &format!("[{}]", events[..50].join(",")),
    );
    assert_eq!(code, 202, "{body}");
    assert!(body.contains(r#""duplicates":50"#), "{body}");
    let (_, metrics) = http(&b.addr, "GET", "/metrics", "");
    assert!(
        metrics.contains("nudge_events_duplicate_total 50"),
        "{metrics}"
    );
    let want = reference(d, &events, 40);
    wait_for_members(&a, &want);
    wait_for_effects(&nats.url, &want);
    wait_for_files(d, &["a", "b", "c"], &want);
    let (code, body) = http(&c.addr, "GET", "/v1/cluster", "");
    assert_eq!(code, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(view["nodes"].as_array().map(|n| n.len()), Some(3), "{body}");
    for p in view["partitions"].as_array().expect("partitions") {
        assert!(p["owner"].is_string(), "{body}");
        // The asked node knows its own lag; another's comes from that
        // node's entry, written every quarter lease.
        match p["owner"] == "c" {
            true => assert_eq!(p["lag"], 0, "{body}"),
            false => assert!(p["lag"] == 0 || p["lag"].is_null(), "{body}"),
        }
    }
    // Each event applied once, on one node: the nodes' counts add up.
    let applied: u64 = [&a, &b, &c].iter().map(|n| applied(n)).sum();
    assert_eq!(applied, 1200);
    reads_across_nodes(d, &[&a, &b, &c], &want);
}

/// A segment count on any node counts every partition, each by its
/// holder; an explanation is answered by the member's holder; an export
/// on any node is, byte for byte, the single node's (partition by
/// partition, each part from its holder).
fn reads_across_nodes(dir: &Path, nodes: &[&Daemon], want: &Reference) {
    let out = Command::new(env!("CARGO_BIN_EXE_nudge"))
        .current_dir(dir)
        .args(["--data", "single", "segment", "points > 315", "--fields"])
        .args(["member,points,tags"])
        .output()
        .expect("nudge segment");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let single = String::from_utf8(out.stdout).expect("utf-8");
    let regulars = want
        .members
        .values()
        .filter(|m| m["points"].as_i64().is_some_and(|p| p > 315))
        .count();
    assert!(regulars > 0 && regulars < want.members.len());
    for n in nodes {
        let (code, body) = http(
            &n.addr,
            "POST",
            "/v1/segments/count",
            r#"{"when": "points > 315"}"#,
        );
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["count"], regulars, "{body}");
        assert_eq!(v["members"], want.members.len(), "{body}");
        for id in want.members.keys() {
            let (code, body) = http(&n.addr, "GET", &format!("/v1/members/{id}/explain"), "");
            assert_eq!(code, 200, "{id}: {body}");
        }
        let (code, body) = http(
            &n.addr,
            "POST",
            "/v1/segments/export",
            r#"{"when": "points > 315", "fields": ["member", "points", "tags"]}"#,
        );
        assert_eq!(code, 200, "{body}");
        assert_eq!(body.lines().count(), regulars, "{body}");
        assert_eq!(body, single, "the export of node {}", n.addr);
    }
    let (code, body) = http(
        &nodes[1].addr,
        "POST",
        "/v1/segments/export",
        r#"{"when": "points > 315", "fields": ["nope"]}"#,
    );
    assert_eq!(code, 400, "{body}");
    let (code, body) = http(
        &nodes[0].addr,
        "POST",
        "/v1/segments/count",
        r#"{"when": "orders >"}"#,
    );
    assert_eq!(code, 400, "{body}");
}

/// The events `node` applied, summed over partitions (`/metrics`).
pub fn applied(node: &Daemon) -> u64 {
    let (code, body) = http(&node.addr, "GET", "/metrics", "");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("nudge_cluster_partitions_held"), "{body}");
    body.lines()
        .filter(|l| l.starts_with("nudge_cluster_applied_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn an_invalid_event_is_refused_and_nothing_is_published() {
    let nats = Nats::start();
    let dir = project();
    let a = node(dir.path(), &nats.url, "a", "2");
    let good = events(1, 1).remove(0);
    let bad =
        r#"{"id":"x","type":"purchase","member":"m1","at":"2026-11-01T00:00:00Z","amount":"lots"}"#;
    let (code, body) = http(&a.addr, "POST", "/v1/events", &format!("[{good},{bad}]"));
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains(r#""index":1"#) && body.contains("amount"),
        "{body}"
    );
    // The stream holds the daily ticks the node published, nothing else.
    let stored = block_on(async {
        use tokio_stream::StreamExt;
        let client = async_nats::connect(&nats.url).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        let mut s = js.get_stream("nudge_events").await.expect("stream");
        let last = s.info().await.expect("info").state.last_sequence;
        let mut events = 0;
        if last == 0 {
            return events;
        }
        let ordered = async_nats::jetstream::consumer::pull::OrderedConfig::default();
        let consumer = s.create_consumer(ordered).await.expect("consumer");
        let mut messages = consumer.messages().await.expect("messages");
        while let Some(m) = messages.next().await {
            let m = m.expect("message");
            let tick = m
                .headers
                .as_ref()
                .is_some_and(|h| h.get("Nudge-Tick").is_some());
            events += usize::from(!tick);
            if m.info().expect("info").stream_sequence >= last {
                break;
            }
        }
        events
    });
    assert_eq!(stored, 0, "a refused request published nothing");
}

#[test]
fn a_node_without_nats_says_where_it_looked() {
    let dir = project();
    let port = free_port();
    let out = daemon_cmd(dir.path())
        .args([
            "--cluster",
            &format!("nats://127.0.0.1:{port}"),
            "--node",
            "a",
        ])
        .output()
        .expect("nudge run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach NATS at nats://127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn a_second_node_of_the_same_name_is_refused_and_a_restart_is_not() {
    let nats = Nats::start();
    let dir = project();
    let d = dir.path();
    let mut a = node(d, &nats.url, "a", "2");
    let mut cmd = daemon_cmd(d);
    cmd.args(["--data", "a2", "--cluster", &nats.url, "--node", "a"]);
    let err = refused(cmd, &d.join("refused.log"));
    assert!(
        err.contains(&format!(
            "a node named `a` is already in the cluster (listening on {})",
            a.addr
        )),
        "{err}"
    );
    // Killed and started again under its name: its old entry is not
    // renewed any more, so the new one takes the name.
    let _ = a.child.kill();
    let _ = a.child.wait();
    let a = node(d, &nats.url, "a", "10");
    wait_for_spread(&[&a]);
    // The lease is the cluster's (2 s), whatever this node was given.
    assert!(
        a.logs()
            .contains("differs from the lease time the cluster was made with")
    );
}

/// Every node stopped at once (SIGTERM together): a node stopping takes
/// no partition another lets go, and is given none, so each snapshots
/// only its own and leaves; before, they took each other's and each
/// waited a minute for snapshots (a helper's trial).
#[test]
fn nodes_stopped_together_take_nothing_from_each_other() {
    let nats = Nats::start();
    let dir = project();
    let d = dir.path();
    let mut nodes = three_nodes(d, &nats.url);
    // Enough members that each stop's snapshots take a few lease rounds.
    for chunk in events(2_000, 2_000).chunks(1000) {
        let body = format!("[{}]", chunk.join(","));
        let (code, answer) = http(&nodes[0].addr, "POST", "/v1/events", &body);
        assert_eq!(code, 202, "{answer}");
    }
    for n in &nodes {
        Command::new("kill")
            .args(["-TERM", &n.child.id().to_string()])
            .status()
            .expect("kill");
    }
    for n in &mut nodes {
        assert!(n.child.wait().expect("wait").success());
        let logs = n.logs();
        let after = logs
            .split("Shutdown signal received.")
            .nth(1)
            .expect("the stop is logged");
        assert!(!after.contains("Lease taken."), "{logs}");
        assert!(!after.contains("took over a minute"), "{logs}");
        assert!(after.contains("Left the cluster."), "{logs}");
    }
}

#[test]
fn a_node_that_joins_takes_its_share_and_nothing_else_moves() {
    use nudge::cluster::lease::spread;
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let owners = |plan: &[Option<String>]| {
        plan.iter()
            .enumerate()
            .filter_map(|(p, o)| Some((p, o.clone()?)))
            .collect::<BTreeMap<usize, String>>()
    };
    let none = BTreeMap::new();
    let two = spread(8, &names(&["a", "b"]), &BTreeMap::new(), &none);
    assert_eq!(two.iter().flatten().filter(|n| *n == "a").count(), 4);
    let three = spread(8, &names(&["a", "b", "c"]), &owners(&two), &none);
    let moved: Vec<usize> = (0..8).filter(|&p| two[p] != three[p]).collect();
    assert_eq!(moved.len(), 2, "c takes its share of 2: {three:?}");
    assert!(moved.iter().all(|&p| three[p].as_deref() == Some("c")));
    // b leaves: only b's partitions move, to a and c.
    let without_b = spread(8, &names(&["a", "c"]), &owners(&three), &none);
    for p in 0..8 {
        if three[p].as_deref() != Some("b") {
            assert_eq!(without_b[p], three[p], "partition {p} moved");
        }
    }
    assert_eq!(without_b.iter().flatten().filter(|n| *n == "a").count(), 4);
    // b and c restart after their leases lapsed: each gets back the
    // partitions it has copies of, not the free ones in partition order.
    let mut copies: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (p, o) in three.iter().enumerate() {
        if let Some(o) = o.as_deref().filter(|o| *o != "a") {
            copies
                .entry(o.into())
                .or_default()
                .insert(p.to_string(), 100);
        }
    }
    let mut lapsed = owners(&three);
    lapsed.retain(|_, o| o == "a");
    let back = spread(8, &names(&["a", "b", "c"]), &lapsed, &copies);
    assert_eq!(back, three, "each node gets its own partitions back");
    let by_order = spread(8, &names(&["a", "b", "c"]), &lapsed, &none);
    assert_ne!(by_order, three, "the case is one where copies matter");
    // b died and c took b's partitions; b is back: c, now above its
    // share, lets go of b's (b has copies of them), not its own.
    let mut c_took = owners(&three);
    for o in c_took.values_mut().filter(|o| *o == "b") {
        *o = "c".into();
    }
    let b_back = spread(8, &names(&["a", "b", "c"]), &c_took, &copies);
    assert_eq!(b_back, three, "b gets its own partitions back");
    // The same when b also has old copies of c's partitions (it held them
    // for a moment at the start, applied a tick, and handed them over):
    // c keeps first those whose other copies are the least far on.
    let mut stale = copies.clone();
    for (p, o) in three.iter().enumerate() {
        if o.as_deref() == Some("c") {
            stale
                .entry("b".into())
                .or_default()
                .insert(p.to_string(), 3);
        }
    }
    let b_back = spread(8, &names(&["a", "b", "c"]), &c_took, &stale);
    assert_eq!(b_back, three, "b gets its own back, not c's old ones");
    // An operator's trial (six partitions): `a` died, and `c` and `b`
    // held its 0 and 1 until it came back; then `b` died, and `a` took
    // its 2 and `c` its 3. When `b` is back, `a` lets go of 2, whose copy
    // `b` has, not of 0, of which `b` has none though `c` has one further
    // on than `b`'s of 2 (the stream's sequences are not comparable
    // between partitions).
    let copies: BTreeMap<String, BTreeMap<String, u64>> = [
        ("a", vec![(0, 800), (1, 800), (2, 810)]),
        ("b", vec![(1, 780), (2, 790), (3, 792)]),
        ("c", vec![(0, 795), (3, 810), (4, 810), (5, 810)]),
    ]
    .into_iter()
    .map(|(node, c)| {
        let c = c.into_iter().map(|(p, seq)| (p.to_string(), seq)).collect();
        (node.to_string(), c)
    })
    .collect();
    let held: BTreeMap<usize, String> =
        [(0, "a"), (1, "a"), (2, "a"), (3, "c"), (4, "c"), (5, "c")]
            .into_iter()
            .map(|(p, o)| (p, o.to_string()))
            .collect();
    let plan = spread(6, &names(&["a", "b", "c"]), &held, &copies);
    let of = |node: &str| {
        (0..6)
            .filter(|&p| plan[p].as_deref() == Some(node))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        (of("a"), of("b"), of("c")),
        (vec![0, 1], vec![2, 3], vec![4, 5])
    );
}

/// A reload to another `storage.partitions` is refused by a node of a
/// cluster (a node started with it would be refused too), and the node
/// goes on with its rules.
#[test]
fn a_reload_to_another_partition_count_is_refused() {
    let nats = Nats::start();
    let dir = project();
    let d = dir.path();
    let a = node(d, &nats.url, "a", "1");
    wait_for_spread(&[&a]);
    let config = std::fs::read_to_string(d.join("nudge.yaml")).expect("config");
    std::fs::write(
        d.join("nudge.yaml"),
        config.replace("partitions: 4", "partitions: 8"),
    )
    .expect("config");
    let (code, body) = http(&a.addr, "POST", "/v1/reload", "");
    assert_eq!(code, 422, "{body}");
    let (_, status) = http(&a.addr, "GET", "/v1/status", "");
    assert!(
        status.contains("the cluster was made with 4 partitions"),
        "{status}"
    );
    let (code, body) = http(&a.addr, "GET", "/v1/cluster", "");
    assert_eq!(code, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).expect("json");
    // The file sink, and the node that delivers it.
    assert_eq!(view["sinks"][0]["node"], "a", "{body}");
    assert!(
        view["sinks"][0]["sink"]
            .as_str()
            .is_some_and(|s| s.starts_with("file:")),
        "{body}"
    );
}

#[test]
fn a_lease_outside_one_to_600_seconds_is_refused() {
    let dir = project();
    for lease in ["0", "601", "soon"] {
        let out = daemon_cmd(dir.path())
            .args(["--cluster", "nats://127.0.0.1:1", "--lease", lease])
            .output()
            .expect("nudge run");
        assert_eq!(out.status.code(), Some(2), "--lease {lease}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("not a number of seconds from 1 to 600"),
            "{err}"
        );
    }
}

//! Cluster mode against a single node, in one run on this machine: the
//! release `nudge run` standalone, one node in cluster mode, and three
//! nodes, each on a fresh data folder of 4 partitions with the same rules,
//! and a `nats-server` (JetStream, file store) on loopback. Two client
//! threads post 100,000 purchases in requests of 100. A single node's 202
//! means applied and durable; in cluster mode it means stored in the
//! stream, so the clock stops when every event is applied (the nodes'
//! `nudge_cluster_applied_total`). Then failover: one of the three nodes
//! is SIGKILLed and the time until the others hold its partitions is
//! measured (lease 2 s). Last, three nodes again with One ID identifiers
//! in the config (`ids: [phone]`), where partition 0's holder routes every
//! event (the same purchases, by member id); and merges across partitions:
//! 2,000 members named by phone and 2,000 by card, then 2,000 events each
//! linking a phone to a card (most of the two members in two
//! partitions), timed until all are applied. Prints JSON lines.
//!
//! Run: `cargo bench --bench cluster` (needs `nats-server`, as the tests;
//! about a minute after the build).

// A benchmark prints its figures.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const EVENTS: usize = 100_000;
const BATCH: usize = 100;
const CLIENTS: usize = 2;

fn main() {
    let standalone = run(0, false);
    let one = run(1, false);
    let three = run(3, false);
    let routed = run(3, true);
    for (name, eps) in [
        ("cluster_1_node", one.0),
        ("cluster_3_nodes", three.0),
        ("cluster_3_nodes_one_id", routed.0),
    ] {
        println!(
            "{{\"bench\":\"cluster\",\"setup\":\"{name}\",\"events_per_s\":{eps:.0},\"standalone_events_per_s\":{:.0},\"ratio\":{:.2}}}",
            standalone.0,
            eps / standalone.0
        );
    }
    let merges = merges();
    println!(
        "{{\"bench\":\"cluster\",\"setup\":\"one_id_merges\",\"merges\":{MERGES},\"merges_per_s\":{merges:.0}}}"
    );
    if let Some(f) = three.1 {
        println!(
            "{{\"bench\":\"cluster\",\"setup\":\"failover\",\"lease_s\":2,\"takeover_s\":{:.2}}}",
            f.as_secs_f64()
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The project: `ids` is One ID's line of the config (or nothing).
fn project(dir: &Path, ids: &str) {
    std::fs::write(dir.join("nudge.yaml"), format!("timezone: UTC\ntiers: [bronze, silver]\nevents:\n  purchase:\n    amount: money\nhttp:\n  listen: 127.0.0.1:0\nstorage:\n  partitions: 4\n{ids}")).expect("config");
    std::fs::create_dir(dir.join("rules")).expect("rules");
    std::fs::write(
        dir.join("rules/r.rules"),
        "rule \"points\" on purchase then award points floor(event.amount)\nrule \"silver\" on purchase when tier == bronze and spend >= 500 then set tier silver\nwhen days_since_last_purchase > cycle*1.5 and tier >= silver then send coupon 30-6\n",
    )
    .expect("rules");
}

/// `nodes` 0: a single node; else that many cluster nodes (`one_id`: with
/// identifiers in the config). Returns events per second and (three
/// nodes) the failover time.
fn run(nodes: usize, one_id: bool) -> (f64, Option<Duration>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    project(d, if one_id { "ids: [phone]\n" } else { "" });
    let (mut children, addrs) = cluster(d, nodes);
    // Every partition is held before the clock starts.
    let start = Instant::now();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let addrs = addrs.clone();
            std::thread::spawn(move || post(c, &addrs))
        })
        .collect();
    for w in workers {
        w.join().expect("client");
    }
    while nodes > 0 && applied(&addrs) < EVENTS as u64 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let eps = EVENTS as f64 / start.elapsed().as_secs_f64();
    let failover = (nodes == 3 && !one_id).then(|| {
        let victim = &mut children.0[1];
        let _ = victim.kill();
        let _ = victim.wait();
        let killed = Instant::now();
        while held(&addrs[1..]) < 4 {
            std::thread::sleep(Duration::from_millis(20));
        }
        killed.elapsed()
    });
    println!(
        "{{\"bench\":\"cluster\",\"nodes\":{nodes},\"one_id\":{one_id},\"events\":{EVENTS},\"batch\":{BATCH},\"clients\":{CLIENTS},\"events_per_s\":{eps:.0}}}"
    );
    (eps, failover)
}

/// Events that link a phone member to a card member.
const MERGES: usize = 2_000;

/// Three nodes with `ids: [phone, card]`: merges applied per second.
fn merges() -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    project(d, "ids: [phone, card]\n");
    let (children, addrs) = cluster(d, 3);
    let event = |id: String, ids: String| {
        format!(
            r#"{{"id":"{id}","type":"purchase","ids":{{{ids}}},"at":"2026-11-01T12:00:00Z","amount":20}}"#
        )
    };
    let body = |events: Vec<String>| format!("[{}]", events.join(","));
    for k in (0..MERGES).step_by(BATCH) {
        let phones = (k..k + BATCH).map(|i| event(format!("p{i}"), format!(r#""phone":"{i}""#)));
        let cards = (k..k + BATCH).map(|i| event(format!("c{i}"), format!(r#""card":"{i}""#)));
        for b in [body(phones.collect()), body(cards.collect())] {
            assert!(common::http(&addrs[0], "POST", "/v1/events", &b).starts_with("HTTP/1.1 202"));
        }
    }
    while applied(&addrs) < 2 * MERGES as u64 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let start = Instant::now();
    for k in (0..MERGES).step_by(BATCH) {
        let links = (k..k + BATCH)
            .map(|i| event(format!("l{i}"), format!(r#""phone":"{i}","card":"{i}""#)));
        let b = body(links.collect());
        assert!(
            common::http(&addrs[k / BATCH % 3], "POST", "/v1/events", &b)
                .starts_with("HTTP/1.1 202")
        );
    }
    while applied(&addrs) < 3 * MERGES as u64 {
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(children);
    MERGES as f64 / start.elapsed().as_secs_f64()
}

/// A `nats-server` and `nodes` cluster nodes on the project in `d` (0: one
/// standalone node); the processes and the nodes' addresses.
fn cluster(d: &Path, nodes: usize) -> (Killed, Vec<String>) {
    let mut children = Killed(Vec::new());
    let port = free_port().to_string();
    let url = format!("nats://127.0.0.1:{port}");
    if nodes > 0 {
        let nats = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port, "-sd"])
            .arg(d.join("nats"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server");
        children.0.push(nats);
        while TcpStream::connect(format!("127.0.0.1:{port}")).is_err() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let mut addrs = Vec::new();
    for n in 0..nodes.max(1) {
        let name = format!("n{n}");
        let cluster = [
            "--data",
            &name,
            "--cluster",
            &url,
            "--node",
            &name,
            "--lease",
            "2",
        ];
        let (child, addr) =
            common::start_daemon_with(d, if nodes == 0 { &[] } else { &cluster }, Stdio::null());
        children.0.push(child);
        addrs.push(addr);
    }
    while nodes > 0 && held(&addrs) < 4 {
        std::thread::sleep(Duration::from_millis(50));
    }
    (children, addrs)
}

fn post(client: usize, addrs: &[String]) {
    let per_client = EVENTS / CLIENTS / BATCH;
    for r in 0..per_client {
        let addr = &addrs[r % addrs.len()];
        let resp = common::http(
            addr,
            "POST",
            "/v1/events",
            &common::purchases_body((client * per_client + r) * BATCH, BATCH, "2026-11-01"),
        );
        assert!(resp.starts_with("HTTP/1.1 202"), "{resp}");
    }
}

/// A metric summed over the nodes that answer.
fn metric(addrs: &[String], name: &str) -> u64 {
    addrs
        .iter()
        .filter_map(|a| TcpStream::connect(a).ok().map(|_| a))
        .map(|a| {
            common::http(a, "GET", "/metrics", "")
                .lines()
                .filter(|l| l.starts_with(name))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

fn applied(addrs: &[String]) -> u64 {
    metric(addrs, "nudge_cluster_applied_total{")
}

fn held(addrs: &[String]) -> u64 {
    metric(addrs, "nudge_cluster_partitions_held ")
}

//! What splitting the members into partitions gains for durable ingest,
//! measured before `storage.partitions` is built: the ingest bench's
//! workload (1,000,000 members, 20 rules, 200,000 purchases, flushed
//! commits of up to 1,000 events) through `Engine::process`, with the
//! members split by `xxh3_64(member id) mod P` into P sled databases,
//! each with its own engine:
//! - `one`: P = 1, one thread (what `nudge ingest` does today);
//! - `threads`: P = 2 and P = 4, an engine per partition on its own
//!   thread, in one process;
//! - `processes`: P = 2, an engine per partition in a process of its own.
//!
//! Each partition commits its own events in batches of 1,000, and the
//! time is from when every partition is ready to when the last one has
//! flushed its last batch. Prints one JSON line per case.
//!
//! Why processes as well as threads: sled 0.34 takes one lock for the
//! whole process around every batch it applies (`concurrency_control`'s
//! write lock in `Tree::apply_batch`), whatever database the batch is for,
//! so two databases in one process apply their batches one at a time.
//!
//! Run: `cargo bench --bench partitions` (`NUDGE_BENCH_MEMBERS`,
//! `NUDGE_BENCH_EVENTS` for other sizes).

// A benchmark prints its figures.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use nudge::engine::Engine;
use nudge::model::Event;
use nudge::store::{SledStore, Store, WriteSet};
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Instant;

const BATCH: usize = 1000;
const WORKER: &str = "NUDGE_BENCH_PARTITION_WORKER";

struct Workload {
    schema: Arc<nudge::config::Schema>,
    rules: Arc<nudge::lang::RuleSet>,
    people: Vec<common::Member>,
    stream: Vec<Event>,
}

fn workload() -> Workload {
    let n = common::env_size("NUDGE_BENCH_MEMBERS", 1_000_000);
    let events = common::env_size("NUDGE_BENCH_EVENTS", 200_000);
    let l = nudge::project::load::load_texts(
        common::CONFIG,
        &[("bench.rules", common::purchases::RULES)],
    );
    assert_eq!(l.errors(), 0, "{:?}", l.diagnostics);
    let schema = Arc::new(l.schema.expect("schema"));
    let stream = common::purchases::stream(&schema, n, events);
    Workload {
        schema,
        rules: Arc::new(l.rules.expect("rules")),
        people: common::members(n),
        stream,
    }
}

fn partition(member: &str, p: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64(member.as_bytes()) % p
}

/// Partition `part` of `p`: its store in `dir`, loaded with its members,
/// an engine on it, and its share of the stream.
fn prepare(w: &Workload, dir: &Path, part: u64, p: u64) -> (Engine<SledStore>, Vec<Event>) {
    let store = SledStore::open(&dir.join(format!("p{part}"))).expect("store");
    let mine: Vec<(String, Vec<u8>)> = w
        .people
        .iter()
        .enumerate()
        .map(|(i, m)| (common::member_id(i), m))
        .filter(|(id, _)| partition(id, p) == part)
        .map(|(id, m)| (id, common::record(m).encode()))
        .collect();
    for chunk in mine.chunks(10_000) {
        store
            .commit(WriteSet {
                members: chunk.to_vec(),
                ..WriteSet::default()
            })
            .expect("load");
    }
    let events = w
        .stream
        .iter()
        .filter(|e| partition(&e.member, p) == part)
        .cloned()
        .collect();
    let engine = Engine::new(w.schema.clone(), w.rules.clone(), store).expect("engine");
    (engine, events)
}

fn ingest(engine: &mut Engine<SledStore>, events: &[Event]) {
    for batch in events.chunks(BATCH) {
        engine.process(batch).expect("process");
    }
}

fn report(case: &str, w: &Workload, p: u64, seconds: f64, dir: &Path) {
    let bytes = dir_size(dir) as f64 / w.people.len() as f64;
    println!(
        "{{\"bench\":\"partitions\",\"case\":\"{case}\",\"partitions\":{p},\"members\":{},\"events\":{},\"events_per_s\":{:.0},\"bytes_on_disk_per_member\":{bytes:.0}}}",
        w.people.len(),
        w.stream.len(),
        w.stream.len() as f64 / seconds
    );
}

/// Bytes of the files under `dir`.
fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

fn threads(w: &Workload, p: u64) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let ready = Barrier::new(p as usize + 1);
    let seconds = std::thread::scope(|s| {
        let workers: Vec<_> = (0..p)
            .map(|part| {
                let (ready, dir) = (&ready, dir.path());
                s.spawn(move || {
                    let (mut engine, events) = prepare(w, dir, part, p);
                    ready.wait();
                    ingest(&mut engine, &events);
                })
            })
            .collect();
        ready.wait();
        let start = Instant::now();
        for t in workers {
            t.join().expect("worker");
        }
        start.elapsed().as_secs_f64()
    });
    report(
        if p == 1 { "one" } else { "threads" },
        w,
        p,
        seconds,
        dir.path(),
    );
    seconds
}

/// Runs partition `part` of `p` in this process: prepares, says `ready`,
/// ingests on a line from standard input, says `done`.
fn worker(spec: &str) {
    let (part, rest) = spec.split_once('/').expect("part/p:dir");
    let (p, dir) = rest.split_once(':').expect("p:dir");
    let (part, p): (u64, u64) = (part.parse().expect("part"), p.parse().expect("p"));
    let w = workload();
    let (mut engine, events) = prepare(&w, Path::new(dir), part, p);
    println!("ready");
    std::io::stdout().flush().expect("stdout");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).expect("go");
    ingest(&mut engine, &events);
    println!("done");
}

fn processes(w: &Workload, p: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("exe");
    let mut children: Vec<_> = (0..p)
        .map(|part| {
            let mut child = std::process::Command::new(&exe)
                .env(WORKER, format!("{part}/{p}:{}", dir.path().display()))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("worker");
            let out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
            (child, out)
        })
        .collect();
    let mut line = String::new();
    for (_, out) in &mut children {
        line.clear();
        out.read_line(&mut line).expect("ready");
        assert_eq!(line.trim(), "ready");
    }
    let start = Instant::now();
    for (child, _) in &mut children {
        writeln!(child.stdin.as_mut().expect("stdin"), "go").expect("go");
    }
    for (child, out) in &mut children {
        line.clear();
        out.read_line(&mut line).expect("done");
        assert_eq!(line.trim(), "done");
        assert!(child.wait().expect("wait").success());
    }
    let seconds = start.elapsed().as_secs_f64();
    report("processes", w, p, seconds, dir.path());
}

fn main() {
    if let Ok(spec) = std::env::var(WORKER) {
        return worker(&spec);
    }
    let w = workload();
    threads(&w, 1);
    threads(&w, 2);
    threads(&w, 4);
    processes(&w, 2);
}

//! What splitting the members into partitions gains for durable ingest:
//! the ingest bench's workload (1,000,000 members, 20 rules, 200,000
//! purchases) with the members split by their partition
//! (`store::folder::partition_of`) into P sled databases, an engine each:
//! - `partitions`: P = 1, 2 and 4 through `engine::partitions::Partitions`
//!   as `nudge ingest` runs them (`Partitions::pipeline`): a writer thread
//!   per partition committing batches of 1,000 of its events while the
//!   stream is routed on;
//! - `processes`: P = 2, an engine per partition in a process of its own,
//!   each committing its own events in batches of 1,000 (what the cluster
//!   of Step 4 does, a partition's writer in the process that owns it).
//!
//! The time is from when every partition is loaded to when the last has
//! flushed its last batch. In the same run (last), the ingest bench's raw
//! sled loop (one database, one thread) for the ratio. Prints one JSON line per
//! case.
//!
//! Why processes as well as threads: sled 0.34 takes one lock for the
//! whole process around every batch it applies (`concurrency_control`'s
//! write lock in `Tree::apply_batch`), whatever database the batch is for,
//! so two databases in one process apply their batches one at a time.
//!
//! Run: `cargo bench --bench partitions` (about 3 minutes;
//! `NUDGE_BENCH_MEMBERS`, `NUDGE_BENCH_EVENTS` for other sizes).

// A benchmark prints its figures.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use nudge::engine::Engine;
use nudge::engine::partitions::Partitions;
use nudge::model::Event;
use nudge::store::folder::{open_partitions, partition_of};
use nudge::store::{SledStore, Store, WriteSet};
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;
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
    let (schema, rules) = common::purchases::load();
    let stream = common::purchases::stream(&schema, n, events);
    Workload {
        schema,
        rules,
        people: common::members(n),
        stream,
    }
}

fn partition(member: &str, p: u64) -> u64 {
    partition_of(member, p as usize) as u64
}

/// Partition `part` of `p`: its `store` loaded with its members, an
/// engine on it, and its share of the stream.
fn prepare(w: &Workload, store: SledStore, part: u64, p: u64) -> (Engine<SledStore>, Vec<Event>) {
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

/// One case's figures: its name, partitions, seconds, bytes per member.
type Case = (&'static str, u64, f64, f64);

fn measured(case: &'static str, w: &Workload, p: u64, seconds: f64, dir: &Path) -> Case {
    (
        case,
        p,
        seconds,
        dir_size(dir) as f64 / w.people.len() as f64,
    )
}

fn report(w: &Workload, (case, p, seconds, bytes): Case, raw_s: f64) {
    println!(
        "{{\"bench\":\"partitions\",\"case\":\"{case}\",\"partitions\":{p},\"members\":{},\"events\":{},\"events_per_s\":{:.0},\"raw_events_per_s\":{:.0},\"ratio\":{:.3},\"bytes_on_disk_per_member\":{bytes:.0}}}",
        w.people.len(),
        w.stream.len(),
        w.stream.len() as f64 / seconds,
        w.stream.len() as f64 / raw_s,
        raw_s / seconds
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

/// `nudge ingest`'s way: the stream through `Partitions::pipeline`.
fn partitions(w: &Workload, p: u64) -> Case {
    let dir = tempfile::tempdir().expect("tempdir");
    // Opened as `nudge ingest` opens them: the sled cache shared out.
    let stores = open_partitions(dir.path(), p as usize, None).expect("stores");
    let engines = (0..p)
        .zip(stores)
        .map(|(part, store)| prepare(w, store, part, p).0)
        .collect();
    let mut parts = Partitions::new(engines).expect("partitions");
    let start = Instant::now();
    parts
        .pipeline(
            BATCH,
            |router| {
                w.stream
                    .iter()
                    .enumerate()
                    .try_for_each(|(i, ev)| router.send(ev.clone(), i))
            },
            |engine, b| engine.process(&b.events).map(|_| ()),
            &mut |()| {},
        )
        .expect("ingest");
    let seconds = start.elapsed().as_secs_f64();
    drop(parts);
    measured("partitions", w, p, seconds, dir.path())
}

/// Runs partition `part` of `p` in this process: prepares, says `ready`,
/// ingests on a line from standard input, says `done`.
fn worker(spec: &str) {
    let (part, rest) = spec.split_once('/').expect("part/p:dir");
    let (p, dir) = rest.split_once(':').expect("p:dir");
    let (part, p): (u64, u64) = (part.parse().expect("part"), p.parse().expect("p"));
    let w = workload();
    // A process of its own has a cache of its own.
    let store = open_partitions(&Path::new(dir).join(format!("p{part}")), 1, None)
        .expect("store")
        .remove(0);
    let (mut engine, events) = prepare(&w, store, part, p);
    println!("ready");
    std::io::stdout().flush().expect("stdout");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).expect("go");
    ingest(&mut engine, &events);
    println!("done");
}

fn processes(w: &Workload, p: u64) -> Case {
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
    measured("processes", w, p, seconds, dir.path())
}

fn main() {
    if let Ok(spec) = std::env::var(WORKER) {
        return worker(&spec);
    }
    let w = workload();
    let mut cases: Vec<Case> = [1, 2, 4].map(|p| partitions(&w, p)).into();
    cases.push(processes(&w, 2));
    // Last, as in the ingest bench: what a run leaves the disk to write
    // back slows the next one.
    let (raw_s, _) = common::purchases::raw_loop(&w.people, &w.stream, BATCH);
    for c in cases {
        report(&w, c, raw_s);
    }
}

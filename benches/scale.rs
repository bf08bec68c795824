//! Scale benchmark: 10,000,000 members on one node, with the example
//! project (`nudge.yaml`, `rules/`, `plugins/` of this repository).
//!
//! 1. `nudge ingest -` (the release binary) of 10,000,000 purchases, one
//!    new member each, over the 30 days before yesterday, in time order:
//!    events/s, the process's peak RSS, bytes on disk per member.
//! 2. The release daemon on that folder: time from start to listening,
//!    and to its first answer (its first daily tick visits every member:
//!    nothing has built a due index yet), its peak RSS.
//! 3. A clean stop (the due index is saved), then in this process: the
//!    engine opened on the folder (the index taken up) and the next three
//!    days' ticks (the steady daily tick; on a day a calendar rule turns
//!    for everyone, such as the 2nd of a month for the example's monthly
//!    newsletter, everyone is visited).
//! 4. The daemon again: start to its first answer with no tick due, then
//!    100,000 purchases over HTTP for random members in requests of 1,000,
//!    each answered once durable: events/s, peak RSS.
//!
//! Not run in CI. Run: `cargo bench --bench scale` (about 30 minutes on
//! the README's machine; `NUDGE_BENCH_MEMBERS=1000000` for a shorter run,
//! `NUDGE_BENCH_PARTITIONS=2` for a folder of two partitions).
//! Prints one JSON line.

// A benchmark prints its figures.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HTTP_EVENTS: usize = 100_000;
const HTTP_BATCH: usize = 1_000;

fn main() {
    let n = common::env_size("NUDGE_BENCH_MEMBERS", 10_000_000);
    let parts = common::env_size("NUDGE_BENCH_PARTITIONS", 1);
    let dir = common::example_project();
    let d = dir.path();
    if parts > 1 {
        let mut config = std::fs::OpenOptions::new()
            .append(true)
            .open(d.join("nudge.yaml"))
            .expect("config");
        writeln!(config, "\nstorage:\n  partitions: {parts}").expect("config");
    }
    // The bench reads the wall clock for its dates only: events may not
    // be dated past the machine's clock, and the daemon ticks by it.
    let today = nudge::base::time::utc_day(jiff::Timestamp::now());
    let day = |back: i32| nudge::base::time::day_string(today - back);

    // 1. The import.
    let started = Instant::now();
    let (child, mut stdin) = common::spawn_ingest(d);
    let days: Vec<String> = (2..32).rev().map(day).collect();
    for i in 0..n {
        let on = &days[i * days.len() / n];
        common::purchase_line(&mut stdin, "s", i, &common::member_id(i), on);
    }
    drop(stdin);
    let usage = common::finish_ingest(child, n);
    let import_s = started.elapsed().as_secs_f64();
    let import_peak_mib = usage / 1024;
    // The store alone: the example's file sink writes into `data/` too.
    // `effects.ndjson`, or a file per partition (`effects-p0.ndjson`, ...).
    let effects_bytes: u64 = std::fs::read_dir(d.join("data"))
        .expect("data")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("effects"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    let disk = dir_size(&d.join("data")) - effects_bytes;

    // 2. The daemon's first start: its first tick visits everyone.
    let started = Instant::now();
    let (child, addr, listening_s) = start(d);
    let log = d.join("daemon.log");
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("Daily tick done.")
    {
        assert!(started.elapsed() < Duration::from_secs(7200), "no tick");
        std::thread::sleep(Duration::from_millis(200));
    }
    let first_answer_s = first_answer(&addr, started);
    let daemon_peak_mib = stop(child);

    // 3. The steady tick, in this process (the index saved at the stop),
    // loaded as the daemon loads (relative paths: they are in the rule
    // set's version, which the saved index must match).
    std::env::set_current_dir(d).expect("cd");
    let l = nudge::project::load::load(&nudge::project::load::LoadOptions {
        builtin_config: false,
        config_only: false,
        config: "nudge.yaml".into(),
        rules: None,
        plugins: None,
        ..Default::default()
    });
    assert_eq!(l.errors(), 0, "{:?}", l.diagnostics);
    let schema = Arc::new(l.schema.expect("schema"));
    let rules = Arc::new(l.rules.expect("rules"));
    let t = Instant::now();
    let data = schema.paths.data.clone();
    let mut engines =
        nudge::engine::partitions::open(&data, &schema, &rules, l.plugins).expect("engines");
    let engine_open_s = t.elapsed().as_secs_f64();
    // Three days: with the example rules the first of them may visit
    // everyone (a calendar rule turning, e.g. the day after the 1st of a
    // month for the newsletter), the others only the members due. The
    // partitions tick at the same time, as the daemon's writer ticks them.
    let tomorrow = nudge::engine::clock::local_day(&schema, jiff::Timestamp::now()) + 1;
    let (mut ticks_due, mut ticks_s, mut ticks_effects) = (Vec::new(), Vec::new(), Vec::new());
    for day in tomorrow..tomorrow + 3 {
        // -1: a partition has no due index (everyone is visited).
        let due: Option<usize> = engines.engines().iter().map(|e| e.due_on(day)).sum();
        ticks_due.push(due.map_or(-1, |d| d as i64));
        let t = Instant::now();
        let effects: usize = engines
            .each(
                |_, _| true,
                |_, engine| {
                    let mut effects = 0;
                    engine.tick_with(day, &mut |e| effects += e.len())?;
                    Ok(effects)
                },
            )
            .into_iter()
            .map(|n| n.expect("chosen").expect("tick"))
            .sum();
        ticks_s.push(format!("{:.2}", t.elapsed().as_secs_f64()));
        ticks_effects.push(effects);
    }
    engines.save_due().expect("save");
    drop(engines);

    // 4. The daemon again, then HTTP ingest.
    let started = Instant::now();
    let (child, addr, _) = start(d);
    let restart_answer_s = first_answer(&addr, started);
    let mut x: u64 = 0x5EED;
    let t = Instant::now();
    for b in 0..HTTP_EVENTS / HTTP_BATCH {
        let events: Vec<String> = (0..HTTP_BATCH)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!(
                    r#"{{"id":"h{b}-{i}","type":"purchase","member":"{}","at":"{}T08:00:00Z","amount":{}.50}}"#,
                    common::member_id((x % n as u64) as usize),
                    day(1),
                    x % 200
                )
            })
            .collect();
        let resp = post(&addr, &format!("[{}]", events.join(",")));
        assert!(resp.starts_with("HTTP/1.1 202"), "{resp}");
    }
    let http_per_s = HTTP_EVENTS as f64 / t.elapsed().as_secs_f64();
    let http_peak_mib = stop(child);
    println!(
        "{{\"bench\":\"scale\",\"members\":{n},\"partitions\":{parts},\"import_s\":{import_s:.0},\"import_events_per_s\":{:.0},\"import_peak_rss_mib\":{import_peak_mib},\"store_bytes\":{disk},\"effects_file_bytes\":{effects_bytes},\"bytes_per_member\":{:.0},\"daemon_listening_s\":{listening_s:.2},\"first_start_answer_s\":{first_answer_s:.1},\"first_start_peak_rss_mib\":{daemon_peak_mib},\"engine_open_s\":{engine_open_s:.2},\"next_ticks_due\":{ticks_due:?},\"next_ticks_s\":[{}],\"next_ticks_effects\":{ticks_effects:?},\"restart_answer_s\":{restart_answer_s:.2},\"http_events_per_s\":{http_per_s:.0},\"http_peak_rss_mib\":{http_peak_mib}}}",
        n as f64 / import_s,
        disk as f64 / n as f64,
        ticks_s.join(","),
    );
}

/// Starts the release daemon in `d` (logs to `d/daemon.log`): the child,
/// its address, and the seconds until it listened.
fn start(d: &Path) -> (std::process::Child, String, f64) {
    let t = Instant::now();
    let log = std::fs::File::create(d.join("daemon.log")).expect("log");
    let (child, addr) = common::start_daemon(d, Stdio::from(log));
    (child, addr, t.elapsed().as_secs_f64())
}

/// Seconds from `started` until the daemon answers an empty request (its
/// writer has finished what it does at start).
fn first_answer(addr: &str, started: Instant) -> f64 {
    while !post(addr, "[]").starts_with("HTTP/1.1 202") {
        assert!(started.elapsed() < Duration::from_secs(7200), "no answer");
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed().as_secs_f64()
}

/// Stops the daemon with SIGTERM; its peak RSS in MiB.
fn stop(child: std::process::Child) -> u64 {
    let pid = child.id();
    let peak = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let (status, _) = common::wait(&child);
    assert_eq!(status, 0, "the daemon stops cleanly");
    peak / 1024
}

fn post(addr: &str, body: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return String::new();
    };
    let req = format!(
        "POST /v1/events HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return String::new();
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

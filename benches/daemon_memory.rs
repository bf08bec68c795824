//! Daemon memory with 1,000,000 members: the peer workload's members
//! preloaded into a data folder, then the release `nudge run` on it: its
//! first daily tick (every member visited, due days for all), then 200,000
//! purchases over HTTP for random members. Prints the daemon's peak and
//! final resident memory (from /proc) and the data folder's size.
//!
//! Run: `cargo bench --bench daemon_memory` (`NUDGE_BENCH_MEMBERS` for
//! fewer). Target: peak RSS under 1 GiB with 1,000,000 members.

// A benchmark prints its figures.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use nudge::store::SledStore;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EVENTS: usize = 200_000;
const BATCH: usize = 1_000;

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bench");
    let n = common::env_size("NUDGE_BENCH_MEMBERS", 1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    {
        let store = SledStore::open(&d.join("data")).expect("store");
        common::preload(&store, &common::members(n));
    }
    std::fs::write(
        d.join("nudge.yaml"),
        format!(
            "{}http:\n  listen: 127.0.0.1:0\nsinks:\n  - kind: file\n    path: out/effects.ndjson\n{}",
            common::CONFIG,
            std::env::var("NUDGE_BENCH_CACHE_MB")
                .map(|mb| format!("storage:\n  cache_mb: {mb}\n"))
                .unwrap_or_default()
        ),
    )
    .expect("config");
    std::fs::create_dir(d.join("rules")).expect("rules");
    std::fs::write(
        d.join("rules/r20.rules"),
        common::rules_text(&bench, "r20")
            + "rule \"points\" on purchase then award points floor(event.amount)\n",
    )
    .expect("rules");
    let log = d.join("daemon.log");
    let (mut child, addr) =
        common::start_daemon(d, Stdio::from(std::fs::File::create(&log).expect("log")));
    let pid = child.id();
    // The first tick runs at start (today's is due).
    let start = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("Daily tick done.")
    {
        assert!(start.elapsed() < Duration::from_secs(600), "no tick");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Its effects go to the file sink before the writer takes requests.
    while !common::http(&addr, "POST", "/v1/events", "[]").starts_with("HTTP/1.1 202") {
        assert!(start.elapsed() < Duration::from_secs(900), "no answer");
    }
    let tick_s = start.elapsed().as_secs_f64();
    let after_tick = status_kib(pid, "VmRSS:");
    let start = Instant::now();
    let mut x: u64 = 0x5EED;
    for b in 0..EVENTS / BATCH {
        let events: Vec<String> = (0..BATCH)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!(
                    r#"{{"id":"h{b}-{i}","type":"purchase","member":"{}","at":"2026-11-23T12:00:00Z","amount":{}.50}}"#,
                    common::member_id((x % n as u64) as usize),
                    x % 200
                )
            })
            .collect();
        let resp = common::http(
            &addr,
            "POST",
            "/v1/events",
            &format!("[{}]", events.join(",")),
        );
        assert!(resp.starts_with("HTTP/1.1 202"), "{resp}");
    }
    let ingest_s = start.elapsed().as_secs_f64();
    let (peak, rss) = (status_kib(pid, "VmHWM:"), status_kib(pid, "VmRSS:"));
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    let disk: u64 = std::fs::read_dir(d.join("data"))
        .expect("data")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "{{\"bench\":\"daemon_memory\",\"members\":{n},\"first_tick_s\":{tick_s:.1},\"rss_after_tick_mib\":{},\"events\":{EVENTS},\"ingest_events_per_s\":{:.0},\"peak_rss_mib\":{},\"rss_mib\":{},\"data_bytes_per_member\":{:.0}}}",
        after_tick / 1024,
        EVENTS as f64 / ingest_s,
        peak / 1024,
        rss / 1024,
        disk as f64 / n as f64
    );
}

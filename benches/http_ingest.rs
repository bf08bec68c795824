//! HTTP ingest throughput: the real `nudge run` binary on loopback, two
//! client threads posting batches of 100 purchase events (each request
//! answered 202 only once its events are durable), on a data folder of
//! one partition and of two (`storage.partitions`). Prints JSON lines.
//!
//! Run: `cargo bench --bench http_ingest`.

// A benchmark prints its figures.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use std::process::{Command, Stdio};
use std::time::Instant;

const REQUESTS_PER_CLIENT: usize = 500;
const BATCH: usize = 100;
const CLIENTS: usize = 2;

fn main() {
    for partitions in [1, 2] {
        run(partitions);
    }
}

fn run(partitions: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("nudge.yaml"), format!("timezone: UTC\ntiers: [bronze, silver]\nevents:\n  purchase:\n    amount: money\nhttp:\n  listen: 127.0.0.1:0\nstorage:\n  partitions: {partitions}\n")).expect("config");
    std::fs::create_dir(dir.path().join("rules")).expect("rules");
    std::fs::write(
        dir.path().join("rules/r.rules"),
        "rule \"points\" on purchase then award points floor(event.amount)\nrule \"silver\" on purchase when tier == bronze and spend >= 500 then set tier silver\nwhen days_since_last_purchase > cycle*1.5 and tier >= silver then send coupon 30-6\n",
    )
    .expect("rules");
    let (mut child, addr) = common::start_daemon(dir.path(), Stdio::null());

    let start = Instant::now();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                for r in 0..REQUESTS_PER_CLIENT {
                    let body = common::purchases_body(
                        (c * REQUESTS_PER_CLIENT + r) * BATCH,
                        BATCH,
                        "2026-01-01",
                    );
                    let t = Instant::now();
                    let resp = common::http(&addr, "POST", "/v1/events", &body);
                    assert!(resp.starts_with("HTTP/1.1 202"), "{resp}");
                    latencies.push(t.elapsed().as_secs_f64() * 1e3);
                }
                latencies
            })
        })
        .collect();
    let mut lat: Vec<f64> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("worker"))
        .collect();
    let secs = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let events = CLIENTS * REQUESTS_PER_CLIENT * BATCH;
    println!(
        "{{\"bench\":\"http_ingest\",\"partitions\":{partitions},\"events\":{events},\"batch\":{BATCH},\"clients\":{CLIENTS},\"events_per_s\":{:.0},\"p50_ms\":{:.2},\"p99_ms\":{:.2}}}",
        events as f64 / secs,
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100]
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

//! The memory of a bulk import: the release `nudge ingest -` with the
//! example project, fed 2,000,000 purchases on stdin, its resident memory
//! read from /proc when 200,000 and when 2,000,000 lines have gone in.
//! Two files: one new member per purchase (the store grows with the
//! file), and the same 200,000 members buying again and again over 600
//! days (the store's size levels off once the oldest purchases fall out of
//! the rules' windows). Prints the peaks and their ratio.
//!
//! Run: `cargo bench --bench import_memory` (`NUDGE_BENCH_EVENTS` for
//! another length; about 6 minutes). Target: the import holds nothing per
//! event, so over a store that stops growing its memory stays flat
//! (after 2,000,000 events within 20% of after 200,000).

// A benchmark prints its figures.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Members of the second file.
const REPEAT_MEMBERS: usize = 200_000;
/// Days the second file spans: past the example's longest window (365
/// days), so records stop growing before the end.
const DAYS: usize = 600;

fn main() {
    let n = common::env_size("NUDGE_BENCH_EVENTS", 2_000_000);
    let early = n / 10;
    for (name, members) in [("new members", n), ("repeat members", REPEAT_MEMBERS)] {
        let dir = common::example_project();
        let t = Instant::now();
        let (at_early, at_end) = import(dir.path(), n, early, members);
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{{\"bench\":\"import_memory\",\"file\":\"{name}\",\"events\":{n},\"members\":{},\"rss_mib_at_{early}\":{},\"rss_mib_at_{n}\":{},\"ratio\":{:.2},\"events_per_s\":{:.0}}}",
            members.min(n),
            at_early / 1024,
            at_end / 1024,
            at_end as f64 / at_early.max(1) as f64,
            n as f64 / secs
        );
    }
}

/// Feeds `n` purchases over `members` members to `nudge ingest -` in `d`:
/// the child's peak RSS (KiB) after `early` lines and at its end.
fn import(d: &Path, n: usize, early: usize, members: usize) -> (u64, u64) {
    // Dated up to yesterday: ingest refuses events past its clock.
    let today = nudge::base::time::utc_day(jiff::Timestamp::now());
    let days: Vec<String> = (1..=DAYS as i32)
        .rev()
        .map(|back| nudge::base::time::day_string(today - back))
        .collect();
    #[allow(clippy::zombie_processes)] // reason: reaped by wait4 in `wait`
    let mut child = Command::new(env!("CARGO_BIN_EXE_nudge"))
        .current_dir(d)
        .args(["ingest", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ingest");
    let pid = child.id();
    let mut stdin = std::io::BufWriter::new(child.stdin.take().expect("stdin"));
    let mut at_early = 0;
    for i in 0..n {
        let on = &days[i * DAYS / n];
        writeln!(
            stdin,
            r#"{{"id":"e{i}","type":"purchase","member":"{}","at":"{on}T{:02}:{:02}:00Z","amount":{}.{:02}}}"#,
            common::member_id(i % members),
            (i / 60) % 24,
            i % 60,
            20 + i % 300,
            i % 100
        )
        .expect("write");
        if i + 1 == early {
            stdin.flush().expect("flush");
            at_early = hwm_kib(pid);
        }
    }
    drop(stdin);
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    let (status, at_end) = common::wait(&child);
    assert!(status == 0, "ingest failed: {out}");
    assert!(out.contains(&format!("{n} applied")), "{out}");
    (at_early, at_end)
}

/// The process's peak resident memory so far (VmHWM), in KiB.
fn hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

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

use std::io::Write;
use std::path::Path;
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
    let (child, mut stdin) = common::spawn_ingest(d);
    let pid = child.id();
    let mut at_early = 0;
    for i in 0..n {
        let on = &days[i * DAYS / n];
        common::purchase_line(&mut stdin, "e", i, &common::member_id(i % members), on);
        if i + 1 == early {
            stdin.flush().expect("flush");
            at_early = hwm_kib(pid);
        }
    }
    drop(stdin);
    (at_early, common::finish_ingest(child, n))
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

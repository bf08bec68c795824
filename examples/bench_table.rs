//! Turns the benches' JSON lines into the README's performance table:
//!
//!     cargo bench 2>/dev/null | grep '^{"bench"' | cargo run --example bench_table
//!
//! One row per figure, with the target the performance issue sets and the
//! peers' figure from `../shared/bench/README.md` where there is one; the
//! machine line comes from /proc/cpuinfo and /proc/meminfo.

// The table is printed for the README.
#![allow(clippy::print_stdout)]

use serde_json::Value;
use std::io::BufRead;

fn num(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(0.0)
}

fn row(v: &Value) -> Option<[String; 4]> {
    let k = |x: f64| format!("{:.0} k", x / 1e3);
    let m = |x: f64| format!("{:.2} M", x / 1e6);
    Some(match v["bench"].as_str()? {
        "eval" => [
            format!("eval, {} rules", v["rules"]),
            format!(
                "{} member-evals/s; baseline {}: {:.2}x; the baseline fed from the records {} ({:.2}x the baseline): {:.2}x",
                m(num(v, "member_evals_per_s")),
                m(num(v, "baseline_member_evals_per_s")),
                num(v, "ratio"),
                m(num(v, "from_records_member_evals_per_s")),
                num(v, "from_records_ratio"),
                num(v, "ratio_to_from_records")
            ),
            "0.5x baseline".into(),
            "zen-expression ~0.03x, rhai ~0.01x".into(),
        ],
        "tick" => [
            format!(
                "daily tick ({}), {} members",
                v["tick"].as_str()?,
                v["members"]
            ),
            format!(
                "{:.2} s ({} members visited, {} effects)",
                num(v, "seconds"),
                v["visited"],
                v["effects"]
            ),
            "< 2 s".into(),
            String::new(),
        ],
        "ingest" => [
            format!("ingest, durable, {} members", v["members"]),
            format!(
                "{} events/s (p50 {:.0} ms, p99 {:.0} ms per {}); raw sled {}: {:.2}x; {:.0} B/member loaded, {:.0} after (raw {:.0}); peak {} MB",
                k(num(v, "events_per_s")),
                num(v, "p50_batch_ms"),
                num(v, "p99_batch_ms"),
                v["batch"],
                k(num(v, "raw_events_per_s")),
                num(v, "ratio"),
                num(v, "bytes_on_disk_per_member_loaded"),
                num(v, "bytes_on_disk_per_member"),
                num(v, "raw_bytes_on_disk_per_member"),
                v["peak_rss_mb"]
            ),
            "40 k/s, 0.7x raw, < 200 B/member".into(),
            String::new(),
        ],
        "daemon_memory" => [
            format!("daemon memory, {} members", v["members"]),
            format!(
                "peak RSS {} MiB (first tick {:.0} s), {} MiB after {} events over HTTP ({} events/s); {:.0} B/member on disk",
                v["peak_rss_mib"],
                num(v, "first_tick_s"),
                v["rss_mib"],
                v["events"],
                k(num(v, "ingest_events_per_s")),
                num(v, "data_bytes_per_member")
            ),
            "< 1 GiB".into(),
            String::new(),
        ],
        "load" => [
            format!("load {} rules", v["rules"]),
            format!("{:.1} ms", num(v, "median_ms")),
            "< 100 ms".into(),
            "Grule ~200 ms".into(),
        ],
        "reload" => [
            format!("reload {} rules", v["rules"]),
            format!("{:.1} ms", num(v, "median_ms")),
            "< 200 ms".into(),
            String::new(),
        ],
        "lsp_diagnostics" => [
            format!("editor diagnostics after an edit, {} rules", v["rules"]),
            format!(
                "{:.1} ms median, {:.1} ms p90 (the load alone: {:.1} ms)",
                num(v, "median_ms"),
                num(v, "p90_ms"),
                num(v, "load_alone_median_ms")
            ),
            "< 100 ms".into(),
            String::new(),
        ],
        "replay" => [
            format!("replay CDNOW, {}", v["rules"].as_str()?),
            format!(
                "{:.2} s: {} events/s, {} member-days/s",
                num(v, "seconds"),
                k(num(v, "events_per_s")),
                m(num(v, "member_days_per_s"))
            ),
            "< 1 s (example rules)".into(),
            String::new(),
        ],
        "retention" => [
            format!(
                "disk under steady traffic, {} members, {} purchases a day with new ids",
                v["members"], v["events_per_day"]
            ),
            format!(
                "day 60 against day 30: {}x; B/member by day {} (records {}, outbox {}); restored from a backup {:.0}",
                v["day60_over_day30"],
                v["bytes_per_member_by_day"],
                v["record_bytes_per_member_by_day"],
                v["outbox_bytes_per_member_by_day"],
                num(v, "bytes_per_member_restored")
            ),
            "within 10%".into(),
            String::new(),
        ],
        "sled_overhead" if v.get("case").is_some() => [
            format!(
                "sled alone, {} keys: {}",
                v["keys_or_members"],
                v["case"].as_str().unwrap_or("")
            ),
            format!(
                "{:.0} B/key on disk",
                num(v, "bytes_on_disk_per_key_or_member")
            ),
            String::new(),
            String::new(),
        ],
        _ => return None,
    })
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".to_string(), |s| s.trim().to_string());
    let cores = cpu.lines().filter(|l| l.starts_with("processor")).count();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(String::new(), |kb| {
            format!(", {:.0} GiB", kb / 1024.0 / 1024.0)
        });
    format!("{cores} × {model}{mem}, release build")
}

fn main() {
    println!("Machine: {}\n", machine());
    println!("| bench | figure | target | peers |\n|---|---|---|---|");
    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
        if let Ok(v) = serde_json::from_str::<Value>(&line)
            && let Some(r) = row(&v)
        {
            println!("| {} |", r.join(" | "));
        }
    }
}

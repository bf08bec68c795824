//! Disk under steady traffic: does the store stop growing once its
//! windows are full? 100,000 members of the peer workload in sled, the
//! ingest bench's 20 playbook rules and config (no sink: the outbox is
//! kept for `storage.outbox_retention`, 7 days; seen ids for
//! `storage.dedup_window`, 30 days), then 60 simulated days: each day
//! 10,000 purchases with ids never used before (each member buys about
//! every 10 days), in group commits of 1,000 through `Engine::process`,
//! and the day's tick, the outbox trimmed after each commit as `nudge
//! ingest` and the daemon trim it. Prints the store's bytes on disk after every 10
//! days and the ratio of day 60 to day 30 (Step 3's target: within 10%),
//! and at the end what the folder takes restored from its backup.
//!
//! What still grows after day 30 is the members' own state: the rules'
//! 90- and 365-day windows keep a bucket per purchase day until the
//! window is full.
//!
//! Run: `cargo bench --bench retention` (about a minute;
//! `NUDGE_BENCH_MEMBERS`, `NUDGE_BENCH_DAYS` for other sizes).

// A benchmark prints its figures.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use nudge::engine::Engine;
use nudge::store::SledStore;
use std::time::Instant;

const BATCH: usize = 1000;

fn main() {
    let n = common::env_size("NUDGE_BENCH_MEMBERS", 100_000);
    let days = common::env_size("NUDGE_BENCH_DAYS", 60) as i32;
    let per_day = n / 10;
    let (schema, rules) = common::purchases::load();
    let people = common::members(n);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SledStore::open(&dir.path().join("nudge")).expect("store");
    common::preload(&store, &people);
    let loaded = store.size_on_disk();
    let mut engine = Engine::new(schema.clone(), rules, store).expect("engine");
    let start = Instant::now();
    let mut sizes = Vec::new();
    for d in 1..=days {
        let day = common::TODAY + d;
        let prefix = format!("d{d}-");
        let seed = 0x2545_F491_4F6C_DD1D ^ (d as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let stream = common::purchases::stream_on(&schema, n, per_day, day, &prefix, seed);
        // After each commit, what is past the retention goes, as
        // `nudge ingest` and the daemon drop it.
        for batch in stream.chunks(BATCH) {
            engine.process(batch).expect("process");
            nudge::outbox::trim_delivered(&mut engine).expect("trim");
        }
        engine.tick(day).expect("tick");
        nudge::outbox::trim_delivered(&mut engine).expect("trim");
        if d % 10 == 0 {
            sizes.push((d, engine.store().size_on_disk(), live(engine.store())));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let restored = restored_size(engine.store());
    let at = |day: i32| sizes.iter().find(|(d, ..)| *d == day).map(|(_, b, _)| *b);
    let ratio = match (at(30), at(60)) {
        (Some(a), Some(b)) => format!("{:.3}", b as f64 / a as f64),
        _ => "null".into(),
    };
    let per = |b: u64| b as f64 / n as f64;
    let by_day = |f: &dyn Fn(&(i32, u64, Live)) -> u64| {
        (sizes.iter())
            .map(|x| format!("\"{}\":{:.0}", x.0, per(f(x))))
            .collect::<Vec<_>>()
            .join(",")
    };
    println!(
        "{{\"bench\":\"retention\",\"members\":{n},\"days\":{days},\"events_per_day\":{per_day},\"seconds\":{secs:.1},\"bytes_per_member_loaded\":{:.0},\"bytes_per_member_by_day\":{{{}}},\"day60_over_day30\":{ratio},\"record_bytes_per_member_by_day\":{{{}}},\"outbox_bytes_per_member_by_day\":{{{}}},\"bytes_per_member_restored\":{:.0}}}",
        per(loaded),
        by_day(&|x| x.1),
        by_day(&|x| x.2.records),
        by_day(&|x| x.2.outbox),
        per(restored),
    );
}

/// What the store holds, before sled's own costs: the members' records
/// (the seen ids of the dedup window among them) and the outbox.
struct Live {
    records: u64,
    outbox: u64,
}

fn live(store: &SledStore) -> Live {
    use nudge::store::{IdRange, Store};
    let mut records = 0;
    store
        .each_member_bytes(&IdRange::after(None), &mut |_, v| {
            records += v.len() as u64;
            true
        })
        .expect("scan");
    let outbox = (store.outbox(0, usize::MAX).expect("outbox").iter())
        .map(|(_, v)| v.len() as u64)
        .sum();
    Live { records, outbox }
}

/// What the folder takes restored from its backup into an empty one, as
/// `nudge export` then `nudge import-state` do: sled's files with nothing
/// superseded in them.
fn restored_size(store: &SledStore) -> u64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let backup = dir.path().join("backup.nudge");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&backup).expect("backup"));
    nudge::store::backup::export(store, &mut out).expect("export");
    std::io::Write::flush(&mut out).expect("flush");
    drop(out);
    let fresh = SledStore::open(&dir.path().join("fresh")).expect("fresh store");
    let source = || -> std::io::Result<Box<dyn std::io::BufRead>> {
        Ok(Box::new(std::io::BufReader::new(std::fs::File::open(
            &backup,
        )?)))
    };
    nudge::store::backup::import(&fresh, &source).expect("import");
    fresh.size_on_disk()
}

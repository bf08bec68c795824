//! What sled itself costs on disk per key, apart from anything nudge
//! stores: 1,000,000 keys of the bench's member-id form written straight
//! to sled (no nudge code), with empty values in one batch, empty values
//! in flushed batches of 10,000 (how the bench members are loaded), the
//! bench schema's member records in batches of 10,000, and those again
//! after 200,000 random records rewritten in flushed batches of 1,000
//! (the ingest bench's pattern). Also the same records kept in pages of 64
//! members a key (found by a hash of the id), the layout tried to spread
//! sled's per-key cost (see docs/engine.md, "What sled costs"). Prints one
//! JSON line per case with bytes on disk per key (or per member).
//!
//! Run: `cargo bench --bench sled_overhead` (about a minute;
//! `NUDGE_BENCH_MEMBERS` for another size).

// A benchmark prints its figures.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use std::collections::HashMap;
use std::time::Instant;

/// Members a page holds in the paged layout.
const PAGE: u64 = 64;

fn report(case: &str, db: &sled::Db, n: usize, seconds: f64) {
    let bytes = db.size_on_disk().expect("size") as f64 / n as f64;
    println!(
        "{{\"bench\":\"sled_overhead\",\"case\":\"{case}\",\"keys_or_members\":{n},\"bytes_on_disk_per_key_or_member\":{bytes:.1},\"seconds\":{seconds:.2}}}"
    );
}

/// Writes `values` (key, value) in flushed batches of `batch`.
fn load(db: &sled::Db, values: impl Iterator<Item = (Vec<u8>, Vec<u8>)>, batch: usize) {
    let mut b = sled::Batch::default();
    for (i, (k, v)) in values.enumerate() {
        b.insert(k, v);
        if (i + 1) % batch == 0 {
            db.apply_batch(std::mem::take(&mut b)).expect("batch");
            db.flush().expect("flush");
        }
    }
    db.apply_batch(b).expect("batch");
    db.flush().expect("flush");
}

fn main() {
    let n = common::env_size("NUDGE_BENCH_MEMBERS", 1_000_000);
    let people = common::members(n);
    let records: Vec<Vec<u8>> = people.iter().map(|m| common::record(m).encode()).collect();
    let avg = records.iter().map(Vec::len).sum::<usize>() as f64 / n as f64;
    println!("{{\"bench\":\"sled_overhead\",\"record_bytes_avg\":{avg:.1}}}");
    let id = |i: usize| common::member_id(i).into_bytes();
    for (case, batch, with_values) in [
        ("empty values, one batch", n, false),
        ("empty values, batches of 10000", 10_000, false),
        ("member records, batches of 10000", 10_000, true),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = common::raw_sled(dir.path());
        let t = Instant::now();
        let value = |i: usize| {
            if with_values {
                records[i].clone()
            } else {
                Vec::new()
            }
        };
        load(&db, (0..n).map(|i| (id(i), value(i))), batch);
        report(case, &db, n, t.elapsed().as_secs_f64());
        if with_values {
            let t = Instant::now();
            rewrite(&db, n, id);
            report(
                "member records, after 200000 rewrites",
                &db,
                n,
                t.elapsed().as_secs_f64(),
            );
        }
    }

    // Pages: members grouped by a hash of their id, 64 to a key.
    let pages = (n as u64).div_ceil(PAGE).max(1);
    let page_of = |i: usize| {
        let h = xxhash_rust::xxh3::xxh3_64(&id(i));
        ((h % pages) as u32).to_be_bytes().to_vec()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let db = common::raw_sled(dir.path());
    let t = Instant::now();
    let mut contents: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let mut touched = Vec::new();
        for &i in chunk {
            let page = contents.entry(page_of(i)).or_default();
            page.extend_from_slice(&id(i));
            page.extend_from_slice(&records[i]);
            touched.push(page_of(i));
        }
        touched.sort();
        touched.dedup();
        load(
            &db,
            touched
                .into_iter()
                .map(|k| (k.clone(), contents[&k].clone())),
            usize::MAX,
        );
    }
    report(
        "pages of 64 members, batches of 10000 members",
        &db,
        n,
        t.elapsed().as_secs_f64(),
    );
    let t = Instant::now();
    rewrite(&db, n, page_of);
    report(
        "pages of 64 members, after 200000 rewrites",
        &db,
        n,
        t.elapsed().as_secs_f64(),
    );
}

/// Rewrites 200,000 random members' values (read, one byte changed,
/// written back) in flushed batches of 1,000.
fn rewrite(db: &sled::Db, n: usize, key: impl Fn(usize) -> Vec<u8>) {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..200 {
        let mut b = sled::Batch::default();
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = key((x % n as u64) as usize);
            let mut v = db.get(&k).expect("get").expect("value").to_vec();
            if let Some(last) = v.last_mut() {
                *last ^= 1;
            }
            b.insert(k, v);
        }
        db.apply_batch(b).expect("batch");
        db.flush().expect("flush");
    }
}

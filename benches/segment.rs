//! Segment count benchmark: 1,000,000 members of the peer workload in
//! sled, two segment queries counted through `engine::segment::Scan`, the
//! path `nudge segment --count` and `POST /v1/segments/count` take (one
//! pass over the store: read, decode, view of the day, condition). The
//! baseline is the same pass written by hand as a user would: the store's
//! scan (sled's, each record decoded) and the condition in Rust on the
//! record's fields. Counts must agree.
//!
//! Run: `cargo bench --bench segment` (`NUDGE_BENCH_MEMBERS` for fewer).
//! Target: counting 1,000,000 members in under 2 s.

// A benchmark prints its figures.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use nudge::base::diag::SourceMap;
use nudge::engine::segment::Scan;
use nudge::model::MemberRecord;
use nudge::project::query::segment_query;
use nudge::store::{SledStore, Store};
use std::path::Path;
use std::time::Instant;

/// The queries, and the same test written by hand on a record.
type Hand = fn(&MemberRecord) -> bool;
const QUERIES: [(&str, &str, Hand); 2] = [
    (
        "lapsed",
        "tier >= gold and days_since_last_purchase > cycle * 1.5",
        |r| {
            let (Some(first), Some(last)) = (r.first_purchase, r.last_purchase) else {
                return false;
            };
            let cycle = f64::from(last - first) / f64::from((r.purchase_days - 1).max(1));
            r.tier >= 2 && r.purchase_days >= 2 && f64::from(common::TODAY - last) > cycle * 1.5
        },
    ),
    ("coffee", "\"coffee\" in tags and spend > 20000", |r| {
        r.tags.iter().any(|t| t == "coffee") && r.spend > rust_decimal::Decimal::from(20_000)
    }),
];

fn main() {
    let bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bench");
    let n = common::env_size("NUDGE_BENCH_MEMBERS", 1_000_000);
    let (schema, rules) = common::load_rules(&bench, "r20");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SledStore::open(&dir.path().join("data")).expect("store");
    common::preload(&store, &common::members(n));
    for (name, text, hand) in QUERIES {
        let q = segment_query(&schema, &rules, &mut SourceMap::default(), text, &[])
            .unwrap_or_else(|d| panic!("{text}: {d:?}"));
        let mut scan = Scan::new(&schema, q.rules(&rules), q.index, &[]).expect("scan");
        // Warm sled's cache and the page cache the same for both.
        scan.count(&store, common::TODAY).expect("count");
        let start = Instant::now();
        let c = scan.count(&store, common::TODAY).expect("count");
        let nudge_s = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let mut by_hand = 0u64;
        store
            .each_member(&mut |_, rec| {
                by_hand += u64::from(hand(&rec));
                true
            })
            .expect("scan");
        let hand_s = start.elapsed().as_secs_f64();
        assert_eq!(
            c.count, by_hand,
            "{name}: nudge and the hand-written scan disagree"
        );
        assert_eq!(c.members, n as u64);
        println!(
            "{{\"bench\":\"segment\",\"query\":\"{name}\",\"members\":{n},\"count\":{},\"seconds\":{nudge_s:.3},\"members_per_s\":{:.0},\"baseline_seconds\":{hand_s:.3},\"ratio\":{:.2}}}",
            c.count,
            n as f64 / nudge_s,
            hand_s / nudge_s
        );
    }
}

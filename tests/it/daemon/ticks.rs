//! The daemon's daily ticks say how many members they visited (log and
//! `/metrics`), and a clean stop's due index is taken up at the next start.

use crate::common::*;
use std::time::Duration;

/// `nudge_tick_members_visited_total` from `/metrics`.
fn visited(addr: &str) -> Option<u64> {
    http(addr, "GET", "/metrics", "").1.lines().find_map(|l| {
        l.strip_prefix("nudge_tick_members_visited_total ")
            .and_then(|n| n.parse().ok())
    })
}

#[test]
fn ticks_say_how_many_members_they_visited() {
    let dir =
        project("rule \"late\" on tick when days_since_last_purchase > 30 then tag \"late\"\n");
    let events: Vec<String> = (0..5)
        .map(|i| purchase(&format!("e{i}"), &format!("m{i}"), 10.0))
        .collect();
    ingest(dir.path(), &events);
    // No index yet (an import builds none): the start's tick visits all.
    let mut d = start_logged(dir.path());
    wait_until(Duration::from_secs(30), "the start's tick", || {
        visited(&d.addr) == Some(5)
    });
    let logs = d.stop();
    assert!(logs.contains("No due index to take up"), "{logs}");
    assert!(logs.contains("visited=5"), "{logs}");
    assert!(logs.contains("Due index saved"), "{logs}");
    // The clean stop saved it: the next start takes it up, and today's
    // tick, done, visits no one.
    let mut d = start_logged(dir.path());
    assert_eq!(visited(&d.addr), Some(0));
    let logs = d.stop();
    assert!(
        logs.contains("Due index taken up") && logs.contains("indexed=5"),
        "{logs}"
    );
}

//! The crash harness: the real daemon, a webhook receiver on 127.0.0.1, a
//! stream of events over HTTP, and SIGKILL at random moments (while
//! ingesting and while dispatching). After every restart the client
//! redelivers what it was not sure of, and the last request it *was* sure
//! of: that one must come back as all duplicates, or something was
//! acknowledged before it was flushed. At the end the members and the set
//! of idempotency keys the receiver got must equal a clean run's.
//!
//! Once on a folder of one partition, once on three (`storage.partitions`,
//! where a friend's point is a relay to another partition mostly, and a
//! phone that links two members merges members of two partitions).
//! CI runs 20 and 8 cycles; `NUDGE_CRASH_CYCLES=200 cargo test --release --test
//! crash -- --nocapture` is the long mode (figures in docs/reliability.md).

use crate::common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const RULES: &str = "rule \"pts\" on purchase then award points floor(event.amount)\n\
rule \"big spender\" on purchase when spend >= 300 then send coupon 20-5 limit once per 365d\n\
rule \"regular\" on purchase when orders >= 3 then tag \"regular\"\n\
rule \"thanks\" on purchase when event.friend is not null then award points 1 to event.friend\n";

const MEMBERS: usize = 40;

fn config(receiver: &str, partitions: usize) -> String {
    format!(
        "timezone: UTC\ntiers: [bronze]\nids: [phone]\nevents:\n  purchase:\n    amount: money\n    friend: string?\nhttp:\n  listen: 127.0.0.1:0\nsinks:\n  - kind: webhook\n    url: http://{receiver}/hook\nstorage:\n  partitions: {partitions}\n"
    )
}

/// Event `i`: a purchase by one of 40 members, a minute after the last;
/// every third names a friend, who gets a point (a relay, to another
/// partition mostly).
fn event(i: usize) -> String {
    // 2026-01-01T00:00:00Z plus i minutes.
    let at = jiff::Timestamp::from_second(1_767_225_600 + 60 * i as i64).expect("time");
    let friend = match i % 3 {
        0 => format!(r#","friend":"m{:02}""#, (i * 11 + 1) % MEMBERS),
        _ => String::new(),
    };
    // Now and then a phone, which links members (One ID merges, across
    // partitions mostly).
    let phone = match i % 97 {
        0 => format!(r#","ids":{{"phone":"{}"}}"#, (i / 97) % 7),
        _ => String::new(),
    };
    format!(
        r#"{{"id":"e{i}","type":"purchase","member":"m{:02}","at":"{at}","amount":{}.{:02}{friend}{phone}}}"#,
        (i * 7) % MEMBERS,
        10 + (i * 13) % 90,
        i % 100
    )
}

fn body(range: std::ops::Range<usize>) -> String {
    format!("[{}]", range.map(event).collect::<Vec<_>>().join(","))
}

use crate::common::Rng;

/// Posts `range`; `Some((applied, duplicates))` on 202, `None` when the
/// daemon died first. Anything else fails the test.
fn post(addr: &str, range: std::ops::Range<usize>) -> Option<(u64, u64)> {
    let (code, body) = try_http(addr, "POST", "/v1/events", &[], body(range).as_bytes())?;
    assert_eq!(code, 202, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    Some((
        v["applied"].as_u64().expect("applied"),
        v["duplicates"].as_u64().expect("duplicates"),
    ))
}

/// Waits until the receiver has every key of the outbox (depth 0) and
/// has been quiet for a moment.
fn drain(d: &Daemon, seen: &Received) {
    wait_until(Duration::from_secs(60), "the outbox did not drain", || {
        let (_, m) = http(&d.addr, "GET", "/metrics", "");
        m.lines().any(|l| l == "nudge_outbox_depth 0")
    });
    let mut last = usize::MAX;
    wait_until(Duration::from_secs(30), "deliveries did not settle", || {
        let n = seen.lock().expect("log").len();
        let quiet = n == last;
        last = n;
        std::thread::sleep(Duration::from_millis(200));
        quiet
    });
}

struct Outcome {
    members: BTreeMap<String, serde_json::Value>,
    /// Idempotency key -> every body received under it.
    keys: BTreeMap<String, BTreeSet<String>>,
    deliveries: usize,
}

fn outcome(d: &Daemon, seen: &Received) -> Outcome {
    let members = (0..MEMBERS)
        .map(|m| {
            let id = format!("m{m:02}");
            let v = member_json(&d.addr, &id);
            (id, v)
        })
        .collect();
    let log = seen.lock().expect("log").clone();
    let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (k, b, _) in &log {
        keys.entry(k.clone()).or_default().insert(b.clone());
    }
    Outcome {
        members,
        keys,
        deliveries: log.len(),
    }
}

fn oracle(events: usize) -> Outcome {
    let (url, seen) = receiver(0, 200);
    let dir = project_with(&config(&url, 1), RULES);
    let d = start(dir.path());
    for chunk in (0..events).collect::<Vec<_>>().chunks(50) {
        assert!(post(&d.addr, chunk[0]..chunk[chunk.len() - 1] + 1).is_some());
    }
    drain(&d, &seen);
    outcome(&d, &seen)
}

#[test]
fn sigkill_at_random_moments_loses_nothing_and_sends_nothing_twice() {
    harness(1, 20);
}

/// The same on a data folder of three partitions (a request is then a
/// commit per partition), against the clean run on one.
#[test]
fn sigkill_on_a_folder_of_partitions_loses_nothing_and_sends_nothing_twice() {
    harness(3, 8);
}

// The harness prints its figures, as its tests did before they shared it.
#[allow(clippy::print_stdout)]
fn harness(partitions: usize, default_cycles: usize) {
    let cycles: usize = std::env::var("NUDGE_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cycles);
    let events = 400 * cycles;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ cycles as u64);
    let (url, seen) = receiver(0, 200);
    let dir = project_with(&config(&url, partitions), RULES);
    let started = Instant::now();
    let (mut next, mut kills, mut in_flight_lost, mut checked) = (0usize, 0, 0, 0);
    // The last request acknowledged before a kill: must be all duplicates.
    let mut last_acked: Option<std::ops::Range<usize>> = None;
    for cycle in 0..cycles {
        let d = start(dir.path());
        // Redelivery of the last acknowledged request: all duplicates.
        if let Some(r) = last_acked.take() {
            let n = r.len() as u64;
            assert_eq!(
                post(&d.addr, r.clone()),
                Some((0, n)),
                "cycle {cycle}: events {r:?} were acknowledged but not kept"
            );
            checked += n;
        }
        // Kill after a random moment: early (mid-ingest) or late (while the
        // dispatcher is still delivering what was committed).
        let pid = d.child.id();
        let delay = Duration::from_millis(if cycle % 2 == 0 {
            5 + rng.next(60)
        } else {
            100 + rng.next(300)
        });
        let quota = (cycle + 1) * events / cycles;
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        });
        loop {
            let size = 1 + rng.next(12) as usize;
            let r = next..(next + size).min(quota);
            if r.is_empty() {
                // Everything sent: idle until the kill (mid-dispatch).
                std::thread::sleep(Duration::from_millis(10));
                if try_http(&d.addr, "GET", "/metrics", &[], b"").is_none() {
                    break;
                }
                continue;
            }
            match post(&d.addr, r.clone()) {
                Some(_) => {
                    next = r.end;
                    last_acked = Some(r);
                }
                // Died mid-request: the client is not sure; it resends the
                // same request (from `next`) after the restart.
                None => {
                    in_flight_lost += 1;
                    break;
                }
            }
        }
        killer.join().expect("killer");
        drop(d);
        kills += 1;
    }
    // The final run: the rest of the events, then drain.
    let d = start(dir.path());
    if let Some(r) = last_acked.take() {
        let n = r.len() as u64;
        assert_eq!(
            post(&d.addr, r),
            Some((0, n)),
            "the last acknowledged request"
        );
        checked += n;
    }
    while next < events {
        let r = next..(next + 10).min(events);
        assert!(post(&d.addr, r.clone()).is_some());
        next = r.end;
    }
    drain(&d, &seen);
    let got = outcome(&d, &seen);
    let took = started.elapsed();
    let want = oracle(events);

    for (id, m) in &want.members {
        assert_eq!(
            &got.members[id], m,
            "member {id} differs from the clean run"
        );
    }
    let (got_keys, want_keys): (BTreeSet<_>, BTreeSet<_>) = (
        got.keys.keys().cloned().collect(),
        want.keys.keys().cloned().collect(),
    );
    assert_eq!(
        got_keys.difference(&want_keys).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "keys the clean run did not send"
    );
    assert_eq!(
        want_keys.difference(&got_keys).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "keys never delivered"
    );
    for (k, bodies) in &got.keys {
        assert_eq!(bodies.len(), 1, "key {k} was sent with different bodies");
    }
    let points: i64 = got
        .members
        .values()
        .map(|m| m["points"].as_i64().unwrap_or(0))
        .sum();
    let coupons = got
        .keys
        .values()
        .filter(|b| b.iter().any(|b| b.contains("\"action\":\"coupon\"")))
        .count();
    println!(
        "{}",
        serde_json::json!({
            "partitions": partitions, "cycles": cycles, "kills": kills, "events": events,
            "requests_cut_by_a_kill": in_flight_lost,
            "acknowledged_events_checked_after_restart": checked,
            "effects": want_keys.len(), "deliveries": got.deliveries,
            "redeliveries_same_key": got.deliveries - got_keys.len(),
            "points": points, "coupons": coupons,
            "lost": 0, "duplicates": 0, "seconds": took.as_secs_f64(),
        })
    );
    assert!(checked > 0, "no acknowledged request was checked");
}

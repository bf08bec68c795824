//! Nodes lost: killed for good (its partitions go to the others within two
//! lease times, nothing lost), killed and replaced by a node with no copy
//! (it starts from the partitions' snapshots, not the stream's start), and
//! stopped past its lease (it applies nothing once the lease is gone, and
//! no effect goes out twice).

use super::{
    Nats, applied, events, held, node, node_with, post, project, reference, wait_for_effects,
    wait_for_members, wait_for_spread,
};
use crate::common::{http, wait_until};
use std::time::{Duration, Instant};

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

#[test]
fn a_killed_nodes_partitions_are_served_by_the_others_within_two_leases() {
    let nats = Nats::start();
    let dir = project();
    let d = dir.path();
    let (mut a, b) = (node(d, &nats.url, "a", "2"), node(d, &nats.url, "b", "2"));
    wait_for_spread(&[&a, &b]);
    let events = events(800, 30);
    post(&[&a, &b], &events[..400], 40);
    // From the kill until two seconds after `b` holds every partition, a
    // member not applied yet is 503, never 404: while no node holds a's
    // partitions, while `b` takes them up (a moment in which it holds them
    // with nothing of them in its copy) and while it rebuilds them from
    // the stream. Two readers, so that one is always asking.
    let members: Vec<String> = events[..400]
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(e).expect("event");
            v["member"].as_str().expect("member").to_string()
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    // A 202 says the events are in the stream, not applied: until they
    // are, a member may be 404 on its holder as documented. So every
    // member is read once before the kill.
    wait_until(Duration::from_secs(20), "the first events applied", || {
        members
            .iter()
            .all(|m| http(&b.addr, "GET", &format!("/v1/members/{m}"), "").0 == 200)
    });
    let done = std::sync::atomic::AtomicBool::new(false);
    let took = std::thread::scope(|s| {
        let readers: Vec<_> = (0..2)
            .map(|k| {
                let (members, done, addr) = (&members, &done, &b.addr);
                s.spawn(move || {
                    let (mut wrong, mut gone) = (Vec::new(), 0usize);
                    let mut asked = 0usize;
                    let mut round = 0usize;
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        // Every other round asks why rules fired instead:
                        // the same answer for a member not there.
                        round += 1;
                        let why = if round.is_multiple_of(2) {
                            "/explain"
                        } else {
                            ""
                        };
                        for m in members.iter().skip(k).step_by(2) {
                            let (code, body) =
                                http(addr, "GET", &format!("/v1/members/{m}{why}"), "");
                            asked += 1;
                            if code != 200 && code != 503 {
                                wrong.push(format!("{m}: {code} {body}"));
                            }
                            gone += usize::from(body.contains("not answer"));
                        }
                    }
                    (asked, wrong, gone)
                })
            })
            .collect();
        signal(a.child.id(), "-KILL");
        let _ = a.child.wait();
        let killed = Instant::now();
        wait_until(Duration::from_secs(10), "b holds every partition", || {
            held(&b).len() == 4
        });
        let took = killed.elapsed();
        std::thread::sleep(Duration::from_secs(2));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        // Until its lease lapses, `a` is asked for its members: the
        // answer says it did not answer (in 3 s, or at once when NATS
        // knows it is gone), not NATS's "no responders" or a timeout's
        // "deadline has elapsed".
        let mut gone = 0;
        for r in readers {
            let (asked, wrong, said) = r.join().expect("reader");
            gone += said;
            assert!(asked > 0);
            assert!(
                wrong.is_empty(),
                "{} of {asked}: {:?}",
                wrong.len(),
                &wrong[..wrong.len().min(5)]
            );
        }
        assert!(gone > 0, "no read said that `a` did not answer");
        took
    });
    assert!(
        took < Duration::from_secs(4),
        "took over in {took:?} (lease 2 s)"
    );
    post(&[&b], &events[400..], 40);
    let want = reference(d, &events, 30);
    wait_for_members(&b, &want);
    wait_for_effects(&nats.url, &want);
}

#[test]
fn a_node_stopped_past_its_lease_applies_nothing_and_sends_nothing_twice() {
    let nats = Nats::start();
    let dir = project();
    let d = dir.path();
    let (a, b) = (node(d, &nats.url, "a", "1"), node(d, &nats.url, "b", "1"));
    wait_for_spread(&[&a, &b]);
    let before = held(&a);
    let events = events(900, 30);
    post(&[&a, &b], &events[..300], 30);
    signal(a.child.id(), "-STOP");
    wait_until(Duration::from_secs(10), "b holds every partition", || {
        held(&b).len() == 4
    });
    // While `a` sleeps, `b` applies its partitions' events.
    post(&[&b], &events[300..600], 30);
    signal(a.child.id(), "-CONT");
    // `a` wakes holding leases it no longer has: it lets them go, and
    // gets its share back only by taking the leases again.
    post(&[&a, &b], &events[600..], 30);
    let want = reference(d, &events, 30);
    wait_for_members(&b, &want);
    wait_for_effects(&nats.url, &want);
    wait_for_spread(&[&a, &b]);
    let logs = a.logs();
    assert!(
        logs.contains("Lease lost") || logs.contains("handed over"),
        "a noticed it lost {before:?}: {logs}"
    );
}

#[test]
fn a_node_with_no_copy_starts_from_the_snapshots_not_the_whole_stream() {
    let nats = Nats::start();
    let dir = project();
    let d = dir.path();
    let every = ["--snapshot-every", "100"];
    let mut a = node_with(d, &nats.url, "a", "1", &every);
    wait_for_spread(&[&a]);
    let events = events(1200, 30);
    post(&[&a], &events[..900], 30);
    // Each partition has had its 225 or so events: a snapshot each, at
    // least (one past its first 100 events applied).
    let put = |logs: &str, p: usize| {
        logs.lines()
            .filter(|l| l.contains("Snapshot put.") && l.contains(&format!("partition={p} ")))
            .count()
    };
    let started = Instant::now();
    while (0..4).any(|p| put(&a.logs(), p) < 1) {
        assert!(started.elapsed() < Duration::from_secs(30), "{}", a.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(a.child.id(), "-KILL");
    let _ = a.child.wait();
    let c = node_with(d, &nats.url, "c", "1", &every);
    wait_until(Duration::from_secs(10), "c holds every partition", || {
        held(&c).len() == 4
    });
    post(&[&c], &events[900..], 30);
    let want = reference(d, &events, 30);
    wait_for_members(&c, &want);
    wait_for_effects(&nats.url, &want);
    let logs = c.logs();
    assert_eq!(
        logs.matches("Partition restored from its snapshot.")
            .count(),
        4,
        "{logs}"
    );
    // From its copy (none) it would apply all 1,200; from the snapshots,
    // what came after them: the last 300, and at most 100 or so a
    // partition before.
    let from_snapshots = applied(&c);
    assert!(from_snapshots < 900, "c applied {from_snapshots} events");
}

#[test]
fn a_partition_handed_over_goes_with_its_snapshot() {
    let nats = Nats::start();
    let dir = project();
    let d = dir.path();
    // No snapshot but the hand-over's.
    let never = ["--snapshot-every", "0"];
    let a = node_with(d, &nats.url, "a", "1", &never);
    wait_for_spread(&[&a]);
    let events = events(900, 30);
    post(&[&a], &events[..600], 30);
    let want = reference(d, &events[..600], 30);
    wait_for_members(&a, &want);
    let mut b = node_with(d, &nats.url, "b", "1", &never);
    wait_for_spread(&[&a, &b]);
    // b starts its two partitions from a's state: it applies none of the
    // 600 events.
    wait_until(Duration::from_secs(10), "b restores its share", || {
        b.logs()
            .matches("Partition restored from its snapshot.")
            .count()
            == 2
    });
    assert_eq!(applied(&b), 0, "{}", b.logs());
    post(&[&a, &b], &events[600..], 30);
    let want = reference(d, &events, 30);
    wait_for_members(&b, &want);
    wait_for_effects(&nats.url, &want);
    // A clean stop puts its partitions' snapshots before the leases go:
    // `a` takes them back from there, not from its copies of before.
    b.stop();
    wait_until(Duration::from_secs(10), "a restores b's partitions", || {
        a.logs().matches("from=b").count() == 2
    });
    wait_for_members(&a, &want);
}

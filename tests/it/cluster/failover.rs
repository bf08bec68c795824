//! Nodes lost: killed for good (its partitions go to the others within two
//! lease times, nothing lost), and stopped past its lease (it applies
//! nothing once the lease is gone, and no effect goes out twice).

use super::{
    Nats, events, held, node, post, project, reference, wait_for_effects, wait_for_members,
    wait_for_spread,
};
use crate::common::wait_until;
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
    signal(a.child.id(), "-KILL");
    let _ = a.child.wait();
    let killed = Instant::now();
    wait_until(Duration::from_secs(10), "b holds every partition", || {
        held(&b).len() == 4
    });
    let took = killed.elapsed();
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

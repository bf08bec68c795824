//! Three nodes, 50,000 events posted to whichever node is up, while nodes
//! are SIGKILLed and started again at random moments: at the end every
//! member equals a single node's `nudge ingest` of the same events, and
//! the effects stream holds each of its effect keys exactly once, the
//! budgeted rule spent exactly its budget, the file sink's node files hold
//! each effect exactly once between them and the webhook got every one.

use super::{
    Nats, events, node, project_with_sinks, reference, wait_for_effects, wait_for_files,
    wait_for_hook, wait_for_members, wait_for_spread,
};
use crate::common::{Daemon, Rng, try_http};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Events per request.
const CHUNK: usize = 50;

/// Posts every chunk to some node that is up, again to another when the
/// answer is not 202 (a node killed mid-request, or JetStream busy): the
/// event ids make a resend safe, as they do for any client.
fn post_all(
    addrs: Arc<Mutex<Vec<Option<String>>>>,
    events: Vec<String>,
    progress: Arc<AtomicUsize>,
) -> usize {
    let mut dice = Rng(0x9e37_79b9_7f4a_7c15);
    let mut resends = 0;
    for (i, chunk) in events.chunks(CHUNK).enumerate() {
        progress.store(i, Ordering::Relaxed);
        let body = format!("[{}]", chunk.join(","));
        let started = Instant::now();
        loop {
            let up: Vec<String> = addrs
                .lock()
                .expect("addrs")
                .iter()
                .flatten()
                .cloned()
                .collect();
            let answer = match up.is_empty() {
                true => None,
                false => {
                    let addr = &up[dice.next(up.len() as u64) as usize];
                    try_http(addr, "POST", "/v1/events", &[], body.as_bytes())
                }
            };
            if answer.as_ref().is_some_and(|(code, _)| *code == 202) {
                break;
            }
            resends += 1;
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no node took a request: {answer:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    resends
}

#[test]
fn nodes_killed_and_restarted_during_ingest_lose_nothing_and_send_nothing_twice() {
    let nats = Nats::start();
    let (hook, received) = crate::common::receiver(0, 200);
    let dir = project_with_sinks(&format!("  - kind: webhook\n    url: http://{hook}/fx\n"));
    let d = dir.path().to_path_buf();
    let names = ["a", "b", "c"];
    let mut nodes: Vec<Option<Daemon>> = names
        .iter()
        .map(|n| Some(node(&d, &nats.url, n, "1")))
        .collect();
    wait_for_spread(&nodes.iter().flatten().collect::<Vec<_>>());
    let addrs = Arc::new(Mutex::new(
        nodes
            .iter()
            .map(|n| n.as_ref().map(|n| n.addr.clone()))
            .collect::<Vec<_>>(),
    ));
    let events = events(50_000, 500);
    // The single node's run first: its daemon (reading the members back)
    // delivers to the same webhook, which is then cleared for the nodes.
    let want = reference(&d, &events, 500);
    received.lock().expect("received").clear();
    let chunks = events.len() / CHUNK;
    let progress = Arc::new(AtomicUsize::new(0));
    let poster = {
        let (addrs, events, progress) = (addrs.clone(), events.clone(), progress.clone());
        std::thread::spawn(move || post_all(addrs, events, progress))
    };
    // Eight moments of the ingest, by request, each killing a node that is
    // up or starting one that is down: a start needs a kill before it, so
    // at least four kills, all while events are coming in however fast
    // the machine posts them.
    let mut dice = Rng(0x2545_f491_4f6c_dd1d);
    let mut moments: Vec<usize> = (0..8).map(|_| dice.next(chunks as u64) as usize).collect();
    moments.sort();
    let mut kills = 0;
    for at in moments {
        while progress.load(Ordering::Relaxed) < at && !poster.is_finished() {
            std::thread::sleep(Duration::from_millis(5));
        }
        let i = dice.next(3) as usize;
        match nodes[i].take() {
            Some(mut n) => {
                addrs.lock().expect("addrs")[i] = None;
                let _ = n.child.kill();
                let _ = n.child.wait();
                kills += 1;
            }
            None => {
                let n = node(&d, &nats.url, names[i], "1");
                addrs.lock().expect("addrs")[i] = Some(n.addr.clone());
                nodes[i] = Some(n);
            }
        }
    }
    let resends = poster.join().expect("poster");
    for (i, slot) in nodes.iter_mut().enumerate() {
        if slot.is_none() {
            *slot = Some(node(&d, &nats.url, names[i], "1"));
        }
    }
    assert!(
        kills >= 4 && progress.load(Ordering::Relaxed) + 1 == chunks,
        "{kills} kills (resends {resends})"
    );
    let up: Vec<&Daemon> = nodes.iter().flatten().collect();
    wait_for_spread(&up);
    assert_eq!(want.thanks_sent, super::BUDGET, "the budget runs out");
    wait_for_members(up[0], &want);
    // Every partition fires the rule long after the budget ran out: each
    // spends all its blocks, and the budget is spent exactly.
    assert_eq!(wait_for_effects(&nats.url, &want), super::BUDGET);
    wait_for_files(&d, &names, &want);
    let repeats = wait_for_hook(&received, &want);
    eprintln!("{kills} kills, {resends} resends, {repeats} webhook requests repeated an effect");
}

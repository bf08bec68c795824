//! One ID in the cluster: events that name members by identifiers (phone,
//! card) are routed by partition 0's directory, and an event that joins
//! members of two partitions moves them into one before it is applied.
//! What the nodes end with equals `nudge ingest` on one node, also when
//! the node routing (partition 0's holder) is killed mid-way.

use super::{
    Nats, held, node, project_with_sinks, reference, three_nodes, wait_for_effects,
    wait_for_members, wait_for_spread,
};
use crate::common::{Daemon, daemon_cmd, http, refused, start_cmd, wait_until};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const MEMBERS: usize = 40;

/// `n` purchases over [`MEMBERS`] members: most name the member; some link
/// the member's phone, some name only a phone and a card, or a card; now
/// and then a phone or card of another member joins two members (often
/// of two partitions).
fn events(n: usize) -> Vec<String> {
    let m = MEMBERS;
    (0..n)
        .map(|i| {
            let who = match i % 6 {
                0 if i % 60 == 0 => {
                    format!(r#""member":"m{}","ids":{{"phone":"p{}"}}"#, (i * 7) % m, (i * 7 + 5) % m)
                }
                0 => format!(r#""member":"m{0}","ids":{{"phone":"p{0}"}}"#, (i * 7) % m),
                1 if i % 42 == 1 => {
                    format!(r#""ids":{{"phone":"p{}","card":"c{}"}}"#, (i * 13) % m, (i * 13 + 11) % m)
                }
                1 => format!(r#""ids":{{"phone":"p{0}","card":"c{0}"}}"#, (i * 13) % m),
                2 => format!(r#""ids":{{"card":"c{}"}}"#, (i * 3) % m),
                3 => format!(r#""ids":{{"phone":"p{}"}}"#, (i * 5) % m),
                _ => format!(r#""member":"m{}""#, (i * 7919) % m),
            };
            let friend = match i % 10 {
                4 => format!(r#","friend":"m{}""#, (i * 31 + 1) % m),
                _ => String::new(),
            };
            format!(
                r#"{{"id":"e{i}","type":"purchase",{who},"at":"2026-11-{:02}T{:02}:{:02}:00Z","amount":{}{friend}}}"#,
                1 + i * 20 / n,
                (i / 60) % 24,
                i % 60,
                20 + (i * 37) % 200
            )
        })
        .collect()
}

/// Members, phones and cards, as `GET /v1/members/{id}` reads them.
fn names() -> Vec<String> {
    (0..MEMBERS)
        .flat_map(|k| [format!("m{k}"), format!("phone:p{k}"), format!("card:c{k}")])
        .collect()
}

/// Each name's read (status, and the JSON without what depends on the
/// day), and a count of every member (a member left in two partitions
/// would count twice).
fn reads(node: &Daemon) -> BTreeMap<String, (u16, serde_json::Value)> {
    let when = r#"{"when": "points > 100"}"#;
    let (code, body) = http(&node.addr, "POST", "/v1/segments/count", when);
    let count = serde_json::from_str(&body).unwrap_or_default();
    names()
        .into_iter()
        .map(|id| {
            let (code, body) = http(&node.addr, "GET", &format!("/v1/members/{id}"), "");
            let mut v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.remove("predictions");
                o.remove("as_of");
            }
            (id, (code, v))
        })
        .chain([("count".to_string(), (code, count))])
        .collect()
}

/// A single node's reads of the folder `nudge ingest` made (`single`).
fn single_reads(dir: &Path) -> BTreeMap<String, (u16, serde_json::Value)> {
    let mut cmd = daemon_cmd(dir);
    cmd.args(["--data", "single"]);
    let mut single = start_cmd(cmd, None);
    let got = reads(&single);
    single.stop();
    got
}

/// Kills the node holding partition 0 (the one routing); its place in
/// `nodes` (its name's index in a, b, c).
fn kill_router(nodes: &mut Vec<Daemon>) -> usize {
    let r = nodes
        .iter()
        .position(|n| held(n).contains(&0))
        .expect("a node holds partition 0");
    let mut killed = nodes.remove(r);
    let _ = killed.child.kill();
    let _ = killed.child.wait();
    r
}

fn post_to(node: &Daemon, events: &[String]) {
    for chunk in events.chunks(40) {
        let body = format!("[{}]", chunk.join(","));
        let (code, answer) = http(&node.addr, "POST", "/v1/events", &body);
        assert_eq!(code, 202, "{answer}");
    }
}

#[test]
fn members_named_by_identifiers_end_as_on_one_node_with_the_router_killed() {
    let nats = Nats::start();
    let dir = project_with_sinks("ids: [phone, card]\n");
    let d = dir.path();
    let mut nodes = three_nodes(d, &nats.url);
    let events = events(1200);
    let want = reference(d, &events, MEMBERS);
    let merges: usize = (0..4)
        .map(|p| std::fs::read_to_string(d.join(format!("out/effects-p{p}.ndjson"))))
        .map(|f| {
            f.unwrap_or_default()
                .matches(r#""rule":"identity""#)
                .count()
        })
        .sum();
    assert!(merges > 10, "the events merge members: {merges}");
    // The first half through every node in turn.
    for (i, chunk) in events[..600].chunks(40).enumerate() {
        post_to(&nodes[i % 3], chunk);
    }
    // Partition 0's holder killed: another routes from its snapshot or
    // the stream, the same way.
    let r = kill_router(&mut nodes);
    // Until another node holds partition 0, a read cannot find where a
    // member is, and says why (not only that some node does not answer).
    let id = &names()[0];
    let (code, body) = http(&nodes[0].addr, "GET", &format!("/v1/members/{id}"), "");
    assert!(
        code == 200 || (code == 503 && body.contains("One ID's directory")),
        "{code} {body}"
    );
    post_to(&nodes[0], &events[600..750]);
    post_to(&nodes[1], &events[750..900]);
    wait_until(
        Duration::from_secs(20),
        "the others hold every partition",
        || nodes.iter().map(|n| held(n).len()).sum::<usize>() == 4,
    );
    // Started again on its old copy: it takes its share back, routing
    // too when partition 0 is in it.
    nodes.push(node(d, &nats.url, ["a", "b", "c"][r], "2"));
    wait_for_spread(&nodes.iter().collect::<Vec<_>>());
    post_to(&nodes[2], &events[900..]);
    wait_for_members(&nodes[0], &want);
    wait_for_effects(&nats.url, &want);
    let single = single_reads(d);
    assert!(
        single.values().filter(|(code, _)| *code == 200).count() > MEMBERS,
        "identifiers lead to members"
    );
    for n in &nodes {
        wait_until(
            Duration::from_secs(20),
            "every name reads as on one node",
            || reads(n) == single,
        );
    }
}

/// The router killed after JetStream's duplicate window has passed: the
/// new holder's routed copies are then in the partitions' streams (not
/// dropped by their ids), and each partition must skip them by partition
/// 0's sequence. The window is made 1 s here by making the events stream
/// before the nodes do (they take it as it is); then every node is
/// stopped and one started alone, on its copies plus the streams.
#[test]
fn members_stay_one_when_the_router_is_killed_past_the_duplicate_window() {
    let nats = Nats::start();
    super::block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(&nats.url).await.expect("nats"));
        js.create_stream(async_nats::jetstream::stream::Config {
            name: nudge::cluster::EVENTS_STREAM.to_string(),
            subjects: vec!["nudge.events.*".to_string()],
            storage: async_nats::jetstream::stream::StorageType::File,
            duplicate_window: Duration::from_secs(1),
            ..Default::default()
        })
        .await
        .expect("events stream");
    });
    let dir = project_with_sinks("ids: [phone, card]\n");
    let d = dir.path();
    let mut nodes = three_nodes(d, &nats.url);
    let events = events(1200);
    let want = reference(d, &events, MEMBERS);
    for (i, chunk) in events[..900].chunks(40).enumerate() {
        post_to(&nodes[i % 3], chunk);
    }
    // Applied, and the window past.
    std::thread::sleep(Duration::from_secs(5));
    let r = kill_router(&mut nodes);
    wait_until(
        Duration::from_secs(20),
        "the others hold every partition",
        || nodes.iter().map(|n| held(n).len()).sum::<usize>() == 4,
    );
    post_to(&nodes[0], &events[900..]);
    wait_for_members(&nodes[0], &want);
    let single = single_reads(d);
    for n in &nodes {
        wait_until(
            Duration::from_secs(20),
            "every name reads as on one node",
            || reads(n) == single,
        );
    }
    // Every node stopped, and the killed one started alone: each
    // partition from its copy here (old ones too) plus the streams.
    for mut n in nodes {
        n.stop();
    }
    let alone = node(d, &nats.url, ["a", "b", "c"][r], "2");
    wait_for_spread(&[&alone]);
    wait_until(
        Duration::from_secs(30),
        "every name reads as on one node after a restart",
        || reads(&alone) == single,
    );
}

/// A reload that changes the identifier kinds is refused: where members
/// are depends on them.
#[test]
fn ids_changed_by_a_reload_or_dropped_at_a_start_are_refused() {
    let nats = Nats::start();
    let dir = project_with_sinks("ids: [phone]\n");
    let d = dir.path();
    let mut a = node(d, &nats.url, "a", "1");
    wait_for_spread(&[&a]);
    let config = std::fs::read_to_string(d.join("nudge.yaml")).expect("config");
    std::fs::write(
        d.join("nudge.yaml"),
        config.replace("ids: [phone]", "ids: [phone, card]"),
    )
    .expect("config");
    let (code, body) = http(&a.addr, "POST", "/v1/reload", "");
    assert_eq!(code, 422, "{body}");
    let (_, status) = http(&a.addr, "GET", "/v1/status", "");
    assert!(
        status.contains("`ids` cannot change while the cluster runs"),
        "{status}"
    );
    // Stopped, and started again without `ids`: the cluster routes by
    // them, so the node is refused; with other kinds it starts.
    let _ = a.child.kill();
    let _ = a.child.wait();
    std::fs::write(d.join("nudge.yaml"), config.replace("ids: [phone]\n", "")).expect("config");
    let mut cmd = daemon_cmd(d);
    cmd.args(["--data", "a", "--cluster", &nats.url, "--node", "a"]);
    let err = refused(cmd, &d.join("refused.log"));
    assert!(
        err.contains("this cluster routes members by `ids`"),
        "{err}"
    );
    std::fs::write(
        d.join("nudge.yaml"),
        config.replace("ids: [phone]", "ids: [phone, card]"),
    )
    .expect("config");
    let a = node(d, &nats.url, "a", "1");
    wait_for_spread(&[&a]);
}

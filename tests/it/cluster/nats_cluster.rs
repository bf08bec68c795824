//! NATS itself lost: three NATS servers as one JetStream cluster, nudge's
//! streams and buckets with three replicas, one server killed during
//! ingest (nothing lost); and one NATS server restarted under the nodes.
//! With them, the compare-and-set that leases and budgets rely on, on a
//! replicated bucket.

use super::{
    Nats, events, free_port, node, project, reference, wait_for_effects, wait_for_members,
    wait_for_spread,
};
use crate::common::{Daemon, start_cmd, try_http};
use std::path::Path;
use std::time::{Duration, Instant};

/// Three servers routed to each other as the JetStream cluster `nudge`.
fn three_servers(store: &Path) -> Vec<Nats> {
    let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let all_routes = routes
        .iter()
        .map(|r| format!("nats://127.0.0.1:{r}"))
        .collect::<Vec<_>>()
        .join(",");
    (0..3)
        .map(|i| {
            let more = vec![
                "--server_name".into(),
                format!("s{i}"),
                "--cluster_name".into(),
                "nudge".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{}", routes[i]),
                "--routes".into(),
                all_routes.clone(),
            ];
            Nats::on(&store.join(format!("s{i}")), more)
        })
        .collect()
}

/// Posts every chunk to the nodes in turn, each again until it is 202
/// (503 while JetStream elects a new leader).
fn post_retrying(nodes: &[&Daemon], events: &[String]) {
    for (i, chunk) in events.chunks(50).enumerate() {
        let body = format!("[{}]", chunk.join(","));
        let started = Instant::now();
        let mut turn = i;
        loop {
            let addr = &nodes[turn % nodes.len()].addr;
            match try_http(addr, "POST", "/v1/events", &[], body.as_bytes()) {
                Some((202, _)) => break,
                answer => assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "no node took a request: {answer:?}"
                ),
            }
            turn += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn node_on(dir: &Path, urls: &str, name: &str) -> Daemon {
    let mut cmd = crate::common::daemon_cmd(dir);
    cmd.args([
        "--data",
        name,
        "--cluster",
        urls,
        "--node",
        name,
        "--lease",
        "2",
        "--replicas",
        "3",
    ]);
    start_cmd(cmd, Some(dir.join(format!("{name}.log"))))
}

#[test]
fn one_nats_server_of_three_killed_during_ingest_loses_nothing() {
    let store = tempfile::tempdir().expect("tempdir");
    let mut servers = three_servers(store.path());
    let urls = servers
        .iter()
        .map(|s| s.url.clone())
        .collect::<Vec<_>>()
        .join(",");
    let dir = project();
    let d = dir.path();
    // The JetStream cluster elects its leader before the first node can
    // make the streams.
    let (a, b) = (node_on(d, &urls, "a"), node_on(d, &urls, "b"));
    wait_for_spread(&[&a, &b]);
    let events = events(6000, 60);
    post_retrying(&[&a, &b], &events[..2000]);
    servers[0].kill("-KILL");
    post_retrying(&[&a, &b], &events[2000..]);
    let want = reference(d, &events, 60);
    wait_for_members(&a, &want);
    wait_for_effects(&servers[1].url, &want);
}

/// Four writers add one to a key of a three-replica bucket by
/// compare-and-set, all at once: every write acknowledged is kept (on
/// nats-server 2.9 the key's revision alone let two writes expecting the
/// same revision both be stored; see `cluster::bucket`).
#[test]
fn compare_and_set_on_three_replicas_keeps_every_acknowledged_write() {
    use async_nats::jetstream::{self, stream};
    let store = tempfile::tempdir().expect("tempdir");
    let servers = three_servers(store.path());
    let url = servers[0].url.clone();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (acked, kept) = rt.block_on(async move {
        let js = jetstream::new(async_nats::connect(&url).await.expect("connect"));
        let config = stream::Config {
            name: "KV_count".into(),
            subjects: vec!["$KV.count.>".into()],
            max_messages_per_subject: 1,
            num_replicas: 3,
            allow_rollup: true,
            allow_direct: true,
            ..Default::default()
        };
        let started = Instant::now();
        while js.get_or_create_stream(config.clone()).await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "no JetStream");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let kv = js.get_key_value("count").await.expect("bucket");
        let writers = (0..4).map(|_| {
            let bucket = nudge::cluster::bucket::Bucket::new(kv.clone(), &js);
            tokio::spawn(async move { add_ones(&bucket, 150).await })
        });
        let acked: u64 = futures_util::future::join_all(writers)
            .await
            .into_iter()
            .map(|r| r.expect("writer"))
            .sum();
        // From the stream's leader: a replica may not have the last yet.
        let kept = kv
            .stream
            .get_last_raw_message_by_subject("$KV.count.n")
            .await
            .expect("n");
        let kept = String::from_utf8_lossy(&kept.payload).parse::<u64>();
        (acked, kept.expect("a number"))
    });
    assert_eq!(acked, 600);
    assert_eq!(kept, acked, "increments acknowledged but lost");
}

/// Adds one to `n`, `times` times, each by compare-and-set until it is
/// taken; how many were acknowledged.
async fn add_ones(bucket: &nudge::cluster::bucket::Bucket, times: u64) -> u64 {
    use async_nats::jetstream::kv::UpdateErrorKind;
    let mut acked = 0;
    while acked < times {
        let (n, revision) = match bucket.entry("n").await.expect("entry") {
            Some(e) => (
                String::from_utf8_lossy(&e.value).parse::<u64>().expect("n"),
                e.revision,
            ),
            None => (0, 0),
        };
        let value = (n + 1).to_string().into();
        let written = if revision == 0 {
            bucket.create("n", value).await.map_err(|e| e.to_string())
        } else {
            bucket.update("n", value, revision).await.map_err(|e| {
                if e.kind() == UpdateErrorKind::WrongLastRevision {
                    String::new()
                } else {
                    e.to_string()
                }
            })
        };
        match written {
            Ok(_) => acked += 1,
            Err(e) => assert!(e.is_empty() || e.contains("exists"), "{e}"),
        }
    }
    acked
}

#[test]
fn nodes_carry_on_after_their_nats_server_restarts() {
    let store = tempfile::tempdir().expect("tempdir");
    let mut server = Nats::on(store.path(), Vec::new());
    let dir = project();
    let d = dir.path();
    let (a, b) = (
        node(d, &server.url, "a", "2"),
        node(d, &server.url, "b", "2"),
    );
    wait_for_spread(&[&a, &b]);
    let events = events(3000, 60);
    post_retrying(&[&a, &b], &events[..1500]);
    server.kill("-TERM");
    // While NATS is away a request is refused (503), not lost.
    let (code, body) = try_http(
        &a.addr,
        "POST",
        "/v1/events",
        &[],
        format!("[{}]", events[1500]).as_bytes(),
    )
    .expect("an answer");
    assert_eq!(code, 503, "{body}");
    server.run();
    post_retrying(&[&a, &b], &events[1500..]);
    let want = reference(d, &events, 60);
    wait_for_members(&a, &want);
    wait_for_effects(&server.url, &want);
    wait_for_spread(&[&a, &b]);
}

//! NATS itself lost: the NATS server stopped and started again under the
//! nodes. (One server of a three-server JetStream cluster killed during
//! ingest is not here yet: see docs/cluster.md, Failures.)

use super::{
    events, free_port, nats_server, node, project, reference, wait_for_effects, wait_for_members,
    wait_for_spread,
};
use crate::common::{Daemon, try_http, wait_until};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One NATS server of a JetStream cluster (or alone), on loopback ports.
struct Server {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
}

impl Server {
    /// A JetStream server on `port` storing in `store`, with `more` args;
    /// started.
    fn new(port: u16, store: &Path, more: Vec<String>) -> Server {
        let mut args: Vec<String> = ["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(store.display().to_string());
        args.extend(more);
        let mut s = Server {
            child: None,
            port,
            args,
        };
        s.start();
        s
    }

    fn start(&mut self) {
        let child = Command::new(nats_server())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        wait_until(Duration::from_secs(10), "nats-server listens", || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
    }

    fn kill(&mut self, signal: &str) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args([signal, &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill("-KILL");
    }
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

#[test]
fn nodes_carry_on_after_their_nats_server_restarts() {
    let store = tempfile::tempdir().expect("tempdir");
    let mut server = Server::new(free_port(), store.path(), Vec::new());
    let dir = project();
    let d = dir.path();
    let (a, b) = (
        node(d, &server.url(), "a", "2"),
        node(d, &server.url(), "b", "2"),
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
    server.start();
    post_retrying(&[&a, &b], &events[1500..]);
    let want = reference(d, &events, 60);
    wait_for_members(&a, &want);
    wait_for_effects(&server.url(), &want);
    wait_for_spread(&[&a, &b]);
}

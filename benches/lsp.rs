//! Language server latency: a project of 1,000 rules (10 files of 100, the
//! `load` bench's rules, the example `nudge.yaml`), one file open in the
//! server as an editor holds it; each edit breaks or mends one rule, and
//! the figure is the time from the edit to its file's diagnostics. The
//! server runs in this process on an in-memory connection (the protocol
//! messages are the same JSON values as over stdio, without the pipe).
//!
//! Beside it, the floor: the project's load alone (what `nudge check`
//! does), with the same unsaved text. The server's cost is the difference.
//!
//! Run: `cargo bench --bench lsp`. Target: under 100 ms per edit.

#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "common/rules.rs"]
mod rules;

use lsp_server::{Connection, Message, Notification, Request, RequestId};
use serde_json::json;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

const EDITS: usize = 40;

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().canonicalize().expect("root");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/nudge.yaml"),
        root.join("nudge.yaml"),
    )
    .expect("config");
    std::fs::create_dir(root.join("rules")).expect("mkdir");
    for f in 0..10 {
        let mut text = String::new();
        for i in 0..100 {
            let _ = writeln!(text, "{}", rules::rule(f * 100 + i));
        }
        std::fs::write(root.join(format!("rules/gen{f:02}.rules")), text).expect("write");
    }
    let file = root.join("rules/gen00.rules");
    let good = std::fs::read_to_string(&file).expect("read");
    let broken = good.replacen("tier >= bronze", "tiar >= bronze", 1);
    assert_ne!(good, broken);
    let uri = format!("file://{}", file.display());

    let (server, client) = Connection::memory();
    let thread = std::thread::spawn(move || nudge::lsp::serve(&server));
    let root_uri = format!("file://{}", root.display());
    let init = Request::new(
        RequestId::from(1),
        "initialize".into(),
        json!({"capabilities": {}, "workspaceFolders": [{"uri": root_uri, "name": "bench"}]}),
    );
    client.sender.send(init.into()).expect("send");
    recv(&client, |m| matches!(m, Message::Response(_)));
    notify(&client, "initialized", json!({}));
    notify(
        &client,
        "textDocument/didOpen",
        json!({"textDocument": {"uri": uri, "languageId": "nudge", "version": 1, "text": good}}),
    );
    diagnostics(&client, &uri);

    let mut times = Vec::new();
    for i in 0..EDITS {
        let (text, want) = if i % 2 == 0 { (&broken, 1) } else { (&good, 0) };
        let t = Instant::now();
        notify(
            &client,
            "textDocument/didChange",
            json!({"textDocument": {"uri": uri, "version": i + 2}, "contentChanges": [{"text": text}]}),
        );
        let got = diagnostics(&client, &uri);
        times.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(got, want, "edit {i}: diagnostics");
    }
    let request = Request::new(RequestId::from(2), "shutdown".into(), json!(null));
    client.sender.send(request.into()).expect("send");
    recv(&client, |m| matches!(m, Message::Response(_)));
    notify(&client, "exit", json!(null));
    thread.join().expect("server thread").expect("server");

    // The floor: the same load without the protocol around it.
    let opts = nudge::project::load::LoadOptions {
        config: root.join("nudge.yaml"),
        overlay: [(file.clone(), broken.clone())].into_iter().collect(),
        ..Default::default()
    };
    let mut loads = Vec::new();
    for _ in 0..EDITS / 2 {
        let t = Instant::now();
        let l = nudge::project::load::load(&opts);
        loads.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(l.errors(), 1);
    }
    times.sort_by(f64::total_cmp);
    loads.sort_by(f64::total_cmp);
    println!(
        "{{\"bench\":\"lsp_diagnostics\",\"rules\":1000,\"edits\":{EDITS},\"median_ms\":{:.1},\"p90_ms\":{:.1},\"max_ms\":{:.1},\"load_alone_median_ms\":{:.1},\"target_ms\":100}}",
        times[times.len() / 2],
        times[times.len() * 9 / 10],
        times[times.len() - 1],
        loads[loads.len() / 2],
    );
}

fn notify(c: &Connection, method: &str, params: serde_json::Value) {
    let n = Notification::new(method.into(), params);
    c.sender.send(n.into()).expect("send");
}

fn recv(c: &Connection, want: impl Fn(&Message) -> bool) -> Message {
    loop {
        let m = c
            .receiver
            .recv_timeout(Duration::from_secs(60))
            .expect("the server answers");
        if want(&m) {
            return m;
        }
    }
}

/// The number of diagnostics next published for `uri`.
fn diagnostics(c: &Connection, uri: &str) -> usize {
    let m = recv(c, |m| match m {
        Message::Notification(n) => {
            n.method == "textDocument/publishDiagnostics" && n.params["uri"] == uri
        }
        _ => false,
    });
    match m {
        Message::Notification(n) => n.params["diagnostics"].as_array().map_or(0, Vec::len),
        _ => 0,
    }
}

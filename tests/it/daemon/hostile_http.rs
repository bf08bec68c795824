//! Hostile input over HTTP against the real daemon: missing and wrong
//! tokens, oversized bodies and batches, slow-loris clients (headers and
//! bodies), malformed and out-of-range events. Each gets its status code
//! and a message with the field path, stores nothing, and the daemon keeps
//! serving with flat memory. Member data never reaches the logs.

use crate::common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const PHONE: &str = "+15550001234";
const EMAIL: &str = "sentinel.pii@example.com";

fn config() -> String {
    "timezone: UTC\ntiers: [bronze]\nids: [phone, email]\nevents:\n  purchase:\n    amount: money\nhttp:\n  listen: 127.0.0.1:0\n  token: s3cret\n  header_timeout_ms: 1000\n  request_timeout_ms: 1500\nsinks:\n  - kind: file\n    path: out/effects.ndjson\n".to_string()
}

const AUTH: (&str, &str) = ("Authorization", "Bearer s3cret");

fn post(addr: &str, body: &str) -> (u16, serde_json::Value) {
    let (code, body) =
        try_http(addr, "POST", "/v1/events", &[AUTH], body.as_bytes()).expect("answer");
    (
        code,
        serde_json::from_str(&body).unwrap_or(serde_json::json!(body)),
    )
}

fn members(addr: &str) -> u64 {
    let (_, m) = try_http(addr, "GET", "/metrics", &[AUTH], b"").expect("metrics");
    m.lines()
        .find_map(|l| l.strip_prefix("nudge_members "))
        .and_then(|v| v.parse().ok())
        .expect("nudge_members")
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn event(id: &str, fields: &str) -> String {
    format!(
        r#"{{"id":"{id}","type":"purchase","member":"m1","at":"2026-01-01T12:00:00Z"{fields}}}"#
    )
}

#[test]
fn bad_requests_get_their_status_a_path_and_store_nothing() {
    let dir = project_with(
        &config(),
        "rule \"pts\" on purchase then award points floor(event.amount)\n",
    );
    let d = start_logged(dir.path());
    let a = &d.addr;
    let ok = event("ok1", r#","amount":5"#);
    // Tokens: none, wrong, and right without `Bearer`.
    for auth in [None, Some("Bearer s3cre"), Some("s3cret")] {
        let headers: Vec<(&str, &str)> = auth.map(|v| ("Authorization", v)).into_iter().collect();
        let answer = try_http(a, "POST", "/v1/events", &headers, ok.as_bytes());
        assert_eq!(answer.map(|r| r.0), Some(401), "{auth:?}");
    }
    // Shapes and values: (body, status, path in the first error).
    let big = "9".repeat(40);
    let cases: Vec<(String, u16, &str)> = vec![
        ("{\"id\":".into(), 400, ""),
        ("[1,2]".into(), 400, ""),
        ("\"purchase\"".into(), 400, ""),
        (r#"{"id":"n","type":"purchase","member":"m1","at":"2026-01-01T12:00:00Z","amount":NaN}"#.into(), 400, ""),
        (event("u1", r#","amount":5,"colour":"red""#), 400, "colour"),
        (event("t1", r#","amount":"five""#), 400, "amount"),
        (event("t2", r#","amount":[5]"#), 400, "amount"),
        (event("t3", r#","amount":null"#), 400, "amount"),
        (event("h1", &format!(r#","amount":{big}"#)), 400, "amount"),
        (event("h2", r#","amount":1e400"#), 400, "amount"),
        (event("h3", r#","amount":-1e-400"#), 400, "amount"),
        // Past the money range: refused here, not left to overflow the
        // member's spend at the next purchase (which stopped every write).
        (event("h4", r#","amount":79228162514264337593543950335"#), 400, "amount"),
        (event("h5", r#","amount":1000000000000.01"#), 400, "amount"),
        // `phone:...` as the member names the identifier: it must agree with `ids`.
        (r#"{"id":"i5","type":"purchase","member":"phone:1","ids":{"phone":"2"},"at":"2026-01-01T12:00:00Z","amount":5}"#.into(), 400, "member"),
        // A repeated key: which amount is meant? (serde kept the last.)
        (event("d1", r#","amount":10,"amount":1000"#), 400, "amount"),
        (r#"{"id":"y1","type":"purchase","member":"m1","at":"1900-01-01T00:00:00Z","amount":5}"#.into(), 400, "at"),
        (r#"{"id":"y2","type":"purchase","member":"m1","at":"2200-01-01T00:00:00Z","amount":5}"#.into(), 400, "at"),
        (r#"{"id":"y3","type":"purchase","member":"m1","at":"yesterday","amount":5}"#.into(), 400, "at"),
        (r#"{"id":"i1","type":"purchase","member":"","at":"2026-01-01T12:00:00Z","amount":5}"#.into(), 400, "member"),
        (r#"{"id":"i2","type":"purchase","member":"a\nb","at":"2026-01-01T12:00:00Z","amount":5}"#.into(), 400, "member"),
        (format!(r#"{{"id":"i3","type":"purchase","member":"{}","at":"2026-01-01T12:00:00Z","amount":5}}"#, "m".repeat(300)), 400, "member"),
        (r#"{"id":"i4","type":"purchase","member":{"id":1},"at":"2026-01-01T12:00:00Z","amount":5}"#.into(), 400, "member"),
        (r#"{"id":"","type":"purchase","member":"m1","at":"2026-01-01T12:00:00Z","amount":5}"#.into(), 400, "id"),
        (r#"{"id":"k1","type":"purchse","member":"m1","at":"2026-01-01T12:00:00Z","amount":5}"#.into(), 400, "type"),
        (format!(r#"{{"id":"p1","type":"purchase","ids":{{"phone":"{PHONE}","fax":"{EMAIL}"}},"at":"2026-01-01T12:00:00Z","amount":5}}"#), 400, "ids.fax"),
        (format!(r#"{{"id":"p2","type":"purchase","ids":{{"phone":"{PHONE}","email":"{EMAIL}"}},"at":"2026-01-01T12:00:00Z","amount":"{EMAIL}"}}"#), 400, "amount"),
    ];
    for (body, status, path) in &cases {
        let batch = format!("[{ok},{body}]");
        let (code, v) = post(
            a,
            if body.starts_with('{') && !path.is_empty() {
                &batch
            } else {
                body
            },
        );
        assert_eq!(code, *status, "{body}: {v}");
        let err = &v["errors"][0];
        assert_eq!(err["path"], *path, "{body}: {v}");
        assert!(
            err["message"].as_str().is_some_and(|m| m.len() > 10),
            "{body}: {v}"
        );
    }
    assert_eq!(members(a), 0, "nothing of a bad request is stored");
    assert_eq!(http(a, "GET", "/v1/members/m1", "").0, 401);
    // 10 MB and more: 413 before the body is read.
    let huge = vec![b' '; 10 * 1024 * 1024 + 1];
    assert_eq!(
        try_http(a, "POST", "/v1/events", &[AUTH], &huge).map(|r| r.0),
        Some(413)
    );
    // 100,000 (small) events in one request: 413, nothing stored.
    let many = format!(
        "[{}]",
        (0..100_000)
            .map(|i| format!(r#"{{"id":"b{i}","type":"purchase","member":"m{i}","at":"2026-01-01T12:00:00Z","amount":1}}"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(many.len() < 10 * 1024 * 1024);
    let (code, v) = post(a, &many);
    assert_eq!(code, 413, "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("at most 10000")),
        "{v}"
    );
    assert_eq!(members(a), 0);
    // And then the good event goes through; a conflicting resend is 409.
    assert_eq!(post(a, &ok).0, 202);
    assert_eq!(post(a, &event("ok1", r#","amount":6"#)).0, 409);
    assert_eq!(members(a), 1);
}

#[test]
fn slow_loris_clients_are_cut_off_and_others_are_served() {
    let dir = project_with(&config(), "rule \"pts\" on purchase then award points 1\n");
    let d = start(dir.path());
    let a = d.addr.clone();
    let rss_before = rss_kib(d.child.id());
    // 200 clients that send their headers a byte at a time, and 20 that
    // promise a body and never finish it.
    let mut slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(&a).expect("connect");
            s.write_all(b"POST /v1/events HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
                .expect("write");
            s
        })
        .collect();
    let mut bodies: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(&a).expect("connect");
            s.write_all(b"POST /v1/events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer s3cret\r\nContent-Length: 1000\r\n\r\n[{\"id\":")
                .expect("write");
            s
        })
        .collect();
    // Meanwhile a normal client is served at once.
    let t = Instant::now();
    let (code, _) = post(&a, &event("n1", r#","amount":5"#));
    assert_eq!(code, 202);
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    for s in &mut slow {
        let _ = s.write_all(b"a");
    }
    // Past the header deadline (1 s) and the request deadline (1.5 s):
    // every slow connection has been closed by the server.
    std::thread::sleep(Duration::from_millis(2500));
    for s in slow.iter_mut() {
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut buf = Vec::new();
        let r = s.read_to_end(&mut buf);
        assert!(r.is_ok(), "the server closed the header slow-loris: {r:?}");
    }
    for s in bodies.iter_mut() {
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        assert!(buf.starts_with("HTTP/1.1 408"), "body slow-loris: {buf:?}");
    }
    assert_eq!(members(&a), 1, "nothing of a cut request is stored");
    // Memory stays flat after the storm: a thousand more rejected requests.
    for i in 0..1000 {
        let (code, _) = post(&a, &event(&format!("x{i}"), r#","amount":"x""#));
        assert_eq!(code, 400);
    }
    let rss_after = rss_kib(d.child.id());
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}

#[test]
fn member_data_never_reaches_the_logs() {
    let config =
        config().replace("  token: s3cret\n", "") + "channels:\n  sms: { cap: 2 per 7d }\n";
    let dir = project_with(
        &config,
        "rule \"pts\" on purchase then award points floor(event.amount)\nrule \"vip\" on purchase when spend >= 10 then tag \"vip\", send message \"hello\" via sms\n",
    );
    let mut cmd = daemon_cmd(dir.path());
    cmd.env("RUST_LOG", "trace");
    let d = start_cmd(cmd, Some(dir.path().join("daemon.log")));
    let a = &d.addr;
    let pii = |id: &str, amount: &str| {
        format!(
            r#"{{"id":"{id}","type":"purchase","ids":{{"phone":"{PHONE}","email":"{EMAIL}"}},"at":"2026-01-01T12:00:00Z","amount":{amount}}}"#
        )
    };
    // Happy path, duplicate, conflict, invalid, unknown kind, explain.
    assert_eq!(http(a, "POST", "/v1/events", &pii("s1", "12")).0, 202);
    assert_eq!(http(a, "POST", "/v1/events", &pii("s1", "12")).0, 202);
    assert_eq!(http(a, "POST", "/v1/events", &pii("s1", "13")).0, 409);
    assert_eq!(
        http(a, "POST", "/v1/events", &pii("s2", &format!("\"{EMAIL}\""))).0,
        400
    );
    let unknown = format!(
        r#"{{"id":"s3","type":"purchase","ids":{{"fax":"{PHONE}"}},"at":"2026-01-01T12:00:00Z"}}"#
    );
    assert_eq!(http(a, "POST", "/v1/events", &unknown).0, 400);
    assert_eq!(
        http(a, "GET", &format!("/v1/members/phone:{PHONE}"), "").0,
        200
    );
    assert_eq!(
        http(a, "GET", &format!("/v1/members/email:{EMAIL}/explain"), "").0,
        200
    );
    assert_eq!(
        http(a, "GET", &format!("/v1/members/phone:{PHONE}9"), "").0,
        404
    );
    // A broken reload, then a graceful stop (flushes every log line).
    std::fs::write(
        dir.path().join("rules/r.rules"),
        "rule \"x\" on purchase when tier > 3 then tag \"a\"\n",
    )
    .expect("edit");
    let _ = http(a, "POST", "/v1/reload", "");
    let mut d = d;
    std::process::Command::new("kill")
        .args(["-TERM", &d.child.id().to_string()])
        .status()
        .expect("kill");
    let _ = d.child.wait();
    let logs = d.logs();
    assert!(
        logs.contains("Listening.") && logs.contains("Reload failed"),
        "{logs}"
    );
    for secret in [PHONE, EMAIL, "15550001234"] {
        assert!(!logs.contains(secret), "`{secret}` is in the logs:\n{logs}");
    }
}

#[test]
fn a_daemon_full_of_idle_connections_still_stops_on_sigterm() {
    let config = config().replace(
        "  header_timeout_ms: 1000\n",
        "  header_timeout_ms: 60000\n  max_connections: 2\n",
    );
    let dir = project_with(&config, "rule \"pts\" on purchase then award points 1\n");
    let mut d = start(dir.path());
    let _idle: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(&d.addr).expect("connect");
            s.write_all(b"POST /v1/events HTTP/1.1\r\n").expect("write");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    std::process::Command::new("kill")
        .args(["-TERM", &d.child.id().to_string()])
        .status()
        .expect("kill");
    let start = Instant::now();
    wait_until(Duration::from_secs(20), "the daemon did not stop", || {
        d.child.try_wait().ok().flatten().is_some()
    });
    assert!(start.elapsed() < Duration::from_secs(20));
}

/// One raw request with the given Host (and Origin) header.
fn raw(addr: &str, method: &str, path: &str, host: &str, origin: Option<&str>, body: &str) -> u16 {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{origin}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// What a web page can make a browser do to a tokenless daemon on
/// localhost (a cross-site POST, DNS rebinding) is refused; a token edit
/// takes effect on reload; an empty token is refused; webhook credentials
/// and odd rule names never garble or leak through `/metrics`.
#[test]
fn browsers_tokens_and_metrics_are_safe() {
    let config = "timezone: UTC\ntiers: [bronze]\nevents:\n  purchase:\n    amount: money\nhttp:\n  listen: 127.0.0.1:0\nsinks:\n  - kind: webhook\n    url: http://admin:hunter2@127.0.0.1:9/hook?key=abc\n";
    let dir = project_with(
        config,
        "rule \"two\\nlines\" on purchase then award points 1\n",
    );
    let d = start_logged(dir.path());
    let a = &d.addr;
    let ev =
        r#"{"id":"x1","type":"purchase","member":"m1","at":"2026-01-01T12:00:00Z","amount":5}"#;
    // A page on another site posting text/plain: refused, nothing stored.
    assert_eq!(
        raw(a, "POST", "/v1/events", a, Some("http://evil.example"), ev),
        403
    );
    // A domain name that resolves here (DNS rebinding): refused without a token.
    assert_eq!(
        raw(a, "GET", "/v1/members/m1", "evil.example:8080", None, ""),
        403
    );
    // localhost and IP addresses are served; same-origin requests too.
    let port = a.rsplit(':').next().expect("port");
    let origin = format!("http://localhost:{port}");
    assert_eq!(
        raw(
            a,
            "POST",
            "/v1/events",
            &format!("localhost:{port}"),
            Some(&origin),
            ev
        ),
        202
    );
    let (code, metrics) = http(a, "GET", "/metrics", "");
    assert_eq!(code, 200);
    assert!(
        !metrics.contains("hunter2") && !metrics.contains("key=abc"),
        "{metrics}"
    );
    assert!(
        metrics.contains("webhook:http://127.0.0.1:9/hook"),
        "{metrics}"
    );
    // Every sample line is `name{labels} value`: a newline in a rule name
    // is escaped, not a broken line.
    for line in metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(
            line.starts_with("nudge_"),
            "a garbled line: {line:?}\n{metrics}"
        );
    }
    assert!(metrics.contains("two\\nlines"), "{metrics}");

    // A token added by editing the config: required after the reload.
    let with_token = config.replace(
        "  listen: 127.0.0.1:0\n",
        "  listen: 127.0.0.1:0\n  token: s3cret\n",
    );
    std::fs::write(dir.path().join("nudge.yaml"), &with_token).expect("config");
    let deadline = Instant::now() + Duration::from_secs(10);
    while http(a, "GET", "/v1/status", "").0 != 401 {
        assert!(
            Instant::now() < deadline,
            "the new token never took effect:\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(http(a, "GET", "/metrics", "").0, 401);
    assert_eq!(
        try_http(a, "GET", "/metrics", &[AUTH], b"").map(|r| r.0),
        Some(200)
    );
    // An empty token would turn authentication off: the reload fails and
    // the running token stays.
    std::fs::write(
        dir.path().join("nudge.yaml"),
        with_token.replace("s3cret", "\"\""),
    )
    .expect("config");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(http(a, "GET", "/v1/status", "").0, 401);
    let (_, status) = try_http(a, "GET", "/v1/status", &[AUTH], b"").expect("status");
    assert!(status.contains("empty `http.token`"), "{status}");
}

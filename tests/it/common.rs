//! What the tests that drive the real `nudge run` binary share: a project
//! folder, starting the daemon, raw HTTP/1.1 requests, and a webhook
//! receiver on 127.0.0.1 (the only faked network).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Daemon {
    pub child: Child,
    pub addr: String,
    /// Where stderr (the logs) goes, when captured.
    pub log: Option<PathBuf>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Stops the daemon with SIGTERM, checks it exits 0, and returns its
    /// logs.
    pub fn stop(&mut self) -> String {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(self.child.wait().expect("wait").success());
        self.logs()
    }

    /// The logs written so far (empty when not captured).
    pub fn logs(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }
}

pub const CONFIG: &str = "timezone: UTC\ntiers: [bronze, silver]\nevents:\n  purchase:\n    amount: money\nhttp:\n  listen: 127.0.0.1:0\nsinks:\n  - kind: file\n    path: out/effects.ndjson\n";

/// A project folder: `nudge.yaml` (file sink) and `rules/r.rules`.
pub fn project(rule: &str) -> tempfile::TempDir {
    project_with(CONFIG, rule)
}

pub fn project_with(config: &str, rule: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("nudge.yaml"), config).expect("config");
    std::fs::create_dir(dir.path().join("rules")).expect("rules");
    std::fs::write(dir.path().join("rules/r.rules"), rule).expect("rule");
    dir
}

pub fn start(dir: &Path) -> Daemon {
    start_cmd(daemon_cmd(dir), None)
}

/// Starts with stderr (the logs) captured in `dir/daemon.log`, appended.
pub fn start_logged(dir: &Path) -> Daemon {
    start_cmd(daemon_cmd(dir), Some(dir.join("daemon.log")))
}

pub fn daemon_cmd(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nudge"));
    c.current_dir(dir).arg("run");
    c
}

/// Runs a `nudge run` that must refuse to start, and returns what it
/// wrote to stderr; one that is still running after 60 s is killed and
/// the test fails (instead of waiting for ever).
pub fn refused(mut cmd: Command, log: &Path) -> String {
    let file = std::fs::File::create(log).expect("log file");
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::from(file))
        .spawn()
        .expect("nudge run");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "started instead of being refused: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = std::fs::read_to_string(log).expect("log");
    assert!(!status.success(), "{err}");
    err
}

/// Spawns `cmd` and waits for the line that says where it listens.
pub fn start_cmd(mut cmd: Command, log: Option<PathBuf>) -> Daemon {
    let stderr = match &log {
        Some(p) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .expect("log file"),
        ),
        None => Stdio::null(),
    };
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("first line");
    let addr = line
        .trim()
        .strip_prefix("nudge listening on http://")
        .unwrap_or_else(|| panic!("unexpected: {line:?}"))
        .to_string();
    Daemon { child, addr, log }
}

/// One HTTP/1.1 request; returns status and body.
pub fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    try_http(addr, method, path, &[], body.as_bytes()).expect("request")
}

/// One HTTP/1.1 request with extra headers; `None` when the connection
/// failed or closed before a status line (a daemon that died).
pub fn try_http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    // A server may answer (413) before reading the whole body.
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let head_end = resp.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&resp[..head_end]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok())?;
    let raw = &resp[head_end + 4..];
    let body = match head.contains("transfer-encoding: chunked") {
        true => dechunk(raw),
        false => raw.to_vec(),
    };
    let body = String::from_utf8_lossy(&body).into_owned();
    Some((status, body))
}

/// A chunked body's chunks, joined (each is its size in hex, a line
/// break, the bytes, a line break; the last is of size 0).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&raw[..eol]);
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16);
        let Ok(size) = size else { break };
        let start = eol + 2;
        if size == 0 || start + size > raw.len() {
            break;
        }
        out.extend_from_slice(&raw[start..start + size]);
        raw = raw.get(start + size + 2..).unwrap_or_default();
    }
    out
}

/// Imports `events` (NDJSON lines) into the project at `dir` with the
/// release binary's `nudge ingest`, as an operator loads a history.
pub fn ingest(dir: &Path, events: &[String]) {
    std::fs::write(dir.join("events.ndjson"), events.join("\n")).expect("events");
    let ingest = Command::new(env!("CARGO_BIN_EXE_nudge"))
        .current_dir(dir)
        .args(["ingest", "events.ndjson"])
        .output()
        .expect("ingest");
    assert!(ingest.status.success(), "{ingest:?}");
}

pub fn purchase(id: &str, member: &str, amount: f64) -> String {
    format!(
        r#"{{"id":"{id}","type":"purchase","member":"{member}","at":"2026-01-01T12:00:00Z","amount":{amount}}}"#
    )
}

pub fn member_json(addr: &str, member: &str) -> serde_json::Value {
    let (code, body) = http(addr, "GET", &format!("/v1/members/{member}"), "");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

pub fn points(addr: &str, member: &str) -> i64 {
    member_json(addr, member)["points"]
        .as_i64()
        .expect("points")
}

/// Polls `ok` every 20 ms until it holds; fails with `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "{what} (waited {limit:?})");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a receiver saw: (idempotency key, body, status answered).
pub type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, String, u16)>>>;

/// A webhook receiver on 127.0.0.1: answers `fail_first` requests with 500,
/// then 200 (or always `status`); records (idempotency key, body).
pub fn receiver(fail_first: usize, status: u16) -> (String, Received) {
    receiver_with(move |n| if n < fail_first { 500 } else { status })
}

/// A webhook receiver that answers request `n` (from 0) with `status(n)`.
pub fn receiver_with(status: impl Fn(usize) -> u16 + Send + 'static) -> (String, Received) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { continue };
            let Ok(read_half) = conn.try_clone() else {
                continue;
            };
            let mut reader = BufReader::new(read_half);
            let (mut key, mut len) = (String::new(), 0usize);
            // A sender that died mid-request is not a delivery.
            let complete = loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break false;
                }
                if line == "\r\n" {
                    break true;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("idempotency-key:") {
                    key = v.trim().to_string();
                }
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            };
            let mut body = vec![0; len];
            if !complete || reader.read_exact(&mut body).is_err() {
                continue;
            }
            let code = status(n);
            log.lock()
                .expect("log")
                .push((key, String::from_utf8_lossy(&body).into_owned(), code));
            let _ = conn.write_all(
                format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    (addr, seen)
}

/// Posts one event per try for a new member `{prefix}{n}` until one gets
/// `want` points (a rule edit is live); fails after 30 s (a reload takes
/// milliseconds, but the whole suite on 2 cores once made it over 5 s).
pub fn wait_for_points(addr: &str, prefix: &str, want: i64) {
    let start = Instant::now();
    for n in 0.. {
        let m = format!("{prefix}{n}");
        let (code, body) = http(
            addr,
            "POST",
            "/v1/events",
            &purchase(&format!("{m}-e"), &m, 1.0),
        );
        assert_eq!(code, 202, "{body}");
        if points(addr, &m) == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never saw {want} points"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// xorshift: kill moments and request sizes, reproducible by seed.
pub struct Rng(pub u64);

impl Rng {
    /// The next number below `n`.
    pub fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

//! `nudge run`, the real binary: HTTP ingest, members, status, metrics, a
//! live rule edit and a broken one, SIGTERM during a stream of posts, and a
//! second daemon on the same data folder.

use crate::common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn ingest_members_status_and_metrics_over_http() {
    let dir = project("rule \"pts\" on purchase then award points floor(event.amount)\n");
    let d = start(dir.path());
    let (code, body) = http(&d.addr, "POST", "/v1/events", &purchase("e1", "m1", 12.5));
    assert_eq!(code, 202, "{body}");
    assert_eq!(points(&d.addr, "m1"), 12);
    // Why: each rule's tests with their values, and its decisions.
    // (A day after the daemon's own tick of today, which it may have run.)
    let (code, body) = http(&d.addr, "GET", "/v1/members/m1/explain?at=2030-01-02", "");
    assert_eq!(code, 200, "{body}");
    let x: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(x["day"], "2030-01-02");
    assert_eq!(x["rules"][0]["rule"], "pts");
    assert_eq!(x["rules"][0]["history"][0][1], "fired");
    assert_eq!(
        http(&d.addr, "GET", "/v1/members/m1/explain?rule=nope", "").0,
        404
    );
    assert_eq!(
        http(&d.addr, "GET", "/v1/members/m1/explain?at=soon", "").0,
        400
    );
    assert_eq!(http(&d.addr, "GET", "/v1/members/zz/explain", "").0, 404);
    // Records hold the present: a day before the folder's last event is
    // refused, not answered with today's values.
    let (code, body) = http(&d.addr, "GET", "/v1/members/m1/explain?at=2025-12-01", "");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("2025-12-01 is before that"), "{body}");
    // The file sink is written right after the commit's answers go out.
    let sink = dir.path().join("out/effects.ndjson");
    wait_until(
        Duration::from_secs(10),
        "the file sink has the effect",
        || std::fs::read_to_string(&sink).is_ok_and(|e| e.contains("\"points\":12")),
    );
    // Bad input: 400 with the field path, and nothing of the request stored.
    let batch = format!(
        "[{},{}]",
        purchase("e2", "m2", 1.0),
        r#"{"id":"e3","type":"purchase","member":"m2","at":"2026-01-01T12:00:00Z","amount":"x"}"#
    );
    let (code, body) = http(&d.addr, "POST", "/v1/events", &batch);
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("\"path\":\"amount\"") && body.contains("\"index\":1"),
        "{body}"
    );
    assert_eq!(
        http(&d.addr, "GET", "/v1/members/m2", "").0,
        404,
        "nothing of a bad request is stored"
    );
    // A known id with another body: 409; the same body again: 202, no change.
    assert_eq!(
        http(&d.addr, "POST", "/v1/events", &purchase("e1", "m1", 99.0)).0,
        409
    );
    assert_eq!(
        http(&d.addr, "POST", "/v1/events", &purchase("e1", "m1", 12.5)).0,
        202
    );
    assert_eq!(points(&d.addr, "m1"), 12);
    assert_eq!(http(&d.addr, "POST", "/v1/events", "not json").0, 400);
    let twice = format!(
        "[{},{}]",
        purchase("e9", "m9", 1.0),
        purchase("e9", "m9", 2.0)
    );
    assert_eq!(http(&d.addr, "POST", "/v1/events", &twice).0, 409);
    assert_eq!(
        http(&d.addr, "GET", "/v1/members/m9", "").0,
        404,
        "nothing of a 409 request is stored"
    );
    let big = "x".repeat(11 * 1024 * 1024);
    assert_eq!(http(&d.addr, "POST", "/v1/events", &big).0, 413);
    let (code, status) = http(&d.addr, "GET", "/v1/status", "");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    assert_eq!(status["events"]["applied"], 1, "{status}");
    assert_eq!(status["events"]["duplicates"], 1, "{status}");
    assert_eq!(status["ok"], true, "{status}");
    assert_eq!(status["outbox"], 0, "every effect delivered: {status}");
    assert_eq!(status["sinks"][0]["ok"], true, "{status}");
    assert!(
        status["sinks"][0]["sink"]
            .as_str()
            .is_some_and(|s| s.starts_with("file:")),
        "{status}"
    );
    let (code, metrics) = http(&d.addr, "GET", "/metrics", "");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("nudge_events_applied_total 1")
            && metrics.contains("nudge_effects_total{rule=\"pts\",status=\"sent\"} 1")
            && metrics
                .lines()
                .any(|l| l == "nudge_events_duplicate_total 1"),
        "{metrics}"
    );
    // The file sink's writes are counted: one effect, written once.
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("nudge_deliveries_total{sink=\"file:")
                && l.ends_with("result=\"ok\"} 1")),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l == "nudge_members 1")
            && metrics.lines().any(|l| l == "nudge_outbox_depth 0"),
        "{metrics}"
    );
    // Past the dedup window (30 days before the newest event): 422 naming
    // the event and the window; the request's other events are applied.
    let late = purchase("e20", "m20", 1.0).replace("2026-01-01", "2026-03-01");
    assert_eq!(http(&d.addr, "POST", "/v1/events", &late).0, 202);
    let old = format!(
        "[{},{}]",
        purchase("e21", "m21", 1.0),
        purchase("e22", "m20", 3.0).replace("2026-01-01", "2026-02-28")
    );
    let (code, body) = http(&d.addr, "POST", "/v1/events", &old);
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains(
            "event \\\"e21\\\" at 2026-01-01T12:00:00Z is older than the dedup window, which starts at 2026-01-30 (UTC; 30 days"
        ) && body.contains("\"applied\":1,")
            && body.contains("{\"id\":\"e21\",\"index\":0,"),
        "{body}"
    );
    assert_eq!(http(&d.addr, "GET", "/v1/members/m21", "").0, 404);
    assert_eq!(points(&d.addr, "m20"), 4);
    // A mistyped year is bad input (it would refuse every later event).
    let typo = purchase("e23", "m20", 1.0).replace("2026", "2062");
    let (code, body) = http(&d.addr, "POST", "/v1/events", &typo);
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("\"path\":\"at\"") && body.contains("more than a day past"),
        "{body}"
    );
    assert_eq!(points(&d.addr, "m20"), 4);
}

#[test]
fn live_rule_edits_and_broken_edits() {
    let dir = project("rule \"pts\" on purchase then award points 1\n");
    let d = start(dir.path());
    assert_eq!(
        http(&d.addr, "POST", "/v1/events", &purchase("a1", "m", 1.0)).0,
        202
    );
    assert_eq!(points(&d.addr, "m"), 1);
    let rules = dir.path().join("rules/r.rules");
    // Edit: the next event within 2 s uses the new rule.
    std::fs::write(&rules, "rule \"pts\" on purchase then award points 10\n").expect("edit");
    let saved = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        assert_eq!(
            http(
                &d.addr,
                "POST",
                "/v1/events",
                &purchase(&format!("b{n}"), &format!("probe{n}"), 1.0)
            )
            .0,
            202
        );
        if points(&d.addr, &format!("probe{n}")) == 10 {
            break;
        }
        assert!(
            saved.elapsed() < Duration::from_secs(2),
            "the edit was not live within 2 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A broken edit: the old rules keep running, status says where.
    std::fs::write(
        &rules,
        "rule \"pts\" on purchase then award points 100\nwhen tier > 3 then tag \"x\"\n",
    )
    .expect("break");
    let start = Instant::now();
    let status = loop {
        let (_, s) = http(&d.addr, "GET", "/v1/status", "");
        if s.contains("\"ok\":false") {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no failed reload in status: {s}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.contains("\"file\":\"rules/r.rules\"")
            && status.contains("\"line\":2")
            && status.contains("\"column\":6")
            && status.contains("E210"),
        "{status}"
    );
    assert_eq!(
        http(&d.addr, "POST", "/v1/events", &purchase("c1", "old", 1.0)).0,
        202
    );
    assert_eq!(
        points(&d.addr, "old"),
        10,
        "events keep flowing under the old rules"
    );
    // Fixed: the new rules take over (also on demand through POST /v1/reload).
    std::fs::write(&rules, "rule \"pts\" on purchase then award points 100\n").expect("fix");
    let (code, body) = http(&d.addr, "POST", "/v1/reload", "");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        http(&d.addr, "POST", "/v1/events", &purchase("c2", "new", 1.0)).0,
        202
    );
    assert_eq!(points(&d.addr, "new"), 100);
}

#[test]
fn sigterm_during_a_stream_loses_nothing_acknowledged() {
    let dir = project("rule \"pts\" on purchase then award points 1\n");
    let d = start(dir.path());
    let addr = d.addr.clone();
    let poster = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for i in 0..2000 {
            let body = format!(
                "[{},{}]",
                purchase(&format!("x{i}a"), &format!("m{i}"), 1.0),
                purchase(&format!("x{i}b"), &format!("m{i}"), 1.0)
            );
            let Ok(mut s) = TcpStream::connect(&addr) else {
                break;
            };
            let req = format!(
                "POST /v1/events HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            if s.write_all(req.as_bytes()).is_err() {
                break;
            }
            let mut resp = String::new();
            let _ = s.read_to_string(&mut resp);
            if resp.starts_with("HTTP/1.1 202") {
                acked.push(i);
            }
        }
        acked
    });
    std::thread::sleep(Duration::from_millis(300));
    let pid = d.child.id();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    let acked = poster.join().expect("poster");
    let mut d = d;
    let status = d.child.wait().expect("wait");
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
    assert!(
        !acked.is_empty(),
        "some posts were acknowledged before the signal"
    );
    let d2 = start(dir.path());
    for i in acked {
        assert_eq!(
            points(&d2.addr, &format!("m{i}")),
            2,
            "member m{i} had both events acknowledged"
        );
    }
}

#[test]
fn a_second_daemon_on_the_same_folder_exits_at_once() {
    let dir = project("rule \"pts\" on purchase then award points 1\n");
    let _first = start(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_nudge"))
        .current_dir(dir.path())
        .arg("run")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another nudge process"), "{err}");
    assert!(!err.contains("hint:"), "{err}");
    // A command that only reads is pointed to the daemon's HTTP reads (a
    // helper's trial: `nudge segment` said only that the folder is locked).
    for args in [
        &["segment", "tier >= silver", "--count"][..],
        &["member", "m1"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_nudge"))
            .current_dir(dir.path())
            .args(args)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("in use by another nudge process"), "{err}");
        assert!(err.contains("POST /v1/segments/count"), "{err}");
    }
}

fn webhook_project(url: &str) -> tempfile::TempDir {
    let dir = project("rule \"pts\" on purchase then award points 1, tag \"buyer\"\n");
    let config = std::fs::read_to_string(dir.path().join("nudge.yaml")).expect("config");
    std::fs::write(
        dir.path().join("nudge.yaml"),
        format!("{config}  - kind: webhook\n    url: http://{url}/hook\n"),
    )
    .expect("config");
    dir
}

#[test]
fn a_failing_webhook_gets_every_effect_with_the_same_key() {
    let (url, seen) = receiver(3, 200);
    let dir = webhook_project(&url);
    let d = start(dir.path());
    assert_eq!(
        http(&d.addr, "POST", "/v1/events", &purchase("w1", "m", 1.0)).0,
        202
    );
    let start = Instant::now();
    loop {
        let ok = seen
            .lock()
            .expect("log")
            .iter()
            .filter(|r| r.2 == 200)
            .count();
        if ok == 2 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not delivered: {:?}",
            seen.lock().expect("log")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = seen.lock().expect("log").clone();
    assert_eq!(
        log.len(),
        5,
        "3 failures, then one success per effect: {log:?}"
    );
    // The first effect was tried 4 times, always with the same key.
    assert!(
        log[..4].iter().all(|r| r.0 == log[0].0 && !r.0.is_empty()),
        "{log:?}"
    );
    assert_ne!(log[4].0, log[0].0);
    let body: serde_json::Value = serde_json::from_str(&log[0].1).expect("json");
    assert_eq!(body["key"], log[0].0.as_str());
    assert_eq!(body["action"], "points");
    let (_, metrics) = http(&d.addr, "GET", "/metrics", "");
    assert!(
        metrics.contains("result=\"ok\"} 2") && metrics.contains("result=\"failed\"} 3"),
        "{metrics}"
    );
}

#[test]
fn a_permanent_webhook_error_is_dead_lettered() {
    let (url, seen) = receiver(0, 422);
    let dir = webhook_project(&url);
    let d = start(dir.path());
    assert_eq!(
        http(&d.addr, "POST", "/v1/events", &purchase("d1", "m", 1.0)).0,
        202
    );
    let start = Instant::now();
    let status = loop {
        let (_, s) = http(&d.addr, "GET", "/v1/status", "");
        let parsed: serde_json::Value = serde_json::from_str(&s).expect("status JSON");
        if parsed["dead_letters"].as_array().map_or(0, Vec::len) == 2 {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no dead letters: {s}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.contains("\"rule\":\"pts\""), "{status}");
    assert_eq!(seen.lock().expect("log").len(), 2, "no retries for a 4xx");
    // The sink's failure shows in status; writes still work (200).
    let (code, status) = http(&d.addr, "GET", "/v1/status", "");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    assert_eq!(status["ok"], false, "{status}");
    assert_eq!(status["writes"]["ok"], true, "{status}");
    let webhook = &status["sinks"][1];
    assert_eq!(webhook["ok"], false, "{status}");
    assert!(
        webhook["error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 422")),
        "{status}"
    );
}

/// A file sink another data folder owns is refused, and status says so
/// (it said `"ok": true` while no effect reached the file).
#[test]
fn a_refused_file_sink_shows_in_status() {
    let dir = project("rule \"pts\" on purchase then award points floor(event.amount)\n");
    let first = start(dir.path());
    assert_eq!(
        http(
            &first.addr,
            "POST",
            "/v1/events",
            &purchase("o1", "m1", 2.0)
        )
        .0,
        202
    );
    // The file is written after the answer: wait for it.
    let effects = dir.path().join("out/effects.ndjson");
    let start = Instant::now();
    while std::fs::metadata(&effects).map_or(0, |m| m.len()) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no file sink write"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(first);
    let mut cmd = crate::common::daemon_cmd(dir.path());
    cmd.args(["--data", "other"]);
    let d = crate::common::start_cmd(cmd, None);
    assert_eq!(
        http(&d.addr, "POST", "/v1/events", &purchase("o2", "m2", 2.0)).0,
        202
    );
    refused_in_status(&d.addr);
    // After a restart with no traffic, the waiting effects are tried at
    // once: status does not say ok while they cannot go.
    drop(d);
    let mut cmd = crate::common::daemon_cmd(dir.path());
    cmd.args(["--data", "other"]);
    let d = crate::common::start_cmd(cmd, None);
    refused_in_status(&d.addr);
}

/// Waits (up to 20 s: the file is written after the answer) for status
/// to say the file sink is refused, with 200 (writes work).
fn refused_in_status(addr: &str) {
    let start = Instant::now();
    loop {
        let (code, status) = http(addr, "GET", "/v1/status", "");
        assert_eq!(code, 200, "writes work: {status}");
        let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
        let refused = status["sinks"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("belongs to another data folder"));
        if refused {
            assert_eq!(status["ok"], false, "{status}");
            // The effects that cannot go wait, and status says how many.
            assert!(status["outbox"].as_u64().is_some_and(|n| n > 0), "{status}");
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_token_guards_everything_metrics_included() {
    let dir = project("rule \"pts\" on purchase then award points 1\n");
    let config = std::fs::read_to_string(dir.path().join("nudge.yaml")).expect("config");
    std::fs::write(
        dir.path().join("nudge.yaml"),
        config.replace(
            "  listen: 127.0.0.1:0\n",
            "  listen: 127.0.0.1:0\n  token: s3cret\n",
        ),
    )
    .expect("config");
    let d = start(dir.path());
    assert_eq!(
        http(&d.addr, "POST", "/v1/events", &purchase("t1", "m", 1.0)).0,
        401
    );
    assert_eq!(http(&d.addr, "GET", "/v1/status", "").0, 401);
    // Metrics name rules and sinks: the token guards them too.
    assert_eq!(http(&d.addr, "GET", "/metrics", "").0, 401);
    let mut s = TcpStream::connect(&d.addr).expect("connect");
    let body = purchase("t1", "m", 1.0);
    let req = format!(
        "POST /v1/events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer s3cret\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    assert!(resp.starts_with("HTTP/1.1 202"), "{resp}");
}

#[test]
fn plugins_reload_with_the_rules_and_a_broken_plugin_keeps_the_old_set() {
    let dir = project("rule \"pts\" on purchase then call bonus.give(member)\n");
    std::fs::create_dir(dir.path().join("plugins")).expect("plugins");
    let plugin = dir.path().join("plugins/bonus.rhai");
    std::fs::write(&plugin, "fn give(m) { #{points: 1} }").expect("plugin");
    let d = start(dir.path());
    wait_for_points(&d.addr, "a", 1);
    std::fs::write(&plugin, "fn give(m) { #{points: 7} }").expect("edit");
    wait_for_points(&d.addr, "b", 7);
    // A plugin that no longer has the function a rule calls fails the reload.
    std::fs::write(&plugin, "fn gift(m) { #{points: 9} }").expect("break");
    let start = Instant::now();
    loop {
        let (_, s) = http(&d.addr, "GET", "/v1/status", "");
        if s.contains("\"ok\":false") {
            assert!(
                s.contains("E207") && s.contains("has no function `give`") && s.contains("gift/1"),
                "{s}"
            );
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{s}");
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for_points(&d.addr, "c", 7);
}

#[test]
fn the_rules_folder_deleted_and_recreated_is_watched_again() {
    let dir = project("rule \"pts\" on purchase then award points 1\n");
    let d = start(dir.path());
    wait_for_points(&d.addr, "a", 1);
    let rules = dir.path().join("rules");
    std::fs::remove_dir_all(&rules).expect("remove");
    std::thread::sleep(Duration::from_millis(400));
    std::fs::create_dir(&rules).expect("recreate");
    std::fs::write(
        rules.join("r.rules"),
        "rule \"pts\" on purchase then award points 3\n",
    )
    .expect("write");
    wait_for_points(&d.addr, "b", 3);
    // And edits after that are seen too.
    std::fs::write(
        rules.join("r.rules"),
        "rule \"pts\" on purchase then award points 4\n",
    )
    .expect("edit");
    wait_for_points(&d.addr, "c", 4);
}

#[test]
fn a_plugin_sink_formats_what_the_host_sends() {
    let (url, seen) = receiver(1, 200);
    let dir = project("rule \"pts\" on purchase then award points 1\n");
    std::fs::create_dir(dir.path().join("plugins")).expect("plugins");
    std::fs::write(
        dir.path().join("plugins/gw.rhai"),
        format!("fn deliver(effect) {{ #{{ url: \"http://{url}/sms\", headers: #{{ \"X-Member\": effect.member }}, body: `points ${{effect.points}} for ${{effect.member}}` }} }}"),
    )
    .expect("plugin");
    let config = std::fs::read_to_string(dir.path().join("nudge.yaml")).expect("config");
    std::fs::write(
        dir.path().join("nudge.yaml"),
        format!("{config}  - kind: plugin\n    plugin: gw\n"),
    )
    .expect("config");
    let d = start(dir.path());
    assert_eq!(
        http(&d.addr, "POST", "/v1/events", &purchase("p1", "m7", 1.0)).0,
        202
    );
    let start = Instant::now();
    while seen.lock().expect("log").iter().all(|r| r.2 != 200) {
        assert!(start.elapsed() < Duration::from_secs(20), "not delivered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = seen.lock().expect("log").clone();
    assert_eq!(log.len(), 2, "one retry after the first failure: {log:?}");
    assert_eq!(log[0].0, log[1].0, "the host adds the same idempotency key");
    assert_eq!(log[1].1, "points 1 for m7");
}

#[test]
fn status_and_metrics_show_what_is_left_of_a_budget() {
    let dir = project("rule \"pts\" on purchase then award points 1 budget 3\n");
    let d = start(dir.path());
    for i in 0..2 {
        assert_eq!(
            http(
                &d.addr,
                "POST",
                "/v1/events",
                &purchase(&format!("b{i}"), &format!("m{i}"), 1.0)
            )
            .0,
            202
        );
    }
    let (_, status) = http(&d.addr, "GET", "/v1/status", "");
    assert!(
        status.contains(r#""budgets":[{"left":"1","rule":"pts","total":"3","used":"2"}]"#),
        "{status}"
    );
    let (_, metrics) = http(&d.addr, "GET", "/metrics", "");
    assert!(
        metrics.contains("nudge_budget_left{rule=\"pts\"} 1"),
        "{metrics}"
    );
    // Regression: after a restart both were empty until the first request
    // (the writer publishes them as it starts).
    drop(d);
    let d = start(dir.path());
    wait_until(
        std::time::Duration::from_secs(20),
        "the budget in the status after a restart",
        || {
            let (_, status) = http(&d.addr, "GET", "/v1/status", "");
            status.contains(r#""budgets":[{"left":"1","rule":"pts","total":"3","used":"2"}]"#)
        },
    );
    let (_, metrics) = http(&d.addr, "GET", "/metrics", "");
    assert!(
        metrics.contains("nudge_budget_left{rule=\"pts\"} 1"),
        "{metrics}"
    );
}

fn reloads(addr: &str) -> u64 {
    let (_, s) = http(addr, "GET", "/v1/status", "");
    serde_json::from_str::<serde_json::Value>(&s).expect("json")["reloads"]
        .as_u64()
        .expect("reloads")
}

#[test]
fn sighup_reloads_and_a_burst_of_saves_is_one_reload() {
    let dir = project("rule \"pts\" on purchase then award points 1\n");
    let d = start(dir.path());
    assert_eq!(reloads(&d.addr), 0);
    Command::new("kill")
        .args(["-HUP", &d.child.id().to_string()])
        .status()
        .expect("kill");
    let start = Instant::now();
    while reloads(&d.addr) < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "SIGHUP did not reload"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // 200 files written in a burst (a checkout) become one reload.
    for i in 0..200 {
        std::fs::write(
            dir.path().join(format!("rules/gen{i:03}.rules")),
            format!("rule \"r{i}\" on purchase then tag \"t{i}\"\n"),
        )
        .expect("write");
    }
    let start = Instant::now();
    loop {
        let (_, s) = http(&d.addr, "GET", "/v1/status", "");
        if s.contains("\"rules\":201") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{s}");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(reloads(&d.addr), 2, "one reload for the burst");
}

/// A file that changes every 100 ms in the rules folder (a sync tool, a
/// log) once postponed reloads for ever: the debounce has a maximum wait,
/// and a rule edit is live within 3 s all the same.
#[test]
fn a_file_changing_all_the_time_does_not_postpone_reloads() {
    let dir = project("rule \"pts\" on purchase then award points 1\n");
    let d = start(dir.path());
    let busy = dir.path().join("rules/busy.rules");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let toucher = {
        let (busy, stop) = (busy.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let _ = std::fs::write(&busy, format!("# save {i}\n"));
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(
        dir.path().join("rules/r.rules"),
        "rule \"pts\" on purchase then award points 10\n",
    )
    .expect("edit");
    let saved = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let ev = purchase(&format!("b{n}"), &format!("probe{n}"), 1.0);
        assert_eq!(http(&d.addr, "POST", "/v1/events", &ev).0, 202);
        if points(&d.addr, &format!("probe{n}")) == 10 {
            break;
        }
        assert!(
            saved.elapsed() < Duration::from_secs(3),
            "the edit was not live within 3 s while another file kept changing"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    toucher.join().expect("toucher");
}

/// A stop after a failed reload says that the next start will refuse the
/// files as they are.
#[test]
fn a_stop_after_a_failed_reload_warns_that_the_next_start_refuses() {
    let dir = project("rule \"pts\" on purchase then award points 1\n");
    let mut d = start_logged(dir.path());
    std::fs::write(
        dir.path().join("rules/r.rules"),
        "when tier > 3 then tag \"x\"\n",
    )
    .expect("break");
    wait_until(Duration::from_secs(30), "no failed reload", || {
        http(&d.addr, "GET", "/v1/status", "")
            .1
            .contains("\"failed_reloads\":1")
    });
    let logs = d.stop();
    assert!(
        logs.contains("The last reload failed: the next start refuses the files as they are now"),
        "{logs}"
    );
}

/// An edit saved just before a stop (inside the watcher's debounce) was
/// never run: the stop says so, and says whether the next start will run
/// the files or refuse them.
#[test]
fn a_stop_says_when_the_files_changed_after_the_last_reload() {
    for (edit, said) in [
        (
            "rule \"pts\" on purchase then award points 2\n",
            "The files changed after the last reload and were never run",
        ),
        (
            "when tier > 3 then tag \"x\"\n",
            "The files as they are now do not load",
        ),
    ] {
        let dir = project("rule \"pts\" on purchase then award points 1\n");
        let mut d = start_logged(dir.path());
        std::fs::write(dir.path().join("rules/r.rules"), edit).expect("edit");
        let logs = d.stop();
        assert!(logs.contains(said), "{logs}");
        assert!(!logs.contains("Rules reloaded."), "{logs}");
    }
}

/// A SIGHUP or SIGTERM sent the moment the daemon says it listens is
/// handled (a reload, a clean stop), not met by the default action that
/// ends the process: the handlers are in place before the announcement.
#[test]
fn signals_right_after_the_announcement_are_handled() {
    for _ in 0..10 {
        let dir = project("rule \"pts\" on purchase then award points 1\n");
        let mut d = start(dir.path());
        let hup = Command::new("kill")
            .args(["-HUP", &d.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(hup.success());
        // Exits 0 after a clean stop; a process the SIGHUP ended does not.
        d.stop();
    }
}

/// Messages held for quiet hours are counted in status and metrics while
/// they wait (an operator saw nothing: `outbox` is 0 until they are
/// released; a helper's trial).
#[test]
fn messages_held_for_quiet_hours_show_in_status_and_metrics() {
    let config = format!("{CONFIG}channels:\n  sms: {{ quiet_hours: \"21:00-09:00\" }}\n");
    let dir = project_with(
        &config,
        "rule \"hi\" on purchase then send message \"hi\" via sms\n",
    );
    let d = start(dir.path());
    // 22:00 UTC today: held until 09:00 tomorrow, after the test ends.
    let today = nudge::base::time::day_string(nudge::base::time::utc_day(jiff::Timestamp::now()));
    for (id, member) in [("q1", "m1"), ("q2", "m2")] {
        let event = format!(
            r#"{{"id":"{id}","type":"purchase","member":"{member}","at":"{today}T22:00:00Z","amount":5}}"#
        );
        let (code, b) = http(&d.addr, "POST", "/v1/events", &event);
        assert_eq!(code, 202, "{b}");
    }
    wait_until(
        Duration::from_secs(10),
        "two held messages in status",
        || {
            let (_, s) = http(&d.addr, "GET", "/v1/status", "");
            serde_json::from_str::<serde_json::Value>(&s).is_ok_and(|v| v["deferred"] == 2)
        },
    );
    let (_, metrics) = http(&d.addr, "GET", "/metrics", "");
    assert!(
        metrics.lines().any(|l| l == "nudge_deferred 2"),
        "{metrics}"
    );
    // A restart counts them from the store.
    drop(d);
    let d = start(dir.path());
    let (_, s) = http(&d.addr, "GET", "/v1/status", "");
    let v: serde_json::Value = serde_json::from_str(&s).expect("status");
    assert_eq!(v["deferred"], 2, "{s}");
}

#[test]
fn a_plugins_failures_show_in_status_with_what_failed() {
    let dir = project_with(
        CONFIG,
        "rule \"partner\" on purchase then call partner.offer(member)\n",
    );
    std::fs::create_dir(dir.path().join("plugins")).expect("plugins");
    std::fs::write(
        dir.path().join("plugins/partner.rhai"),
        "fn offer(member) { throw \"the partner did not answer\"; }\n",
    )
    .expect("plugin");
    let d = start(dir.path());
    let event =
        r#"{"id":"p1","type":"purchase","member":"m1","at":"2026-01-05T12:00:00Z","amount":5}"#;
    let (code, b) = http(&d.addr, "POST", "/v1/events", event);
    assert_eq!(code, 202, "{b}");
    let (_, s) = http(&d.addr, "GET", "/v1/status", "");
    let v: serde_json::Value = serde_json::from_str(&s).expect("status");
    assert_eq!(v["plugin_failures"], 1, "{s}");
    assert_eq!(
        v["plugin_errors"],
        serde_json::json!([{"plugin": "partner", "function": "offer", "rule": "partner", "error": "threw: the partner did not answer"}]),
        "{s}"
    );
}

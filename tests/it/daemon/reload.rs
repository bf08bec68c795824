//! Live reload under stress, through the real daemon and a real folder:
//! the ways editors save, 500 files at once, a symlink swap, edits while
//! events stream in (every event's effects come from one rule set), and a
//! rule removed while its effects wait in the outbox (still delivered),
//! and the editors' saves again with polling instead of inotify.
//! A file saved unchanged is no new rule set. A folder deleted and
//! recreated is in `daemon::service`.

use crate::common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn rule(points: i64) -> String {
    format!("rule \"pts\" on purchase then award points {points}\n")
}

fn status(addr: &str) -> serde_json::Value {
    let (code, body) = http(addr, "GET", "/v1/status", "");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

#[test]
fn every_way_an_editor_saves_is_picked_up_and_none_breaks_a_reload() {
    editor_saves(&[]);
}

/// Polling (`--watch poll`, and what the daemon falls back to when the
/// kernel refuses inotify) sees the same edits.
#[test]
fn polling_sees_every_way_an_editor_saves() {
    let (d, _dir) = editor_saves(&["--watch", "poll"]);
    assert!(
        d.logs().contains("Polling the rules folder"),
        "{}",
        d.logs()
    );
}

fn editor_saves(args: &[&str]) -> (Daemon, tempfile::TempDir) {
    let dir = project(&rule(1));
    let mut cmd = daemon_cmd(dir.path());
    cmd.args(args);
    let d = start_cmd(cmd, Some(dir.path().join("daemon.log")));
    let rules = dir.path().join("rules");
    let file = rules.join("r.rules");
    wait_for_points(&d.addr, "a", 1);
    // vim: swap file, the old file renamed to a backup, a new file written,
    // the backup and swap file removed.
    std::fs::write(rules.join(".r.rules.swp"), b"\x00binary swap").expect("swp");
    std::fs::rename(&file, rules.join("r.rules~")).expect("backup");
    std::fs::write(&file, rule(2)).expect("write");
    std::fs::remove_file(rules.join("r.rules~")).expect("rm backup");
    std::fs::remove_file(rules.join(".r.rules.swp")).expect("rm swp");
    wait_for_points(&d.addr, "vim", 2);
    // Truncate, then write a moment later (editors that save in place).
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&file).expect("truncate");
        std::thread::sleep(Duration::from_millis(30));
        f.write_all(rule(3).as_bytes()).expect("write");
    }
    wait_for_points(&d.addr, "trunc", 3);
    // `cp` over the file.
    let elsewhere = dir.path().join("new.rules");
    std::fs::write(&elsewhere, rule(4)).expect("write");
    std::fs::copy(&elsewhere, &file).expect("cp");
    wait_for_points(&d.addr, "cp", 4);
    // A temp file in the folder, `mv`-ed over (VS Code, IntelliJ, sed -i).
    let tmp = rules.join(".r.rules.tmp.123");
    std::fs::write(&tmp, rule(5)).expect("write");
    std::fs::rename(&tmp, &file).expect("mv");
    wait_for_points(&d.addr, "mv", 5);
    let s = status(&d.addr);
    assert_eq!(s["failed_reloads"], 0, "{s}");
    assert_eq!(s["rules"], 1, "swap and temp files are not rules: {s}");
    (d, dir)
}

#[test]
fn five_hundred_files_changed_at_once_are_one_consistent_set() {
    let dir = project(&rule(1));
    let d = start(dir.path());
    let rules = dir.path().join("rules");
    let write_all = |version: usize| {
        for i in 0..500 {
            std::fs::write(
                rules.join(format!("gen{i:03}.rules")),
                format!("rule \"r{i}\" on purchase then tag \"v{version}-{i}\"\n"),
            )
            .expect("write");
        }
    };
    write_all(1);
    wait_until(Duration::from_secs(10), "500 new files not loaded", || {
        status(&d.addr)["rules"] == 501
    });
    let before = status(&d.addr)["reloads"].as_u64().expect("reloads");
    // All 500 changed at once (a checkout): the last file's edit is live,
    // and the burst was a handful of reloads, not 500.
    write_all(2);
    wait_until(Duration::from_secs(10), "the checkout not loaded", || {
        let (code, _) = http(
            &d.addr,
            "POST",
            "/v1/events",
            &purchase(&format!("p{}", rand_id()), "probe", 1.0),
        );
        assert_eq!(code, 202);
        member_json(&d.addr, "probe")["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "v2-499"))
    });
    let s = status(&d.addr);
    let reloads = s["reloads"].as_u64().expect("reloads") - before;
    assert!(
        (1..=3).contains(&reloads),
        "{reloads} reloads for one checkout"
    );
    assert_eq!(s["failed_reloads"], 0, "{s}");
}

fn rand_id() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

#[test]
fn a_symlink_swap_switches_the_whole_rules_folder() {
    let dir = project(&rule(1));
    let p = dir.path();
    std::fs::rename(p.join("rules"), p.join("rules.v1")).expect("mv");
    std::os::unix::fs::symlink("rules.v1", p.join("rules")).expect("symlink");
    let d = start(p);
    wait_for_points(&d.addr, "a", 1);
    std::fs::create_dir(p.join("rules.v2")).expect("v2");
    std::fs::write(p.join("rules.v2/r.rules"), rule(7)).expect("write");
    // The atomic swap deploy tools do: a new link renamed over the old.
    std::os::unix::fs::symlink("rules.v2", p.join("rules.next")).expect("symlink");
    std::fs::rename(p.join("rules.next"), p.join("rules")).expect("swap");
    wait_for_points(&d.addr, "b", 7);
    // And edits inside the new target are watched.
    std::fs::write(p.join("rules.v2/r.rules"), rule(8)).expect("edit");
    wait_for_points(&d.addr, "c", 8);
}

#[test]
fn edits_during_heavy_ingest_give_each_event_one_rule_set() {
    let body = |points: i64| {
        format!(
            "rule \"pts\" on purchase then award points {points}, tag \"v{points}\"\nrule \"big\" on purchase when event.amount >= 0 then tag \"seen{points}\"\n"
        )
    };
    let dir = project(&body(1));
    let d = start(dir.path());
    let addr = d.addr.clone();
    let done = Arc::new(AtomicBool::new(false));
    let stop = done.clone();
    let poster = std::thread::spawn(move || {
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let batch: Vec<String> = (0..20)
                .map(|i| {
                    purchase(
                        &format!("h{n}-{i}"),
                        &format!("m{}", (n * 20 + i) % 500),
                        1.0,
                    )
                })
                .collect();
            let (code, reply) = http(
                &addr,
                "POST",
                "/v1/events",
                &format!("[{}]", batch.join(",")),
            );
            assert_eq!(code, 202, "{reply}");
            n += 1;
        }
        n
    });
    let file = dir.path().join("rules/r.rules");
    for version in 2..=9 {
        std::thread::sleep(Duration::from_millis(400));
        std::fs::write(&file, body(version)).expect("edit");
    }
    std::thread::sleep(Duration::from_millis(600));
    done.store(true, Ordering::Relaxed);
    let requests = poster.join().expect("poster");
    assert!(requests > 20, "only {requests} requests");
    // The file sink is written after each commit's answers go out: under
    // load the last ones may still be on their way.
    let sink = dir.path().join("out/effects.ndjson");
    wait_until(
        Duration::from_secs(30),
        "the sink has every event's effects",
        || std::fs::read_to_string(&sink).is_ok_and(|o| o.lines().count() >= requests * 20),
    );
    let out = std::fs::read_to_string(&sink).expect("sink");
    // trigger -> rule set versions; rule set version -> points it awards.
    let mut by_trigger: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    let mut points: std::collections::BTreeMap<String, std::collections::BTreeSet<i64>> =
        Default::default();
    for line in out.lines() {
        let e: serde_json::Value = serde_json::from_str(line).expect("effect");
        let version = e["ruleset"].as_str().expect("ruleset").to_string();
        by_trigger
            .entry(e["trigger"].as_str().expect("trigger").to_string())
            .or_default()
            .insert(version.clone());
        if let Some(p) = e["points"].as_i64() {
            points.entry(version).or_default().insert(p);
        }
    }
    assert_eq!(by_trigger.len(), requests * 20, "an effect set per event");
    for (trigger, versions) in &by_trigger {
        assert_eq!(versions.len(), 1, "{trigger} mixes rule sets: {versions:?}");
    }
    for (version, p) in &points {
        assert_eq!(p.len(), 1, "version {version} awarded {p:?}");
    }
    assert!(
        points.len() >= 4,
        "only {} rule sets seen while editing",
        points.len()
    );
    assert_eq!(status(&d.addr)["failed_reloads"], 0);
}

#[test]
fn a_removed_rule_s_effects_still_in_the_outbox_are_delivered() {
    let down = Arc::new(AtomicBool::new(true));
    let flag = down.clone();
    let (url, seen) = receiver_with(move |_| {
        if flag.load(Ordering::Relaxed) {
            503
        } else {
            200
        }
    });
    let config = format!("{CONFIG}  - kind: webhook\n    url: http://{url}/hook\n");
    let dir = project_with(
        &config,
        "rule \"farewell\" on purchase then send coupon 10-2\n",
    );
    let d = start(dir.path());
    let (code, body) = http(&d.addr, "POST", "/v1/events", &purchase("f1", "m1", 5.0));
    assert_eq!(code, 202, "{body}");
    // The webhook is down; the rule goes away.
    std::fs::write(dir.path().join("rules/r.rules"), rule(1)).expect("edit");
    wait_for_points(&d.addr, "after", 1);
    assert!(status(&d.addr)["ruleset"].is_string());
    down.store(false, Ordering::Relaxed);
    wait_until(
        Duration::from_secs(40),
        "the removed rule's coupon was not delivered",
        || {
            seen.lock()
                .expect("log")
                .iter()
                .any(|(_, body, code)| *code == 200 && body.contains("\"rule\":\"farewell\""))
        },
    );
    wait_outbox_empty(&d.addr);
}

fn wait_outbox_empty(addr: &str) {
    wait_until(Duration::from_secs(20), "the outbox did not drain", || {
        let (_, m) = http(addr, "GET", "/metrics", "");
        m.lines().any(|l| l == "nudge_outbox_depth 0")
    });
}

/// A webhook taken out of the config by a reload stops getting effects,
/// and put back, gets what it missed: each effect once.
#[test]
fn a_webhook_follows_the_config_through_reloads() {
    let (url, seen) = receiver(0, 200);
    let hook = format!("  - kind: webhook\n    url: http://{url}/hook\n");
    let with_hook = format!("{CONFIG}{hook}");
    let dir = project_with(
        &with_hook,
        "rule \"hello\" on purchase then tag \"hello\"\n",
    );
    let d = start(dir.path());
    let got = |id: &str| {
        seen.lock()
            .expect("log")
            .iter()
            .filter(|(_, body, _)| body.contains(&format!("event:{id}\"")))
            .count()
    };
    let post = |id: &str, member: &str| {
        let (code, body) = http(&d.addr, "POST", "/v1/events", &purchase(id, member, 5.0));
        assert_eq!(code, 202, "{body}");
    };
    post("a", "m1");
    wait_until(Duration::from_secs(20), "the webhook never got a", || {
        got("a") == 1
    });
    // Out: the next effect waits.
    std::fs::write(dir.path().join("nudge.yaml"), CONFIG).expect("config");
    wait_until(Duration::from_secs(30), "the reload never came", || {
        status(&d.addr)["reloads"] == 1
    });
    post("b", "m2");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(got("b"), 0, "a webhook out of the config got an effect");
    let s = status(&d.addr);
    assert!(!s["sinks"].to_string().contains("webhook"), "{s}");
    assert_eq!(s["outbox"], 1, "kept for the webhook: {s}");
    // Back: it catches up, without another event.
    std::fs::write(dir.path().join("nudge.yaml"), &with_hook).expect("config");
    wait_until(
        Duration::from_secs(30),
        "the webhook never caught up",
        || got("b") == 1,
    );
    assert!(status(&d.addr)["sinks"].to_string().contains("webhook"));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!((got("a"), got("b")), (1, 1), "each effect once");
}

/// A rule file saved as it was (or touched) loads to the same version:
/// the daemon says the rules are unchanged, not reloaded.
#[test]
fn a_file_saved_unchanged_is_not_a_new_rule_set() {
    let dir = project(&rule(1));
    let d = start_logged(dir.path());
    let file = dir.path().join("rules/r.rules");
    std::fs::write(&file, rule(1)).expect("save unchanged");
    wait_until(Duration::from_secs(30), "no reload after the save", || {
        status(&d.addr)["reloads"] == 1
    });
    let logs = d.logs();
    assert!(logs.contains("Rules unchanged."), "{logs}");
    assert!(!logs.contains("Rules reloaded."), "{logs}");
    std::fs::write(&file, rule(3)).expect("edit");
    wait_for_points(&d.addr, "after", 3);
    assert!(d.logs().contains("Rules reloaded."), "{}", d.logs());
}

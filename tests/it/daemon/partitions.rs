//! The daemon on a data folder of partitions (`storage.partitions`): HTTP
//! ingest commits each partition's share, members are read from their
//! partition, a webhook gets every effect once from every partition, file
//! sinks write a file per partition; after a restart a redelivery is a
//! duplicate; segments count every partition; a budget is spent exactly
//! over the partitions, relays reach members of other partitions before
//! the answer; One ID merges members of two partitions, found by any name
//! after a restart.

use crate::common::*;

const CONFIG: &str = "timezone: UTC\ntiers: [bronze, silver]\nevents:\n  purchase:\n    amount: money\nhttp:\n  listen: 127.0.0.1:0\nstorage:\n  partitions: 3\n";

const RULES: &str = "rule \"pts\" on purchase then award points floor(event.amount)\n\
                     rule \"silver\" on purchase when spend >= 100 then set tier silver\n";

/// 60 members, two purchases of 30 and 80 each: 120 point effects and 60
/// tier changes.
fn body(from: usize) -> String {
    let events: Vec<String> = (from..from + 60)
        .flat_map(|m| {
            [
                purchase(&format!("a{m}"), &format!("m{m}"), 30.0),
                purchase(&format!("b{m}"), &format!("m{m}"), 80.0),
            ]
        })
        .collect();
    format!("[{}]", events.join(","))
}

#[test]
fn the_daemon_runs_a_folder_of_partitions() {
    let (hook, received) = receiver(0, 200);
    let config = format!(
        "{CONFIG}sinks:\n  - kind: file\n    path: out/effects.ndjson\n  - kind: webhook\n    url: http://{hook}/fx\n"
    );
    let dir = project_with(&config, RULES);
    {
        let mut d = start(dir.path());
        let (code, b) = http(&d.addr, "POST", "/v1/events", &body(0));
        assert_eq!(code, 202, "{b}");
        assert!(b.contains("\"applied\":120"), "{b}");
        for m in [0, 17, 59] {
            let rec = member_json(&d.addr, &format!("m{m}"));
            assert_eq!(rec["points"], 110, "m{m}: {rec}");
            assert_eq!(rec["tier"], "silver", "m{m}");
        }
        let (_, metrics) = http(&d.addr, "GET", "/metrics", "");
        assert!(metrics.contains("nudge_members 60"), "{metrics}");
        let (code, b) = http(
            &d.addr,
            "POST",
            "/v1/segments/count",
            r#"{"when":"spend > 0"}"#,
        );
        assert_eq!((code, b.as_str()), (200, r#"{"count":60,"members":60}"#));
        wait_until(std::time::Duration::from_secs(20), "180 deliveries", || {
            received.lock().expect("log").len() >= 180
        });
        d.stop();
    }
    let data = dir.path().join("data");
    for k in 0..3 {
        assert!(data.join(format!("p{k}")).is_dir(), "p{k}");
    }
    let mut lines = 0;
    for k in 0..3 {
        let file = dir.path().join(format!("out/effects-p{k}.ndjson"));
        let text = std::fs::read_to_string(&file).expect("a file per partition");
        assert!(!text.is_empty(), "p{k}");
        lines += text.lines().count();
    }
    assert_eq!(lines, 180);
    let keys: std::collections::BTreeSet<String> = received
        .lock()
        .expect("log")
        .iter()
        .map(|(k, _, _)| k.clone())
        .collect();
    assert_eq!(keys.len(), 180, "each effect once");

    // After a restart: the same events are duplicates, new ones apply.
    let d = start(dir.path());
    let (code, b) = http(&d.addr, "POST", "/v1/events", &body(0));
    assert_eq!(code, 202, "{b}");
    assert!(
        b.contains("\"applied\":0") && b.contains("\"duplicates\":120"),
        "{b}"
    );
    let (code, b) = http(&d.addr, "POST", "/v1/events", &body(60));
    assert_eq!(code, 202, "{b}");
    assert!(b.contains("\"applied\":120"), "{b}");
    assert_eq!(member_json(&d.addr, "m100")["points"], 110);

    // A budget is shared by the partitions: the status reports its total.
    std::fs::write(
        dir.path().join("rules/r.rules"),
        format!("{RULES}rule \"gift\" on purchase then award points 5 budget 25\nrule \"thanks\" on purchase when event.amount > 50 then award points 1 to \"m0\"\n"),
    )
    .expect("rules");
    wait_until(std::time::Duration::from_secs(20), "the reload", || {
        let (_, s) = http(&d.addr, "GET", "/v1/status", "");
        serde_json::from_str::<serde_json::Value>(&s).is_ok_and(|v| v["rules"] == 4)
    });
    let (code, b) = http(&d.addr, "POST", "/v1/events", &body(120));
    assert_eq!(code, 202, "{b}");
    let (_, s) = http(&d.addr, "GET", "/v1/status", "");
    let status: serde_json::Value = serde_json::from_str(&s).expect("status");
    assert_eq!(
        status["budgets"][0],
        serde_json::json!({"rule": "gift", "used": "25", "total": "25", "left": "0"}),
        "{s}"
    );
    let points: i64 = (120..180)
        .map(|m| {
            member_json(&d.addr, &format!("m{m}"))["points"]
                .as_i64()
                .expect("points")
        })
        .sum();
    assert_eq!(points, 60 * 110 + 25 * 5, "25 gifts of 5 in all");
    // A thank-you from each of 60 members, most in other partitions, in
    // m0's record when the request is answered.
    assert_eq!(member_json(&d.addr, "m0")["points"], 110 + 60);
}

/// One ID over partitions through the daemon: an event that links two
/// members of different partitions merges them (as one partition does),
/// and any of their names finds the survivor from then on, also after a
/// restart; a resent request is all duplicates.
#[test]
fn one_id_merges_members_of_two_partitions() {
    let dir = project_with(&format!("{CONFIG}ids: [phone, card]\n"), RULES);
    // Two members in different partitions.
    let (a, b) = (0..60)
        .map(|m| format!("m{m}"))
        .find_map(|x| {
            let k = nudge::store::folder::partition_of(&x, 3);
            (0..60)
                .map(|m| format!("m{m}"))
                .find(|y| nudge::store::folder::partition_of(y, 3) != k)
                .map(|y| (x.clone(), y))
        })
        .expect("two partitions");
    let ev = |id: &str, member: &str, ids: &str, amount: f64| {
        format!(
            r#"{{"id":"{id}","type":"purchase","member":"{member}","ids":{ids},"at":"2026-01-01T12:00:00Z","amount":{amount}}}"#
        )
    };
    let first = format!(
        "[{},{}]",
        ev("i1", &a, r#"{"phone":"1"}"#, 30.0),
        ev("i2", &b, r#"{"card":"9"}"#, 80.0)
    );
    // b turns out to have a's phone: a merges into b (named).
    let link = format!("[{}]", ev("i3", &b, r#"{"phone":"1"}"#, 5.0));
    {
        let d = start(dir.path());
        for body in [&first, &link] {
            let (code, r) = http(&d.addr, "POST", "/v1/events", body);
            assert_eq!(code, 202, "{r}");
        }
        for name in [a.as_str(), b.as_str(), "phone:1", "card:9"] {
            let m = member_json(&d.addr, name);
            assert_eq!(m["member"], b.as_str(), "{name}: {m}");
            assert_eq!(m["points"], 115, "{name}: {m}");
        }
    }
    let d = start(dir.path());
    let (code, r) = http(&d.addr, "POST", "/v1/events", &link);
    assert_eq!(code, 202, "{r}");
    assert!(r.contains("\"duplicates\":1"), "{r}");
    let (code, r) = http(
        &d.addr,
        "POST",
        "/v1/events",
        &format!("[{}]", ev("i4", &a, "{}", 1.0)),
    );
    assert_eq!(code, 202, "{r}");
    assert_eq!(member_json(&d.addr, "phone:1")["points"], 116);
    assert_eq!(member_json(&d.addr, &a)["member"], b.as_str());
}

/// The partitions tick at the same time: every member of each is visited
/// once, a budget shared by the partitions is spent exactly, and the log
/// sums what each partition's tick did.
#[test]
fn the_partitions_tick_at_the_same_time() {
    let rules = "rule \"late\" on tick when days_since_last_purchase > 30 then tag \"late\"\n\
                 rule \"gift\" on tick when days_since_last_purchase > 30 then award points 5 budget 25\n";
    let dir = project_with(CONFIG, rules);
    let events: Vec<String> = (0..60)
        .map(|m| purchase(&format!("e{m}"), &format!("m{m}"), 10.0))
        .collect();
    ingest(dir.path(), &events);
    let mut d = start_logged(dir.path());
    wait_until(
        std::time::Duration::from_secs(30),
        "the start's tick",
        || d.logs().contains("Daily tick done."),
    );
    // Status says which day ticked last: the day the log names.
    let (_, s) = http(&d.addr, "GET", "/v1/status", "");
    let status: serde_json::Value = serde_json::from_str(&s).expect("status");
    let last = status["ticks"]["last"].as_str().expect("a last tick day");
    assert!(
        d.logs().contains(&format!("days=[\"{last}\"]")),
        "{s}\n{}",
        d.logs()
    );
    let (mut tagged, mut points) = (0, 0);
    for m in 0..60 {
        let rec = member_json(&d.addr, &format!("m{m}"));
        tagged += usize::from(rec["tags"].to_string().contains("late"));
        points += rec["points"].as_i64().expect("points");
    }
    let logs = d.stop();
    assert_eq!((tagged, points), (60, 25 * 5), "{logs}");
    // 60 tags, 25 gifts and 35 recorded as capped by the budget.
    assert!(
        logs.contains("visited=60") && logs.contains("effects=120"),
        "{logs}"
    );
}

//! Daily ticks through the stream: the holder of a partition publishes
//! the partition's tick to its events stream when it is due, and it is
//! applied where the stream has it, so a partition rebuilt on another
//! node ticks at the same point of its history.

use super::{Nats, block_on, held, node_with, project, published};
use crate::common::{http, wait_until};
use std::time::Duration;

/// Publishes what a holder publishes for a tick of `day` to partition
/// `p`'s events subject.
fn publish_tick(nats: &str, p: usize, day: &str) {
    block_on(async {
        let client = async_nats::connect(nats).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("tick:{day}:p{p}").as_str());
        headers.insert("Nudge-Tick", "1");
        let ack = js
            .publish_with_headers(format!("nudge.events.{p}"), headers, day.to_string().into())
            .await
            .expect("publish");
        ack.await.expect("stored");
    });
}

fn purchase(id: &str, member: &str, at: jiff::Timestamp) -> String {
    format!(r#"[{{"id":"{id}","type":"purchase","member":"{member}","at":"{at}","amount":50}}]"#)
}

/// The member as `addr` reads it (null until its first event is applied:
/// a 202 says the event is in the stream; 503 while a node that took its
/// partition rebuilds it).
fn member(addr: &str, id: &str) -> serde_json::Value {
    let (code, body) = http(addr, "GET", &format!("/v1/members/{id}"), "");
    if code == 404 || code == 503 {
        return serde_json::Value::Null;
    }
    assert_eq!(code, 200, "{body}");
    let mut v: serde_json::Value = serde_json::from_str(&body).expect("json");
    if let Some(o) = v.as_object_mut() {
        o.remove("as_of");
        o.remove("predictions");
    }
    v
}

#[test]
fn a_partition_rebuilt_elsewhere_ticks_where_its_stream_says() {
    let nats = Nats::start();
    let dir = project();
    let d = dir.path();
    std::fs::write(
        d.join("rules/lapsed.rules"),
        "rule \"lapsed\"\n  on tick\n  when days_since_last_purchase > 20\n  then tag \"lapsed\"\n",
    )
    .expect("rule");
    let never = ["--snapshot-every", "0"];
    let mut a = node_with(d, &nats.url, "a", "1", &never);
    // The day's tick of each partition, published by `a` at its start and
    // applied from the stream.
    wait_until(Duration::from_secs(20), "the start's ticks", || {
        a.logs().matches("Daily tick done.").count() >= 4
    });
    let now = jiff::Timestamp::now();
    let (code, body) = http(
        &a.addr,
        "POST",
        "/v1/events",
        &purchase("old", "lm", now - jiff::SignedDuration::from_hours(40 * 24)),
    );
    assert_eq!(code, 202, "{body}");
    // The next day's tick, as the holder publishes it, after that purchase.
    let tomorrow = (now + jiff::SignedDuration::from_hours(24))
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .date()
        .to_string();
    let p = nudge::store::folder::partition_of("lm", 4);
    publish_tick(&nats.url, p, &tomorrow);
    wait_until(Duration::from_secs(10), "lm lapsed on a", || {
        member(&a.addr, "lm")["tags"].to_string().contains("lapsed")
    });
    let (code, body) = http(
        &a.addr,
        "POST",
        "/v1/events",
        &purchase("new", "lm", now - jiff::SignedDuration::from_hours(1)),
    );
    assert_eq!(code, 202, "{body}");
    wait_until(Duration::from_secs(10), "lm's second order on a", || {
        member(&a.addr, "lm")["orders"] == 2
    });
    let on_a = member(&a.addr, "lm");
    let _ = a.child.kill();
    let _ = a.child.wait();
    // `b` has no copy and no snapshot: it applies the whole stream, the
    // tick between the two purchases included. Ticking by its own clock
    // after them, it would not tag lm (one day since the last purchase).
    let b = node_with(d, &nats.url, "b", "1", &never);
    wait_until(Duration::from_secs(10), "b holds every partition", || {
        held(&b).len() == 4
    });
    wait_until(Duration::from_secs(20), "lm on b as on a", || {
        member(&b.addr, "lm") == on_a
    });
    assert!(on_a["tags"].to_string().contains("lapsed"), "{on_a}");
    let logs = b.logs();
    assert!(logs.contains(&format!("day={tomorrow}")), "{logs}");
    let counts = published(&nats.url).counts;
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
}

/// Rules that read predictions: at a refitting tick each partition's
/// holder publishes the partition's histories, and every partition ticks
/// with the one fit made from them all, the fit one node makes of the
/// same members; a partition rebuilt on another node ticks with it too.
#[test]
fn a_refitting_tick_fits_over_every_partition_as_one_node_does() {
    let nats = Nats::start();
    let dir = project();
    let d = dir.path();
    std::fs::write(
        d.join("rules/fading.rules"),
        "rule \"fading\"\n  on tick\n  when p_alive < 0.5\n  then tag \"fading\"\n",
    )
    .expect("rule");
    let never = ["--snapshot-every", "0"];
    let mut a = node_with(d, &nats.url, "a", "2", &never);
    let b = node_with(d, &nats.url, "b", "2", &never);
    super::wait_for_spread(&[&a, &b]);
    let now = jiff::Timestamp::now();
    let mut orders = Vec::new();
    for m in 0..40 {
        for k in 0..(m % 5 + 1) {
            let days = 30 + (m * 13 + k * (m % 7 + 9) * 4) % 300;
            let at = now - jiff::SignedDuration::from_hours(24 * days as i64);
            orders.push((at, format!("o{m}-{k}"), format!("f{m}")));
        }
    }
    // In time order, as a shop's history comes: older than the dedup
    // window behind a member's partition's newest is refused.
    orders.sort();
    let events: Vec<String> = orders
        .iter()
        .map(|(at, id, member)| purchase(id, member, *at))
        .collect();
    for e in &events {
        let (code, body) = http(&a.addr, "POST", "/v1/events", e);
        assert_eq!(code, 202, "{body}");
    }
    let tomorrow = (now + jiff::SignedDuration::from_hours(24))
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .date()
        .to_string();
    wait_until(Duration::from_secs(20), "every order applied", || {
        (0..40).all(|m| member(&b.addr, &format!("f{m}"))["orders"] == m % 5 + 1)
    });
    for p in 0..4 {
        publish_tick(&nats.url, p, &tomorrow);
    }
    let fitted = "Repurchase models fitted over every partition.";
    wait_until(Duration::from_secs(30), "each partition fitted", || {
        a.logs().matches(fitted).count() + b.logs().matches(fitted).count() >= 4
    });
    // One node's fit of the same members, counted to the same day.
    let lines: String = events
        .iter()
        .map(|e| e.trim_start_matches('[').trim_end_matches(']').to_string() + "\n")
        .collect();
    std::fs::write(d.join("single.ndjson"), lines).expect("events");
    let single = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_nudge"))
            .current_dir(d)
            .args(["--data", "single"])
            .args(args)
            .output()
            .expect("nudge");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    single(&["ingest", "single.ndjson"]);
    let want: serde_json::Value =
        serde_json::from_str(&single(&["fit", "--at", &tomorrow])).expect("fit json");
    let decided = decided_fit(&nats.url, &tomorrow);
    assert_eq!(decided["fit"], want, "{decided}");
    assert_eq!(want["members"], 40, "{want}");
    // Every member ticked with that fit: its predictions are as of the
    // tick, the same read on either node.
    let on_a: Vec<serde_json::Value> = (0..40)
        .map(|m| predictions(&a.addr, &format!("f{m}")))
        .collect();
    assert!(on_a.iter().all(|p| p["p_alive"].is_number()), "{on_a:?}");
    let _ = a.child.kill();
    let _ = a.child.wait();
    // `b` takes a's partitions with no copy of them: it applies their
    // whole streams, the refitting tick included, with the decided fit.
    wait_until(Duration::from_secs(20), "b holds every partition", || {
        held(&b).len() == 4
    });
    wait_until(Duration::from_secs(30), "members on b as on a", || {
        (0..40).all(|m| predictions(&b.addr, &format!("f{m}")) == on_a[m])
    });
}

/// A member's predictions as `addr` reads them.
fn predictions(addr: &str, id: &str) -> serde_json::Value {
    let (code, body) = http(addr, "GET", &format!("/v1/members/{id}"), "");
    if code != 200 {
        return serde_json::Value::Null;
    }
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    v["predictions"].clone()
}

/// The fit decided for `day` in the cluster's `nudge_fits` bucket.
fn decided_fit(nats: &str, day: &str) -> serde_json::Value {
    block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(nats).await.expect("connect"));
        let kv = js.get_key_value("nudge_fits").await.expect("bucket");
        let v = kv
            .get(format!("fit.{day}"))
            .await
            .expect("read")
            .expect("decided");
        serde_json::from_slice(&v).expect("json")
    })
}

//! Daily ticks through the stream: the holder of a partition publishes
//! the partition's tick to its events stream when it is due, and it is
//! applied where the stream has it, so a partition rebuilt on another
//! node ticks at the same point of its history.

use super::{Nats, held, node_with, project, published};
use crate::common::{http, wait_until};
use std::time::Duration;

/// Publishes what a holder publishes for a tick of `day` to partition
/// `p`'s events subject.
fn publish_tick(nats: &str, p: usize, day: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
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
/// a 202 says the event is in the stream).
fn member(addr: &str, id: &str) -> serde_json::Value {
    let (code, body) = http(addr, "GET", &format!("/v1/members/{id}"), "");
    if code == 404 {
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

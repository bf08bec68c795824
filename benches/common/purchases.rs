//! The ingest benches' workload: 20 playbook rules and a stream of
//! purchases for uniformly random members of the peer workload, one a
//! minute (`benches/ingest.rs`, `benches/partitions.rs`).

use nudge::config::Schema;
use nudge::io::event::event_from_json;
use nudge::model::{Event, MemberRecord};

/// Points by tier, tier upgrades, club tags, a win-back re-arm, a
/// welcome-back coupon.
pub const RULES: &str = r#"
rule "points bronze" on purchase when tier == bronze then award points floor(event.amount)
rule "points silver" on purchase when tier == silver then award points floor(event.amount * 2)
rule "points gold" on purchase when tier == gold then award points floor(event.amount * 3)
rule "points diamond" on purchase when tier == diamond then award points floor(event.amount * 4)
rule "to silver" on purchase when tier == bronze and sum(purchase.amount, 365d) >= 5000 then set tier silver
rule "to gold" on purchase when tier == silver and sum(purchase.amount, 365d) >= 20000 then set tier gold
rule "to diamond" on purchase when tier == gold and sum(purchase.amount, 365d) >= 60000 then set tier diamond
rule "coffee club" on purchase when count(purchase where event.category == "coffee", 90d) >= 3 then tag "coffee"
rule "tea club" on purchase when count(purchase where event.category == "tea", 90d) >= 3 then tag "tea"
rule "books club" on purchase when count(purchase where event.category == "books", 90d) >= 3 then tag "books"
rule "big basket" on purchase when event.amount > 400 then tag "big basket"
rule "frequent" on purchase when count(purchase, 30d) >= 4 then tag "frequent"
rule "welcome back" on purchase when days_since_last_purchase > 180 then send coupon 30-6 via sms
rule "late" when days_since_last_purchase > cycle * 1.5 and tier >= silver then send coupon 30-6
rule "vip" on purchase when spend > 40000 and "vip" not in tags then tag "vip"
rule "mom" on purchase when "mom" in tags and event.amount > 100 then award points 50
rule "student" on purchase when "student" in tags then award points 5
rule "points cap" on purchase when points > 100000 then tag "points heavy"
rule "birthday month" on purchase when birthday_month == 3 then award points 20
rule "quiet" on purchase when orders_90d == 0 then tag "returning"
"#;

const CATEGORIES: [&str; 6] = ["coffee", "tea", "books", "music", "tech", "kids"];

/// The bench config with [`RULES`], loaded as the loader loads a project.
pub fn load() -> (
    std::sync::Arc<nudge::config::Schema>,
    std::sync::Arc<nudge::lang::RuleSet>,
) {
    let l = nudge::project::load::load_texts(super::CONFIG, &[("bench.rules", RULES)]);
    assert_eq!(l.errors(), 0, "{:?}", l.diagnostics);
    (
        std::sync::Arc::new(l.schema.expect("schema")),
        std::sync::Arc::new(l.rules.expect("rules")),
    )
}

/// `events` purchases for random members of `n`, the same every run.
pub fn stream(schema: &Schema, n: usize, events: usize) -> Vec<Event> {
    stream_on(schema, n, events, super::TODAY, "e", 0x2545_F491_4F6C_DD1D)
}

/// `events` purchases for random members of `n` on `day`, one a minute
/// from midnight (wrapping after a day), ids `{prefix}{i}`, drawn from
/// `seed`.
pub fn stream_on(
    schema: &Schema,
    n: usize,
    events: usize,
    day: i32,
    prefix: &str,
    seed: u64,
) -> Vec<Event> {
    let mut x = seed;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let on = nudge::base::time::day_string(day);
    (0..events)
        .map(|i| {
            let m = (rand() % n as u64) as usize;
            let amount = (rand() % 50_000) as f64 / 100.0;
            let category = CATEGORIES[(rand() % 6) as usize];
            let at = format!("{on}T{:02}:{:02}:00Z", (i / 60) % 24, i % 60);
            event_from_json(schema, serde_json::json!({"id": format!("{prefix}{i}"), "type": "purchase", "member": super::member_id(m), "at": at, "amount": amount, "category": category})).expect("event")
        })
        .collect()
}

/// The raw loop: the same members and stream, no rules, written as a
/// programmer would by hand on sled: one key per member, its record read,
/// changed and written back, one flushed batch per `batch` events. Returns
/// the seconds the stream took and the bytes on disk per member.
pub fn raw_loop(people: &[super::Member], stream: &[Event], batch: usize) -> (f64, f64) {
    let n = people.len();
    let raw_dir = tempfile::tempdir().expect("tempdir");
    let raw = super::raw_sled(&raw_dir.path().join("raw"));
    for chunk in people.chunks(10_000).enumerate() {
        let mut b = sled::Batch::default();
        for (i, m) in chunk.1.iter().enumerate() {
            b.insert(
                super::member_id(chunk.0 * 10_000 + i).as_bytes(),
                super::record(m).encode(),
            );
        }
        raw.apply_batch(b).expect("load");
        raw.flush().expect("flush");
    }
    let start = std::time::Instant::now();
    for events in stream.chunks(batch) {
        let mut touched: std::collections::HashMap<&str, MemberRecord> = Default::default();
        for ev in events {
            let mut rec = match touched.remove(ev.member.as_str()) {
                Some(r) => r,
                None => {
                    let bytes = raw.get(ev.member.as_bytes()).expect("get").expect("member");
                    MemberRecord::decode(&bytes).expect("decode")
                }
            };
            if let Some(nudge::base::value::Value::Dec(d)) = ev.fields.first() {
                rec.spend += *d;
            }
            rec.orders += 1;
            touched.insert(&ev.member, rec);
        }
        let mut b = sled::Batch::default();
        for (id, rec) in touched {
            b.insert(id.as_bytes(), rec.encode());
        }
        raw.apply_batch(b).expect("commit");
        raw.flush().expect("flush");
    }
    let raw_bytes = raw.size_on_disk().unwrap_or(0) as f64 / n as f64;
    let raw_s = start.elapsed().as_secs_f64();
    (raw_s, raw_bytes)
}

//! Budgets and rewards' stock across the nodes of a cluster: one entry per
//! budget period or reward in the `nudge_budgets` bucket, saying how much
//! of it each partition has been given. A partition's holder draws a block
//! by compare-and-set on that entry (`engine::budget::Allotment`), so the
//! partitions together are never given more than the limit, and spends
//! from its block in the same sled commit as the effects it pays for. This
//! module does not know what a budget is: the engine says how much it
//! needs, in what blocks, up to what limit.

use async_nats::jetstream::kv;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use super::lease::Owned;
use crate::engine::budget::Draw;

/// The bucket of allotments.
pub const BUDGETS_BUCKET: &str = "nudge_budgets";

/// How often a draw reads the entry again after another partition
/// changed it first. Each round is one partition's block handed out, so
/// this many in a row means something else is wrong.
const ROUNDS: usize = 100;

/// The allotments, drawn from the writer's thread.
pub struct Allotments {
    bucket: super::bucket::Bucket,
    runtime: tokio::runtime::Handle,
    /// The leases: a draw for a partition no longer held here fails.
    owned: Arc<Owned>,
    /// What every partition had been given, as last read or written here.
    seen: Mutex<HashMap<String, Decimal>>,
}

/// An entry: what each partition (by number) has been given, as decimal
/// strings (exact; JSON numbers would not be).
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Entry {
    given: BTreeMap<usize, String>,
}

impl Entry {
    fn of(&self, partition: usize) -> Decimal {
        self.given
            .get(&partition)
            .and_then(|v| Decimal::from_str(v).ok())
            .unwrap_or_default()
    }

    fn total(&self) -> Decimal {
        self.given
            .values()
            .filter_map(|v| Decimal::from_str(v).ok())
            .sum()
    }
}

impl Allotments {
    /// The allotments of `cluster`'s budgets bucket.
    pub fn of(cluster: &super::Cluster) -> Allotments {
        Allotments {
            bucket: cluster.budgets.clone(),
            runtime: cluster.runtime.clone(),
            owned: cluster.owned.clone(),
            seen: Mutex::default(),
        }
    }

    async fn draw_async(&self, d: &Draw<'_>) -> Result<Decimal, String> {
        use kv::{CreateErrorKind, UpdateErrorKind};
        let (key, partition, need) = (d.key, d.partition, d.need);
        let name = entry_name(key);
        for _ in 0..ROUNDS {
            let (mut entry, revision) = self.read(&name).await?;
            let mine = entry.of(partition);
            let total = entry.total();
            let grant = (need - mine).max(d.block).min(d.limit - total);
            if mine >= need || grant <= Decimal::ZERO {
                self.saw(key, total);
                return Ok(mine);
            }
            entry.given.insert(partition, (mine + grant).to_string());
            let value: bytes::Bytes = serde_json::to_vec(&entry)
                .map_err(|e| e.to_string())?
                .into();
            let written = match revision {
                Some(r) => match self.bucket.update(&name, value, r).await {
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => None,
                    other => Some(other.map(drop).map_err(|e| e.to_string())),
                },
                None => match self.bucket.create(&name, value).await {
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists => None,
                    other => Some(other.map(drop).map_err(|e| e.to_string())),
                },
            };
            if let Some(done) = written {
                done?;
                self.saw(key, total + grant);
                return Ok(mine + grant);
            }
        }
        Err(format!(
            "the entry `{name}` changed under {ROUNDS} draws in a row"
        ))
    }

    /// The entry as the bucket stream's leader has it, with its revision
    /// (none yet: `None`). Not the key-value get, which may be answered by
    /// a replica that lags behind: a partition told less than it was given
    /// would cap a firing its next holder sends.
    async fn read(&self, name: &str) -> Result<(Entry, Option<u64>), String> {
        match self.bucket.leader_entry(name).await {
            Ok(Some(e)) => Ok((
                serde_json::from_slice(&e.value)
                    .map_err(|why| format!("the entry `{name}` is damaged: {why}"))?,
                Some(e.revision),
            )),
            Ok(None) => Ok((Entry::default(), None)),
            Err(e) => Err(e.to_string()),
        }
    }

    fn saw(&self, key: &str, total: Decimal) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(key.to_string(), total);
        }
    }
}

impl crate::engine::budget::Allotment for Allotments {
    fn draw(&self, d: &Draw<'_>) -> Result<Decimal, String> {
        // Called on the writer's thread, outside the runtime: it waits for
        // NATS as it waits for its own disk, but not past a quarter of a
        // lease, the margin between a holder's last sure moment and the
        // lease's end: the batch must commit while the lease is this
        // node's, or not at all.
        let wait = self.owned.lease() / 4;
        let draw = self.draw_async(d);
        let given = self
            .runtime
            .block_on(async { tokio::time::timeout(wait, draw).await })
            .map_err(|_| "NATS did not answer in time".to_string())??;
        match self.owned.holds(d.partition) {
            true => Ok(given),
            false => Err("the partition's lease is no longer held here".into()),
        }
    }

    fn given_out(&self, key: &str) -> Option<Decimal> {
        self.seen.lock().ok()?.get(key).copied()
    }
}

/// A bucket key for a budget or stock key: KV keys take letters, digits
/// and `-_=./`; anything else is written `=XX` per byte, so the name stays
/// readable (`budget=3Awelcome=3Aall`) and two keys never meet.
pub fn entry_name(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => out.push(b as char),
            _ => out.push_str(&format!("={b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::entry_name;

    #[test]
    fn entry_names_are_valid_keys_and_distinct() {
        assert_eq!(entry_name("budget:welcome:all"), "budget=3Awelcome=3Aall");
        assert_eq!(entry_name("stock:mug"), "stock=3Amug");
        assert_ne!(entry_name("a=3A"), entry_name("a:"));
        assert_eq!(entry_name("é"), "=C3=A9");
    }
}

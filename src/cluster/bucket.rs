//! A key-value bucket whose compare-and-set writes are exact also when
//! its stream has more than one replica. It owns the three writes that
//! expect a revision (`create`, `update`, `delete_expect_revision`);
//! reads and plain writes are the key-value store's own (through `Deref`).
//!
//! Why: nats-server 2.9 checks `Nats-Expected-Last-Subject-Sequence` of a
//! replicated stream only on the leader, *before* proposing the write,
//! against what it has stored so far (2.9.10, `processClusteredInboundMsg`
//! and "If we are clustered we have prechecked seq > 0" in
//! `processJetStreamMsg`). Two writes expecting the same revision, sent
//! together, both pass and are both stored: measured with four writers
//! incrementing one key, 12,555 increments acknowledged and 8,815 kept.
//! `Nats-Expected-Last-Sequence` (the whole stream's last sequence) is
//! checked where the write is applied, on every replica, so on a
//! replicated stream a write here carries both: the key's revision
//! (checked before the proposal, against a leader that has applied at
//! least the stream sequence read just before) and the stream's last
//! sequence (checked at the apply: nothing was written in between). A
//! write refused for the stream's sequence, with the key unchanged, is
//! sent again with the new one. The cost is two requests a write and
//! writes to a bucket taken one at a time on a node: fine for leases,
//! budget draws and sink cursors, which are few.

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv::{self, CreateError, CreateErrorKind, UpdateError, UpdateErrorKind};
use async_nats::jetstream::stream::{LastRawMessageError, LastRawMessageErrorKind};
use std::sync::Arc;
use std::time::Duration;

/// How often a write goes again after writes to other keys of the
/// bucket came first. Each round lost means another write was stored.
const ROUNDS: usize = 50;

/// A key's last entry, as [`Bucket::leader_entry`] reads it.
pub struct LeaderEntry {
    pub value: bytes::Bytes,
    pub revision: u64,
    /// A deletion (or purge) marker: the key has no value.
    pub deleted: bool,
}

#[derive(Clone)]
pub struct Bucket {
    store: kv::Store,
    js: async_nats::jetstream::Context,
    /// One write at a time from this node, on a replicated stream only
    /// (`None`: the key's revision alone is exact, as on one replica).
    one_at_a_time: Option<Arc<tokio::sync::Mutex<()>>>,
}

impl std::ops::Deref for Bucket {
    type Target = kv::Store;
    fn deref(&self) -> &kv::Store {
        &self.store
    }
}

impl Bucket {
    pub fn new(store: kv::Store, js: &async_nats::jetstream::Context) -> Bucket {
        let replicas = store.stream.cached_info().config.num_replicas;
        Bucket {
            store,
            js: js.clone(),
            one_at_a_time: (replicas > 1).then(Arc::default),
        }
    }

    /// Writes `key` if it has no value (none yet, or deleted).
    pub async fn create(&self, key: &str, value: bytes::Bytes) -> Result<u64, CreateError> {
        if self.one_at_a_time.is_none() {
            return self.store.create(key, value).await;
        }
        let revision = match self.last(key).await? {
            None => 0,
            Some((r, true)) => r,
            Some((_, false)) => return Err(CreateError::new(CreateErrorKind::AlreadyExists)),
        };
        Ok(self.write(key, value, revision, false).await?)
    }

    /// Writes `key` if its last revision is `revision`.
    pub async fn update(
        &self,
        key: &str,
        value: bytes::Bytes,
        revision: u64,
    ) -> Result<u64, UpdateError> {
        match self.one_at_a_time {
            None => self.store.update(key, value, revision).await,
            Some(_) => self.write(key, value, revision, false).await,
        }
    }

    /// Deletes `key` if its last revision is `revision`.
    pub async fn delete_expect_revision(
        &self,
        key: &str,
        revision: u64,
    ) -> Result<(), UpdateError> {
        match self.one_at_a_time {
            None => self
                .store
                .delete_expect_revision(key, Some(revision))
                .await
                .map_err(|e| UpdateError::with_source(UpdateErrorKind::Other, e)),
            Some(_) => self.write(key, "".into(), revision, true).await.map(drop),
        }
    }

    /// The replicated write: the key's revision and the stream's last
    /// sequence expected, sent again while only the latter moved.
    async fn write(
        &self,
        key: &str,
        value: bytes::Bytes,
        revision: u64,
        delete: bool,
    ) -> Result<u64, UpdateError> {
        let other = |e: &dyn std::fmt::Display| {
            UpdateError::with_source(UpdateErrorKind::Other, e.to_string())
        };
        let _one = match &self.one_at_a_time {
            Some(m) => Some(m.lock().await),
            None => None,
        };
        for round in 0..ROUNDS {
            let last = self
                .store
                .stream
                .get_info()
                .await
                .map_err(|e| other(&e))?
                .state
                .last_sequence;
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Expected-Last-Subject-Sequence", revision.to_string());
            headers.insert("Nats-Expected-Last-Sequence", last.to_string());
            if delete {
                headers.insert("KV-Operation", "DEL");
            }
            let sent = self
                .js
                .publish_with_headers(self.subject(key), headers, value.clone())
                .await;
            let acked = match sent {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match acked {
                Ok(ack) => return Ok(ack.sequence),
                Err(e) if e.kind() != PublishErrorKind::WrongLastSequence => return Err(e.into()),
                Err(e) => match self.last(key).await? {
                    Some((r, _)) if r == revision => {}
                    None if revision == 0 => {}
                    _ => return Err(e.into()),
                },
            }
            // Another node's write to another key came first.
            tokio::time::sleep(Duration::from_millis(1 + (round as u64 % 7))).await;
        }
        Err(other(&format!(
            "the bucket `{}` changed under {ROUNDS} writes in a row",
            self.store.name
        )))
    }

    /// The key's last revision as the stream's leader has it, and whether
    /// it is a deletion (`None`: never written).
    async fn last(&self, key: &str) -> Result<Option<(u64, bool)>, UpdateError> {
        match self.leader_entry(key).await {
            Ok(e) => Ok(e.map(|e| (e.revision, e.deleted))),
            Err(e) => Err(UpdateError::with_source(UpdateErrorKind::Other, e)),
        }
    }

    /// The key's last entry as the bucket stream's leader has it (`None`:
    /// never written). Not the key-value get, which a replica lagging
    /// behind may answer: a read before a compare-and-set, or one a
    /// decision rests on (a budget's grants, a sink's cursor, a day's fit).
    pub async fn leader_entry(
        &self,
        key: &str,
    ) -> Result<Option<LeaderEntry>, LastRawMessageError> {
        match self
            .store
            .stream
            .get_last_raw_message_by_subject(&self.subject(key))
            .await
        {
            Ok(m) => Ok(Some(LeaderEntry {
                deleted: m
                    .headers
                    .get("KV-Operation")
                    .is_some_and(|v| v.as_str() == "DEL" || v.as_str() == "PURGE"),
                value: m.payload,
                revision: m.sequence,
            })),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn subject(&self, key: &str) -> String {
        format!("{}{key}", self.store.prefix)
    }
}

//! The config's sinks in cluster mode: each file, webhook and plugin sink
//! is delivered from the effects stream by one node, the holder of the
//! partition its name hashes to, so the partition's lease fences the
//! delivery as it fences the apply, and the sinks spread over the nodes
//! as the partitions do. How far a sink got is an entry of the
//! `nudge_sinks` bucket, written by compare-and-set after each delivered
//! batch: whichever node delivers the sink next starts there, and a node
//! that lost the lease cannot move it. This module keeps that entry and
//! reads the stream for a sink; the daemon's dispatcher delivers.

use super::{Cluster, ClusterError, EFFECTS_STREAM};
use async_nats::jetstream::consumer::{self, PullConsumer, pull};
use async_nats::jetstream::kv;
use std::collections::BTreeMap;
use std::time::Duration;

/// The bucket of sink cursors.
pub const SINKS_BUCKET: &str = "nudge_sinks";

/// Where a sink stands in the effects stream.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct SinkCursor {
    /// The next stream sequence to deliver (0 or 1: from the start).
    pub next: u64,
    /// A file sink: how long each node's file was when `next` was saved
    /// (each node writes its own file; bytes past this are a write cut
    /// short by a crash, written again).
    #[serde(default)]
    pub files: BTreeMap<String, u64>,
}

impl Cluster {
    /// The partition whose holder delivers the sink of `cursor_key`.
    pub fn sink_partition(&self, cursor_key: &str) -> usize {
        (xxhash_rust::xxh3::xxh3_64(cursor_key.as_bytes()) % self.partitions as u64) as usize
    }

    /// The sink's cursor as the bucket stream's leader has it, with its
    /// revision (`None`: never saved).
    pub async fn sink_cursor(
        &self,
        cursor_key: &str,
    ) -> Result<(SinkCursor, Option<u64>), ClusterError> {
        let name = super::allot::entry_name(cursor_key);
        match tokio::time::timeout(WAIT, self.sinks.leader_entry(&name)).await {
            Err(_) => Err(ClusterError::JetStream(
                "the sinks bucket did not answer".into(),
            )),
            Ok(Ok(Some(e))) => Ok((
                serde_json::from_slice(&e.value).map_err(|e| {
                    ClusterError::JetStream(format!("the sink entry `{name}` is damaged: {e}"))
                })?,
                Some(e.revision),
            )),
            Ok(Ok(None)) => Ok((SinkCursor::default(), None)),
            Ok(Err(e)) => Err(ClusterError::js(e)),
        }
    }

    /// Saves the sink's cursor over `revision` (compare-and-set): the new
    /// revision, or `None` when another node saved it since.
    pub async fn save_sink_cursor(
        &self,
        cursor_key: &str,
        cursor: &SinkCursor,
        revision: Option<u64>,
    ) -> Result<Option<u64>, ClusterError> {
        use kv::{CreateErrorKind, UpdateErrorKind};
        let name = super::allot::entry_name(cursor_key);
        let value: bytes::Bytes = serde_json::to_vec(cursor).map_err(ClusterError::js)?.into();
        let saved = async {
            match revision {
                Some(r) => match self.sinks.update(&name, value, r).await {
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(None),
                    other => other.map(Some).map_err(ClusterError::js),
                },
                None => match self.sinks.create(&name, value).await {
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(None),
                    other => other.map(Some).map_err(ClusterError::js),
                },
            }
        };
        tokio::time::timeout(WAIT, saved)
            .await
            .map_err(|_| ClusterError::JetStream("the sinks bucket did not answer".into()))?
    }

    /// A consumer of every partition's effects from stream sequence
    /// `from`, for one delivery of a sink: made anew each time the node
    /// starts delivering it (never changed, as a partition's).
    pub async fn sink_consumer(&self, from: u64) -> Result<PullConsumer, ClusterError> {
        let n = self
            .consumers_made
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let made = self.effects.create_consumer(pull::Config {
            name: Some(format!(
                "sink-{}-{}-{n}",
                self.options.node,
                std::process::id()
            )),
            filter_subject: "nudge.effects.>".into(),
            deliver_policy: match from {
                0 | 1 => consumer::DeliverPolicy::All,
                start_sequence => consumer::DeliverPolicy::ByStartSequence { start_sequence },
            },
            // The cursor in the bucket says what was delivered, not acks.
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(60),
            num_replicas: 1,
            memory_storage: true,
            ..Default::default()
        });
        tokio::time::timeout(super::consume::MAKE_WAIT, made)
            .await
            .map_err(|_| {
                ClusterError::JetStream(format!(
                    "making a consumer of `{EFFECTS_STREAM}` timed out"
                ))
            })?
            .map_err(ClusterError::js)
    }

    /// The stream's last sequence (0: empty), from its leader.
    pub async fn effects_last(&self) -> Result<u64, ClusterError> {
        let mut effects = self.effects.clone();
        let info = tokio::time::timeout(WAIT, effects.info())
            .await
            .map_err(|_| ClusterError::JetStream("the effects stream did not answer".into()))?;
        Ok(info.map_err(ClusterError::js)?.state.last_sequence)
    }
}

/// How long a sink's request to NATS may take.
const WAIT: Duration = Duration::from_secs(10);

//! Reading the streams: a partition's events in order, through the
//! partition's durable pull consumer (`p<k>`, explicit acks), and the
//! effect keys a partition has already published, which a new owner
//! reads before it publishes anything.
//!
//! Why a list of keys and not JetStream's duplicate window alone: a new
//! owner applies again the events after its copy of the partition, and
//! their effects were published by the old owner, maybe longer ago than
//! the window. The keys are the same (an effect's key is its rule,
//! member, trigger and action), so each is published once.

use super::{Cluster, ClusterError, effects_subject, events_subject};
use async_nats::jetstream::consumer::{self, PullConsumer, pull};
use std::collections::HashSet;
use std::time::Duration;
use tokio_stream::StreamExt;

/// Events fetched at most per batch (one engine commit).
pub const FETCH: usize = 1000;

/// A partition's events as the consumer delivers them.
pub struct Fetched {
    pub messages: Vec<async_nats::jetstream::Message>,
}

impl Fetched {
    /// Each message's stream sequence and body, and whether it is a relay
    /// (an effect from another partition) rather than an event.
    pub fn events(&self) -> Vec<(u64, &[u8], bool)> {
        self.messages
            .iter()
            .filter_map(|m| {
                let relay = m
                    .headers
                    .as_ref()
                    .is_some_and(|h| h.get(super::RELAY_HEADER).is_some());
                Some((m.info().ok()?.stream_sequence, m.payload.as_ref(), relay))
            })
            .collect()
    }

    /// Acknowledges every message (after their commit).
    pub async fn ack(self) -> Result<(), ClusterError> {
        for m in self.messages {
            m.ack()
                .await
                .map_err(|e| ClusterError::JetStream(e.to_string()))?;
        }
        Ok(())
    }
}

impl Cluster {
    /// Partition `p`'s consumer, made anew to start at stream sequence
    /// `from` (the one after the last the partition applied): a consumer
    /// an earlier owner left is replaced, with its place in the stream.
    pub async fn consumer(&self, p: usize, from: u64) -> Result<PullConsumer, ClusterError> {
        let name = format!("p{p}");
        let _ = self.events.delete_consumer(&name).await;
        self.events
            .create_consumer(pull::Config {
                durable_name: Some(name),
                filter_subject: events_subject(p),
                deliver_policy: if from <= 1 {
                    consumer::DeliverPolicy::All
                } else {
                    consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: from,
                    }
                },
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(60),
                max_ack_pending: (FETCH * 4) as i64,
                ..Default::default()
            })
            .await
            .map_err(ClusterError::js)
    }

    /// The next events of the consumer, at most [`FETCH`], waiting up to
    /// half a second for the first.
    pub async fn fetch(&self, consumer: &PullConsumer) -> Result<Fetched, ClusterError> {
        let mut batch = consumer
            .fetch()
            .max_messages(FETCH)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .map_err(ClusterError::js)?;
        let mut messages = Vec::new();
        while let Some(m) = batch.next().await {
            messages.push(m.map_err(ClusterError::js)?);
        }
        Ok(Fetched { messages })
    }

    /// How many of partition `p`'s events wait to be applied (its
    /// consumer's pending and unacknowledged); `None` with no consumer.
    pub async fn lag(&self, p: usize) -> Option<u64> {
        let mut c: PullConsumer = self.events.get_consumer(&format!("p{p}")).await.ok()?;
        let info = c.info().await.ok()?;
        Some(info.num_pending + info.num_ack_pending as u64)
    }

    /// Reads the keys of every effect partition `p` has published (and
    /// the stream still keeps) and keeps them for [`Self::was_published`].
    pub async fn take_up_published(&self, p: usize) -> Result<usize, ClusterError> {
        let keys = self.published_keys(p).await?;
        let n = keys.len();
        if let Ok(mut m) = self.published.lock() {
            m.insert(p, keys);
        }
        Ok(n)
    }

    async fn published_keys(&self, p: usize) -> Result<HashSet<String>, ClusterError> {
        let subject = effects_subject(p);
        let last = match self.effects.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => m.sequence,
            // Nothing published yet.
            Err(_) => return Ok(HashSet::new()),
        };
        let ordered = self
            .effects
            .create_consumer(pull::OrderedConfig {
                filter_subject: subject,
                headers_only: true,
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(ClusterError::js)?;
        let mut messages = ordered.messages().await.map_err(ClusterError::js)?;
        let mut keys = HashSet::new();
        while let Some(m) = messages.next().await {
            let m = m.map_err(ClusterError::js)?;
            if let Some(id) = m.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")) {
                keys.insert(id.to_string());
            }
            if m.info().map_err(ClusterError::js)?.stream_sequence >= last {
                break;
            }
        }
        Ok(keys)
    }

    /// Whether an effect of partition `p` was published already.
    pub fn was_published(&self, p: usize, key: &str) -> bool {
        self.published
            .lock()
            .is_ok_and(|m| m.get(&p).is_some_and(|s| s.contains(key)))
    }

    /// Notes an effect of partition `p` as published.
    pub fn mark_published(&self, p: usize, key: &str) {
        if let Ok(mut m) = self.published.lock() {
            m.entry(p).or_default().insert(key.to_string());
        }
    }
}

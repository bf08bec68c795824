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
    /// Each message's stream sequence, body and kind (an event, a relay
    /// from another partition, the partition's daily tick).
    pub fn events(&self) -> Vec<(u64, &[u8], super::Kind)> {
        self.messages
            .iter()
            .filter_map(|m| {
                let kind = super::Kind::of(m.headers.as_ref());
                Some((m.info().ok()?.stream_sequence, m.payload.as_ref(), kind))
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

/// How long reading a partition's published effect keys may take.
const READ_WAIT: Duration = Duration::from_secs(60);

/// How long a fetch may take in all: its half a second of waiting for
/// the first event, and time to receive up to [`FETCH`] events (a
/// millisecond or so). A consumer on a server that died answers never:
/// this is part of how long its partition stands still.
const FETCH_WAIT: Duration = Duration::from_secs(3);

/// How long asking the stream's leader for a partition's last entry may
/// take: while a stream elects a new leader it answers nothing, and a
/// stalled consumer is noticed only after an answer.
const ASK_WAIT: Duration = Duration::from_secs(2);

/// How long making a consumer may take. JetStream places a consumer of
/// one replica on a server of its stream's picked at random, the dead
/// one too until the cluster drops it (nats-server 2.9): such a request
/// is never answered, and the client's own wait (10 s) let a partition
/// stand still for 40 s after one of three servers died, trying again.
/// Given up sooner, the next try lands on a live server two times in
/// three; made on a live one, it takes milliseconds.
pub const MAKE_WAIT: Duration = Duration::from_secs(2);

/// How long a consumer nobody pulls from stays: one left by a node that
/// died, or whose delete NATS did not hear, is dropped by NATS after it.
const IDLE: Duration = Duration::from_secs(60);

impl Cluster {
    /// Partition `p`'s consumer, made anew to start at stream sequence
    /// `from` (the one after the last the partition applied), under a name
    /// of its own: a consumer is never changed, since JetStream refuses to
    /// move one's start ("deliver policy can not be updated") and a delete
    /// may not have been heard. `previous`, this node's last consumer of
    /// the partition, is deleted if NATS answers; one it does not (or a
    /// dead node's) goes once idle for [`IDLE`].
    pub async fn consumer(
        &self,
        p: usize,
        from: u64,
        previous: Option<&str>,
    ) -> Result<PullConsumer, ClusterError> {
        if let Some(old) = previous {
            let _ = tokio::time::timeout(IDLE / 4, self.events.delete_consumer(old)).await;
        }
        let n = self
            .consumers_made
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let made = self.events.create_consumer(pull::Config {
            name: Some(format!(
                "p{p}-{}-{}-{n}",
                self.options.node,
                std::process::id()
            )),
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
            inactive_threshold: IDLE,
            // One replica, in memory: the holder makes it anew from its
            // copy's sequence whenever it takes the partition or the
            // consumer is gone (its NATS server died), so replicating
            // it would only cost a raft group per partition.
            num_replicas: 1,
            memory_storage: true,
            ..Default::default()
        });
        tokio::time::timeout(MAKE_WAIT, made)
            .await
            .map_err(|_| ClusterError::JetStream("making a consumer timed out".into()))?
            .map_err(ClusterError::js)
    }

    /// The next events of the consumer, at most [`FETCH`], waiting up to
    /// half a second for the first.
    pub async fn fetch(&self, consumer: &PullConsumer) -> Result<Fetched, ClusterError> {
        // Bounded: a consumer on a NATS server that died answers nothing,
        // and the pull would wait for ever; the caller makes it anew.
        tokio::time::timeout(FETCH_WAIT, self.fetch_unbounded(consumer))
            .await
            .map_err(|_| ClusterError::JetStream("the consumer did not answer in time".into()))?
    }

    async fn fetch_unbounded(&self, consumer: &PullConsumer) -> Result<Fetched, ClusterError> {
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

    /// Whether the stream holds events of partition `p` past `applied`
    /// (asked of the stream's leader; `false` when it does not answer).
    pub async fn behind(&self, p: usize, applied: u64) -> bool {
        self.last_of(p)
            .await
            .is_ok_and(|last| last.is_some_and(|last| last > applied))
    }

    /// The stream sequence of partition `p`'s last entry, as the stream's
    /// leader has it (`None`: the partition has none); an error when the
    /// leader does not answer within [`ASK_WAIT`] or fails.
    pub async fn last_of(&self, p: usize) -> Result<Option<u64>, ClusterError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        let subject = events_subject(p);
        let last = self.events.get_last_raw_message_by_subject(&subject);
        match tokio::time::timeout(ASK_WAIT, last).await {
            Ok(Ok(m)) => Ok(Some(m.sequence)),
            Ok(Err(e)) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Ok(Err(e)) => Err(ClusterError::JetStream(e.to_string())),
            Err(_) => Err(ClusterError::JetStream(
                "reading the partition's last event timed out".into(),
            )),
        }
    }

    /// Notes partition `p`'s lag after a fetch: the events after the last
    /// one fetched (JetStream says so in each message), 0 after none.
    pub fn note_lag(&self, p: usize, fetched: &Fetched) {
        let lag = fetched
            .messages
            .last()
            .and_then(|m| m.info().ok())
            .map_or(0, |i| i.pending);
        if let Some(l) = self.lags.get(p) {
            l.store(lag, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Partition `p`'s lag as last noted here, if it is held here.
    pub fn lag(&self, p: usize) -> Option<u64> {
        self.owned.holds(p).then(|| {
            self.lags
                .get(p)
                .map_or(0, |l| l.load(std::sync::atomic::Ordering::Relaxed))
        })
    }

    /// Reads the keys of every effect partition `p` has published (and
    /// the stream still keeps) and keeps them for [`Self::was_published`].
    pub async fn take_up_published(&self, p: usize) -> Result<usize, ClusterError> {
        // Bounded: a consumer on a NATS server that died answers nothing.
        let keys = tokio::time::timeout(READ_WAIT, self.published_keys(p))
            .await
            .map_err(|_| {
                ClusterError::JetStream("reading the effects stream timed out".into())
            })??;
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

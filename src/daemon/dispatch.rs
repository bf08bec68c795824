//! The dispatcher: one task per webhook or plugin sink (and partition of
//! the data folder) delivers outbox entries in order (so in order per
//! member), at least once ([`send`] says how). A delivered entry moves the
//! sink's cursor on; one refused for good goes to the dead-letter list
//! (kept in the store, shown in `/v1/status`) and delivery goes on. File
//! sinks are written by the writer after each commit. In cluster mode the
//! outbox goes to the effects stream, and the config's sinks are
//! delivered from there ([`stream_sinks`]).

use super::send::{self, BACKOFF_START, Delivery, REQUEST_TIMEOUT};
use super::{Shared, stream_sinks};
use crate::config::Sink;
use crate::model::Effect;
use crate::model::Status;
use crate::store::keys::sink_cursor;
use crate::store::{Store, WriteSet};
use std::sync::Arc;
use std::time::Duration;

/// Starts the dispatcher: a delivery task for each webhook and plugin sink
/// of the running config, kept in step with reloads.
pub fn spawn(shared: Arc<Shared>) {
    let client = match reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "Cannot build the HTTP client; webhooks are not delivered.");
            return;
        }
    };
    tokio::spawn(supervise(shared, client));
}

/// How often the dispatcher looks for sinks a reload added.
const SUPERVISE_EVERY: Duration = Duration::from_millis(500);

/// Starts a task for each webhook and plugin sink of the running config
/// that has none: at the start, and for a sink a reload adds or puts back.
/// A task whose sink a reload took out stops by itself (see [`configured`]).
async fn supervise(shared: Arc<Shared>, client: reqwest::Client) {
    let mut running: std::collections::HashMap<(String, usize), tokio::task::JoinHandle<()>> =
        std::collections::HashMap::new();
    loop {
        running.retain(|_, task| !task.is_finished());
        let schema = shared.schema.load_full();
        for sink in &schema.stream_sinks {
            if let std::collections::hash_map::Entry::Vacant(slot) =
                running.entry((sink_cursor(sink), usize::MAX))
            {
                let task =
                    stream_sinks::deliver_forever(shared.clone(), client.clone(), sink.clone());
                slot.insert(tokio::spawn(task));
            }
        }
        for sink in schema
            .sinks
            .iter()
            .filter(|s| !matches!(s, Sink::File { .. }))
        {
            for part in 0..shared.folder.parts.len() {
                if let std::collections::hash_map::Entry::Vacant(slot) =
                    running.entry((sink_cursor(sink), part))
                {
                    let task = deliver_forever(shared.clone(), client.clone(), sink.clone(), part);
                    slot.insert(tokio::spawn(task));
                }
            }
        }
        tokio::time::sleep(SUPERVISE_EVERY).await;
    }
}

/// Whether the running config still has the sink of `cursor_key`.
fn configured(shared: &Shared, cursor_key: &str) -> bool {
    shared
        .schema
        .load()
        .sinks
        .iter()
        .any(|s| sink_cursor(s) == cursor_key)
}

/// Delivers partition `part`'s outbox to `sink`.
async fn deliver_forever(shared: Arc<Shared>, client: reqwest::Client, sink: Sink, part: usize) {
    let cursor_key = sink_cursor(&sink);
    let store = &shared.folder.parts[part];
    // Credentials in a webhook URL stay out of metrics, logs and status.
    let name = crate::outbox::sink_label(&sink);
    loop {
        if !configured(&shared, &cursor_key) {
            tracing::info!(sink = %name, "Sink taken out of the config: its deliveries stop.");
            return;
        }
        // A failed read is retried, never taken as "start from 0": that
        // would deliver everything again.
        let batch = match store
            .meta_u64(&cursor_key)
            .and_then(|next| store.outbox(next, 256))
        {
            Ok(b) => b,
            Err(error) => {
                tracing::error!(sink = %name, %error, "Reading the outbox failed; retrying.");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if batch.is_empty() {
            tokio::select! {
                _ = shared.outbox_changed.notified() => {},
                _ = tokio::time::sleep(Duration::from_millis(500)) => {},
            }
            continue;
        }
        if matches!(sink, Sink::Stream) {
            publish_batch(&shared, part, &cursor_key, batch).await;
            continue;
        }
        for (seq, bytes) in batch {
            let effect = match serde_json::from_slice::<Effect>(&bytes) {
                // A deferred record goes out when released, as `sent`.
                Ok(e) if e.status != Status::Deferred => e,
                _ => {
                    advance(store, &cursor_key, seq);
                    continue;
                }
            };
            let go_on = || configured(&shared, &cursor_key);
            match send::deliver(&shared, &client, &sink, &effect, &bytes, seq, go_on).await {
                Delivery::Done => {}
                Delivery::Refused(why) => send::dead_letter(store, &sink, seq, &effect, &why),
                Delivery::Stopped => return,
            }
            // Only a confirmed (or dead-lettered) entry moves the cursor.
            advance(store, &cursor_key, seq);
        }
    }
}

/// How long an effect of a partition held elsewhere waits before it is
/// looked at again.
const NOT_HERE_PAUSE: Duration = Duration::from_millis(250);

/// Cluster mode: publishes a batch of partition `part`'s outbox to the
/// effects stream, all at once, and moves the cursor past it once
/// JetStream has every one; only while this node holds the partition, and
/// each effect once (not those an earlier holder published). A failure
/// leaves the cursor: the batch goes again (JetStream drops the repeats
/// by their ids).
async fn publish_batch(shared: &Shared, part: usize, cursor_key: &str, batch: Vec<(u64, Vec<u8>)>) {
    let Some(cluster) = shared.cluster.as_ref() else {
        return;
    };
    if !cluster.owned.ready(part) {
        tokio::time::sleep(NOT_HERE_PAUSE).await;
        return;
    }
    let Some(last) = batch.last().map(|(seq, _)| *seq) else {
        return;
    };
    let effects: Vec<(String, bytes::Bytes)> = batch
        .into_iter()
        .filter_map(|(_, bytes)| {
            let e = serde_json::from_slice::<Effect>(&bytes).ok()?;
            // A deferred record goes out when released, as `sent`.
            let keep = e.status != Status::Deferred && !cluster.was_published(part, &e.key);
            keep.then(|| (e.key, bytes::Bytes::from(bytes)))
        })
        .collect();
    let n = effects.len() as u64;
    let label = crate::outbox::sink_label(&Sink::Stream);
    match cluster.publish_effects(part, effects).await {
        Ok(()) => {
            shared.count_deliveries(&label, n, Ok(()));
            advance(&shared.folder.parts[part], cursor_key, last);
        }
        Err(e) => {
            shared.count_delivery(&label, Err(e.to_string()));
            tracing::warn!(partition = part, error = %e, "Publishing effects failed; retrying.");
            tokio::time::sleep(BACKOFF_START * 10).await;
        }
    }
}

/// Records that the sink is done with entry `seq`.
fn advance(store: &crate::store::SledStore, cursor_key: &str, seq: u64) {
    let w = WriteSet {
        meta: vec![(cursor_key.to_string(), (seq + 1).to_le_bytes().to_vec())],
        ..WriteSet::default()
    };
    if let Err(e) = store.commit(w) {
        tracing::error!(error = %e, "Cannot record delivery progress.");
    }
}

/// Writes file sinks (counted per sink in `/metrics`), trims the outbox
/// and wakes the dispatcher.
pub(super) fn after_commit(
    parts: &mut crate::engine::partitions::Partitions<crate::store::SledStore>,
    shared: &Shared,
) {
    for engine in parts.engines_mut() {
        let counted = crate::outbox::drain_file_sinks(engine, &mut |sink, r| {
            let label = crate::outbox::sink_label(sink);
            match r {
                Ok(n) => shared.count_deliveries(&label, n as u64, Ok(())),
                Err(e) => {
                    shared.count_deliveries(&label, 1, Err(e.to_string()));
                    tracing::error!(sink = %label, error = %e, "Delivery failed.");
                }
            }
        });
        if let Err(e) = counted {
            tracing::error!(error = %e, "Trimming the outbox failed.");
        }
    }
    shared.note_deferred(parts);
    shared.outbox_changed.notify_waiters();
}

//! The dispatcher: one task per webhook or plugin sink (and partition of
//! the data folder) delivers outbox entries in order (so in order per
//! member), at least once. Each request
//! carries the effect's key as `Idempotency-Key`. 2xx moves the sink's
//! cursor on; 5xx, timeouts and connection errors are retried with
//! exponential backoff and jitter; 429 waits for `Retry-After`; any other
//! 4xx is permanent: the entry goes to the dead-letter list (kept in the
//! store, shown in `/v1/status`) and delivery goes on. File sinks are
//! written by the writer after each commit.

use super::Shared;
use crate::config::Sink;
use crate::model::Effect;
use crate::model::Status;
use crate::store::keys::sink_cursor;
use crate::store::{Store, WriteSet};
use std::sync::Arc;
use std::time::Duration;

/// Backoff: 100 ms doubling up to 30 s, with up to half of it as jitter.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

enum Attempt {
    Delivered,
    /// Try again (after the given wait, else the backoff); why it failed.
    Retry(Option<Duration>, String),
    Permanent(String),
}

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
        let sinks = shared.schema.load().sinks.clone();
        for sink in sinks.iter().filter(|s| !matches!(s, Sink::File { .. })) {
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
            let mut backoff = BACKOFF_START;
            let mut attempt = 0u64;
            loop {
                attempt += 1;
                match send(&shared, &client, &sink, &effect, &bytes).await {
                    Attempt::Delivered => {
                        shared.count_delivery(&name, Ok(()));
                        break;
                    }
                    Attempt::Permanent(why) => {
                        shared.count_delivery(&name, Err(why.clone()));
                        tracing::warn!(sink = %name, key = %effect.key, error = %why, "Delivery failed for good; dead-lettered.");
                        let record = serde_json::json!({"sink": name, "seq": seq, "key": effect.key, "member": effect.member, "rule": effect.rule, "error": why});
                        let w = WriteSet {
                            meta: vec![(
                                crate::store::keys::dead_letter(&cursor_key, seq),
                                record.to_string().into_bytes(),
                            )],
                            ..WriteSet::default()
                        };
                        if let Err(e) = store.commit(w) {
                            tracing::error!(error = %e, "Cannot record a dead letter.");
                        }
                        break;
                    }
                    Attempt::Retry(_, _) if !configured(&shared, &cursor_key) => return,
                    Attempt::Retry(wait, why) => {
                        shared.count_delivery(&name, Err(why));
                        let jitter = Duration::from_millis(
                            xxhash_rust::xxh3::xxh3_64(
                                &[seq.to_le_bytes(), attempt.to_le_bytes()].concat(),
                            ) % (backoff.as_millis() as u64 / 2 + 1),
                        );
                        let pause = wait.unwrap_or(backoff + jitter);
                        tracing::debug!(sink = %name, key = %effect.key, attempt, ?pause, "Delivery failed; retrying.");
                        tokio::time::sleep(pause).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
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

async fn send(
    shared: &Shared,
    client: &reqwest::Client,
    sink: &Sink,
    effect: &Effect,
    body: &[u8],
) -> Attempt {
    let request = match sink {
        // Published in batches (`publish_batch`).
        Sink::Stream => return Attempt::Delivered,
        Sink::Webhook { url } => client
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_vec()),
        Sink::Plugin { plugin } => {
            let plugins = shared.plugins.load();
            let Some(p) = plugins.as_ref().as_ref() else {
                return Attempt::Retry(None, "no plugins are loaded".into());
            };
            let req = match p.delivery_request(plugin, effect) {
                Ok(r) => r,
                Err(e) => return Attempt::Permanent(e.to_string()),
            };
            let Some(url) = req.url else {
                return Attempt::Permanent(format!("plugin `{plugin}` gave no url"));
            };
            let method =
                reqwest::Method::from_bytes(req.method.as_bytes()).unwrap_or(reqwest::Method::POST);
            let mut r = client.request(method, url).body(req.body);
            for (k, v) in req.headers {
                r = r.header(k, v);
            }
            r
        }
        Sink::File { .. } => return Attempt::Delivered,
    };
    match request.header("idempotency-key", &effect.key).send().await {
        Ok(resp) => {
            let status = resp.status();
            if status.is_success() {
                Attempt::Delivered
            } else if status.as_u16() == 429 {
                let after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                Attempt::Retry(
                    after.map(|s| Duration::from_secs(s).min(BACKOFF_MAX)),
                    format!("HTTP {status}"),
                )
            } else if status.is_server_error() || status.as_u16() == 408 {
                Attempt::Retry(None, format!("HTTP {status}"))
            } else {
                Attempt::Permanent(format!("HTTP {status}"))
            }
        }
        // Timeouts, refused connections, resets: try again.
        Err(e) => Attempt::Retry(None, e.to_string()),
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
    shared.outbox_changed.notify_waiters();
}

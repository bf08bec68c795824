//! Delivering one effect to a webhook or plugin sink, at least once: the
//! request carries the effect's key as `Idempotency-Key`; 2xx is done;
//! 5xx, 408, timeouts and connection errors are tried again with
//! exponential backoff and jitter; 429 waits for `Retry-After`; any other
//! 4xx is permanent (the caller dead-letters the effect). Shared by the
//! outbox dispatcher and, in cluster mode, the delivery from the effects
//! stream; it does not know where the effect came from.

use super::Shared;
use crate::config::Sink;
use crate::model::Effect;
use crate::store::{SledStore, Store, WriteSet};
use std::time::Duration;

/// Backoff: 100 ms doubling up to 30 s, with up to half of it as jitter.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

enum Attempt {
    Delivered,
    /// Try again (after the given wait, else the backoff); why it failed.
    Retry(Option<Duration>, String),
    Permanent(String),
}

/// How delivering one effect ended.
pub enum Delivery {
    Done,
    /// Refused for good: why.
    Refused(String),
    /// Given up while retrying, because `go_on` said so.
    Stopped,
}

/// Delivers `effect` (its stored JSON `body`) to `sink`, retrying until
/// it is taken or refused for good, or `go_on` is false after a failure.
/// `seed` varies the jitter between effects.
pub async fn deliver(
    shared: &Shared,
    client: &reqwest::Client,
    sink: &Sink,
    effect: &Effect,
    body: &[u8],
    seed: u64,
    go_on: impl Fn() -> bool,
) -> Delivery {
    let name = crate::outbox::sink_label(sink);
    let mut backoff = BACKOFF_START;
    let mut attempt = 0u64;
    loop {
        attempt += 1;
        match send(shared, client, sink, effect, body).await {
            Attempt::Delivered => {
                shared.count_delivery(&name, Ok(()));
                return Delivery::Done;
            }
            Attempt::Permanent(why) => {
                shared.count_delivery(&name, Err(why.clone()));
                tracing::warn!(sink = %name, key = %effect.key, error = %why, "Delivery failed for good; dead-lettered.");
                return Delivery::Refused(why);
            }
            Attempt::Retry(_, _) if !go_on() => return Delivery::Stopped,
            Attempt::Retry(wait, why) => {
                shared.count_delivery(&name, Err(why));
                let jitter = Duration::from_millis(
                    xxhash_rust::xxh3::xxh3_64(
                        &[seed.to_le_bytes(), attempt.to_le_bytes()].concat(),
                    ) % (backoff.as_millis() as u64 / 2 + 1),
                );
                let pause = wait.unwrap_or(backoff + jitter);
                tracing::debug!(sink = %name, key = %effect.key, attempt, ?pause, "Delivery failed; retrying.");
                tokio::time::sleep(pause).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Keeps a refused effect in `store`'s dead-letter list (shown in
/// `/v1/status`), under the sink's cursor key and `seq`.
pub fn dead_letter(store: &SledStore, sink: &Sink, seq: u64, effect: &Effect, why: &str) {
    let cursor_key = crate::store::keys::sink_cursor(sink);
    let name = crate::outbox::sink_label(sink);
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
}

async fn send(
    shared: &Shared,
    client: &reqwest::Client,
    sink: &Sink,
    effect: &Effect,
    body: &[u8],
) -> Attempt {
    let request = match sink {
        // Published in batches (`dispatch::publish_batch`), written by
        // the writer (`outbox::drain_file_sinks`) or `stream_sinks`.
        Sink::Stream | Sink::File { .. } => return Attempt::Delivered,
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

//! Cluster mode's delivery of the config's sinks: each sink is delivered
//! from the effects stream by the node holding the partition its name
//! hashes to ([`crate::cluster::sinks`]), in stream order (so in order per
//! member), starting where the sink's cursor in the `nudge_sinks` bucket
//! says and saving it after each batch. Webhook and plugin sinks get each
//! effect at least once, as on one node ([`send`]): a node that dies
//! mid-batch leaves the batch to the next deliverer, which sends it again
//! with the same `Idempotency-Key`. A file sink is written on the
//! delivering node, to the configured path with the node's name added
//! (`effects-a.ndjson`), each effect in exactly one node's file: the
//! cursor records each node's file length with the batch it ends, and a
//! node cuts off what it wrote past that before it writes again.

use super::Shared;
use super::send::{self, Delivery};
use crate::cluster::Cluster;
use crate::cluster::sinks::SinkCursor;
use crate::config::Sink;
use crate::model::Effect;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Effects a webhook or plugin sink delivers between two saves of its
/// cursor: what a node that dies mid-batch leaves to be sent again.
const SAVE_EVERY: usize = 100;

/// Empty fetches in a row (half a second each) after which the consumer
/// is made anew from the cursor: one whose NATS server died answers
/// nothing for ever.
const IDLE_FETCHES: usize = 20;

/// Delivers `sink` from the effects stream while this node holds its
/// partition, for as long as the config has it.
pub(super) async fn deliver_forever(shared: Arc<Shared>, client: reqwest::Client, sink: Sink) {
    let Some(cluster) = shared.cluster.clone() else {
        return;
    };
    let key = crate::store::keys::sink_cursor(&sink);
    let name = crate::outbox::sink_label(&sink);
    let part = cluster.sink_partition(&key);
    // A file this node may have written past what it saved: at the start
    // (it died mid-batch) and after each of its turns.
    let mut unsettled = matches!(sink, Sink::File { .. });
    loop {
        if !configured(&shared, &key) {
            tracing::info!(sink = %name, "Sink taken out of the config: its deliveries stop.");
            return;
        }
        if unsettled && let Sink::File { path } = &sink {
            unsettled = match settle(&cluster, &key, path).await {
                Ok(()) => false,
                Err(why) => {
                    tracing::warn!(sink = %name, error = %why, "Cannot check this node's file of the sink; trying again.");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    true
                }
            };
        }
        if !cluster.owned.ready(part) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        }
        let mut d = Deliverer {
            shared: &shared,
            cluster: &cluster,
            client: &client,
            sink: &sink,
            key: &key,
            part,
        };
        let turn = d.while_held().await;
        unsettled = matches!(sink, Sink::File { .. });
        if let Err(why) = turn {
            shared.count_delivery(&name, Err(why.clone()));
            tracing::warn!(sink = %name, error = %why, "Delivering from the effects stream failed; retrying.");
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

/// Cuts this node's file of the sink back to the length its last saved
/// cursor records: what it wrote past that (a crash, or a turn that ended
/// before its save) is another node's to write.
async fn settle(cluster: &Cluster, key: &str, path: &Path) -> Result<(), String> {
    if !node_file(path, &cluster.options.node).exists() {
        return Ok(());
    }
    let (mut cursor, _) = cluster.sink_cursor(key).await.map_err(|e| e.to_string())?;
    NodeFile::take_up(path, &cluster.options.node, &mut cursor).map(drop)
}

/// Whether the running config still has the sink of `cursor_key`.
fn configured(shared: &Shared, cursor_key: &str) -> bool {
    let schema = shared.schema.load();
    schema
        .stream_sinks
        .iter()
        .any(|s| crate::store::keys::sink_cursor(s) == cursor_key)
}

/// One node's turn at delivering a sink.
struct Deliverer<'a> {
    shared: &'a Shared,
    cluster: &'a Cluster,
    client: &'a reqwest::Client,
    sink: &'a Sink,
    key: &'a str,
    /// The partition whose lease this delivery holds to.
    part: usize,
}

impl Deliverer<'_> {
    fn may_go_on(&self) -> bool {
        self.cluster.owned.ready(self.part) && configured(self.shared, self.key)
    }

    /// Delivers from the saved cursor on until the lease or the sink is
    /// gone, or another node saved the cursor (`Ok`), or NATS or the file
    /// fails (`Err`, why).
    async fn while_held(&mut self) -> Result<(), String> {
        let (mut cursor, mut revision) = self
            .cluster
            .sink_cursor(self.key)
            .await
            .map_err(|e| e.to_string())?;
        let node = &self.cluster.options.node;
        let mut file = match self.sink {
            Sink::File { path } => {
                let first = !cursor.files.contains_key(node);
                let f = NodeFile::take_up(path, node, &mut cursor)?;
                if first {
                    match self.save(&cursor, revision).await? {
                        Some(r) => revision = Some(r),
                        None => return Ok(()),
                    }
                }
                Some(f)
            }
            _ => None,
        };
        let consumer = self
            .cluster
            .sink_consumer(cursor.next)
            .await
            .map_err(|e| e.to_string())?;
        let mut idle = 0;
        while self.may_go_on() && idle < IDLE_FETCHES {
            let fetched = self
                .cluster
                .fetch(&consumer)
                .await
                .map_err(|e| e.to_string())?;
            let batch = effects_of(&fetched);
            idle = if batch.is_empty() { idle + 1 } else { 0 };
            for chunk in batch.chunks(match file {
                Some(_) => batch.len().max(1),
                None => SAVE_EVERY,
            }) {
                let done = match file.as_mut() {
                    Some(f) => {
                        let written = f.write(chunk, &mut cursor)?;
                        let label = crate::outbox::sink_label(self.sink);
                        self.shared
                            .count_deliveries(&label, chunk.len() as u64, Ok(()));
                        written
                    }
                    None => self.send_all(chunk).await,
                };
                let Some(last) = done else {
                    return Ok(());
                };
                cursor.next = last + 1;
                match self.save(&cursor, revision).await? {
                    Some(r) => revision = Some(r),
                    None => return Ok(()),
                }
            }
        }
        Ok(())
    }

    /// Sends each effect; the last stream sequence delivered (or
    /// dead-lettered), `None` when it had to stop first.
    async fn send_all(&self, chunk: &[(u64, usize, Effect, &[u8])]) -> Option<u64> {
        for (seq, part, effect, body) in chunk {
            let go_on = || self.may_go_on();
            match send::deliver(
                self.shared,
                self.client,
                self.sink,
                effect,
                body,
                *seq,
                go_on,
            )
            .await
            {
                Delivery::Done => {}
                Delivery::Refused(why) => {
                    if let Some(store) = self.shared.folder.parts.get(*part) {
                        send::dead_letter(store, self.sink, *seq, effect, &why);
                    }
                }
                Delivery::Stopped => return None,
            }
        }
        chunk.last().map(|(seq, ..)| *seq)
    }

    /// Saves the cursor while the lease is held; `None`: another node
    /// saved it since this one read it, so this one stops.
    async fn save(
        &self,
        cursor: &SinkCursor,
        revision: Option<u64>,
    ) -> Result<Option<u64>, String> {
        if !self.cluster.owned.holds(self.part) {
            return Ok(None);
        }
        let saved = self
            .cluster
            .save_sink_cursor(self.key, cursor, revision)
            .await
            .map_err(|e| e.to_string())?;
        if saved.is_none() {
            let sink = crate::outbox::sink_label(self.sink);
            tracing::warn!(%sink, "Another node delivers this sink now; stopping here.");
        }
        Ok(saved)
    }
}

/// The effects of a fetch: stream sequence, partition, effect and its
/// JSON. A message that is not an effect is skipped (logged).
fn effects_of(fetched: &crate::cluster::consume::Fetched) -> Vec<(u64, usize, Effect, &[u8])> {
    fetched
        .messages
        .iter()
        .filter_map(|m| {
            let seq = m.info().ok()?.stream_sequence;
            let part = m.subject.rsplit('.').next()?.parse().ok()?;
            match serde_json::from_slice::<Effect>(&m.payload) {
                Ok(e) => Some((seq, part, e, m.payload.as_ref())),
                Err(error) => {
                    tracing::error!(seq, %error, "A message of the effects stream is not an effect; skipped.");
                    None
                }
            }
        })
        .collect()
}

/// A file sink as this node writes it.
struct NodeFile {
    path: PathBuf,
    node: String,
    file: std::fs::File,
    len: u64,
}

impl NodeFile {
    /// Opens this node's file of the sink, cutting off what a crash left
    /// past the length the cursor records for it.
    fn take_up(configured: &Path, node: &str, cursor: &mut SinkCursor) -> Result<NodeFile, String> {
        let path = node_file(configured, node);
        let io = |e: std::io::Error| format!("cannot write effects to {}: {e}", path.display());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        // A file the cluster has no length of is not this cluster's
        // writing (another run's, kept whole): its length is recorded
        // before the node's first write.
        let recorded = cursor.files.get(node).copied().unwrap_or(len);
        if len > recorded {
            // Only whole effects of ours are cut: another program's bytes
            // are refused, not lost.
            let tail = crate::outbox::read_tail(&path, recorded, len).map_err(io)?;
            if !written_by_nudge(&tail) {
                return Err(format!(
                    "the file sink {} holds {} bytes past what the cluster recorded for node `{node}` that are not effects; nothing was cut or written: move the file away",
                    path.display(),
                    len - recorded
                ));
            }
            file.set_len(recorded).map_err(io)?;
        } else if len < recorded {
            tracing::warn!(file = %path.display(), len, recorded, "The file sink is shorter than this node wrote it (rotated or cut); appending to it.");
        }
        cursor.files.insert(node.to_string(), len.min(recorded));
        Ok(NodeFile {
            len: len.min(recorded),
            path,
            node: node.to_string(),
            file,
        })
    }

    /// Appends the effects and syncs; records the new length in `cursor`
    /// (saved by the caller); the last stream sequence written.
    fn write(
        &mut self,
        chunk: &[(u64, usize, Effect, &[u8])],
        cursor: &mut SinkCursor,
    ) -> Result<Option<u64>, String> {
        let mut buf = Vec::new();
        for (_, _, effect, _) in chunk {
            crate::outbox::write_line(&mut buf, effect);
        }
        let io =
            |e: std::io::Error| format!("cannot write effects to {}: {e}", self.path.display());
        self.file.write_all(&buf).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.len += buf.len() as u64;
        cursor.files.insert(self.node.clone(), self.len);
        Ok(chunk.last().map(|(seq, ..)| *seq))
    }
}

/// Whether `bytes` are lines of effects, the last maybe cut short.
fn written_by_nudge(bytes: &[u8]) -> bool {
    let mut lines = bytes.split_inclusive(|b| *b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let whole = line.ends_with(b"\n");
        if whole && serde_json::from_slice::<Effect>(line).is_err() {
            return false;
        }
        if !whole && lines.peek().is_some() {
            return false;
        }
    }
    true
}

/// The configured path with the node's name added before the extension:
/// `out/effects.ndjson` is written by node `a` as `out/effects-a.ndjson`.
fn node_file(path: &Path, node: &str) -> PathBuf {
    crate::base::path_of_writer(path, node)
}

#[cfg(test)]
mod tests {
    use super::{node_file, written_by_nudge};
    use std::path::Path;

    #[test]
    fn a_node_writes_its_own_file_beside_the_configured_one() {
        assert_eq!(
            node_file(Path::new("out/effects.ndjson"), "a"),
            Path::new("out/effects-a.ndjson")
        );
        assert_eq!(node_file(Path::new("fx"), "b"), Path::new("fx-b"));
    }

    #[test]
    fn only_effects_cut_short_are_cut() {
        assert!(written_by_nudge(b""));
        assert!(!written_by_nudge(b"hello\n"));
        assert!(!written_by_nudge(b"{\"ke\n{\"x\":1}\n"));
    }
}

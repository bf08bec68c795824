//! Cluster mode's side of the daemon: the lease task, one consumer task
//! per partition this node holds (fetch in order, hand the batch to the
//! writer, acknowledge after its commit), member reads answered for other
//! nodes, and the ingest and cluster routes' work. The link to NATS itself
//! is `crate::cluster`.

use super::Shared;
use super::apply::Entry;
use super::writer::Command;
use crate::cluster::bounded;
use crate::cluster::lease::NodeInfo;
use crate::cluster::{Cluster, Kind, Outgoing};
use crate::model::EventError;
use serde_json::json;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a consumer waits after a failure before it starts again.
const RETRY: Duration = Duration::from_secs(1);
/// Empty fetches (half a second each) between two checks that the
/// partition's consumer still sees the stream.
const STALL_CHECK: u32 = 4;
/// How long a consumer waits for a late renewal of its lease.
const PAUSE: Duration = Duration::from_millis(50);

/// Starts the node's cluster tasks: leases, and a consumer for each
/// partition the node takes.
pub fn spawn(shared: Arc<Shared>, writer: Sender<Command>, http: String) {
    let Some(cluster) = shared.cluster.clone() else {
        return;
    };
    let (gained_tx, mut gained) = tokio::sync::mpsc::unbounded_channel();
    let (relays, writer_relays) = (cluster.clone(), writer.clone());
    let leases = cluster.clone();
    let status = shared.clone();
    let lags = cluster.clone();
    let me = move || NodeInfo {
        stopping: lags.owned.stopping(),
        http: http.clone(),
        version: status.status.load().ruleset.clone(),
        lags: lags
            .owned
            .list()
            .into_iter()
            .filter_map(|p| Some((p.to_string(), lags.lag(p)?)))
            .collect(),
        copies: (0..lags.partitions)
            .map(|p| (p.to_string(), applied(&status, p)))
            .filter(|(_, seq)| *seq > 0)
            .collect(),
    };
    let (leaving_tx, leaving) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move { leases.keep_leases(me, gained_tx, leaving_tx).await });
    tokio::spawn(hand_over(cluster.clone(), writer.clone(), leaving));
    let consumers = shared.clone();
    tokio::spawn(async move {
        while let Some(p) = gained.recv().await {
            if let Some(taken) = cluster.owned.taken(p) {
                tokio::spawn(consume(consumers.clone(), writer.clone(), p, taken));
            }
        }
    });
    tokio::spawn(send_relays(shared.clone(), relays, writer_relays));
    tokio::spawn(super::asks::answer(shared));
}

/// Takes and puts the snapshot of each partition the spread gives another
/// node, then lets its lease go ([`crate::cluster::lease::Owned::handed`]).
async fn hand_over(
    cluster: Arc<Cluster>,
    writer: Sender<Command>,
    mut leaving: tokio::sync::mpsc::UnboundedReceiver<usize>,
) {
    while let Some(p) = leaving.recv().await {
        snapshot_now(&cluster, &writer, p).await;
        cluster.owned.handed(p);
    }
}

/// At a clean stop: takes and puts a snapshot of each partition held here
/// before the leases go, so the nodes that take them start from here, not
/// from older copies. A stop waits at most a minute for it.
pub async fn snapshot_held(cluster: &Arc<Cluster>, writer: &Sender<Command>) {
    let all = async {
        for p in cluster.owned.list() {
            if !snapshot_now(cluster, writer, p).await {
                return;
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .is_err()
    {
        tracing::warn!("Snapshots at the stop took over a minute; the others are left.");
    }
}

/// Has the writer take partition `p`'s snapshot now and puts it; false
/// when the writer is gone.
async fn snapshot_now(cluster: &Arc<Cluster>, writer: &Sender<Command>, p: usize) -> bool {
    let (reply, answer) = oneshot::channel();
    if writer.send(Command::Snapshot { part: p, reply }).is_err() {
        return false;
    }
    match answer.await {
        Ok(Ok(taken)) => super::snapshots::put(cluster, p, taken).await,
        Ok(Err(why)) => tracing::warn!(partition = p, error = %why, "Cannot take a snapshot."),
        Err(_) => return false,
    }
    true
}

/// The last stream sequence partition `p` applied here.
fn applied(shared: &Shared, p: usize) -> u64 {
    use crate::store::Store;
    shared.folder.parts[p]
        .meta_u64(crate::store::keys::STREAM_SEQ)
        .unwrap_or(0)
}

/// Reads the keys partition `p` published before (its effects wait until
/// they are known) and where the stream stood for it; then the partition
/// is ready.
async fn take_up(shared: &Shared, cluster: &Cluster, p: usize, alive: &impl Fn() -> bool) {
    while alive() {
        // Where the stream stood for the partition: until it is known, a
        // member not in this node's copy may still be in the stream, so
        // the partition is not ready (reads of it answer 503, not 404).
        let taken = match cluster.take_up_published(p).await {
            Ok(n) => cluster.last_of(p).await.map(|to| (n, to.unwrap_or(0))),
            Err(e) => Err(e),
        };
        match taken {
            Ok((n, to)) => {
                cluster.taken_at[p].store(to, std::sync::atomic::Ordering::Relaxed);
                // The effects its earlier owners published (known here now,
                // so not published again) and the stream sequences of the
                // events this node applies to catch up.
                tracing::info!(
                    partition = p,
                    effects_already_published = n,
                    catch_up_from_seq = applied(shared, p) + 1,
                    catch_up_to_seq = to,
                    "Partition taken up."
                );
                cluster.owned.set_ready(p);
                shared.outbox_changed.notify_waiters();
                break;
            }
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "Cannot take the partition up (its published effects, its last event); retrying.");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Puts partition `p`'s snapshot in place of this node's copy when the
/// snapshot is further on. Any failure leaves the copy (applied from its
/// own sequence on: slower, as right).
async fn restore_if_further(
    shared: &Shared,
    cluster: &Cluster,
    writer: &Sender<Command>,
    p: usize,
) {
    let Some(dir) = shared.snapshots.as_ref().map(|s| s.dir.clone()) else {
        return;
    };
    let copy = applied(shared, p);
    let info = match cluster.snapshot_info(p).await {
        Ok(Some(info)) if info.applied > copy => info,
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(partition = p, error = %e, "Cannot read the partition's snapshot; going on from this node's copy.");
            return;
        }
    };
    let file = dir.join(format!("p{p}.in"));
    let got = match tokio::fs::create_dir_all(&dir).await {
        Ok(()) => cluster.get_snapshot(p, &file).await,
        Err(e) => Err(crate::cluster::ClusterError::JetStream(format!(
            "{}: {e}",
            dir.display()
        ))),
    };
    let restored = match got {
        Ok(got) => {
            let (reply, answer) = oneshot::channel();
            let restore = Command::Restore {
                part: p,
                file: file.clone(),
                reply,
            };
            match writer.send(restore) {
                Ok(()) => answer
                    .await
                    .unwrap_or_else(|_| Err("the writer stopped".into()))
                    .map(|n| (n, got)),
                Err(_) => Err("the writer stopped".into()),
            }
        }
        Err(e) => Err(e.to_string()),
    };
    let _ = tokio::fs::remove_file(&file).await;
    match restored {
        Ok((entries, got)) => {
            tracing::info!(partition = p, applied = got.applied, copy, entries, from = %got.node, "Partition restored from its snapshot.")
        }
        Err(why) => {
            tracing::warn!(partition = p, snapshot = info.applied, copy, error = %why, "Cannot restore the partition's snapshot; going on from this node's copy.")
        }
    }
}

/// Applies partition `p`'s events for as long as this taking of its lease
/// lasts.
async fn consume(shared: Arc<Shared>, writer: Sender<Command>, p: usize, taken: u64) {
    let Some(cluster) = shared.cluster.clone() else {
        return;
    };
    // This taking of the lease lasts until the lease is lost or let go; a
    // renewal that comes late only pauses it (the writer applies nothing
    // while the lease is not known to be held).
    let alive = || cluster.owned.taken(p) == Some(taken);
    restore_if_further(&shared, &cluster, &writer, p).await;
    take_up(&shared, &cluster, p, &alive).await;
    // A daily tick due for the partition is published now, not at the
    // schedule's next round.
    let _ = writer.send(Command::Tick);
    let mut consumer = None;
    // This node's last consumer of the partition, deleted when replaced.
    let mut last_name: Option<String> = None;
    let mut empty = 0u32;
    while alive() {
        if !cluster.owned.holds(p) {
            tokio::time::sleep(PAUSE).await;
            continue;
        }
        let c = match &consumer {
            Some(c) => c,
            None => match cluster
                .consumer(p, applied(&shared, p) + 1, last_name.as_deref())
                .await
            {
                Ok(mut c) => {
                    last_name = c.info().await.ok().map(|i| i.name.clone());
                    consumer.insert(c)
                }
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "Cannot make the partition's consumer; retrying.");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            },
        };
        let fetched = match cluster.fetch(c).await {
            Ok(f) if f.messages.is_empty() => {
                cluster.note_lag(p, &f);
                empty += 1;
                // A consumer whose NATS server died answers every pull with
                // nothing: now and then the stream is asked whether the
                // partition has events past the last applied.
                if empty.is_multiple_of(STALL_CHECK) && cluster.behind(p, applied(&shared, p)).await
                {
                    tracing::warn!(
                        partition = p,
                        "The partition's consumer gives nothing while the stream has more; making it anew."
                    );
                    consumer = None;
                }
                continue;
            }
            Ok(f) => {
                cluster.note_lag(p, &f);
                empty = 0;
                f
            }
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "Fetching events failed; starting again from the last applied.");
                consumer = None;
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let Some(answer) = apply_waiting(&shared, &writer, p, &fetched).await else {
            return;
        };
        match answer {
            Ok(Ok(())) => {
                if let Err(e) = fetched.ack().await {
                    tracing::warn!(partition = p, error = %e, "Acknowledging applied events failed (they are skipped when redelivered).");
                }
            }
            Ok(Err(why)) if !cluster.owned.holds(p) => {
                // Handed over or lost: the lease task said so already.
                tracing::debug!(partition = p, error = %why, "Batch not applied: the lease is gone.");
                consumer = None;
            }
            Ok(Err(why)) => {
                not_applied(p, &why);
                consumer = None;
                tokio::time::sleep(RETRY).await;
            }
            Err(_) => return,
        }
    }
    tracing::info!(partition = p, "Partition no longer applied here.");
}

/// How long a fetched batch that waits (members moving in, a refitting
/// tick's histories) is offered to the writer again before the consumer
/// is made anew: a merge across partitions waits for the giving
/// partition's holder, usually milliseconds, and the partition's later
/// entries wait behind it.
const QUICK_WAITS: Duration = Duration::from_secs(30);

/// Hands a fetched batch to the writer, again after a short pause while
/// it waits (up to [`QUICK_WAITS`]); the writer's last answer (`None`:
/// the writer is gone).
async fn apply_waiting(
    shared: &Shared,
    writer: &Sender<Command>,
    p: usize,
    fetched: &crate::cluster::consume::Fetched,
) -> Option<Result<Result<(), super::apply::NotApplied>, oneshot::error::RecvError>> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        let (events, through) = parse(shared, p, &fetched.events());
        let (reply, answer) = oneshot::channel();
        let apply = Command::Apply {
            part: p,
            events,
            through,
            reply,
        };
        writer.send(apply).ok()?;
        let answer = answer.await;
        let waits = matches!(answer, Ok(Err(super::apply::NotApplied::Waits(_))));
        if !waits || started.elapsed() > QUICK_WAITS {
            return Some(answer);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Says why a fetch was not applied: a partition waiting at a refitting
/// tick (`daemon::fits`) is not a failure.
fn not_applied(p: usize, why: &super::apply::NotApplied) {
    match why {
        super::apply::NotApplied::Waits(why) => {
            tracing::debug!(partition = p, %why, "Waiting at the tick.");
        }
        super::apply::NotApplied::Failed(why) => {
            tracing::warn!(partition = p, error = %why, "Applying events failed; starting again from the last applied.");
        }
    }
}

/// The fetched events, relays and ticks, parsed (events with the running
/// config), and the last sequence among them. One that no longer parses
/// (the config changed since it was accepted) is left out, said in the
/// log, and counted.
fn parse(shared: &Shared, p: usize, fetched: &[(u64, &[u8], Kind)]) -> (Vec<(u64, Entry)>, u64) {
    let schema = shared.schema.load();
    let routing = p == 0 && super::routing::routed(shared);
    let mut events = Vec::with_capacity(fetched.len());
    let mut through = 0;
    for (seq, body, kind) in fetched {
        through = through.max(*seq);
        match parse_one(&schema, body, kind, routing) {
            Ok(e) => events.push((*seq, e)),
            Err(why) => {
                shared
                    .events_rejected
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(partition = p, seq, error = %why, "An event in the stream does not parse with the running config; skipped.");
                // Members moving here before it are taken in all the same.
                if let Kind::Routed(r) = kind
                    && !r.from.is_empty()
                {
                    events.push((*seq, Entry::Routed(r.clone(), Box::new(Entry::Skipped))));
                }
            }
        }
    }
    (events, through)
}

/// One message of a partition's stream; in partition 0 on One ID, a
/// client's event or a relay is to be routed.
fn parse_one(
    schema: &crate::config::Schema,
    body: &[u8],
    kind: &Kind,
    routing: bool,
) -> Result<Entry, String> {
    use super::routing::ToRoute;
    let relay = || {
        serde_json::from_slice(body)
            .map(Box::new)
            .map_err(|e| format!("a relay: {e}"))
    };
    let event = || {
        serde_json::from_slice::<serde_json::Value>(body)
            .map_err(|e| e.to_string())
            .and_then(|v| crate::io::event::event_from_json(schema, v).map_err(|e| e.to_string()))
    };
    let bytes = || bytes::Bytes::copy_from_slice(body);
    Ok(match kind {
        Kind::Event if routing => Entry::Route(ToRoute::Event(event()?), bytes()),
        Kind::Relay if routing => Entry::Route(ToRoute::Relay(relay()?), bytes()),
        Kind::Event => Entry::Event(event()?),
        Kind::Relay => Entry::Relay(relay()?),
        Kind::Tick => std::str::from_utf8(body)
            .ok()
            .and_then(crate::base::time::parse_date)
            .map(Entry::Tick)
            .ok_or_else(|| "a tick without its day".to_string())?,
        Kind::Routed(r) => {
            let what = match r.relay {
                true => Entry::Relay(relay()?),
                false => Entry::Event(event()?),
            };
            Entry::Routed(r.clone(), Box::new(what))
        }
        Kind::Move(seq) => Entry::Move(
            *seq,
            serde_json::from_slice(body).map_err(|e| format!("a move: {e}"))?,
        ),
    })
}

/// Validates a request's events and publishes each to its partition;
/// `Ok` once JetStream stored all of them (with how many it already
/// had), `Err` with the answer to give.
pub async fn ingest(
    shared: &Shared,
    values: Vec<serde_json::Value>,
) -> Result<(usize, usize), IngestError> {
    let Some(cluster) = shared.cluster.as_ref() else {
        return Err(IngestError::Unavailable("not in cluster mode".into()));
    };
    let schema = shared.schema.load();
    // One ID: partition 0 routes every event (`daemon::routing`).
    let routed = super::routing::routed(shared);
    let now = crate::engine::clock::Clock::now(&crate::engine::clock::SystemClock);
    let mut out = Vec::with_capacity(values.len());
    let mut errors = Vec::new();
    for (i, v) in values.into_iter().enumerate() {
        let body = bytes::Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
        let parsed = crate::io::event::event_from_json(&schema, v)
            .and_then(|e| crate::io::event::check_not_ahead(&e, now).map(|()| e));
        match parsed {
            Ok(e) => out.push(Outgoing {
                partition: match routed {
                    true => 0,
                    false => crate::store::folder::partition_of(&e.member, cluster.partitions),
                },
                id: e.id,
                body,
                kind: Kind::Event,
            }),
            Err(mut e) => {
                e.line = Some(i + 1);
                errors.push(e);
            }
        }
    }
    if !errors.is_empty() {
        return Err(IngestError::Invalid(errors));
    }
    let n = out.len();
    let duplicates = cluster
        .publish_events(out)
        .await
        .map_err(|e| IngestError::Unavailable(e.to_string()))?;
    Ok((n - duplicates, duplicates))
}

pub enum IngestError {
    Invalid(Vec<EventError>),
    Unavailable(String),
}

/// How long a view waits for one NATS answer.
const VIEW_WAIT: Duration = Duration::from_secs(2);

/// Cluster mode's lines of `/metrics`: partitions held, lease changes,
/// and per partition the events applied here and (held here) the lag.
pub async fn metrics(shared: &Shared, out: &mut String) {
    use std::fmt::Write as _;
    let Some(cluster) = shared.cluster.as_ref() else {
        return;
    };
    let held = cluster.owned.list();
    let _ = writeln!(
        out,
        "# HELP nudge_cluster_partitions_held Partitions whose lease this node holds.\n# TYPE nudge_cluster_partitions_held gauge\nnudge_cluster_partitions_held {}",
        held.len()
    );
    let _ = writeln!(
        out,
        "# HELP nudge_cluster_lease_changes_total Leases this node took, lost or let go.\n# TYPE nudge_cluster_lease_changes_total counter\nnudge_cluster_lease_changes_total {}",
        cluster.owned.changes()
    );
    let _ = writeln!(
        out,
        "# HELP nudge_cluster_members_moved_in_total One ID: members taken in here from other partitions by merges.\n# TYPE nudge_cluster_members_moved_in_total counter\nnudge_cluster_members_moved_in_total {}",
        cluster.moved_in.load(std::sync::atomic::Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP nudge_cluster_applied_total Events applied on this node, by partition.\n# TYPE nudge_cluster_applied_total counter"
    );
    for (p, n) in cluster.applied.iter().enumerate() {
        let n = n.load(std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(out, "nudge_cluster_applied_total{{partition=\"{p}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP nudge_cluster_lag Events of a partition held here not yet applied.\n# TYPE nudge_cluster_lag gauge"
    );
    for p in held {
        if let Some(lag) = cluster.lag(p) {
            let _ = writeln!(out, "nudge_cluster_lag{{partition=\"{p}\"}} {lag}");
        }
    }
}

/// `GET /v1/cluster`: the nodes, and each partition's owner and lag.
pub async fn view(shared: &Shared) -> serde_json::Value {
    let Some(cluster) = shared.cluster.as_ref() else {
        return json!({"error": "not in cluster mode"});
    };
    let nodes = bounded(VIEW_WAIT, cluster.live_nodes())
        .await
        .and_then(Result::ok);
    let owners = bounded(VIEW_WAIT, cluster.owners())
        .await
        .unwrap_or_default();
    let partitions: Vec<_> = (0..cluster.partitions)
        .map(|p| {
            // Each holder says its partitions' lags in its node entry.
            let lag = cluster.lag(p).or_else(|| {
                let owner = nodes.as_ref()?.get(owners.get(&p)?)?;
                owner.lags.get(&p.to_string()).copied()
            });
            json!({"partition": p, "owner": owners.get(&p), "lag": lag})
        })
        .collect();
    // Each sink is delivered by its partition's holder.
    let sinks: Vec<_> = shared
        .schema
        .load()
        .stream_sinks
        .iter()
        .map(|s| {
            let p = cluster.sink_partition(&crate::store::keys::sink_cursor(s));
            json!({"sink": crate::outbox::sink_label(s), "partition": p, "node": owners.get(&p)})
        })
        .collect();
    let nodes = nodes.unwrap_or_default();
    json!({
        "node": cluster.options.node,
        "nodes": nodes.iter().map(|(name, n)| json!({"node": name, "http": n.http, "version": n.version})).collect::<Vec<_>>(),
        "partitions": partitions,
        "sinks": sinks,
        "held_here": cluster.owned.list(),
        "lease_changes": cluster.owned.changes(),
    })
}

/// Publishes the relays the writer hands over, each batch again until
/// JetStream has every one (the ids make a resend safe), then confirms
/// them to the writer.
pub async fn send_relays(shared: Arc<Shared>, cluster: Arc<Cluster>, writer: Sender<Command>) {
    let Some(mut queue) = cluster.relays.rx.lock().ok().and_then(|mut q| q.take()) else {
        return;
    };
    while let Some((part, relays)) = queue.recv().await {
        let mut out = Vec::with_capacity(relays.len());
        for e in &relays {
            match serde_json::to_vec(e) {
                Ok(body) => out.push(Outgoing {
                    // One ID: partition 0 routes them.
                    partition: match super::routing::routed(&shared) {
                        true => 0,
                        false => crate::store::folder::partition_of(&e.member, cluster.partitions),
                    },
                    id: format!("relay:{}", e.key),
                    body: body.into(),
                    kind: Kind::Relay,
                }),
                Err(why) => {
                    tracing::error!(key = %e.key, error = %why, "A relay cannot be encoded; it is not sent.")
                }
            }
        }
        loop {
            let resend: Vec<Outgoing> = out.iter().map(Outgoing::again).collect();
            match cluster.publish_events(resend).await {
                Ok(_) => break,
                Err(why) => {
                    tracing::warn!(partition = part, relays = out.len(), error = %why, "Sending relays to other partitions failed; retrying.");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
        let keys = relays.into_iter().map(|e| e.key).collect();
        if writer.send(Command::Confirm { part, keys }).is_err() {
            return;
        }
    }
}

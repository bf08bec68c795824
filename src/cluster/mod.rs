//! Cluster mode: the data folder's partitions spread over the nodes of a
//! NATS JetStream cluster. This layer owns the link to NATS: the streams
//! and buckets nudge keeps there (`nudge_events`, `nudge_effects`, the
//! lease and node buckets), publishing events and effects, the leases
//! that say which node applies which partition ([`lease`]), and reading a
//! partition's events in order ([`consume`]). It does not apply anything:
//! the daemon's writer does, through the same engine commit as a single
//! node, with the stream sequence stored in that commit.
//!
//! Subjects: events of partition `k` are published to `nudge.events.k`
//! with `Nats-Msg-Id` = the event id, effects of partition `k` to
//! `nudge.effects.k` with `Nats-Msg-Id` = the effect key. What a rule gives
//! a member of another partition (a relay, `to`) travels to that
//! partition's events subject as the effect's JSON, with the header
//! [`RELAY_HEADER`] and `Nats-Msg-Id` = `relay:<effect key>`.

pub mod allot;
pub mod bucket;
pub mod consume;
pub mod fits;
pub mod handover;
pub mod lease;
pub mod sinks;
pub mod snapshot;

use crate::config::Schema;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use bucket::Bucket;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot reach NATS at {url}: {why}")]
    Connect { url: String, why: String },
    #[error("NATS JetStream: {0}")]
    JetStream(String),
    #[error(
        "the cluster was made with {cluster} partitions and this node's `storage.partitions` is {node}: every node runs the same config"
    )]
    Partitions { cluster: usize, node: usize },
    #[error(
        "`ids` cannot change while the cluster runs: where members are depends on them; stop every node and start each with the new config (dropping `ids` after merges moved members between partitions is not supported)"
    )]
    IdsChanged,
    #[error(
        "this cluster routes members by `ids` (a node started with them, and merges may have moved members between partitions): a node without `ids` would look for members at their home partitions; start it with the cluster's `ids`"
    )]
    IdsDropped,
    #[error("`--node` is a name of letters, digits, `-` and `_`, not `{0}`")]
    NodeName(String),
    #[error(
        "a node named `{node}` is already in the cluster (listening on {http}); give this one another `--node`"
    )]
    NodeTaken { node: String, http: String },
}

impl ClusterError {
    fn js(e: impl std::fmt::Display) -> ClusterError {
        ClusterError::JetStream(e.to_string())
    }
}

/// How a node joins the cluster (`nudge run --cluster URL --node NAME`).
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// NATS server URLs, comma-separated.
    pub urls: String,
    /// This node's name, unique in the cluster.
    pub node: String,
    /// How long a partition's lease lasts without renewal.
    pub lease: Duration,
    /// Replicas of nudge's streams and buckets (1, or 3 on a NATS cluster).
    pub replicas: usize,
    /// Events a partition's holder applies between two snapshots of it
    /// (0: none are taken).
    pub snapshot_every: u64,
    /// A partition with events since its last snapshot gets one after this.
    pub snapshot_at_most: Duration,
}

/// The stream every event goes to, split by partition subject.
pub const EVENTS_STREAM: &str = "nudge_events";
/// The stream of committed effects, split by partition subject.
pub const EFFECTS_STREAM: &str = "nudge_effects";
const LEASES_BUCKET: &str = "nudge_leases";
const NODES_BUCKET: &str = "nudge_nodes";
const SETTINGS_BUCKET: &str = "nudge_cluster";

/// The header that marks a message of the events stream as a relay from
/// another partition (its body an effect, not an event). Only nodes set
/// it: a client's events are published by a node, which never does.
pub const RELAY_HEADER: &str = "Nudge-Relay";

/// The header that marks a message of the events stream as the
/// partition's daily tick (its body the day): published by the holder
/// when the tick is due, applied at its place in the stream by whichever
/// node applies the partition, so a partition rebuilt elsewhere ticks at
/// the same point of its history.
pub const TICK_HEADER: &str = "Nudge-Tick";

/// How long JetStream drops a redelivered event or effect by its id
/// (`Nats-Msg-Id`). Past it, the engine's dedup window catches events
/// and a new owner's list of published effect keys catches effects.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);

pub fn events_subject(partition: usize) -> String {
    format!("nudge.events.{partition}")
}

pub fn effects_subject(partition: usize) -> String {
    format!("nudge.effects.{partition}")
}

/// A node's link to the cluster.
pub struct Cluster {
    pub options: ClusterOptions,
    pub partitions: usize,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub events: stream::Stream,
    pub effects: stream::Stream,
    pub leases: Bucket,
    pub nodes: Bucket,
    /// Budgets and stock handed out to partitions ([`allot`]).
    pub budgets: Bucket,
    /// Where each of the config's sinks stands in the effects stream
    /// ([`sinks`]).
    pub sinks: Bucket,
    /// Partitions' snapshots ([`snapshot`]).
    pub snapshots: async_nats::jetstream::object_store::ObjectStore,
    /// The fit each day's refitting ticks use ([`fits`]); histories go
    /// in `snapshots`.
    pub fits: Bucket,
    /// The runtime the node's NATS client runs on, for the writer's
    /// thread to wait on.
    pub runtime: tokio::runtime::Handle,
    /// The partitions this node holds the lease of.
    pub owned: Arc<lease::Owned>,
    /// Events applied here, by partition (for `/metrics`).
    pub applied: Vec<std::sync::atomic::AtomicU64>,
    /// One ID: members taken in here from other partitions.
    pub moved_in: std::sync::atomic::AtomicU64,
    /// Events waiting in each partition held here, as of the last fetch.
    pub lags: Vec<std::sync::atomic::AtomicU64>,
    /// The stream sequence each partition had when this node took it: a
    /// member not found before its copy applied that far may be one not
    /// rebuilt yet.
    pub taken_at: Vec<std::sync::atomic::AtomicU64>,
    /// Relays committed here for other partitions, to publish: the writer
    /// sends them, the daemon's relay task takes the receiver.
    pub relays: RelayQueue,
    /// Consumers made by this process so far: each is named
    /// `p<k>-<node>-<pid>-<n>`, so a restarted node's names are new too.
    pub consumers_made: std::sync::atomic::AtomicU64,
    /// The keys of the effects each partition held here has published.
    published:
        std::sync::Mutex<std::collections::HashMap<usize, std::collections::HashSet<String>>>,
}

/// A reload must keep the One ID identifier kinds: with them, events are
/// routed by partition 0's directory and members live where merges moved
/// them (`engine::directory`); without, each goes to its home partition.
pub fn same_ids(running: &Schema, new: &Schema) -> Result<(), ClusterError> {
    match running.id_kinds == new.id_kinds {
        true => Ok(()),
        false => Err(ClusterError::IdsChanged),
    }
}

/// `f`'s answer, or `None` when it takes longer than `wait` (NATS away,
/// or a stream electing its leader).
pub async fn bounded<T>(wait: Duration, f: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout(wait, f).await.ok()
}

/// Connects and makes sure the streams and buckets are there (made by the
/// first node, checked by the others). `routes_by_ids`: the node's config
/// has One ID's `ids`.
pub async fn connect(
    mut options: ClusterOptions,
    partitions: usize,
    routes_by_ids: bool,
) -> Result<Cluster, ClusterError> {
    if options.node.is_empty()
        || !options
            .node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ClusterError::NodeName(options.node.clone()));
    }
    let servers = options
        .urls
        .split(',')
        .map(|u| {
            u.trim()
                .parse::<async_nats::ServerAddr>()
                .map_err(|e| ClusterError::Connect {
                    url: u.trim().to_string(),
                    why: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let client = async_nats::ConnectOptions::new()
        .name(format!("nudge {}", options.node))
        .connect(servers)
        .await
        .map_err(|e| ClusterError::Connect {
            url: options.urls.clone(),
            why: e.to_string(),
        })?;
    let replicas = options.replicas.max(1);
    let js = jetstream::new(client.clone());
    // A JetStream cluster that has just started has no leader for a few
    // seconds and refuses to make streams: asked again for a while.
    let started = std::time::Instant::now();
    let Made {
        events,
        effects,
        leases,
        nodes,
        budgets,
        sinks,
        snapshots,
        fits,
    } = loop {
        match ensure_all(&js, &options, partitions, routes_by_ids, replicas).await {
            Ok(made) => break made,
            Err(e @ ClusterError::JetStream(_)) if started.elapsed() < JETSTREAM_WAIT => {
                tracing::warn!(error = %e, "JetStream is not ready; asking again.");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    };
    // The lease time is the cluster's: the buckets' expiry, set by the
    // node that made them. A node counting another would renew too late.
    let made_with = lease_time(&js).await?;
    if made_with != options.lease {
        tracing::warn!(
            this_node = options.lease.as_secs_f64(),
            cluster = made_with.as_secs_f64(),
            "`--lease` differs from the lease time the cluster was made with; using the cluster's."
        );
        options.lease = made_with;
    }
    let cluster = Cluster {
        owned: Arc::new(lease::Owned::new(options.lease)),
        options,
        partitions,
        client,
        js,
        events,
        effects,
        leases,
        nodes,
        budgets,
        sinks,
        snapshots,
        fits,
        runtime: tokio::runtime::Handle::current(),
        published: Default::default(),
        moved_in: Default::default(),
        applied: (0..partitions)
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect(),
        lags: (0..partitions)
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect(),
        taken_at: (0..partitions)
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect(),
        consumers_made: std::sync::atomic::AtomicU64::new(0),
        relays: RelayQueue::new(),
    };
    cluster.claim_name().await?;
    Ok(cluster)
}

/// The lease bucket's expiry.
async fn lease_time(js: &jetstream::Context) -> Result<Duration, ClusterError> {
    let mut s = js
        .get_stream(format!("KV_{LEASES_BUCKET}"))
        .await
        .map_err(ClusterError::js)?;
    Ok(s.info().await.map_err(ClusterError::js)?.config.max_age)
}

/// How long a starting node waits for JetStream to make its streams.
const JETSTREAM_WAIT: Duration = Duration::from_secs(30);

/// What nudge keeps in JetStream.
struct Made {
    events: stream::Stream,
    effects: stream::Stream,
    leases: Bucket,
    nodes: Bucket,
    budgets: Bucket,
    sinks: Bucket,
    snapshots: async_nats::jetstream::object_store::ObjectStore,
    fits: Bucket,
}

/// The events and effects streams and the buckets, made or found, and the
/// partition count checked.
async fn ensure_all(
    js: &jetstream::Context,
    options: &ClusterOptions,
    partitions: usize,
    routes_by_ids: bool,
    replicas: usize,
) -> Result<Made, ClusterError> {
    let events = ensure_stream(js, EVENTS_STREAM, "nudge.events.*", replicas).await?;
    let effects = ensure_stream(js, EFFECTS_STREAM, "nudge.effects.*", replicas).await?;
    let leases = ensure_bucket(js, LEASES_BUCKET, options.lease, replicas).await?;
    let nodes = ensure_bucket(js, NODES_BUCKET, options.lease, replicas).await?;
    let budgets = ensure_bucket(js, allot::BUDGETS_BUCKET, Duration::ZERO, replicas).await?;
    let sinks = ensure_bucket(js, sinks::SINKS_BUCKET, Duration::ZERO, replicas).await?;
    let snapshots = snapshot::ensure_store(js, replicas).await?;
    let fits = ensure_bucket(js, fits::FITS_BUCKET, Duration::ZERO, replicas).await?;
    let settings = ensure_bucket(js, SETTINGS_BUCKET, Duration::ZERO, replicas).await?;
    check_partitions(&settings, partitions).await?;
    check_routing(&settings, routes_by_ids).await?;
    Ok(Made {
        events,
        effects,
        leases,
        nodes,
        budgets,
        sinks,
        snapshots,
        fits,
    })
}

async fn ensure_stream(
    js: &jetstream::Context,
    name: &str,
    subjects: &str,
    replicas: usize,
) -> Result<stream::Stream, ClusterError> {
    if let Ok(s) = js.get_stream(name).await {
        return Ok(s);
    }
    js.get_or_create_stream(stream::Config {
        name: name.to_string(),
        subjects: vec![subjects.to_string()],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    })
    .await
    .map_err(|e| ClusterError::JetStream(format!("making the stream `{name}`: {e}")))
}

async fn ensure_bucket(
    js: &jetstream::Context,
    bucket: &str,
    max_age: Duration,
    replicas: usize,
) -> Result<Bucket, ClusterError> {
    if let Ok(b) = js.get_key_value(bucket).await {
        return Ok(Bucket::new(b, js));
    }
    // The bucket's stream, made as `nats kv add` makes it: the client's
    // own `create_key_value` first reads account fields that servers
    // before 2.10 do not send.
    let made = js
        .get_or_create_stream(stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await;
    let fail = |e: String| ClusterError::JetStream(format!("making the bucket `{bucket}`: {e}"));
    made.map_err(|e| fail(e.to_string()))?;
    js.get_key_value(bucket)
        .await
        .map(|b| Bucket::new(b, js))
        .map_err(|e| fail(e.to_string()))
}

/// The first node writes the partition count; every node must match it,
/// since a member's partition is its id's hash modulo that count.
async fn check_partitions(settings: &Bucket, partitions: usize) -> Result<(), ClusterError> {
    let mine = bytes::Bytes::from(partitions.to_string());
    if settings.create("partitions", mine).await.is_ok() {
        return Ok(());
    }
    let stored = settings
        .get("partitions")
        .await
        .map_err(ClusterError::js)?
        .and_then(|b| String::from_utf8_lossy(&b).parse::<usize>().ok());
    match stored {
        Some(n) if n == partitions => Ok(()),
        Some(n) => Err(ClusterError::Partitions {
            cluster: n,
            node: partitions,
        }),
        None => Err(ClusterError::JetStream(
            "the cluster's partition count is unreadable".into(),
        )),
    }
}

/// The first node with `ids` marks the cluster as routing by them; a
/// node without is refused from then on: members merged across
/// partitions live where the directory says, not at their home partition.
/// (Adding `ids` to a cluster that had none is fine: each member is still
/// at its home partition until a merge moves it.)
async fn check_routing(settings: &Bucket, routes_by_ids: bool) -> Result<(), ClusterError> {
    if routes_by_ids && settings.create("routes_by_ids", "1".into()).await.is_ok() {
        return Ok(());
    }
    let marked = settings
        .get("routes_by_ids")
        .await
        .map_err(ClusterError::js)?;
    match (marked.is_some(), routes_by_ids) {
        (true, true) | (false, false) => Ok(()),
        (true, false) => Err(ClusterError::IdsDropped),
        // Not made and not there: NATS refused the write.
        (false, true) => Err(ClusterError::JetStream(
            "the cluster's `routes_by_ids` mark cannot be written".into(),
        )),
    }
}

/// A sending partition and its relays.
pub type Relays = (usize, Vec<crate::model::Effect>);

/// Relays waiting to be published, by sending partition.
pub struct RelayQueue {
    pub tx: tokio::sync::mpsc::UnboundedSender<Relays>,
    pub rx: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Relays>>>,
}

impl RelayQueue {
    fn new() -> RelayQueue {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        RelayQueue {
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
        }
    }
}

/// What a message of the events stream is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A client's event (JSON).
    Event,
    /// A relay from another partition (the effect's JSON), [`RELAY_HEADER`].
    Relay,
    /// The partition's daily tick (the day, `2026-12-02`), [`TICK_HEADER`].
    Tick,
    /// One ID: an event or relay partition 0 routed here
    /// ([`ROUTED_HEADER`]).
    Routed(Routed),
    /// One ID: partition 0 asks this partition to give up a group's
    /// members (the body the JSON of [`MoveOut`]), [`MOVE_HEADER`].
    Move(u64),
}

/// What partition 0 says of an event or relay it routed: the sequence it
/// had in partition 0's stream (the partitions skip one they applied, when
/// a new holder of partition 0 routes its stream again), whether it is a
/// relay, and the partitions whose members move here before it is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routed {
    pub seq: u64,
    pub relay: bool,
    pub from: Vec<usize>,
}

/// The body of a [`Kind::Move`]: the partition the group goes to and the
/// names this partition gives up.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct MoveOut {
    pub to: usize,
    pub names: Vec<String>,
}

/// Headers of One ID's routing (see [`Kind::Routed`], [`Kind::Move`]).
pub const ROUTED_HEADER: &str = "Nudge-Routed";
pub const FROM_HEADER: &str = "Nudge-Moved-From";
pub const MOVE_HEADER: &str = "Nudge-Move";

impl Kind {
    fn of(headers: Option<&HeaderMap>) -> Kind {
        let Some(h) = headers else {
            return Kind::Event;
        };
        let number = |name: &str| h.get(name).and_then(|v| v.as_str().parse::<u64>().ok());
        if let Some(seq) = number(ROUTED_HEADER) {
            let from = h.get(FROM_HEADER).map_or(Vec::new(), |v| {
                v.as_str()
                    .split(',')
                    .filter_map(|p| p.parse().ok())
                    .collect()
            });
            let relay = h.get(RELAY_HEADER).is_some();
            return Kind::Routed(Routed { seq, relay, from });
        }
        if let Some(seq) = number(MOVE_HEADER) {
            return Kind::Move(seq);
        }
        match () {
            _ if h.get(RELAY_HEADER).is_some() => Kind::Relay,
            _ if h.get(TICK_HEADER).is_some() => Kind::Tick,
            _ => Kind::Event,
        }
    }

    fn headers(&self, h: &mut HeaderMap) {
        match self {
            Kind::Event => {}
            Kind::Relay => h.insert(RELAY_HEADER, "1"),
            Kind::Tick => h.insert(TICK_HEADER, "1"),
            Kind::Routed(r) => {
                h.insert(ROUTED_HEADER, r.seq.to_string().as_str());
                if r.relay {
                    h.insert(RELAY_HEADER, "1");
                }
                if !r.from.is_empty() {
                    let from: Vec<String> = r.from.iter().map(usize::to_string).collect();
                    h.insert(FROM_HEADER, from.join(",").as_str());
                }
            }
            Kind::Move(seq) => h.insert(MOVE_HEADER, seq.to_string().as_str()),
        }
    }
}

/// One message to publish: its partition, id, body and kind.
pub struct Outgoing {
    pub partition: usize,
    pub id: String,
    pub body: bytes::Bytes,
    pub kind: Kind,
}

impl Outgoing {
    /// The same message, to send again (the body is shared, not copied).
    pub fn again(&self) -> Outgoing {
        Outgoing {
            partition: self.partition,
            id: self.id.clone(),
            body: self.body.clone(),
            kind: self.kind.clone(),
        }
    }
}

impl Cluster {
    /// Publishes events and waits until JetStream has stored every one;
    /// returns how many it already had (a redelivery within its window).
    pub async fn publish_events(&self, events: Vec<Outgoing>) -> Result<usize, ClusterError> {
        let mut acks = Vec::with_capacity(events.len());
        for e in events {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", e.id.as_str());
            e.kind.headers(&mut headers);
            let ack = self
                .js
                .publish_with_headers(events_subject(e.partition), headers, e.body)
                .await
                .map_err(ClusterError::js)?;
            acks.push(ack);
        }
        let mut duplicates = 0;
        for ack in acks {
            if ack.await.map_err(ClusterError::js)?.duplicate {
                duplicates += 1;
            }
        }
        Ok(duplicates)
    }

    /// Publishes committed effects of `partition`, each keyed by its key,
    /// all sent before the first acknowledgement is awaited; `Ok` once
    /// JetStream has every one (each then noted as published).
    pub async fn publish_effects(
        &self,
        partition: usize,
        effects: Vec<(String, bytes::Bytes)>,
    ) -> Result<(), ClusterError> {
        let mut acks = Vec::with_capacity(effects.len());
        for (key, body) in &effects {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", key.as_str());
            let ack = self
                .js
                .publish_with_headers(effects_subject(partition), headers, body.clone())
                .await
                .map_err(ClusterError::js)?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(ClusterError::js)?;
        }
        for (key, _) in &effects {
            self.mark_published(partition, key);
        }
        Ok(())
    }

    /// The subject a node answers other nodes' reads on (member reads,
    /// explanations, segment counts of the partitions it holds).
    pub fn asks_subject(node: &str) -> String {
        format!("nudge.asks.{node}")
    }
}

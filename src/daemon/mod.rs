//! `nudge run`: the daemon. Wires the writer thread (the engine), the HTTP
//! API, the folder watcher, the daily schedule and signals together, and
//! shuts them down in order. The HTTP handlers only validate shapes and pass
//! work to the writer; they read members straight from the store.

pub mod apply;
pub mod asks;
pub mod cluster;
pub mod dispatch;
pub mod fits;
pub mod routing;
pub mod http;
pub mod segments;
pub mod send;
pub mod snapshots;
pub mod stream_sinks;
pub mod watcher;
pub mod writer;

use crate::config::{Schema, Sink};
use crate::lang::RuleSet;
use crate::model::Effect;
use crate::project::load::{LoadOptions, load};
use crate::store::{SledStore, StoreError};
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::signal::unix::{Signal, SignalKind, signal};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("the rules do not load; run `nudge check` to see why")]
    Rules(Box<crate::project::load::Load>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the writer failed, so nothing more could be stored: {0}")]
    Writer(String),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// What the status endpoint shows; replaced whole on every reload.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub ruleset: String,
    pub rules: usize,
    pub last_reload_ok: bool,
    pub last_reload_diagnostics: serde_json::Value,
    pub reloads: u64,
    pub failed_reloads: u64,
}

/// State the HTTP handlers and the writer share.
pub struct Shared {
    pub status: ArcSwap<Status>,
    pub rules: ArcSwap<RuleSet>,
    pub schema: ArcSwap<Schema>,
    /// The data folder's partitions, for reads (members, segments, outbox
    /// depth); the writer alone writes members.
    pub folder: crate::store::folder::Folder,
    pub events_received: AtomicU64,
    pub events_applied: AtomicU64,
    /// Redelivered events (already applied: nothing changed).
    pub events_duplicate: AtomicU64,
    pub events_rejected: AtomicU64,
    /// Members visited by daily ticks.
    pub tick_visits: AtomicU64,
    pub effects: Mutex<BTreeMap<(String, String), u64>>,
    /// Batch commit latency histogram: counts per bucket (seconds).
    pub latency: Mutex<[u64; LATENCY_BUCKETS.len() + 1]>,
    pub latency_sum_us: AtomicU64,
    /// Woken after each commit, for the dispatcher.
    pub outbox_changed: tokio::sync::Notify,
    /// Deliveries by sink.
    pub deliveries: Mutex<BTreeMap<String, Deliveries>>,
    /// Budget use per rule for the current period: (rule, used, total).
    pub budgets: Mutex<Vec<(String, rust_decimal::Decimal, rust_decimal::Decimal)>>,
    /// The running plugins (swapped with the rules).
    pub plugins: ArcSwap<Option<Arc<crate::plugins::Plugins>>>,
    /// Why the last write (commit, tick, release) failed; `None` once one
    /// succeeds again. Status is not ok while it is set.
    pub write_error: Mutex<Option<String>>,
    /// Set when the writer thread is gone for good (a panic): the daemon
    /// stops with a non-zero exit so that a supervisor restarts it.
    pub writer_failed: Mutex<Option<String>>,
    /// Why daily ticks are held (the wall clock jumped, or the last tick
    /// lies ahead of it); `None` while they run. Status is not ok then.
    pub ticks_held: Mutex<Option<String>>,
    /// The day of the last completed daily tick, for `/v1/status`.
    pub last_tick: Mutex<Option<i32>>,
    /// Effects waiting for their channel's quiet hours to end, in the
    /// partitions held here (`/v1/status`, `/metrics`).
    pub deferred: AtomicU64,
    pub fatal: tokio::sync::Notify,
    /// Cluster mode's link to NATS (`None` on a single node).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Cluster mode: when partition snapshots are taken, and where their
    /// files wait.
    pub snapshots: Option<snapshots::Snapshots>,
}

/// One sink's deliveries so far.
#[derive(Clone, Debug, Default)]
pub struct Deliveries {
    pub ok: u64,
    /// Failed attempts.
    pub failed: u64,
    /// Why the last attempt failed; `None` once one succeeds (or before
    /// any failed). Status is not ok while any sink has one.
    pub error: Option<String>,
}

pub const LATENCY_BUCKETS: [f64; 8] = [0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5];

impl Shared {
    pub fn count_effects(&self, effects: &[Effect]) {
        if let Ok(mut m) = self.effects.lock() {
            for e in effects {
                *m.entry((e.rule.clone(), e.status.as_str().to_string()))
                    .or_default() += 1;
            }
        }
    }

    pub fn observe_batch(&self, took: Duration, _events: usize) {
        let s = took.as_secs_f64();
        if let Ok(mut h) = self.latency.lock() {
            let i = LATENCY_BUCKETS
                .iter()
                .position(|b| s <= *b)
                .unwrap_or(LATENCY_BUCKETS.len());
            h[i] += 1;
        }
        self.latency_sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn count_delivery(&self, sink: &str, result: Result<(), String>) {
        self.count_deliveries(sink, 1, result);
    }

    /// `n` deliveries to `sink` (a file sink writes many at once), or one
    /// failed attempt and why.
    pub fn count_deliveries(&self, sink: &str, n: u64, result: Result<(), String>) {
        if let Ok(mut m) = self.deliveries.lock() {
            let d = m.entry(sink.to_string()).or_default();
            if result.is_ok() {
                d.ok += n
            } else {
                d.failed += n
            }
            d.error = result.err();
        }
    }

    /// Every configured sink and why its last delivery attempt failed
    /// (`None`: it worked, or nothing was tried yet).
    pub fn sink_health(&self) -> Vec<(String, Option<String>)> {
        // The configured sinks, in the config's order: one a reload took
        // out keeps its delivery counts (for `/metrics`) but no health.
        let schema = self.schema.load();
        let configured: Vec<String> = schema
            .sinks
            .iter()
            .chain(&schema.stream_sinks)
            .map(crate::outbox::sink_label)
            .collect();
        let Ok(deliveries) = self.deliveries.lock() else {
            return Vec::new();
        };
        configured
            .into_iter()
            .map(|s| {
                let error = deliveries.get(&s).and_then(|d| d.error.clone());
                (s, error)
            })
            .collect()
    }

    /// Effects not yet delivered to every sink: what the slowest sink has
    /// left (entries it delivered stay in the store until the writer's
    /// next commit trims them). From counters, not a scan.
    pub fn outbox_depth(&self) -> u64 {
        self.held_parts().map(|s| self.outbox_depth_of(s)).sum()
    }

    /// The partitions this node answers for: all of them on a single node,
    /// those whose lease it holds in cluster mode (its copies of others
    /// are stale and not its to count).
    pub fn held_parts(&self) -> impl Iterator<Item = &SledStore> {
        self.folder
            .parts
            .iter()
            .enumerate()
            .filter(|(k, _)| self.cluster.as_ref().is_none_or(|c| c.owned.holds(*k)))
            .map(|(_, s)| s)
    }

    /// Notes how many effects wait for quiet hours in the partitions held
    /// here (the engines count them as they commit and release).
    pub fn note_deferred(&self, parts: &crate::engine::partitions::Partitions<SledStore>) {
        let waiting = (parts.engines().iter().enumerate())
            .filter(|(k, _)| self.cluster.as_ref().is_none_or(|c| c.owned.holds(*k)))
            .map(|(_, e)| e.deferred_waiting())
            .sum();
        self.deferred.store(waiting, Ordering::Relaxed);
    }

    /// Members in the partitions this node answers for.
    pub fn members(&self) -> u64 {
        use crate::store::Store;
        self.held_parts()
            .map(|s| s.meta_u64(crate::store::keys::MEMBERS).unwrap_or(0))
            .sum()
    }

    fn outbox_depth_of(&self, store: &SledStore) -> u64 {
        use crate::store::Store;
        let next = store.meta_u64(crate::store::keys::OUTBOX_NEXT).unwrap_or(0);
        // Every sink with a cursor: the configured ones, and those left out
        // of the config whose effects are kept for them. From counters, not
        // a read of the outbox (`/metrics` is scraped often).
        let slowest = crate::outbox::sink_cursors(store)
            .unwrap_or_default()
            .into_iter()
            .map(|(_, cursor)| cursor)
            .min();
        // With no sink configured, everything kept is a record.
        let first = match slowest {
            Some(cursor) if !self.schema.load().sinks.is_empty() => cursor,
            _ => store
                .outbox(0, 1)
                .ok()
                .and_then(|o| o.first().map(|(s, _)| *s))
                .unwrap_or(next),
        };
        next.saturating_sub(first)
    }

    /// The points mall's rewards with a stock: how many there were, have
    /// gone and are left (the store's count, as committed).
    pub fn reward_stock(&self) -> Vec<serde_json::Value> {
        use crate::store::Store;
        let schema = self.schema.load();
        schema
            .rewards
            .iter()
            .filter_map(|r| {
                let stock = r.stock?;
                // Each partition counts what went from it.
                let key = crate::store::keys::stock(&r.name);
                let gone: u64 = self
                    .folder
                    .parts
                    .iter()
                    .filter_map(|p| p.meta(&key).ok().flatten())
                    .filter_map(|b| String::from_utf8_lossy(&b).parse::<u64>().ok())
                    .sum();
                Some(serde_json::json!({"reward": r.name, "stock": stock, "gone": gone, "left": stock.saturating_sub(gone)}))
            })
            .collect()
    }

    /// Dead letters kept in the store, oldest first (at most `limit`).
    pub fn dead_letters(&self, limit: usize) -> Vec<serde_json::Value> {
        use crate::store::Store;
        self.folder
            .meta_prefix(crate::store::keys::DEAD_PREFIX, limit)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect()
    }

    /// Records the outcome of a write; `Err` keeps its message for status.
    pub fn note_write(&self, result: Result<(), String>) {
        if let Ok(mut w) = self.write_error.lock() {
            *w = result.err();
        }
    }

    /// Why writes do not work now, if they do not.
    pub fn unhealthy(&self) -> Option<String> {
        let failed = self.writer_failed.lock().ok().and_then(|w| w.clone());
        failed
            .or_else(|| self.write_error.lock().ok().and_then(|w| w.clone()))
            .or_else(|| {
                use async_nats::connection::State;
                let c = self.cluster.as_ref()?;
                (c.client.connection_state() != State::Connected).then(|| {
                    "not connected to NATS: events are refused (503) until it is back".to_string()
                })
            })
    }

    /// Why rules did or did not fire for member `id` on `day`, as
    /// `GET /v1/members/{id}/explain` shows it, read here.
    pub fn explain_answer(
        &self,
        id: &str,
        rule: Option<&str>,
        day: i32,
        within: Option<usize>,
    ) -> (axum::http::StatusCode, serde_json::Value) {
        use axum::http::StatusCode;
        use serde_json::json;
        // By identifier or merged id too, whichever partition holds it.
        let (id, rec) = match crate::engine::identity::find_member(self.reads(within), id) {
            Ok(Some(found)) => found,
            Ok(None) => return self.not_found(id, within),
            Err(e) => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": e.to_string()}),
                );
            }
        };
        // Records hold the present: an earlier day would be answered wrong.
        if let Err(e) = crate::engine::segment::check_day(self.folder.of(&id), day) {
            let status = match e {
                crate::engine::segment::SegmentError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_REQUEST,
            };
            return (status, json!({"error": e.to_string()}));
        }
        let (schema, rules, plugins) = (self.schema.load(), self.rules.load(), self.plugins.load());
        let fit = crate::engine::predict::load(self.folder.of(&id))
            .ok()
            .flatten();
        match crate::sim::explain::explain(
            &schema,
            &rules,
            plugins.as_ref().as_deref(),
            &id,
            &rec,
            day,
            rule,
            fit.as_ref(),
        ) {
            Ok(x) => (StatusCode::OK, json!(x)),
            Err(e) => (StatusCode::NOT_FOUND, json!({"error": e.to_string()})),
        }
    }

    /// Where members are read: partition `within` (One ID in the cluster:
    /// where the directory has them), else every partition.
    fn reads(&self, within: Option<usize>) -> &dyn crate::store::Store {
        match within.and_then(|k| self.folder.parts.get(k)) {
            Some(part) => part,
            None => &self.folder,
        }
    }

    /// One ID in the cluster, on partition 0's holder: the partition
    /// member or identifier `id` is in.
    pub fn locate_here(&self, id: &str) -> Result<usize, crate::store::StoreError> {
        crate::engine::directory::Directory::new(&self.folder.parts[0], self.folder.parts.len())
            .locate(id)
    }

    /// A member as `GET /v1/members/{id}` shows it, read here (in
    /// partition `within` when given).
    pub fn member_answer(
        &self,
        id: &str,
        within: Option<usize>,
    ) -> (axum::http::StatusCode, serde_json::Value) {
        use axum::http::StatusCode;
        use serde_json::json;
        let shared = self;
        let store = match within.and_then(|k| self.folder.parts.get(k)) {
            Some(part) => part,
            None => shared.folder.of(id),
        };
        // By identifier or merged id too, whichever partition holds it.
        match crate::engine::identity::find_member(self.reads(within), id) {
            Ok(Some((id, rec))) => (
                StatusCode::OK,
                crate::report::member::member_json(
                    &id,
                    &rec,
                    &shared.schema.load(),
                    &shared.rules.load(),
                    crate::engine::predict::load(store).ok().flatten().as_ref(),
                    crate::engine::predict::as_of(
                        store,
                        crate::engine::clock::local_day(
                            &shared.schema.load(),
                            crate::engine::clock::Clock::now(&crate::engine::clock::SystemClock),
                        ),
                    ),
                ),
            ),
            Ok(None) => shared.not_found(id, within),
            Err(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": e.to_string()}),
            ),
        }
    }

    /// The answer for member `id` not found here: 404, or 503 while it may
    /// yet be (see [`Self::catching_up`]).
    fn not_found(
        &self,
        id: &str,
        within: Option<usize>,
    ) -> (axum::http::StatusCode, serde_json::Value) {
        use axum::http::StatusCode;
        match self.catching_up(id, within) {
            Some(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({ "error": why }),
            ),
            None => (
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": format!("no member `{id}`")}),
            ),
        }
    }

    /// Cluster mode: why a member not found here may yet be, when its
    /// partition was taken here and its copy has not applied the stream
    /// as far as it reached then (a rebuild from an old copy or none).
    fn catching_up(&self, id: &str, within: Option<usize>) -> Option<String> {
        use crate::store::Store;
        let cluster = self.cluster.as_ref()?;
        let p =
            within.unwrap_or_else(|| crate::store::folder::partition_of(id, cluster.partitions));
        // Not taken up here (yet): how far the stream reached when it was
        // taken is not known (`taken_at` is set just before `ready`), and
        // the copy may hold nothing of it. Also when not held at all: the
        // lease bucket may name this node a moment before its own record
        // of the lease does, and another node's ask comes here.
        if !cluster.owned.ready(p) {
            return Some(format!(
                "partition {p} is not taken up on this node yet; try again shortly"
            ));
        }
        let to = cluster.taken_at.get(p)?.load(Ordering::Relaxed);
        let applied = self
            .folder
            .parts
            .get(p)?
            .meta_u64(crate::store::keys::STREAM_SEQ);
        let applied = applied.unwrap_or(0);
        (applied < to).then(|| {
            format!("partition {p} is catching up on this node (applied through stream sequence {applied} of {to}); try again shortly")
        })
    }

    /// The latest plugin failures, oldest first, for the status page.
    pub fn plugin_errors(&self) -> Vec<serde_json::Value> {
        let plugins = self.plugins.load();
        let Some(p) = plugins.as_ref().as_ref() else {
            return Vec::new();
        };
        p.recent_failures()
            .iter()
            .map(|e| serde_json::json!({"plugin": e.plugin, "function": e.function, "rule": e.rule, "error": e.message}))
            .collect()
    }

    pub fn plugin_failures(&self) -> u64 {
        self.plugins
            .load()
            .as_ref()
            .as_ref()
            .map_or(0, |p| p.failures())
    }
}

#[derive(Clone, Debug)]
pub struct DaemonOptions {
    pub load: LoadOptions,
    pub data: Option<PathBuf>,
    pub listen: Option<String>,
    /// How often the schedule checks for due daily ticks.
    pub tick_every: Duration,
    /// How edits to the rules, plugins and config are noticed.
    pub watch: watcher::WatchMode,
    /// Called once with the address the server listens on (the command
    /// line prints it: tests and scripts read the port from that line).
    pub on_listen: fn(std::net::SocketAddr),
    /// Join a cluster on NATS JetStream (`--cluster`); `None`: a single node.
    pub cluster: Option<crate::cluster::ClusterOptions>,
}

/// Runs until SIGINT or SIGTERM; returns after a clean shutdown.
// Long because the daemon's life cycle in start order (load, store, engine, writer thread, listener, dispatch, schedule, shutdown); split, the order would be hidden.
pub fn run(opts: DaemonOptions) -> Result<(), DaemonError> {
    // A write past the file size limit (`ulimit -f`, a quota) would kill
    // the process with SIGXFSZ; ignored, it is an error the writer reports
    // (503) like a full disk, and acknowledged events stay safe.
    // SAFETY: setting a signal to SIG_IGN before any thread starts.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let l = load(&opts.load);
    if l.errors() > 0 || l.io_failure {
        return Err(DaemonError::Rules(Box::new(l)));
    }
    let diagnostics = l.diagnostics_json();
    let plugins = l.plugins.clone();
    let (Some(schema), Some(rules)) = (l.schema, l.rules) else {
        return Err(DaemonError::Rules(Box::new(crate::project::load::load(
            &opts.load,
        ))));
    };
    let schema = for_node(schema, opts.cluster.is_some());
    let (schema, rules) = (Arc::new(schema), Arc::new(rules));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let data = opts
        .data
        .clone()
        .unwrap_or_else(|| schema.paths.data.clone());
    let mut parts = crate::engine::partitions::open(&data, &schema, &rules, plugins.clone())?;
    if let Some(older) = parts
        .engines()
        .iter()
        .find_map(|e| e.store().older_format())
    {
        tracing::warn!(
            folder = %data.display(),
            format = older,
            now = crate::store::FORMAT_VERSION,
            "Data folder of an older store format: its first write makes it the current one, which the nudge that wrote it cannot open. To keep a way back, stop now and take `nudge export` with that nudge: this one restores it too."
        );
    }
    let listen = opts.listen.clone().unwrap_or_else(|| schema.listen.clone());
    let cluster = match opts.cluster.clone() {
        Some(c) => Some(Arc::new(runtime.block_on(crate::cluster::connect(
            c,
            parts.len(),
            !schema.id_kinds.is_empty(),
        ))?)),
        None => None,
    };
    if let Some(c) = &cluster {
        let allot: Arc<dyn crate::engine::budget::Allotment> =
            Arc::new(crate::cluster::allot::Allotments::of(c));
        for e in parts.engines_mut() {
            e.draw_from(allot.clone());
            // The fit is over every partition, made at refitting ticks
            // from what each holder publishes (`daemon::fits`).
            e.in_cluster();
        }
    }
    if parts.len() != schema.partitions {
        tracing::warn!(folder = %data.display(), partitions = parts.len(), configured = schema.partitions, "The data folder keeps the number of partitions it was made with: `storage.partitions` is for folders made from now on.");
    }
    writer::register_sinks(&mut parts);
    let indexed: Option<usize> = parts.engines().iter().map(|e| e.due_on(i32::MAX)).sum();
    match indexed {
        Some(indexed) => tracing::info!(
            indexed,
            partitions = parts.len(),
            "Due index taken up: the first tick visits only the members due."
        ),
        None => tracing::info!(
            "No due index to take up (the first start, a stop that was not clean, or other config, rules or plugins than at the stop): the first tick visits every member."
        ),
    }
    let shared = Arc::new(Shared {
        status: ArcSwap::from_pointee(Status {
            ruleset: rules.version.clone(),
            rules: rules.rules.len(),
            last_reload_ok: true,
            last_reload_diagnostics: diagnostics,
            ..Status::default()
        }),
        rules: ArcSwap::new(rules.clone()),
        schema: ArcSwap::new(schema.clone()),
        folder: crate::store::folder::Folder {
            parts: parts.engines().iter().map(|e| e.store().clone()).collect(),
        },
        events_received: AtomicU64::new(0),
        events_applied: AtomicU64::new(0),
        events_duplicate: AtomicU64::new(0),
        events_rejected: AtomicU64::new(0),
        tick_visits: AtomicU64::new(0),
        effects: Mutex::new(BTreeMap::new()),
        latency: Mutex::new([0; LATENCY_BUCKETS.len() + 1]),
        latency_sum_us: AtomicU64::new(0),
        outbox_changed: tokio::sync::Notify::new(),
        // Every configured sink is listed from the start, at zero: a
        // scrape before the first delivery still shows what is wired.
        deliveries: Mutex::new(
            schema
                .sinks
                .iter()
                .map(|s| (crate::outbox::sink_label(s), Deliveries::default()))
                .collect(),
        ),
        budgets: Mutex::new(Vec::new()),
        plugins: ArcSwap::from_pointee(plugins.clone()),
        write_error: Mutex::new(None),
        writer_failed: Mutex::new(None),
        ticks_held: Mutex::new(None),
        last_tick: Mutex::new(None),
        deferred: AtomicU64::new(0),
        fatal: tokio::sync::Notify::new(),
        snapshots: opts.cluster.as_ref().map(|c| {
            snapshots::Snapshots::new(
                c.snapshot_every,
                c.snapshot_at_most,
                data.join("snapshots"),
                parts.len(),
            )
        }),
        cluster: cluster.clone(),
    });

    let (tx, rx) = std::sync::mpsc::channel();
    let writer = {
        let shared = shared.clone();
        let opts = opts.load.clone();
        std::thread::Builder::new()
            .name("nudge-writer".into())
            .spawn(move || {
                // A panic in the writer must not leave a daemon that looks
                // healthy but stores nothing: it is recorded, and the whole
                // process stops with a non-zero exit.
                let run = std::panic::AssertUnwindSafe(|| writer::run(parts, opts, &shared, rx));
                if let Err(panic) = std::panic::catch_unwind(run) {
                    let why = panic_message(panic.as_ref());
                    tracing::error!(error = %why, "Writer failed; stopping.");
                    if let Ok(mut w) = shared.writer_failed.lock() {
                        *w = Some(why);
                    }
                    shared.fatal.notify_one();
                }
            })?
    };
    let watched = vec![
        opts.load
            .rules
            .clone()
            .unwrap_or_else(|| schema.paths.rules.clone()),
        opts.load
            .plugins
            .clone()
            .unwrap_or_else(|| schema.paths.plugins.clone()),
        opts.load.config.clone(),
    ];
    let _watcher = watcher::spawn(watched, opts.watch, tx.clone())?;

    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|source| DaemonError::Listen {
                addr: listen.clone(),
                source,
            })?;
        let addr = listener.local_addr()?;
        if schema.token.is_none() && !addr.ip().is_loopback() {
            tracing::warn!(%addr, "Listening beyond loopback without `http.token`: anyone who reaches this address can post events and read members.");
        }
        if schema.sinks.is_empty() {
            tracing::warn!(
                retention_days = schema.outbox_retention_days,
                "No sink is configured: effects are delivered nowhere and kept only for `storage.outbox_retention`."
            );
        }
        // The handlers are in place before the start is announced: a
        // SIGTERM or SIGHUP that follows the announcement at once would
        // otherwise meet the default action and end the process uncleanly.
        let signals = Signals::install()?;
        tracing::info!(%addr, version = %rules.version, rules = rules.rules.len(), "Listening.");
        (opts.on_listen)(addr);
        let app = http::router(shared.clone(), tx.clone());
        dispatch::spawn(shared.clone());
        cluster::spawn(shared.clone(), tx.clone(), addr.to_string());
        let ticks = tokio::spawn(schedule(tx.clone(), opts.tick_every));
        let hup = tokio::spawn(on_sighup(signals.hup, tx.clone()));
        let stop = shutdown_signal(signals.term, signals.int, shared.clone());
        http::serve(listener, app, schema.http_limits.clone(), stop).await;
        ticks.abort();
        hup.abort();
        Ok::<(), DaemonError>(())
    });
    if let Some(c) = &cluster {
        // Before the leases go: the nodes that take them start from here.
        runtime.block_on(cluster::snapshot_held(c, &tx));
    }
    tracing::info!("Stopping: finishing queued batches.");
    let _ = tx.send(writer::Command::Shutdown);
    let _ = writer.join();
    if let Some(c) = &cluster {
        // Nothing is applied any more: the others may take over at once.
        runtime.block_on(c.leave());
        tracing::info!("Left the cluster.");
    }
    result?;
    match shared.writer_failed.lock().ok().and_then(|w| w.clone()) {
        Some(why) => Err(DaemonError::Writer(why)),
        None => Ok(()),
    }
}

/// The config as this node runs it: in cluster mode, the engine's outbox
/// goes to the cluster's effects stream, and the config's sinks are
/// delivered from that stream (`daemon::stream_sinks`).
pub fn for_node(mut schema: Schema, cluster: bool) -> Schema {
    if cluster {
        schema.stream_sinks = std::mem::replace(&mut schema.sinks, vec![Sink::Stream]);
    }
    schema
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_string())
}

async fn schedule(tx: std::sync::mpsc::Sender<writer::Command>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    loop {
        interval.tick().await;
        if tx.send(writer::Command::Tick).is_err() {
            return;
        }
    }
}

/// The signals the daemon handles, registered together.
struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
}

async fn on_sighup(mut hup: Signal, tx: std::sync::mpsc::Sender<writer::Command>) {
    while hup.recv().await.is_some() {
        let _ = tx.send(writer::Command::Reload {
            reason: "SIGHUP",
            reply: None,
        });
    }
}

async fn shutdown_signal(mut term: Signal, mut int: Signal, shared: Arc<Shared>) {
    tokio::select! {
        _ = int.recv() => {},
        _ = term.recv() => {},
        _ = shared.fatal.notified() => return,
    }
    tracing::info!("Shutdown signal received.");
    if let Some(c) = &shared.cluster {
        c.owned.stop_taking();
    }
}

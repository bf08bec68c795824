//! The writer: one thread that owns the engines, one per partition of the
//! data folder (and so the stores' writes; a group commit runs each
//! partition's share on a thread of its own, `Partitions::process`).
//! Everything that changes state comes to it as a [`Command`] on one
//! channel: ingest requests (batched together: one commit for many
//! requests), reloads, ticks and shutdown. Because it is the only writer,
//! a reload swaps config, rules and plugins between two batches, and no
//! event is ever evaluated against a mix of old and new rules.

use super::dispatch::after_commit;
use super::{Shared, Status};
use crate::engine::clock::{CatchUp, SystemClock};
use crate::engine::partitions::Partitions;
use crate::engine::{Engine, EventOutcome, Rejected};
use crate::io::event::event_from_json;
use crate::model::{Event, EventError};
use crate::project::load::{LoadOptions, load};
use crate::store::SledStore;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use tokio::sync::oneshot;

/// Events committed together at most.
const MAX_BATCH: usize = 2000;

pub enum Command {
    Ingest {
        events: Vec<serde_json::Value>,
        reply: oneshot::Sender<IngestReply>,
    },
    Reload {
        reason: &'static str,
        reply: Option<oneshot::Sender<bool>>,
    },
    Tick,
    /// Fit the repurchase models now (`POST /v1/fit`): the fit, or why not.
    Fit {
        reply: oneshot::Sender<Result<crate::predict::Fit, String>>,
    },
    /// Cluster mode: a partition's events and relays from the stream, each
    /// with its sequence, and the last sequence fetched (entries that no
    /// longer parse are left out). Applied in commits that store the
    /// sequence (the last one `through`); those at or below the stored
    /// sequence are skipped (`daemon::apply`).
    Apply {
        part: usize,
        events: Vec<(u64, super::apply::Entry)>,
        through: u64,
        reply: oneshot::Sender<Result<(), super::apply::NotApplied>>,
    },
    /// Cluster mode: put the snapshot in `file` in place of partition
    /// `part`'s copy here (`daemon::snapshots`): how many entries it held.
    Restore {
        part: usize,
        file: std::path::PathBuf,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// Cluster mode: take partition `part`'s snapshot now (it is handed
    /// over to another node).
    Snapshot {
        part: usize,
        reply: oneshot::Sender<Result<super::snapshots::Taken, String>>,
    },
    /// Cluster mode: relays of partition `part` are in the stream; their
    /// stored copies go with its next commit.
    Confirm {
        part: usize,
        keys: Vec<String>,
    },
    Shutdown,
}

pub enum IngestReply {
    /// Durable: committed and flushed.
    Accepted {
        applied: usize,
        duplicates: usize,
    },
    Invalid(Vec<EventError>),
    /// Ids already used with another body, and how many of the request's
    /// other events were stored: none when found before the batch; those
    /// applied when another request of the same batch took the id first.
    Conflict {
        ids: Vec<String>,
        stored: usize,
    },
    /// Events the engine could not apply (a refund of an unknown purchase),
    /// with why; the request's other events were applied (durable).
    Refused {
        applied: usize,
        duplicates: usize,
        /// The index in the request, the event id, and why.
        why: Vec<(usize, String, String)>,
    },
    Unavailable(String),
}

struct IngestRequest {
    events: Vec<Event>,
    reply: oneshot::Sender<IngestReply>,
}

pub fn run(
    mut parts: Partitions<SledStore>,
    opts: LoadOptions,
    shared: &Shared,
    rx: Receiver<Command>,
) {
    // Relays a crash left in transit between partitions are applied first.
    settle(&mut parts, shared, false);
    publish_budgets(&parts, shared);
    shared.note_deferred(&parts);
    // What the outbox holds from before the start goes to the file sinks
    // now, so a refused sink shows in status at once, not at the first
    // commit. With nothing waiting there is nothing to show, and the first
    // request is not made to wait for the sinks' syncs.
    if parts
        .engines()
        .iter()
        .any(|e| e.outbox(0, 1).is_ok_and(|waiting| !waiting.is_empty()))
    {
        after_commit(&mut parts, shared);
    }
    let mut queue: Vec<Command> = Vec::new();
    let mut watch = crate::engine::clock::ClockWatch::default();
    loop {
        let cmd = match queue.pop() {
            Some(c) => c,
            None => match rx.recv() {
                Ok(c) => c,
                Err(_) => return,
            },
        };
        match cmd {
            Command::Ingest { events, reply } => {
                let mut batch = Vec::new();
                let mut n = 0;
                if let Some(p) = validate(&parts, events, reply) {
                    n += p.events.len();
                    batch.push(p);
                }
                // Group commit: take every ingest request already waiting.
                while n < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(Command::Ingest { events, reply }) => {
                            if let Some(p) = validate(&parts, events, reply) {
                                n += p.events.len();
                                batch.push(p);
                            }
                        }
                        Ok(other) => {
                            queue.push(other);
                            break;
                        }
                        Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                    }
                }
                commit(&mut parts, batch, shared);
            }
            Command::Reload { reason, reply } => {
                let ok = reload(&mut parts, &opts, shared, reason);
                if let Some(r) = reply {
                    let _ = r.send(ok);
                }
            }
            Command::Tick => on_tick(&mut parts, shared, &mut watch),
            Command::Fit { reply } => {
                let fit = refit(&mut parts);
                if let Ok(f) = &fit {
                    tracing::info!(members = f.members, fitted_on = %f.fitted_on, "Repurchase models fitted.");
                }
                let _ = reply.send(fit);
            }
            Command::Apply {
                part,
                events,
                through,
                reply,
            } => {
                let n = events.len() as u64;
                let applied = super::apply::apply(&mut parts, shared, part, events, through);
                if applied.is_ok() {
                    super::snapshots::after_apply(&parts, shared, part, n);
                }
                let _ = reply.send(applied);
            }
            Command::Snapshot { part, reply } => {
                let _ = reply.send(super::snapshots::take(&parts, shared, part));
            }
            Command::Restore { part, file, reply } => {
                let _ = reply.send(super::snapshots::restore(&mut parts, shared, part, &file));
            }
            Command::Confirm { part, keys } => confirm(&mut parts, part, keys),
            Command::Shutdown => {
                shut_down(&mut parts, &rx, shared);
                files_at_stop(parts.first(), &opts, shared);
                tracing::info!("Writer stopped.");
                return;
            }
        }
    }
}

/// The schedule's tick: relays a partition stored before a restart go out
/// even when no event comes to it (cluster mode; the relay task retries
/// the rest), quiet hours' releases, and the daily tick when due (in
/// cluster mode published to each partition's stream).
fn on_tick(
    parts: &mut Partitions<SledStore>,
    shared: &Shared,
    watch: &mut crate::engine::clock::ClockWatch,
) {
    if shared.cluster.is_some() {
        settle(parts, shared, false);
    }
    release_deferred(parts, shared);
    if !ticks_held(parts.first(), shared, watch) {
        match shared.cluster {
            // Through the stream, applied where it lands there.
            Some(_) => super::apply::publish_ticks(parts, shared),
            None => tick(parts, shared),
        }
    }
}

/// Relays of partition `part` are in the stream (cluster mode).
fn confirm(parts: &mut Partitions<SledStore>, part: usize, keys: Vec<String>) {
    if let Some(e) = parts.engines_mut().get_mut(part) {
        e.confirm(keys);
    }
}

/// Commits what was queued before the shutdown and saves the due index,
/// saying what the next start will do.
/// The repurchase models fitted now (`POST /v1/fit`), over every
/// partition's members.
fn refit(parts: &mut Partitions<SledStore>) -> Result<crate::predict::Fit, String> {
    let now = crate::engine::clock::Clock::now(&SystemClock);
    let today = crate::engine::clock::local_day(&parts.first().schema, now);
    parts.refit(today).map_err(|e| e.to_string())
}

fn shut_down(parts: &mut Partitions<SledStore>, rx: &Receiver<Command>, shared: &Shared) {
    // Whatever is still queued was accepted before the shutdown.
    while let Ok(c) = rx.try_recv() {
        if let Command::Ingest { events, reply } = c
            && let Some(p) = validate(parts, events, reply)
        {
            commit(parts, vec![p], shared);
        }
    }
    settle(parts, shared, true);
    // The next start takes up the due index instead of a full
    // tick (a failure here only costs that tick).
    match parts.save_due() {
        Ok(()) if parts.engines().iter().all(|e| e.due_on(i32::MAX).is_some()) => {
            tracing::info!("Due index saved for the next start.");
        }
        Ok(()) => tracing::info!(
            "No due index to save (none was taken up at the start, or the rules changed, and no tick has visited every member since): the first tick after the next start visits every member."
        ),
        Err(e) => {
            tracing::warn!(error = %e, "Could not save the due index: the next start visits every member.")
        }
    }
}

/// Says at a stop what the next start will make of the files: an edit
/// saved after the last reload (just before the stop) was never run, and
/// files that do not load will be refused.
fn files_at_stop(engine: &Engine<SledStore>, opts: &LoadOptions, shared: &Shared) {
    if !shared.status.load().last_reload_ok {
        tracing::warn!(
            "The last reload failed: the next start refuses the files as they are now (`nudge check` says why)."
        );
        return;
    }
    let l = load(opts);
    match l.rules {
        Some(r) if l.errors() == 0 && !l.io_failure => {
            if r.version != engine.rules.version {
                tracing::warn!(running = %engine.rules.version, on_disk = %r.version, "The files changed after the last reload and were never run: the next start runs them as they are now.");
            }
        }
        _ => tracing::warn!(
            "The files as they are now do not load (an edit saved after the last reload): the next start refuses them (`nudge check` says why)."
        ),
    }
}

/// Whether the daily tick must wait because of the wall clock (see
/// `ClockWatch`); said in the log when it starts or stops, and in status
/// while it lasts.
fn ticks_held(
    engine: &Engine<SledStore>,
    shared: &Shared,
    watch: &mut crate::engine::clock::ClockWatch,
) -> bool {
    use crate::engine::clock::{Clock, last_due_tick, since_boot};
    let now = SystemClock.now();
    let last = engine.last_tick().ok().flatten();
    if let Ok(mut l) = shared.last_tick.lock() {
        *l = last;
    }
    let held = watch
        .check(now, since_boot(), last, last_due_tick(&engine.schema, now))
        .map(|h| h.to_string());
    let Ok(mut current) = shared.ticks_held.lock() else {
        return held.is_some();
    };
    if *current != held {
        match &held {
            Some(why) => tracing::error!(why = %why, "Daily ticks are held."),
            None => tracing::info!("Daily ticks resume."),
        }
        current.clone_from(&held);
    }
    held.is_some()
}

/// Runs the daily ticks that are due by the wall clock, the partitions
/// held here all at the same time (a thread each: a day on which a
/// calendar rule turns visits every member).
fn tick(parts: &mut Partitions<SledStore>, shared: &Shared) {
    let outcomes = parts.each(
        |k, _| here(shared, k),
        |_, engine| {
            let (visits, mut effects) = (engine.tick_visits(), 0);
            let mut counted = |e: Vec<crate::model::Effect>| {
                shared.count_effects(&e);
                effects += e.len();
            };
            let days = engine.run_due_ticks(&SystemClock, CatchUp::Once, &mut counted)?;
            Ok((days, engine.tick_visits() - visits, effects))
        },
    );
    let (mut ticked, mut visited, mut count) = (Vec::new(), 0, 0);
    let mut failed = false;
    for outcome in outcomes.into_iter().flatten() {
        match outcome {
            Ok((days, v, n)) => {
                ticked = ticked.max(days);
                visited += v;
                count += n;
            }
            Err(e) => {
                tracing::error!(error = %e, "Daily tick failed.");
                shared.note_write(Err(format!("the daily tick failed: {e}")));
                failed = true;
            }
        }
    }
    if ticked.is_empty() {
        return;
    }
    // The partitions that ticked committed: their relays, budgets and
    // effects go on even when another partition's tick failed.
    settle(parts, shared, false);
    publish_budgets(parts, shared);
    shared.tick_visits.fetch_add(visited, Ordering::Relaxed);
    if !failed {
        shared.note_write(Ok(()));
        tracing::info!(days = ?ticked.iter().map(|d| crate::base::time::day_string(*d)).collect::<Vec<_>>(), visited, effects = count, "Daily tick done.");
        if let Ok(mut l) = shared.last_tick.lock() {
            *l = ticked.last().copied().max(*l);
        }
    }
    after_commit(parts, shared);
}

/// What the budgets have spent, for `/v1/status` and `/metrics` (any
/// partition's engine reads the totals of every partition).
fn publish_budgets(parts: &Partitions<SledStore>, shared: &Shared) {
    let engine = parts.first();
    let today = crate::engine::clock::local_day(
        &engine.schema,
        crate::engine::clock::Clock::now(&SystemClock),
    );
    if let Ok(mut b) = shared.budgets.lock() {
        *b = engine.budgets(today);
    }
}

/// Applies the relays partitions stored for members of other partitions
/// (with `all`, also drops the copies applied: nothing left in transit).
/// In cluster mode they are sent through the stream instead.
fn settle(parts: &mut Partitions<SledStore>, shared: &Shared, all: bool) {
    if shared.cluster.is_some() {
        return super::apply::publish_relays(parts, shared);
    }
    match parts.settle(all) {
        Ok(effects) if effects.is_empty() => {}
        Ok(effects) => {
            shared.count_effects(&effects);
            after_commit(parts, shared);
        }
        Err(e) => {
            tracing::error!(error = %e, "Applying relays between partitions failed.");
            shared.note_write(Err(format!(
                "applying relays between partitions failed: {e}"
            )));
        }
    }
}

/// Releases the effects whose quiet hours are over.
fn release_deferred(parts: &mut Partitions<SledStore>, shared: &Shared) {
    let now = crate::engine::clock::Clock::now(&SystemClock);
    let mut released = false;
    for (k, engine) in parts.engines_mut().iter_mut().enumerate() {
        if !here(shared, k) || !engine.deferred_due(now) {
            continue;
        }
        match engine.release_deferred_each(now, &mut |e| shared.count_effects(&[e])) {
            Ok(effects) => {
                tracing::info!(effects, "Deferred effects released.");
                released = true;
            }
            Err(e) => {
                tracing::error!(error = %e, "Releasing deferred effects failed.");
                shared.note_write(Err(format!("releasing deferred effects failed: {e}")));
            }
        }
    }
    if released {
        after_commit(parts, shared);
    }
}

/// Validates a request's events with the current schema. Invalid requests
/// and requests reusing an id with another body are answered here and
/// store nothing.
fn validate(
    parts: &Partitions<SledStore>,
    values: Vec<serde_json::Value>,
    reply: oneshot::Sender<IngestReply>,
) -> Option<IngestRequest> {
    let mut events = Vec::with_capacity(values.len());
    let mut errors = Vec::new();
    let now = crate::engine::clock::Clock::now(&SystemClock);
    for (i, v) in values.into_iter().enumerate() {
        let parsed = event_from_json(&parts.first().schema, v)
            .and_then(|e| crate::io::event::check_not_ahead(&e, now).map(|()| e));
        match parsed {
            Ok(e) => events.push(e),
            Err(mut e) => {
                e.line = Some(i + 1);
                errors.push(e);
            }
        }
    }
    if !errors.is_empty() {
        let _ = reply.send(IngestReply::Invalid(errors));
        return None;
    }
    let mut conflicts = Vec::new();
    // The same id twice in one request with different bodies is a conflict too.
    let mut in_request: std::collections::HashMap<&str, u128> = std::collections::HashMap::new();
    for e in &events {
        if *in_request.entry(&e.id).or_insert(e.body_hash) != e.body_hash {
            conflicts.push(e.id.clone());
        }
    }
    for e in &events {
        match parts.known(e) {
            Ok(Some(h)) if h != e.body_hash as u64 => conflicts.push(e.id.clone()),
            Ok(_) => {}
            Err(err) => {
                let _ = reply.send(IngestReply::Unavailable(err.to_string()));
                return None;
            }
        }
    }
    if !conflicts.is_empty() {
        let _ = reply.send(IngestReply::Conflict {
            ids: conflicts,
            stored: 0,
        });
        return None;
    }
    Some(IngestRequest { events, reply })
}

fn commit(parts: &mut Partitions<SledStore>, batch: Vec<IngestRequest>, shared: &Shared) {
    if batch.is_empty() {
        return;
    }
    // One batch of every request's events, moved (not copied) out of them.
    let mut all: Vec<Event> = Vec::new();
    let mut replies = Vec::with_capacity(batch.len());
    for p in batch {
        replies.push((p.reply, p.events.len()));
        all.extend(p.events);
    }
    let start = std::time::Instant::now();
    match parts.process(&all) {
        Ok(c) => {
            shared.note_write(Ok(()));
            shared.observe_batch(start.elapsed(), all.len());
            // Published before the replies, so a client sees its own spend.
            publish_budgets(parts, shared);
            shared.count_effects(&c.effects);
            let mut outcomes = c.outcomes.into_iter();
            let mut events = all.iter();
            for (reply, n) in replies {
                let (mut applied, mut duplicates) = (0, 0);
                let (mut conflicts, mut refused) = (Vec::new(), Vec::new());
                for (index, ev) in events.by_ref().take(n).enumerate() {
                    match outcomes.next() {
                        Some(EventOutcome::Applied { .. }) => applied += 1,
                        Some(EventOutcome::Duplicate) => duplicates += 1,
                        Some(EventOutcome::Rejected(
                            r @ (Rejected::Refund { .. } | Rejected::TooOld { .. }),
                        )) => refused.push((index, ev.id.clone(), r.to_string())),
                        Some(EventOutcome::Rejected(_)) | None => conflicts.push(ev.id.clone()),
                    }
                }
                shared
                    .events_applied
                    .fetch_add(applied as u64, Ordering::Relaxed);
                shared
                    .events_duplicate
                    .fetch_add(duplicates as u64, Ordering::Relaxed);
                let reply_for = if !refused.is_empty() {
                    IngestReply::Refused {
                        applied,
                        duplicates,
                        why: refused,
                    }
                } else if conflicts.is_empty() {
                    IngestReply::Accepted {
                        applied,
                        duplicates,
                    }
                } else {
                    IngestReply::Conflict {
                        ids: conflicts,
                        stored: applied,
                    }
                };
                let _ = reply.send(reply_for);
            }
            after_commit(parts, shared);
        }
        Err(e) => {
            tracing::error!(error = %e, "Commit failed.");
            shared.note_write(Err(format!("the last commit failed: {e}")));
            for (reply, _) in replies {
                let _ = reply.send(IngestReply::Unavailable(e.to_string()));
            }
        }
    }
}

/// Whether the writer works on partition `k`: every one on a single node,
/// those whose lease this node holds in cluster mode.
fn here(shared: &Shared, k: usize) -> bool {
    shared.cluster.as_ref().is_none_or(|c| c.owned.holds(k))
}

/// Gives the config's sinks their cursors and warns of sinks left out of
/// it that still have effects to deliver (kept for a while).
pub(super) fn register_sinks(parts: &mut Partitions<SledStore>) {
    for engine in parts.engines_mut() {
        register_sinks_of(engine);
    }
}

fn register_sinks_of(engine: &mut Engine<SledStore>) {
    let retention = engine.schema.outbox_retention_days;
    match crate::outbox::register_sinks(engine) {
        Ok(sinks) => {
            for o in sinks.kept {
                tracing::warn!(
                    sink = %o.label,
                    pending = o.pending,
                    kept_until = o.kept_until(retention).unwrap_or_default(),
                    "A sink left out of the config has effects it has not delivered; they are kept for `storage.outbox_retention` after it was left out, should it come back."
                );
            }
            for o in sinks.forgotten {
                tracing::warn!(
                    sink = %o.label,
                    dropped = o.missed,
                    "A sink left out of the config for longer than `storage.outbox_retention` is forgotten, with the effects it had not delivered."
                );
            }
        }
        Err(e) => tracing::error!(error = %e, "Cannot take stock of the sinks."),
    }
}

/// A reload that loads but that this node cannot run: its one diagnostic.
fn refused_by_node(status: &mut Status, code: &str, why: &str) {
    status.last_reload_diagnostics = serde_json::json!([{
        "code": code, "severity": "error", "file": "nudge.yaml", "message": why,
    }]);
}

/// In cluster mode, whether the nodes can run these rules.
fn cluster_runs(
    shared: &Shared,
    schema: &crate::config::Schema,
) -> Result<(), crate::cluster::ClusterError> {
    match &shared.cluster {
        Some(c) if schema.partitions != c.partitions => {
            Err(crate::cluster::ClusterError::Partitions {
                cluster: c.partitions,
                node: schema.partitions,
            })
        }
        Some(_) => crate::cluster::same_ids(&shared.schema.load(), schema),
        None => Ok(()),
    }
}

/// Loads, checks and compiles everything off to the side; swaps only when
/// all of it is good. A failed reload keeps the running set.
fn reload(
    parts: &mut Partitions<SledStore>,
    opts: &LoadOptions,
    shared: &Shared,
    reason: &str,
) -> bool {
    let l = load(opts);
    let diagnostics = l.diagnostics_json();
    let mut errors = l.errors();
    let mut ok = errors == 0 && !l.io_failure;
    // The first error, for the log line (status has them all).
    let mut why = l.error_lines().into_iter().next().unwrap_or_default();
    let mut status: Status = (**shared.status.load()).clone();
    status.last_reload_diagnostics = diagnostics;
    status.reloads += 1;
    if ok
        && let Some(rules) = l
            .rules
            .as_ref()
            .filter(|r| r.version == parts.first().rules.version)
    {
        // The version hashes the config, the rules and the plugins: a
        // file touched, or saved as it was, changes nothing.
        tracing::info!(version = %rules.version, reason, "Rules unchanged.");
    } else if ok
        && let Some(schema) = &l.schema
        && let Err(e) = cluster_runs(shared, schema)
    {
        (ok, errors, why) = (false, 1, e.to_string());
        refused_by_node(&mut status, "E303", &why);
    } else if ok && let (Some(schema), Some(rules)) = (l.schema, l.rules) {
        let schema = super::for_node(schema, shared.cluster.is_some());
        let (schema, rules) = (Arc::new(schema), Arc::new(rules));
        let listen = parts.first().schema.listen.clone();
        if schema.listen != listen {
            tracing::warn!(from = %listen, to = %schema.listen, "`http.listen` changed: the daemon listens where it started until it is restarted.");
        }
        match parts.swap(&schema, &rules, &l.plugins) {
            Ok(()) => {
                status.ruleset = rules.version.clone();
                status.rules = rules.rules.len();
                shared.rules.store(rules);
                shared.schema.store(schema);
                shared.plugins.store(Arc::new(l.plugins));
                tracing::info!(version = %status.ruleset, reason, "Rules reloaded.");
                register_sinks(parts);
                publish_budgets(parts, shared);
                // A sink back in the config gets what it missed now, not
                // at the next commit.
                after_commit(parts, shared);
            }
            Err(e) => {
                // A config the stores cannot take (tiers that would re-map).
                (ok, errors, why) = (false, 1, e.to_string());
                refused_by_node(&mut status, "E302", &why);
            }
        }
    }
    status.last_reload_ok = ok;
    if !ok {
        status.failed_reloads += 1;
        tracing::error!(errors, reason, error = %why, "Reload failed; the running rules stay.");
    }
    shared.status.store(Arc::new(status));
    ok
}

//! Cluster mode, on the writer's thread: applying what a partition's
//! stream holds (events, and relays from other partitions), and sending
//! this node's relays to their recipients' partitions through the stream.
//! Fetching from the stream and the leases are `daemon::cluster`'s and
//! `cluster`'s; the commit is the engine's, as on a single node.

use super::Shared;
use super::dispatch::after_commit;
use crate::cluster::{Kind, Outgoing};
use crate::engine::EventOutcome;
use crate::engine::partitions::Partitions;
use crate::model::{Effect, Event};
use crate::store::SledStore;
use std::sync::atomic::Ordering;

/// What the events stream holds for a partition: a client's event, or a
/// relay another partition's rule sent one of its members.
pub enum Entry {
    Event(Event),
    // Boxed: an effect is several times an event's size, and rare here.
    Relay(Box<Effect>),
    /// The partition's daily tick for this day, at this point of its
    /// history (`cluster::TICK_HEADER`).
    Tick(i32),
    /// One ID, in partition 0: an event or relay to route, with the body
    /// it came with (`daemon::routing`).
    Route(super::routing::ToRoute, bytes::Bytes),
    /// One ID: an event or relay partition 0 routed here.
    Routed(crate::cluster::Routed, Box<Entry>),
    /// One ID: partition 0's request to give up a group's members (at its
    /// sequence in partition 0's stream).
    Move(u64, crate::cluster::MoveOut),
    /// A routed entry that did not parse: nothing to apply.
    Skipped,
}

impl Entry {
    /// Partition 0's sequence of a routed entry or move.
    fn routed(&self) -> Option<u64> {
        match self {
            Entry::Routed(r, _) => Some(r.seq),
            Entry::Move(seq, _) => Some(*seq),
            _ => None,
        }
    }
}

/// Why a fetch of a partition's stream was not (all) applied; what was
/// committed before stays, and the rest is fetched again.
#[derive(Debug)]
pub enum NotApplied {
    Failed(String),
    /// A refitting tick waits for every partition's histories
    /// ([`super::fits::FitError::Waits`]): nothing is wrong.
    Waits(String),
}

impl From<String> for NotApplied {
    fn from(why: String) -> NotApplied {
        NotApplied::Failed(why)
    }
}

impl From<super::fits::FitError> for NotApplied {
    fn from(e: super::fits::FitError) -> NotApplied {
        match e {
            super::fits::FitError::Waits(why) => NotApplied::Waits(why),
            super::fits::FitError::Failed(why) => NotApplied::Failed(why),
        }
    }
}

impl From<super::routing::Hold> for NotApplied {
    fn from(h: super::routing::Hold) -> NotApplied {
        match h {
            super::routing::Hold::Waits(why) => NotApplied::Waits(why),
            super::routing::Hold::Failed(why) => NotApplied::Failed(why),
        }
    }
}

impl From<&str> for NotApplied {
    fn from(why: &str) -> NotApplied {
        NotApplied::Failed(why.to_string())
    }
}

impl std::fmt::Display for NotApplied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotApplied::Failed(why) | NotApplied::Waits(why) => f.write_str(why),
        }
    }
}

/// A stretch of the stream committed at once: relays first (as the
/// engine applies them), then events, and the last sequence it covers;
/// or a daily tick, a move or entries to route on their own.
#[derive(Default)]
struct Stretch {
    relays: Vec<Effect>,
    events: Vec<Event>,
    tick: Option<i32>,
    through: u64,
    /// Partition 0's sequence of the last routed entry in it.
    routed: u64,
    /// Members moving here come first: partition 0's sequence of the
    /// event that joined them, and the partitions they come from.
    from: Option<(u64, Vec<usize>)>,
    moving: Option<(u64, crate::cluster::MoveOut)>,
    route: Vec<(u64, super::routing::ToRoute, bytes::Bytes)>,
}

impl Stretch {
    /// Whether `entry` starts a stretch of its own after this one.
    fn ends_before(&self, entry: &Entry) -> bool {
        let inner = match entry {
            Entry::Routed(r, inner) if r.from.is_empty() => inner.as_ref(),
            Entry::Routed(..) | Entry::Tick(_) | Entry::Move(..) => return true,
            e => e,
        };
        self.tick.is_some()
            || self.moving.is_some()
            || matches!(inner, Entry::Route(..)) != !self.route.is_empty()
            || (matches!(inner, Entry::Relay(_)) && !self.events.is_empty())
    }

    fn take(&mut self, seq: u64, entry: Entry) {
        self.through = seq;
        match entry {
            Entry::Relay(r) => self.relays.push(*r),
            Entry::Event(e) => self.events.push(e),
            Entry::Tick(day) => self.tick = Some(day),
            Entry::Skipped => {}
            Entry::Route(what, body) => self.route.push((seq, what, body)),
            Entry::Move(at, m) => {
                self.routed = at;
                self.moving = Some((at, m));
            }
            Entry::Routed(r, what) => {
                self.routed = r.seq;
                if !r.from.is_empty() {
                    self.from = Some((r.seq, r.from));
                }
                self.take(seq, *what);
            }
        }
    }
}

/// Applies a partition's entries from the stream, if this node still
/// holds its lease, storing the stream sequence in each commit. A relay
/// after an event starts a new commit: the engine applies a commit's
/// relays before its events, and the stream's order must hold on every
/// holder, however the fetches cut it.
pub fn apply(
    parts: &mut Partitions<SledStore>,
    shared: &Shared,
    part: usize,
    entries: Vec<(u64, Entry)>,
    through: u64,
) -> Result<(), NotApplied> {
    use crate::store::Store;
    let stored = parts
        .engines()
        .get(part)
        .ok_or_else(|| format!("no partition {part} here"))?
        .store()
        .meta_u64(crate::store::keys::STREAM_SEQ)
        .map_err(|e| e.to_string())?;
    if through <= stored {
        return Ok(());
    }
    let mut routed = parts.engines()[part]
        .store()
        .meta_u64(crate::store::keys::ROUTED_THROUGH)
        .map_err(|e| e.to_string())?;
    let mut stretches: Vec<Stretch> = Vec::new();
    for (seq, entry) in entries.into_iter().filter(|(seq, _)| *seq > stored) {
        // Routed again by a new holder of partition 0: applied already,
        // before this fetch or earlier in it (past JetStream's duplicate
        // window a fetch can hold the first routing and the copy).
        if let Some(r) = entry.routed() {
            if r <= routed {
                continue;
            }
            routed = r;
        }
        if stretches.last().is_none_or(|s| s.ends_before(&entry)) {
            stretches.push(Stretch::default());
        }
        if let Some(s) = stretches.last_mut() {
            s.take(seq, entry);
        }
    }
    // The last commit stores the fetch's last sequence, past any entries
    // that did not parse.
    match stretches.last_mut() {
        Some(s) => s.through = through,
        None => stretches.push(Stretch {
            through,
            ..Stretch::default()
        }),
    }
    for s in stretches {
        commit(parts, shared, part, s)?;
    }
    publish_relays(parts, shared);
    Ok(())
}

/// One stretch through the engine's commit, counted.
fn commit(
    parts: &mut Partitions<SledStore>,
    shared: &Shared,
    part: usize,
    s: Stretch,
) -> Result<(), NotApplied> {
    if !shared.cluster.as_ref().is_some_and(|c| c.owned.holds(part)) {
        return Err("the partition's lease is no longer held here".into());
    }
    let n = parts.len();
    let engine = parts
        .engines_mut()
        .get_mut(part)
        .ok_or_else(|| format!("no partition {part} here"))?;
    let mut noted = vec![(
        crate::store::keys::STREAM_SEQ.to_string(),
        s.through.to_le_bytes().to_vec(),
    )];
    if s.routed > 0 {
        let seq = s.routed.to_le_bytes().to_vec();
        noted.push((crate::store::keys::ROUTED_THROUGH.to_string(), seq));
    }
    if !s.route.is_empty() {
        return Ok(super::routing::route(engine, shared, n, s.route, noted)?);
    }
    if let Some((seq, m)) = s.moving {
        return Ok(super::routing::give(engine, shared, part, seq, m, noted)?);
    }
    if let Some((seq, from)) = &s.from {
        super::routing::take(engine, shared, part, *seq, from)?;
    }
    if let Some(day) = s.tick {
        tick(engine, shared, part, day)?;
    }
    let start = std::time::Instant::now();
    engine.deliver(s.relays);
    let c = match engine.process_noting(&s.events, noted) {
        Ok(c) => c,
        Err(e) => {
            // Applied again from the stream: not kept for the next commit.
            engine.drop_incoming();
            tracing::error!(partition = part, error = %e, "Commit failed.");
            shared.note_write(Err(format!("the last commit failed: {e}")));
            return Err(e.to_string().into());
        }
    };
    shared.note_write(Ok(()));
    shared.observe_batch(start.elapsed(), s.events.len());
    shared.count_effects(&c.effects);
    let count = |f: fn(&EventOutcome) -> bool| c.outcomes.iter().filter(|o| f(o)).count() as u64;
    let applied = count(|o| matches!(o, EventOutcome::Applied { .. }));
    let duplicates = count(|o| matches!(o, EventOutcome::Duplicate));
    let rejected = c.outcomes.len() as u64 - applied - duplicates;
    shared.events_applied.fetch_add(applied, Ordering::Relaxed);
    if let Some(n) = shared.cluster.as_ref().and_then(|c| c.applied.get(part)) {
        n.fetch_add(applied, Ordering::Relaxed);
    }
    shared
        .events_duplicate
        .fetch_add(duplicates, Ordering::Relaxed);
    shared
        .events_rejected
        .fetch_add(rejected, Ordering::Relaxed);
    // Its client heard 202 (the event is in the stream): the log and the
    // counter are where a refusal shows.
    let first = c.outcomes.iter().zip(&s.events).find_map(|(o, e)| match o {
        EventOutcome::Rejected(r) => Some((e.id.clone(), r.to_string())),
        _ => None,
    });
    if let Some((id, why)) = first {
        tracing::warn!(partition = part, refused = rejected, first = %id, why = %why, "Events in the stream refused by the engine.");
    }
    after_commit(parts, shared);
    Ok(())
}

/// Partition `part`'s daily tick for `day`, unless it ran already (a
/// tick published twice, or applied before a crash cut the commit of its
/// stream sequence short: a tick run again is as a single node's after a
/// crash).
fn tick(
    engine: &mut crate::engine::Engine<SledStore>,
    shared: &Shared,
    part: usize,
    day: i32,
) -> Result<(), NotApplied> {
    if engine.last_tick().map_err(|e| e.to_string())? >= Some(day) {
        return Ok(());
    }
    if engine.refit_due(day) {
        super::fits::adopt(engine, shared, part, day)?;
    }
    let visits = engine.tick_visits();
    let mut effects = 0;
    let ticked = engine.tick_with(day, &mut |e| {
        effects += e.len();
        shared.count_effects(&e);
    });
    if let Err(e) = ticked {
        tracing::error!(partition = part, error = %e, "Daily tick failed.");
        shared.note_write(Err(format!("the daily tick failed: {e}")));
        return Err(e.to_string().into());
    }
    let visited = engine.tick_visits() - visits;
    shared.tick_visits.fetch_add(visited, Ordering::Relaxed);
    let day = crate::base::time::day_string(day);
    tracing::info!(partition = part, %day, visited, effects, "Daily tick done.");
    Ok(())
}

/// Publishes the daily tick of each partition held here that is due by
/// the wall clock and not yet applied, as an entry of the partition's
/// events stream (id `tick:<day>:p<k>`: JetStream keeps one of the
/// resends of the next ten minutes, and the engine skips a day it
/// ticked). The tick then runs where the stream has it, on whichever node
/// applies the partition, so a partition rebuilt on another node ticks at
/// the same point of its history as it did here.
pub fn publish_ticks(parts: &Partitions<SledStore>, shared: &Shared) {
    use crate::engine::clock::{CatchUp, Clock, SystemClock, due_ticks};
    let Some(cluster) = shared.cluster.clone() else {
        return;
    };
    let now = SystemClock.now();
    let mut out = Vec::new();
    for (k, engine) in parts.engines().iter().enumerate() {
        if !cluster.owned.ready(k) {
            continue;
        }
        let Ok(last) = engine.last_tick() else {
            continue;
        };
        for day in due_ticks(&engine.schema, last, now, CatchUp::Once) {
            let day = crate::base::time::day_string(day);
            out.push(Outgoing {
                partition: k,
                id: format!("tick:{day}:p{k}"),
                body: day.into(),
                kind: Kind::Tick,
            });
        }
    }
    if out.is_empty() {
        return;
    }
    cluster.runtime.clone().spawn(async move {
        if let Err(e) = cluster.publish_events(out).await {
            tracing::warn!(error = %e, "Publishing the daily ticks failed; the schedule's next round sends them again.");
        }
    });
}

/// Hands what the partitions held here gave members of other partitions
/// to the relay task (`daemon::cluster::send_relays`), which publishes them to those
/// partitions' events subjects. A relay JetStream acknowledged is in the
/// stream for good: the task confirms it, and its stored copy goes with
/// the partition's next commit. One a crash cut off is sent again after
/// the start (its stored copy), or made again by whichever node rebuilds
/// the partition (the same key, so its recipient applies it once).
pub fn publish_relays(parts: &mut Partitions<SledStore>, shared: &Shared) {
    let Some(cluster) = shared.cluster.as_ref() else {
        return;
    };
    for (k, engine) in parts.engines_mut().iter_mut().enumerate() {
        // Confirmations are a single node's way to drop stored copies; in
        // the cluster the stream's acknowledgement is.
        drop(engine.take_applied());
        if !cluster.owned.holds(k) {
            continue;
        }
        let relays = engine.take_outgoing();
        if !relays.is_empty() && cluster.relays.tx.send((k, relays)).is_err() {
            tracing::error!(
                partition = k,
                "The relay task is gone; relays wait for the next start."
            );
        }
    }
}

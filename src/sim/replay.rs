//! Running a rule set over a history with a simulated clock: events in time
//! order, and the daily tick of every day between them, as the daemon would
//! have run them.

use crate::engine::{Engine, EventOutcome, clock};
use crate::model::{Effect, Event};
use crate::store::{Store, StoreError};

/// Events committed together between ticks.
const BATCH: usize = 1000;

#[derive(Debug, Default)]
pub struct Replayed {
    pub effects: Vec<Effect>,
    pub applied: usize,
    pub duplicates: usize,
    /// Events refused by the engine (an id reused with another body).
    pub rejected: Vec<String>,
    pub ticks: usize,
    /// Members evaluated by the daily ticks, summed over the days.
    pub member_days: u64,
}

/// Replays `events` (sorted here by time, stably) and ticks every day from
/// the first event's day through `until` (default: the last event's day);
/// events after `until` are left out.
/// `progress` gets the number of events done so far.
pub fn replay<S: Store>(
    engine: &mut Engine<S>,
    mut events: Vec<Event>,
    until: Option<i32>,
    progress: &mut dyn FnMut(usize),
) -> Result<Replayed, StoreError> {
    events.sort_by_key(|e| e.at);
    let mut out = Replayed::default();
    let schema = engine.schema.clone();
    if let Some(u) = until {
        events.retain(|e| clock::local_day(&schema, e.at) <= u);
    }
    let mut next_day = match (engine.last_tick()?, events.first()) {
        (Some(d), _) => d + 1,
        (None, Some(e)) => clock::local_day(&schema, e.at),
        (None, None) => until.unwrap_or(0),
    };
    let mut batch: Vec<Event> = Vec::new();
    let mut done = 0;
    for ev in events {
        while clock::tick_instant(&schema, next_day) <= ev.at {
            flush(engine, &mut batch, &mut out)?;
            tick(engine, next_day, &mut out)?;
            next_day += 1;
        }
        if engine.deferred_due(ev.at) {
            flush(engine, &mut batch, &mut out)?;
            out.effects.extend(engine.release_deferred(ev.at)?);
        }
        batch.push(ev);
        if batch.len() >= BATCH {
            done += batch.len();
            flush(engine, &mut batch, &mut out)?;
            progress(done);
        }
    }
    done += batch.len();
    flush(engine, &mut batch, &mut out)?;
    progress(done);
    let last = until.unwrap_or(next_day - 1);
    while next_day <= last {
        tick(engine, next_day, &mut out)?;
        next_day += 1;
    }
    // Effects deferred to a time on the last day go out; later ones stay.
    let end = clock::day_start(&schema, last + 1) - jiff::SignedDuration::from_secs(1);
    out.effects.extend(engine.release_deferred(end)?);
    Ok(out)
}

/// The daily tick of `day`, after the deferred effects due by then.
fn tick<S: Store>(engine: &mut Engine<S>, day: i32, out: &mut Replayed) -> Result<(), StoreError> {
    let at = clock::tick_instant(&engine.schema, day);
    out.effects.extend(engine.release_deferred(at)?);
    out.effects.extend(engine.tick(day)?);
    out.ticks += 1;
    out.member_days += engine.store().meta_u64(crate::store::keys::MEMBERS)?;
    Ok(())
}

fn flush<S: Store>(
    engine: &mut Engine<S>,
    batch: &mut Vec<Event>,
    out: &mut Replayed,
) -> Result<(), StoreError> {
    if batch.is_empty() {
        return Ok(());
    }
    let c = engine.process(batch)?;
    for o in c.outcomes {
        match o {
            EventOutcome::Applied { .. } => out.applied += 1,
            EventOutcome::Duplicate => out.duplicates += 1,
            EventOutcome::Rejected(r) => out.rejected.push(r.to_string()),
        }
    }
    out.effects.extend(c.effects);
    batch.clear();
    Ok(())
}

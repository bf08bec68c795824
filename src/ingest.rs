//! Reading NDJSON events (a file or stdin) into the engine in batches:
//! each batch is committed (group commit) and then drained to the file
//! sinks. A malformed line is reported with its line number and skipped,
//! or stops the run; it is never half applied.

use crate::engine::{Engine, Outcome};
use crate::model::{Effect, Event, EventError, parse_event};
use crate::schema::{Schema, Sink};
use crate::sinks::{SinkError, drain_to_file, release};
use crate::store::Store;
use std::collections::BTreeSet;
use std::io::BufRead;

/// Parses line `line` (1-based) of an NDJSON input; `None` for a blank line.
pub fn parse_line(schema: &Schema, line: usize, text: &str) -> Option<Result<Event, EventError>> {
    if text.trim().is_empty() {
        return None;
    }
    Some(parse_event(schema, text).map_err(|mut e| {
        e.line = Some(line);
        e
    }))
}

/// Reads all events of an NDJSON input; bad lines come back as errors.
pub fn read_all(schema: &Schema, input: impl BufRead) -> (Vec<Event>, Vec<EventError>) {
    let mut events = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let text = match line {
            Ok(t) => t,
            Err(e) => {
                errors.push(EventError {
                    line: Some(i + 1),
                    id: None,
                    path: String::new(),
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        match parse_line(schema, i + 1, &text) {
            Some(Ok(ev)) => events.push(ev),
            Some(Err(e)) => errors.push(e),
            None => {}
        }
    }
    (events, errors)
}

#[derive(Debug, Default)]
pub struct IngestReport {
    pub lines: usize,
    pub applied: usize,
    pub duplicates: usize,
    pub invalid: Vec<EventError>,
    pub rejected: Vec<String>,
    pub members: BTreeSet<String>,
    pub effects: Vec<Effect>,
    /// Stopped at the first bad line (`stop_on_error`).
    pub stopped: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Events per group commit.
pub const BATCH: usize = 1000;

pub fn ingest<S: Store>(
    engine: &mut Engine<S>,
    input: impl BufRead,
    stop_on_error: bool,
    progress: &mut dyn FnMut(usize),
) -> Result<IngestReport, IngestError> {
    let mut r = IngestReport::default();
    let mut batch = Vec::with_capacity(BATCH);
    let schema = engine.schema.clone();
    for (i, line) in input.lines().enumerate() {
        r.lines = i + 1;
        let parsed = match line {
            Ok(text) => parse_line(&schema, i + 1, &text),
            Err(e) => Some(Err(EventError {
                line: Some(i + 1),
                id: None,
                path: String::new(),
                message: format!("cannot read: {e}"),
            })),
        };
        match parsed {
            None => {}
            Some(Ok(ev)) => batch.push(ev),
            Some(Err(e)) => {
                r.invalid.push(e);
                if stop_on_error {
                    r.stopped = true;
                    break;
                }
            }
        }
        if batch.len() >= BATCH {
            commit(engine, &mut batch, &mut r)?;
            progress(r.lines);
        }
    }
    commit(engine, &mut batch, &mut r)?;
    progress(r.lines);
    Ok(r)
}

fn commit<S: Store>(
    engine: &mut Engine<S>,
    batch: &mut Vec<Event>,
    r: &mut IngestReport,
) -> Result<(), IngestError> {
    if batch.is_empty() {
        return Ok(());
    }
    let c = engine.process(batch)?;
    for (ev, o) in batch.iter().zip(c.outcomes) {
        match o {
            Outcome::Applied { .. } => {
                r.applied += 1;
                r.members.insert(ev.member.clone());
            }
            Outcome::Duplicate => r.duplicates += 1,
            Outcome::Rejected(e) => r.rejected.push(e.to_string()),
        }
    }
    r.effects.extend(c.effects);
    batch.clear();
    deliver(engine)?;
    Ok(())
}

/// Drains the outbox to the config's file sinks, then drops what every
/// sink has (webhook and plugin sinks are delivered by the daemon).
pub fn deliver<S: Store>(engine: &mut Engine<S>) -> Result<usize, SinkError> {
    let schema = engine.schema.clone();
    let mut n = 0;
    for sink in &schema.sinks {
        if let Sink::File { path } = sink {
            n += drain_to_file(engine, path)?;
        }
    }
    release(engine)?;
    Ok(n)
}

//! Reading NDJSON events (a file or stdin) into the engine in batches:
//! each batch is committed (group commit) and then drained to the file
//! sinks. A malformed line is reported with its line number and skipped,
//! or stops the run; it is never half applied.

use crate::config::Schema;
use crate::engine::{Engine, EventOutcome};
use crate::io::event::parse_event;
use crate::model::summary::Summary;
use crate::model::{Event, EventError};
use crate::outbox::SinkError;
use crate::store::Store;
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

/// What an ingest did. Counts, not lists: an import of any size runs in
/// flat memory (the effects themselves go to the sinks).
#[derive(Debug, Default)]
pub struct IngestReport {
    pub lines: usize,
    /// Bytes read so far (for progress against the file's size).
    pub bytes: u64,
    pub applied: usize,
    pub duplicates: usize,
    pub invalid: usize,
    pub rejected: usize,
    /// The first [`SHOWN`] bad lines and rejected events, to print.
    pub errors: Vec<String>,
    pub summary: Summary,
    /// Stopped at the first bad line (`stop_on_error`).
    pub stopped: bool,
}

/// Bad lines kept to show; the rest are only counted.
pub const SHOWN: usize = 20;

impl IngestReport {
    fn error(&mut self, e: String) {
        if self.errors.len() < SHOWN {
            self.errors.push(e);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A file sink failed after a commit: what is committed stays.
    #[error(
        "{source}. The data folder does hold the events up to line {line} ({applied} applied, {duplicates} duplicates), and their effects wait in its outbox: fix the sink and ingest the file again (the stored events count as duplicates, or are refused as older than the dedup window when the file spans more than it)"
    )]
    Sink {
        source: SinkError,
        line: usize,
        applied: usize,
        duplicates: usize,
    },
    /// A file sink refused before any event was read.
    #[error("{0}. No event of the input was applied")]
    SinkAtStart(SinkError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Events per group commit.
pub const BATCH: usize = 1000;

/// Reads `input` to the end, committing every [`BATCH`] events; `progress`
/// gets the report so far after each commit. Events dated more than a day
/// past `now` (when given) are invalid lines.
pub fn ingest<S: Store>(
    engine: &mut Engine<S>,
    mut input: impl BufRead,
    stop_on_error: bool,
    now: Option<jiff::Timestamp>,
    progress: &mut dyn FnMut(&IngestReport),
) -> Result<IngestReport, IngestError> {
    // A sink this folder may not write (another folder's file) is refused
    // before anything is applied; what an earlier run left goes out first.
    crate::outbox::deliver_to_files(engine).map_err(IngestError::SinkAtStart)?;
    let mut r = IngestReport {
        summary: Summary::streaming(),
        ..IngestReport::default()
    };
    let mut batch = Vec::with_capacity(BATCH);
    // The line of each event of the batch, to name in a rejection.
    let mut lines = Vec::with_capacity(BATCH);
    let schema = engine.schema.clone();
    let mut text = String::new();
    loop {
        text.clear();
        let i = r.lines;
        let parsed = match input.read_line(&mut text) {
            Ok(0) => break,
            Ok(n) => {
                r.bytes += n as u64;
                parse_line(&schema, i + 1, &text).map(|parsed| {
                    parsed.and_then(|ev| match now {
                        Some(now) => crate::io::event::check_not_ahead(&ev, now)
                            .map(|()| ev)
                            .map_err(|mut e| {
                                e.line = Some(i + 1);
                                e
                            }),
                        None => Ok(ev),
                    })
                })
            }
            Err(e) => Some(Err(EventError {
                line: Some(i + 1),
                id: None,
                path: String::new(),
                message: format!("cannot read: {e}"),
            })),
        };
        r.lines = i + 1;
        match parsed {
            None => {}
            Some(Ok(ev)) => {
                batch.push(ev);
                lines.push(i + 1);
            }
            Some(Err(e)) => {
                r.invalid += 1;
                r.error(e.to_string());
                if stop_on_error {
                    r.stopped = true;
                    break;
                }
            }
        }
        if batch.len() >= BATCH {
            commit(engine, &mut batch, &mut lines, &mut r)?;
            progress(&r);
        }
    }
    commit(engine, &mut batch, &mut lines, &mut r)?;
    progress(&r);
    Ok(r)
}

fn commit<S: Store>(
    engine: &mut Engine<S>,
    batch: &mut Vec<Event>,
    lines: &mut Vec<usize>,
    r: &mut IngestReport,
) -> Result<(), IngestError> {
    if batch.is_empty() {
        return Ok(());
    }
    let c = engine.process(batch)?;
    for e in &c.effects {
        r.summary.add(e);
    }
    // Messages held for quiet hours go out once the history has passed
    // their time, as in replay: not at the next daemon start, however late.
    if let Some(at) = batch.iter().map(|e| e.at).max()
        && engine.deferred_due(at)
    {
        engine.release_deferred_each(at, &mut |e| r.summary.add(&e))?;
    }
    for (o, line) in c.outcomes.into_iter().zip(lines.iter()) {
        match o {
            EventOutcome::Applied { .. } => r.applied += 1,
            EventOutcome::Duplicate => r.duplicates += 1,
            EventOutcome::Rejected(e) => {
                r.rejected += 1;
                r.error(format!("line {line}: {e}"));
            }
        }
    }
    let line = lines.last().copied().unwrap_or(0);
    batch.clear();
    lines.clear();
    crate::outbox::deliver_to_files(engine).map_err(|source| IngestError::Sink {
        source,
        line,
        applied: r.applied,
        duplicates: r.duplicates,
    })?;
    Ok(())
}

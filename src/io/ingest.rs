//! Reading NDJSON events (a file or stdin) into the engine in batches:
//! each batch is committed (group commit) and then drained to the file
//! sinks. A malformed line is reported with its line number and skipped,
//! or stops the run; it is never half applied.

use crate::config::Schema;
use crate::engine::partitions::{Batch, Partitions};
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
    /// The first [`SHOWN`] bad lines and rejected events, by line, to print.
    pub errors: Vec<(usize, String)>,
    pub summary: Summary,
    /// Stopped at the first bad line (`stop_on_error`).
    pub stopped: bool,
}

/// Bad lines kept to show; the rest are only counted.
pub const SHOWN: usize = 20;

impl IngestReport {
    /// Keeps the error of `line` when it is among the first [`SHOWN`]
    /// lines with one (partitions finish their batches in any order).
    fn error(&mut self, line: usize, e: String) {
        if self.errors.len() == SHOWN {
            match self.errors.iter().enumerate().max_by_key(|(_, (l, _))| *l) {
                Some((i, (l, _))) if *l > line => {
                    self.errors.swap_remove(i);
                }
                _ => return,
            }
        }
        self.errors.push((line, e));
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

/// Events per group commit (of each partition).
pub const BATCH: usize = 1000;

/// What a partition's writer did with one batch.
struct Committed {
    /// The batch's outcomes, with their lines.
    outcomes: Vec<(EventOutcome, usize)>,
    effects: Vec<crate::model::Effect>,
}

/// Reads `input` to the end, each partition committing its events every
/// [`BATCH`] on a thread of its own while the reading goes on; `progress`
/// gets the report so far after each commit. Events dated more than a day
/// past `now` (when given) are invalid lines.
pub fn ingest<S: Store + Send>(
    parts: &mut Partitions<S>,
    input: impl BufRead,
    stop_on_error: bool,
    now: Option<jiff::Timestamp>,
    progress: &mut dyn FnMut(&IngestReport),
) -> Result<IngestReport, IngestError> {
    // A sink this folder may not write (another folder's file) is refused
    // before anything is applied; what an earlier run left goes out first.
    for engine in parts.engines_mut() {
        crate::outbox::deliver_to_files(engine).map_err(IngestError::SinkAtStart)?;
    }
    let report = std::cell::RefCell::new(IngestReport {
        summary: Summary::streaming(),
        ..IngestReport::default()
    });
    let Some(schema) = parts.engines().first().map(|e| e.schema.clone()) else {
        return Ok(report.into_inner());
    };
    let mut done = |c: Committed| {
        let mut r = report.borrow_mut();
        for e in &c.effects {
            r.summary.add(e);
        }
        for (o, line) in c.outcomes {
            match o {
                EventOutcome::Applied { .. } => r.applied += 1,
                EventOutcome::Duplicate => r.duplicates += 1,
                EventOutcome::Rejected(e) => {
                    r.rejected += 1;
                    r.error(line, format!("line {line}: {e}"));
                }
            }
        }
        progress(&r);
    };
    let mut input = input;
    let fed = match parts.one_id() {
        // One ID over partitions: an event's partition depends on what the
        // events before it linked, so the partitions commit in rounds.
        true => rounds(
            parts,
            &mut |send| read(&schema, &mut input, stop_on_error, now, &report, send),
            &mut done,
        ),
        false => parts.pipeline(
            BATCH,
            |router| {
                read(
                    &schema,
                    &mut input,
                    stop_on_error,
                    now,
                    &report,
                    &mut |ev, line| router.send(ev, line),
                )
            },
            commit,
            &mut done,
        ),
    };
    let mut r = report.into_inner();
    r.errors.sort_by_key(|(line, _)| *line);
    match fed {
        Err(IngestError::Sink { source, line, .. }) => Err(IngestError::Sink {
            source,
            line,
            applied: r.applied,
            duplicates: r.duplicates,
        }),
        Err(e) => Err(e),
        Ok(()) => Ok(r),
    }
}

/// The reading: each line parsed and sent to its partition's writer; a bad
/// one counted (and the reading stopped with `stop_on_error`).
fn read(
    schema: &Schema,
    mut input: impl BufRead,
    stop_on_error: bool,
    now: Option<jiff::Timestamp>,
    report: &std::cell::RefCell<IngestReport>,
    send: &mut ToWriter<'_>,
) -> Result<(), IngestError> {
    let mut text = String::new();
    let mut line = 0;
    loop {
        text.clear();
        line += 1;
        let parsed = match input.read_line(&mut text) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                report.borrow_mut().bytes += n as u64;
                parse_line(schema, line, &text).map(|parsed| {
                    parsed.and_then(|ev| match now {
                        Some(now) => crate::io::event::check_not_ahead(&ev, now)
                            .map(|()| ev)
                            .map_err(|mut e| {
                                e.line = Some(line);
                                e
                            }),
                        None => Ok(ev),
                    })
                })
            }
            Err(e) => Some(Err(EventError {
                line: Some(line),
                id: None,
                path: String::new(),
                message: format!("cannot read: {e}"),
            })),
        };
        report.borrow_mut().lines = line;
        match parsed {
            None => {}
            Some(Ok(ev)) => send(ev, line)?,
            Some(Err(e)) => {
                let mut r = report.borrow_mut();
                r.invalid += 1;
                r.error(line, e.to_string());
                if stop_on_error {
                    r.stopped = true;
                    return Ok(());
                }
            }
        }
    }
}

/// Where the reading sends each event, with its line.
type ToWriter<'a> = dyn FnMut(Event, usize) -> Result<(), IngestError> + 'a;

/// Feeds what `feed` reads to [`Partitions::process`] in rounds of
/// [`BATCH`] events per partition, each round committed by every
/// partition at the same time on a thread of its own while the next round
/// is read; `done` gets each round. The first error stops the reading.
fn rounds<S: Store + Send>(
    parts: &mut Partitions<S>,
    feed: &mut dyn FnMut(&mut ToWriter) -> Result<(), IngestError>,
    done: &mut dyn FnMut(Committed),
) -> Result<(), IngestError> {
    let size = BATCH * parts.len();
    // One round waiting while one commits: the reading keeps ahead by a
    // round and no more, so memory stays flat.
    let (to_writer, rounds) = std::sync::mpsc::sync_channel::<Batch>(1);
    let (results_tx, results) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(move || {
            for b in rounds {
                let r = round(parts, b);
                let stop = r.is_err();
                if results_tx.send(r).is_err() || stop {
                    return;
                }
            }
        });
        let mut batch = Batch::default();
        let send = |b: Batch, done: &mut dyn FnMut(Committed)| -> Result<(), IngestError> {
            if to_writer.send(b).is_err() {
                // The writer stopped on an error, which it sent last.
                return results.iter().try_for_each(|r| r.map(&mut *done));
            }
            while let Ok(r) = results.try_recv() {
                done(r?);
            }
            Ok(())
        };
        let fed = feed(&mut |ev, line| {
            batch.events.push(ev);
            batch.tags.push(line);
            match batch.events.len() == size {
                true => send(std::mem::take(&mut batch), done),
                false => Ok(()),
            }
        })
        .and_then(|()| match batch.events.is_empty() {
            true => Ok(()),
            false => send(std::mem::take(&mut batch), done),
        });
        drop(to_writer);
        // Every round sent is finished before this returns.
        let finished = results.iter().try_for_each(|r| r.map(&mut *done));
        fed.and(finished)
    })
}

/// One round: the batch committed over the partitions, then what follows
/// each partition's commit, as [`commit`] does it.
fn round<S: Store + Send>(parts: &mut Partitions<S>, b: Batch) -> Result<Committed, IngestError> {
    let c = parts.process(&b.events)?;
    let mut effects = c.effects;
    for engine in parts.engines_mut() {
        after_commit(engine, &b, &mut effects)?;
    }
    Ok(Committed {
        outcomes: c.outcomes.into_iter().zip(b.tags).collect(),
        effects,
    })
}

/// A partition's writer: commits the batch, lets out the messages held
/// for quiet hours once the history has passed their time (as in replay:
/// not at the next daemon start, however late), and writes the file sinks.
fn commit<S: Store>(engine: &mut Engine<S>, b: Batch) -> Result<Committed, IngestError> {
    let c = engine.process(&b.events)?;
    let mut effects = c.effects;
    after_commit(engine, &b, &mut effects)?;
    Ok(Committed {
        outcomes: c.outcomes.into_iter().zip(b.tags).collect(),
        effects,
    })
}

/// What follows a partition's commit of `b`: the messages held for quiet
/// hours whose time the batch's history has passed, then the file sinks.
fn after_commit<S: Store>(
    engine: &mut Engine<S>,
    b: &Batch,
    effects: &mut Vec<crate::model::Effect>,
) -> Result<(), IngestError> {
    if let Some(at) = b.events.iter().map(|e| e.at).max()
        && engine.deferred_due(at)
    {
        engine.release_deferred_each(at, &mut |e| effects.push(e))?;
    }
    let line = b.tags.last().copied().unwrap_or(0);
    crate::outbox::deliver_to_files(engine)
        .map(drop)
        .map_err(|source| IngestError::Sink {
            source,
            line,
            applied: 0,
            duplicates: 0,
        })
}

//! `nudge ingest`: an event file through the data folder's partitions (a
//! writer thread each), with progress on a terminal, the report, and the
//! warnings about sinks the config left out.

use super::commands::{code, data_folder, fail, load_rules, older_format_note};
use crate::Common;
use crate::cli::render;
use nudge::config::Schema;
use nudge::engine::partitions::Partitions;
use nudge::lang::RuleSet;
use nudge::store::{SledStore, Store};
use std::io::{BufRead, IsTerminal};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

pub fn ingest(common: &Common, file: &Path, stop_on_error: bool) -> ExitCode {
    code(ingest_inner(common, file, stop_on_error))
}

fn ingest_inner(common: &Common, file: &Path, stop_on_error: bool) -> Result<ExitCode, ExitCode> {
    let (schema, rules, plugins) = load_rules(common)?;
    let path = data_folder(common, &schema, true)?;
    let new = nudge::store::folder::partitions_in(&path)
        .map_err(fail)?
        .is_none();
    let mut parts = open_partitions(&path, &schema, &rules, plugins)?;
    warn_left_out(&mut parts)?;
    let (input, size): (Box<dyn BufRead>, Option<u64>) = if file == Path::new("-") {
        (Box::new(std::io::stdin().lock()), None)
    } else {
        let f = std::fs::File::open(file)
            .map_err(|e| fail(format!("cannot read {}: {e}", file.display())))?;
        let size = f.metadata().ok().map(|m| m.len());
        (Box::new(std::io::BufReader::new(f)), size)
    };
    let bar = ingest_progress(size);
    let started = std::time::Instant::now();
    let now = nudge::engine::clock::Clock::now(&nudge::engine::clock::SystemClock);
    let result = nudge::io::ingest::ingest(&mut parts, input, stop_on_error, Some(now), &mut |r| {
        bar.set_position(r.bytes);
        let rate = r.lines as f64 / started.elapsed().as_secs_f64().max(1e-3);
        bar.set_message(format!("{} events, {rate:.0} events/s", r.lines));
    });
    bar.finish_and_clear();
    let r = match result {
        Err(e @ nudge::io::ingest::IngestError::SinkAtStart(_)) if new => {
            // Nothing was applied: a folder made for it would be one made
            // for nothing (and hold the next try's number of partitions).
            drop(parts);
            let _ = std::fs::remove_dir_all(&path);
            return Err(fail(e));
        }
        r => r.map_err(fail)?,
    };
    parts.save_due().map_err(fail)?;
    for (_, e) in &r.errors {
        eprintln!("error: {e}");
    }
    let bad = r.invalid + r.rejected;
    if bad > r.errors.len() {
        eprintln!("... and {} more bad lines", bad - r.errors.len());
    }
    let stopped = if r.stopped {
        " (stopped at the first bad line)"
    } else {
        ""
    };
    println!(
        "events: {} lines, {} applied, {} duplicates, {} invalid, {} rejected{stopped}",
        r.lines, r.applied, r.duplicates, r.invalid, r.rejected
    );
    let mut members = 0;
    for e in parts.engines() {
        members += e
            .store()
            .meta_u64(nudge::store::keys::MEMBERS)
            .map_err(fail)?;
    }
    println!("members in the store: {members}");
    print!("{}", render::summary(&r.summary));
    if schema.sinks.is_empty() {
        eprintln!(
            "note: no sink is configured: these effects are delivered nowhere and kept only for `storage.outbox_retention`"
        );
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Warns of sinks the config leaves out: what is kept for them, and those
/// forgotten now.
/// (Each partition keeps its own cursors: what they say is summed.)
fn warn_left_out(parts: &mut Partitions<SledStore>) -> Result<(), ExitCode> {
    let effects = |n: u64| match n {
        1 => "1 effect".to_string(),
        n => format!("{n} effects"),
    };
    let mut kept: std::collections::BTreeMap<String, (u64, String)> = Default::default();
    let mut forgotten: std::collections::BTreeMap<String, u64> = Default::default();
    for engine in parts.engines_mut() {
        let retention = engine.schema.outbox_retention_days;
        let sinks = nudge::outbox::register_sinks(engine).map_err(fail)?;
        for o in sinks.kept {
            let until = o.kept_until(retention).unwrap_or_default();
            let k = kept.entry(o.label).or_insert((0, String::new()));
            k.0 += o.pending;
            k.1 = until.max(std::mem::take(&mut k.1));
        }
        for o in sinks.forgotten {
            *forgotten.entry(o.label).or_default() += o.missed;
        }
    }
    for (label, (pending, until)) in kept {
        eprintln!(
            "warning: the sink {label} is not in the config but has {} it has not delivered; they are kept until {until} (`storage.outbox_retention` after it was left out, in event time), should it come back",
            effects(pending),
        );
    }
    for (label, missed) in forgotten {
        eprintln!(
            "warning: the sink {label} was left out of the config for longer than `storage.outbox_retention`: it is forgotten, and the {} it had not delivered are gone",
            effects(missed)
        );
    }
    Ok(())
}

/// Ingest's progress on a terminal: bytes of the file read, events, the
/// rate and the time left; a spinner for stdin (no size to go by).
fn ingest_progress(size: Option<u64>) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let (bar, template) = match size {
        Some(n) => (
            indicatif::ProgressBar::new(n),
            "{bar:30} {percent:>3}% {msg} [{elapsed} elapsed, {eta} left]",
        ),
        None => (
            indicatif::ProgressBar::new_spinner(),
            "{spinner} {msg} [{elapsed}]",
        ),
    };
    let style = indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// The data folder's partitions, with a note when the config asks for
/// another number than the folder has.
fn open_partitions(
    path: &Path,
    schema: &Arc<Schema>,
    rules: &Arc<RuleSet>,
    plugins: Option<Arc<nudge::plugins::Plugins>>,
) -> Result<Partitions<SledStore>, ExitCode> {
    let made = nudge::store::folder::partitions_in(path).map_err(fail)?;
    if let Some(n) = made.filter(|n| *n != schema.partitions) {
        eprintln!(
            "note: the data folder {} has {n} partition{}; `storage.partitions` ({}) is for folders made from now on",
            path.display(),
            if n == 1 { "" } else { "s" },
            schema.partitions
        );
    }
    let parts = nudge::engine::partitions::open(path, schema, rules, plugins).map_err(fail)?;
    if let Some(older) = parts
        .engines()
        .iter()
        .find_map(|e| e.store().older_format())
    {
        eprintln!("{}", older_format_note(path, older));
    }
    Ok(parts)
}

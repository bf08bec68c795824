//! The commands that run the engine: `ingest`, `replay`, `test`, `member`.
//! Each loads the rules (printing diagnostics if they do not load), does
//! its work through the library, and prints a summary.

use crate::Common;
use crate::report;
use nudge::engine::Engine;
use nudge::lang::RuleSet;
use nudge::load::{LoadOptions, load};
use nudge::model::Effect;
use nudge::schema::Schema;
use nudge::store::{SledStore, Store};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Loads config, rules and plugins; on errors prints them and gives the exit code.
fn load_rules(common: &Common) -> Result<(Arc<Schema>, Arc<RuleSet>), ExitCode> {
    let loaded = load(&LoadOptions {
        config: common.config.clone(),
        rules: common.rules.clone(),
        plugins: common.plugins.clone(),
    });
    if loaded.errors() > 0 || loaded.io_failure {
        eprint!("{}", report::human(&loaded, common.color_on()));
        return Err(ExitCode::from(if loaded.io_failure { 2 } else { 1 }));
    }
    match (loaded.schema, loaded.rules) {
        (Some(s), Some(r)) => Ok((Arc::new(s), Arc::new(r))),
        _ => Err(ExitCode::from(1)),
    }
}

fn open_store(common: &Common, schema: &Schema) -> Result<SledStore, ExitCode> {
    let path = common
        .data
        .clone()
        .unwrap_or_else(|| schema.paths.data.clone());
    SledStore::open(&path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

fn progress(total: Option<u64>, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    let style = indicatif::ProgressStyle::with_template(&format!(
        "{{spinner}} {what} {{pos}}/{{len}} [{{elapsed}}] {{per_sec}}"
    ))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

pub fn ingest(common: &Common, file: &Path, stop_on_error: bool) -> ExitCode {
    let (schema, rules) = match load_rules(common) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let store = match open_store(common, &schema) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let mut engine = match Engine::new(schema, rules, store) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let input: Box<dyn BufRead> = if file == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        match std::fs::File::open(file) {
            Ok(f) => Box::new(std::io::BufReader::new(f)),
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", file.display());
                return ExitCode::from(2);
            }
        }
    };
    let bar = progress(None, "lines");
    let result = nudge::ingest::ingest(&mut engine, input, stop_on_error, &mut |n| {
        bar.set_position(n as u64)
    });
    bar.finish_and_clear();
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    for e in r.invalid.iter().take(20) {
        eprintln!("error: {e}");
    }
    if r.invalid.len() > 20 {
        eprintln!("... and {} more bad lines", r.invalid.len() - 20);
    }
    for e in &r.rejected {
        eprintln!("error: {e}");
    }
    println!(
        "events: {} lines, {} applied, {} duplicates, {} invalid, {} rejected{}",
        r.lines,
        r.applied,
        r.duplicates,
        r.invalid.len(),
        r.rejected.len(),
        if r.stopped {
            " (stopped at the first bad line)"
        } else {
            ""
        }
    );
    println!("members: {}", r.members.len());
    print!("{}", report::summary(&nudge::replay::summarize(&r.effects)));
    if r.invalid.is_empty() && r.rejected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub fn replay(common: &Common, events: &Path, until: Option<&str>, out: Option<&Path>) -> ExitCode {
    let (schema, rules) = match load_rules(common) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let until = match until.map(nudge::lang::parse::parse_date) {
        Some(None) => {
            eprintln!("error: --until takes a date, YYYY-MM-DD");
            return ExitCode::from(2);
        }
        Some(d) => d,
        None => None,
    };
    let file = match std::fs::File::open(events) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", events.display());
            return ExitCode::from(2);
        }
    };
    let (evs, invalid) = nudge::ingest::read_all(&schema, std::io::BufReader::new(file));
    for e in invalid.iter().take(20) {
        eprintln!("error: {e} (skipped)");
    }
    let store = match SledStore::temporary() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut engine = match Engine::new(schema, rules, store) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let bar = progress(Some(evs.len() as u64), "events");
    let result =
        nudge::replay::replay(&mut engine, evs, until, &mut |n| bar.set_position(n as u64));
    bar.finish_and_clear();
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(out) = out
        && let Err(e) = write_effects(out, &r.effects)
    {
        eprintln!("error: cannot write {}: {e}", out.display());
        return ExitCode::from(2);
    }
    println!(
        "events: {} applied, {} duplicates, {} invalid, {} rejected; {} daily ticks",
        r.applied,
        r.duplicates,
        invalid.len(),
        r.rejected.len(),
        r.ticks
    );
    print!("{}", report::summary(&nudge::replay::summarize(&r.effects)));
    if invalid.is_empty() && r.rejected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn write_effects(path: &Path, effects: &[Effect]) -> std::io::Result<()> {
    let mut buf = Vec::new();
    for e in effects {
        nudge::sinks::write_line(&mut buf, e);
    }
    let mut f = std::fs::File::create(path)?;
    f.write_all(&buf)?;
    f.sync_all()
}

pub fn test(common: &Common, path: Option<PathBuf>) -> ExitCode {
    let path = path.unwrap_or_else(|| PathBuf::from("tests/cases"));
    let files = match nudge::testcase::find(&path) {
        Ok(f) if !f.is_empty() => f,
        Ok(_) => {
            eprintln!("error: no test cases (*.yaml) in {}", path.display());
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let (mut passed, mut failed) = (0, 0);
    for f in files {
        let r = nudge::testcase::run(&f, &common.config);
        match &r.outcome {
            nudge::testcase::Outcome::Pass { effects } => {
                passed += 1;
                println!("ok   {} ({}): {effects} effects", r.path.display(), r.name);
            }
            nudge::testcase::Outcome::Fail { diff } => {
                failed += 1;
                println!("FAIL {} ({})", r.path.display(), r.name);
                println!("     expected effects (-) and actual effects (+):");
                for (mark, line) in diff {
                    println!("     {mark} {line}");
                }
            }
            nudge::testcase::Outcome::Error(e) => {
                failed += 1;
                println!(
                    "FAIL {} ({})\n     {}",
                    r.path.display(),
                    r.name,
                    e.replace('\n', "\n     ")
                );
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub fn member(common: &Common, id: &str) -> ExitCode {
    let (schema, rules) = match load_rules(common) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let store = match open_store(common, &schema) {
        Ok(s) => s,
        Err(c) => return c,
    };
    match store.member(id) {
        Ok(Some(rec)) => {
            println!("{}", report::member_json(id, &rec, &schema, &rules));
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!("error: no member `{id}`");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

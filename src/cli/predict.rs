//! `nudge fit` and `nudge model`: fit the repurchase models on a data
//! folder's members and keep the fit; show the fit kept.

use super::commands::{code, fail, open_folder};
use crate::Common;
use nudge::project::load::{LoadOptions, load};
use std::process::ExitCode;

/// The config alone: fitting needs no rules.
fn schema(common: &Common) -> Result<nudge::config::Schema, ExitCode> {
    let l = load(&LoadOptions {
        config_only: true,
        ..common.load_options()
    });
    if l.errors() > 0 || l.io_failure {
        eprint!("{}", super::render::human(&l, common.color_on()));
        return Err(ExitCode::from(2));
    }
    l.schema.ok_or(ExitCode::from(2))
}

pub fn fit(common: &Common, at: Option<&str>) -> ExitCode {
    code(fit_inner(common, at))
}

fn fit_inner(common: &Common, at: Option<&str>) -> Result<ExitCode, ExitCode> {
    let schema = schema(common)?;
    let store = open_folder(common, &schema)?;
    for part in &store.parts {
        if let Some(older) = part.older_format() {
            eprintln!("{}", super::commands::older_format_note(part.path(), older));
        }
    }
    // Without `--at`: the day the store is as of (its last daily tick; a
    // replayed folder's `--until` day), as `member` and `explain` show.
    let day = match at {
        Some(d) => super::commands::day_arg("--at", d).map_err(fail)?,
        None => nudge::engine::predict::as_of(
            &store,
            nudge::engine::clock::local_day(
                &schema,
                nudge::engine::clock::Clock::now(&nudge::engine::clock::SystemClock),
            ),
        ),
    };
    let started = std::time::Instant::now();
    // Over every partition's members, kept in each.
    let fit = nudge::engine::predict::fit(&store, day).map_err(fail)?;
    for part in &store.parts {
        nudge::engine::predict::save(part, &fit).map_err(fail)?;
    }
    // As kept (and as `nudge model` shows it: JSON numbers read back).
    let kept = nudge::engine::predict::load(&store).map_err(fail)?;
    println!("{}", serde_json::json!(kept.as_ref().unwrap_or(&fit)));
    eprintln!(
        "fitted on {} members in {:.2} s",
        fit.members,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn model(common: &Common) -> ExitCode {
    code(model_inner(common))
}

fn model_inner(common: &Common) -> Result<ExitCode, ExitCode> {
    let schema = schema(common)?;
    let store = open_folder(common, &schema)?;
    match nudge::engine::predict::load(&store).map_err(fail)? {
        Some(fit) => {
            println!("{}", serde_json::json!(fit));
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("error: no fit yet: run `nudge fit`");
            Ok(ExitCode::from(1))
        }
    }
}

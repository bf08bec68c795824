//! `nudge segment`: count or export the members a condition or a named
//! segment holds for, on a day, from a data folder (stopped daemon; a
//! running one answers `POST /v1/segments/...`).

use super::commands::{code, fail, open_folder};
use super::render;
use crate::Common;
use nudge::engine::segment::{Scan, default_fields};
use nudge::project::load::load;
use nudge::project::query::segment_query;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What to do with the members found.
pub struct Output {
    pub count: bool,
    pub export: Option<PathBuf>,
    pub csv: bool,
    pub fields: Vec<String>,
    pub at: Option<String>,
}

pub fn segment(common: &Common, query: &str, out: Output) -> ExitCode {
    code(segment_inner(common, query, out))
}

fn segment_inner(common: &Common, query: &str, out: Output) -> Result<ExitCode, ExitCode> {
    let mut l = load(&common.load_options());
    if l.errors() > 0 || l.io_failure {
        eprint!("{}", render::human(&l, common.color_on()));
        return Err(ExitCode::from(2));
    }
    let (Some(schema), Some(project)) = (&l.schema, &l.rules) else {
        return Err(ExitCode::from(2));
    };
    let fields = if out.fields.is_empty() {
        default_fields()
    } else {
        out.fields.clone()
    };
    let q = match segment_query(schema, project, &mut l.sources, query, &fields) {
        Ok(q) => q,
        Err(ds) => {
            let before = l.diagnostics.len();
            l.diagnostics.extend(ds);
            eprint!("{}", render::diagnostics(&l, before, common.color_on()));
            return Err(ExitCode::from(1));
        }
    };
    let today = match &out.at {
        Some(d) => super::commands::day_arg("--at", d).map_err(fail)?,
        None => nudge::engine::clock::local_day(
            schema,
            nudge::engine::clock::Clock::now(&nudge::engine::clock::SystemClock),
        ),
    };
    let store = open_folder(common, schema)?;
    if let Some(why) = nudge::engine::tier_change(&store, &schema.tiers).map_err(fail)? {
        return Err(fail(why));
    }
    let mut scan = Scan::new(schema, q.rules(project), q.index, &fields).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(1)
    })?;
    if out.count {
        let c = scan.count(&store, today).map_err(fail)?;
        println!(
            "{}",
            serde_json::json!({"count": c.count, "members": c.members})
        );
        return Ok(ExitCode::SUCCESS);
    }
    match &out.export {
        Some(path) => {
            let c = export_file(&mut scan, &store, today, path, out.csv)?;
            println!(
                "{}",
                serde_json::json!({"count": c.count, "members": c.members, "export": path})
            );
        }
        None => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            write_rows(&mut scan, &store, today, &mut w, out.csv)?;
            // A closed pipe (`| head`) is the reader's choice.
            if let Err(e) = w.flush()
                && e.kind() != std::io::ErrorKind::BrokenPipe
            {
                return Err(fail(e));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the export next to `path` and renames it into place, so a
/// reader never sees half a file.
fn export_file(
    scan: &mut Scan<'_>,
    store: &nudge::store::folder::Folder,
    today: i32,
    path: &Path,
    csv: bool,
) -> Result<nudge::engine::segment::Counts, ExitCode> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    let file = std::fs::File::create(&tmp).map_err(|e| {
        fail(format!(
            "cannot write {} (written first as {}): {e}",
            path.display(),
            tmp.display()
        ))
    })?;
    let mut w = std::io::BufWriter::new(file);
    let c = write_rows(scan, store, today, &mut w, csv)?;
    w.flush()
        .and_then(|_| w.get_ref().sync_all())
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
    Ok(c)
}

fn write_rows(
    scan: &mut Scan<'_>,
    store: &nudge::store::folder::Folder,
    today: i32,
    w: &mut dyn Write,
    csv: bool,
) -> Result<nudge::engine::segment::Counts, ExitCode> {
    // The header row comes first, members or none.
    let names: Vec<String> = scan.field_names().map(|n| csv_cell(&n.into())).collect();
    let mut error = if csv {
        writeln!(w, "{}", names.join(",")).err()
    } else {
        None
    };
    let c = scan
        .each(store, today, &mut |scan, id, rec| {
            if error.is_some() {
                return false;
            }
            let row = scan.row(id, rec);
            let line = if csv {
                row.iter()
                    .map(|(_, v)| csv_cell(v))
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                nudge::engine::segment::row_json(&row)
            };
            match writeln!(w, "{line}") {
                Ok(()) => true,
                Err(e) => {
                    error = Some(e);
                    false
                }
            }
        })
        .map_err(fail)?;
    match error {
        // A closed pipe (`| head`) is the reader's choice, not a failure.
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(c),
        Some(e) => Err(fail(e)),
        None => Ok(c),
    }
}

/// One CSV cell (RFC 4180): text as is, quoted when it holds a comma, a
/// quote or a line break; lists (tags) joined with `;`; null empty.
fn csv_cell(v: &serde_json::Value) -> String {
    let text = match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(";"),
        other => other.to_string(),
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

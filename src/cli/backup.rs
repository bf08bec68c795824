//! `nudge export` and `nudge import-state`: a whole data folder (all its
//! partitions) to one backup file and back (the format and its checks are
//! `store::backup`'s).

use super::commands::{code, config_paths, fail};
use crate::Common;
use crate::cli::render;
use nudge::store::SledStore;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn data_path(common: &Common) -> Result<PathBuf, ExitCode> {
    if let Some(d) = &common.data {
        return Ok(d.clone());
    }
    config_paths(common).map(|p| p.data).map_err(|loaded| {
        eprint!("{}", render::human(&loaded, common.color_on()));
        ExitCode::from(2)
    })
}

pub fn export(common: &Common, file: &Path) -> ExitCode {
    code(export_inner(common, file))
}

fn export_inner(common: &Common, file: &Path) -> Result<ExitCode, ExitCode> {
    let path = data_path(common)?;
    if !path.exists() {
        return Err(fail(format!("no data folder at {}", path.display())));
    }
    let parts = match nudge::store::folder::partitions_in(&path).map_err(fail)? {
        Some(n) if n > 1 => nudge::store::folder::open_partitions(&path, n, None).map_err(fail)?,
        _ => vec![SledStore::open(&path).map_err(fail)?],
    };
    let summary = if file == Path::new("-") {
        nudge::store::backup::export_folder(&parts, &mut std::io::stdout().lock())
    } else {
        let f = std::fs::File::create(file)
            .map_err(|e| fail(format!("cannot create {}: {e}", file.display())))?;
        nudge::store::backup::export_folder(&parts, &mut std::io::BufWriter::new(f))
    }
    .map_err(fail)?;
    eprintln!(
        "exported {} entries from {}, sha256 {}",
        summary.entries,
        path.display(),
        summary.sha256
    );
    Ok(ExitCode::SUCCESS)
}

pub fn import_state(common: &Common, file: &Path) -> ExitCode {
    code(import_state_inner(common, file))
}

fn import_state_inner(common: &Common, file: &Path) -> Result<ExitCode, ExitCode> {
    let path = data_path(common)?;
    std::fs::File::open(file).map_err(|e| fail(format!("cannot read {}: {e}", file.display())))?;
    let existed = path.exists();
    let source = || -> std::io::Result<Box<dyn BufRead>> {
        Ok(Box::new(std::io::BufReader::new(std::fs::File::open(
            file,
        )?)))
    };
    match nudge::store::backup::import_folder(&path, &source) {
        Ok(summary) => {
            eprintln!(
                "imported {} entries into {}, sha256 {}",
                summary.entries,
                path.display(),
                summary.sha256
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            // A folder this command created holds nothing worth keeping.
            if !existed {
                let _ = std::fs::remove_dir_all(&path);
            }
            Err(fail(e))
        }
    }
}

//! `nudge init`: a starting project that `nudge check` and `nudge test`
//! pass on: a commented `nudge.yaml`, `rules/` with the example rule,
//! `tests/cases/` with its case, and `plugins/`. It never overwrites.

use std::path::{Path, PathBuf};

/// The files written, relative to the project folder.
const FILES: [(&str, &str); 4] = [
    ("nudge.yaml", include_str!("init/nudge.yaml")),
    ("rules/winback.rules", include_str!("init/winback.rules")),
    (
        "tests/cases/winback.yaml",
        include_str!("init/winback.yaml"),
    ),
    ("plugins/README.md", include_str!("init/plugins.md")),
];

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0} exists already; nudge init writes a new project and overwrites nothing")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Writes the starting project into `dir` (created if missing); the files
/// written, in order. Checks every file first, so it writes all or none.
pub fn init(dir: &Path) -> Result<Vec<PathBuf>, InitError> {
    let paths: Vec<PathBuf> = FILES.iter().map(|(p, _)| dir.join(p)).collect();
    if let Some(p) = paths.iter().find(|p| p.exists()) {
        return Err(InitError::Exists(p.clone()));
    }
    for (path, (_, text)) in paths.iter().zip(FILES) {
        let io = |source| InitError::Io {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(path, text).map_err(io)?;
    }
    Ok(paths)
}

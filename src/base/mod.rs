//! The ground floor: what every layer may use and that imports nothing of
//! nudge. Diagnostics as data, positions in YAML, the `Value` of a slot,
//! calendar days and durations, and the names the language reserves.

pub mod diag;
pub mod names;
pub mod time;
pub mod value;
pub mod yaml;

/// `path` with `-<tag>` added to its file name before the extension: the
/// file of one writer of a configured path (`effects.ndjson` is
/// `effects-p0.ndjson` for partition 0, `effects-a.ndjson` for node `a`).
pub fn path_of_writer(path: &std::path::Path, tag: &str) -> std::path::PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    let name = match (stem, path.extension()) {
        (Some(s), Some(x)) => format!("{s}-{tag}.{}", x.to_string_lossy()),
        (Some(s), None) => format!("{s}-{tag}"),
        (None, _) => tag.to_string(),
    };
    path.with_file_name(name)
}

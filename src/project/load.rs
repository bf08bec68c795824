//! Reads the config, the rule files and the plugins from disk and runs the
//! language pipeline over them (parse, check, compile). Owns the limits on
//! what it reads (file size, text encoding) and the rule set's version id.
//! Everything found goes into one list of diagnostics; nothing is printed.

use crate::base::diag::{Code, Diagnostic, SourceId, SourceMap, Span};
use crate::config::{self, Schema};
use crate::lang::check::PluginSigs;
use crate::lang::{RuleSet, check, compile, parse, parse_yaml};
use crate::plugins::{Plugin, Plugins};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A rule file, plugin or config larger than this is refused (E102): real
/// rule files are kilobytes, and everything read is kept in memory.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// At most this many rule files in a folder.
pub const MAX_FILES: usize = 10_000;

#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    pub config: PathBuf,
    /// No config file: the built-in defaults ([`BUILTIN_CONFIG`]), for
    /// `nudge check` and friends outside a project.
    pub builtin_config: bool,
    /// Only the config, with no rules and plugins (commands that read the
    /// store, like `nudge member`, work while the rules are broken or gone).
    pub config_only: bool,
    /// Overrides the config's `paths.rules`; a folder or one rule file.
    pub rules: Option<PathBuf>,
    pub plugins: Option<PathBuf>,
    /// Texts that stand in for files on disk, by path: an editor's unsaved
    /// buffers (`nudge lsp`). Empty for every command.
    pub overlay: BTreeMap<PathBuf, String>,
    /// Rule files to load beside the rules folder's (an editor's open file
    /// outside it, checked in the project's context). They may exist only
    /// in `overlay`.
    pub extra_rules: Vec<PathBuf>,
}

/// What a load found: the sources read, every diagnostic, and the rule set
/// if there were no errors.
#[derive(Default)]
pub struct Load {
    pub sources: SourceMap,
    pub diagnostics: Vec<Diagnostic>,
    pub schema: Option<Schema>,
    pub rules: Option<RuleSet>,
    /// The plugins the rules were checked against, ready to run.
    pub plugins: Option<Arc<Plugins>>,
    /// The config or a named folder could not be read at all.
    pub io_failure: bool,
}

impl std::fmt::Debug for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Load {{ errors: {}, warnings: {} }}",
            self.errors(),
            self.warnings()
        )
    }
}

impl Load {
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }
    /// Each error as one line, `file:line:col: message [CODE]`, for logs
    /// and test-case reports (people get miette's rendering instead).
    pub fn error_lines(&self) -> Vec<String> {
        self.diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| match d.source {
                Some(s) => {
                    let (l, c) = self.sources.line_col(s, d.span.start);
                    format!(
                        "{}:{l}:{c}: {} [{}]",
                        self.sources.path(s).display(),
                        d.message,
                        d.code.as_str()
                    )
                }
                None => format!("{} [{}]", d.message, d.code.as_str()),
            })
            .collect()
    }

    pub fn warnings(&self) -> usize {
        self.diagnostics.len() - self.errors()
    }

    /// The diagnostics as data: code, severity, message, label, hint, and
    /// file, line and column where there is a place.
    pub fn diagnostics_json(&self) -> serde_json::Value {
        self.diagnostics
            .iter()
            .map(|d| {
                let mut v = serde_json::json!({
                    "code": d.code.as_str(),
                    "severity": d.severity().to_string(),
                    "message": d.message,
                    "label": d.label,
                    "hint": d.hint,
                });
                if let Some(src) = d.source {
                    let (line, column) = self.sources.line_col(src, d.span.start);
                    let (end_line, end_column) = self.sources.line_col(src, d.span.end);
                    v["file"] = serde_json::json!(self.sources.path(src).display().to_string());
                    v["line"] = serde_json::json!(line);
                    v["column"] = serde_json::json!(column);
                    v["end_line"] = serde_json::json!(end_line);
                    v["end_column"] = serde_json::json!(end_column);
                }
                v
            })
            .collect()
    }
}

/// Loads and checks everything; never panics on bad input.
// Long because the project's load sequence (config, rules, plugins, check, compile) with the failure of each step reported where it happens.
pub fn load(opts: &LoadOptions) -> Load {
    let mut l = Load::default();
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();

    let config_read = if opts.builtin_config {
        Ok(l.sources
            .add(Path::new("(built-in defaults)"), BUILTIN_CONFIG.to_string()))
    } else {
        read_source(&mut l.sources, &opts.config, &opts.overlay)
    };
    let config_id = match config_read {
        Ok(id) => id,
        Err(d) => {
            l.diagnostics.push(d);
            l.io_failure = true;
            return l;
        }
    };
    hash_source(&mut hasher, &l.sources, config_id);
    // An empty base keeps paths relative as written (`rules/x.rules`, not `./rules/x.rules`).
    let base = opts
        .config
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let schema = match config::load(config_id, l.sources.text(config_id), &base) {
        Ok(s) => Some(s),
        Err(ds) => {
            l.diagnostics.extend(ds);
            None
        }
    };

    if opts.config_only {
        if let Some(schema) = schema {
            finish(&mut l, schema, &[], Vec::new(), hasher);
        }
        return l;
    }
    let rules_path = opts
        .rules
        .clone()
        .or_else(|| schema.as_ref().map(|s| s.paths.rules.clone()))
        .unwrap_or_else(|| base.join("rules"));
    let plugins_path = opts
        .plugins
        .clone()
        .or_else(|| schema.as_ref().map(|s| s.paths.plugins.clone()))
        .unwrap_or_else(|| base.join("plugins"));

    // A rules path that is only an editor's unsaved buffer has nothing on disk to walk.
    let walked = if opts.overlay.contains_key(&rules_path) && !rules_path.exists() {
        Ok(Vec::new())
    } else {
        rule_files(&rules_path)
    };
    let files = match walked {
        Ok(mut f) => {
            // In path order with the rest, as they will be once saved there.
            f.extend(opts.extra_rules.iter().cloned());
            f.sort();
            f.dedup();
            f
        }
        Err(d) => {
            l.diagnostics.push(d);
            l.io_failure = true;
            Vec::new()
        }
    };
    if files.is_empty() && !l.io_failure {
        l.diagnostics.push(Diagnostic::global(
            Code::EmptyRules,
            format!(
                "no rule files (*.rules, *.yaml, *.yml) in {}",
                rules_path.display()
            ),
        ));
    }
    let mut asts = Vec::new();
    for path in files {
        let project = project_root(&base);
        let extra = opts.extra_rules.contains(&path);
        let read = if extra {
            Ok(())
        } else {
            inside(&[&rules_path, &project], &path)
        }
        .and_then(|()| read_source(&mut l.sources, &path, &opts.overlay));
        let id = match read {
            Ok(id) => id,
            Err(d) => {
                l.diagnostics.push(d);
                continue;
            }
        };
        hash_source(&mut hasher, &l.sources, id);
        asts.push(parse_rule_file(&mut l, id));
    }

    let limits = schema
        .as_ref()
        .map(|s| s.plugin_limits.clone())
        .unwrap_or_default();
    let plugins = load_plugins(
        &mut l,
        &plugins_path,
        &project_root(&base),
        &mut hasher,
        &limits,
        &opts.overlay,
    );

    match schema {
        Some(schema) => finish(&mut l, schema, &asts, plugins, hasher),
        None => crate::base::diag::sort(&mut l.diagnostics),
    }
    l
}

/// Loads rules from texts instead of files: the config text and
/// `(name, text)` rule files (`.yaml`/`.yml` names are YAML). No plugins.
/// For tests, benchmarks and tools that generate rules.
pub fn load_texts(config: &str, files: &[(&str, &str)]) -> Load {
    load_texts_in(config, Path::new("."), files, None)
}

/// Like [`load_texts`], with the config's folder `base` (its relative
/// paths start there) and the plugins of `plugins` (a folder) loaded too:
/// rule test cases with inline rules use the project's plugins.
pub fn load_texts_in(
    config: &str,
    base: &Path,
    files: &[(&str, &str)],
    plugins: Option<&Path>,
) -> Load {
    let mut l = Load::default();
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let config_id = l.sources.add(Path::new("nudge.yaml"), config.to_string());
    hash_source(&mut hasher, &l.sources, config_id);
    let schema = match config::load(config_id, config, base) {
        Ok(s) => s,
        Err(ds) => {
            l.diagnostics.extend(ds);
            return l;
        }
    };
    let mut asts = Vec::new();
    for (name, text) in files {
        let id = l.sources.add(Path::new(name), normalize(text.to_string()));
        hash_source(&mut hasher, &l.sources, id);
        asts.push(parse_rule_file(&mut l, id));
    }
    let plugins = match plugins {
        Some(dir) => {
            let limits = schema.plugin_limits.clone();
            load_plugins(
                &mut l,
                dir,
                &project_root(base),
                &mut hasher,
                &limits,
                &BTreeMap::new(),
            )
        }
        None => Vec::new(),
    };
    finish(&mut l, schema, &asts, plugins, hasher);
    l
}

/// Parses a rule file already in the source map, by its form.
fn parse_rule_file(l: &mut Load, id: SourceId) -> crate::lang::ast::RuleFile {
    let path = l.sources.path(id);
    let text = l.sources.text(id);
    let (file, diags) = if is_yaml(path) {
        parse_yaml::parse_yaml_rules(id, text)
    } else {
        let stem = path
            .file_stem()
            .map_or("rules".into(), |s| s.to_string_lossy());
        parse::parse_file(id, text, &stem)
    };
    l.diagnostics.extend(diags);
    file
}

/// Checks and compiles the parsed files.
fn finish(
    l: &mut Load,
    schema: Schema,
    asts: &[crate::lang::ast::RuleFile],
    plugins: Vec<Plugin>,
    hasher: xxhash_rust::xxh3::Xxh3,
) {
    let sigs = PluginSigs {
        plugins: plugins
            .iter()
            .map(|p| (p.name.clone(), p.functions.clone()))
            .collect(),
        broken: l
            .diagnostics
            .iter()
            .filter(|d| d.code == Code::PluginSyntax)
            .filter_map(|d| l.sources.path(d.source?).file_stem())
            .map(|s| s.to_string_lossy().into_owned())
            .collect(),
    };
    let (checked, diags) = check::check(&schema, asts, &sigs, &l.sources);
    l.diagnostics.extend(diags);
    l.diagnostics
        .extend(plugin_sinks(&schema, &plugins, &sigs.broken));
    l.diagnostics
        .extend(compile::never_true(&checked.const_conds));
    if l.errors() == 0 {
        let version = format!("{:016x}", hasher.digest());
        let names = plugins.iter().map(|p| p.name.clone()).collect();
        let rules = compile::compile(
            &l.sources,
            checked.rules,
            checked.segments,
            checked.layout,
            schema.events.len(),
            names,
            version,
        );
        let limits = schema.plugin_limits.clone();
        let engine = crate::plugins::sandbox(&limits);
        l.plugins = Some(Arc::new(Plugins::new(
            engine,
            plugins,
            limits,
            rules.layout.clone(),
            schema.tiers.clone(),
        )));
        l.rules = Some(rules);
    }
    l.schema = Some(schema);
    crate::base::diag::sort(&mut l.diagnostics);
}

/// A plugin sink whose plugin is missing, or has no `deliver(effect)`,
/// would dead-letter every effect: refused at the load, where it is named.
fn plugin_sinks(schema: &Schema, plugins: &[Plugin], broken: &[String]) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    for (name, source, span) in &schema.plugin_sink_places {
        if broken.contains(name) {
            continue; // its own syntax error says why
        }
        let found = plugins.iter().find(|p| p.name == *name);
        let (msg, hint) = match found {
            None => (
                format!("the sink's plugin `{name}` is not in the plugins folder"),
                crate::base::diag::did_you_mean(name, plugins.iter().map(|p| p.name.as_str()))
                    .unwrap_or_else(|| {
                        format!("a plugin sink names a file `{name}.rhai` of the plugins folder")
                    }),
            ),
            Some(p) if !p.functions.iter().any(|(f, n)| f == "deliver" && *n == 1) => (
                format!("the sink's plugin `{name}` has no `deliver(effect)` function"),
                "a sink plugin turns each effect into a request: `fn deliver(effect) { #{ url: ..., body: ... } }` (docs/plugins.md)".to_string(),
            ),
            Some(_) => continue,
        };
        diags.push(Diagnostic::new(Code::ConfigValue, *source, *span, msg).hint(hint));
    }
    diags
}

fn hash_source(h: &mut xxhash_rust::xxh3::Xxh3, sources: &SourceMap, id: SourceId) {
    h.update(sources.path(id).to_string_lossy().as_bytes());
    h.update(&[0]);
    h.update(sources.text(id).as_bytes());
    h.update(&[0]);
}

fn is_yaml(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

fn is_rule_file(p: &Path) -> bool {
    is_yaml(p) || p.extension().is_some_and(|e| e == "rules")
}

/// Rule files under `path` (recursively, sorted, so load order is stable),
/// or `path` itself if it is a file.
fn rule_files(path: &Path) -> Result<Vec<PathBuf>, Diagnostic> {
    let meta = std::fs::metadata(path).map_err(|e| {
        Diagnostic::global(
            Code::Io,
            format!("cannot read the rules folder {}: {e}", path.display()),
        )
        .hint("set `paths.rules` in the config or pass `--rules DIR`")
    })?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            Diagnostic::global(Code::Io, format!("cannot list {}: {e}", dir.display()))
        })?;
        for entry in entries.flatten() {
            let p = entry.path();
            let hidden = p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if hidden {
                continue;
            }
            if is_rule_file(&p) {
                out.push(p);
            } else if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
        if out.len() > MAX_FILES {
            return Err(Diagnostic::global(
                Code::TooLarge,
                format!("more than {MAX_FILES} rule files under {}", path.display()),
            ));
        }
    }
    out.sort();
    Ok(out)
}

/// Reads at most `MAX_FILE_BYTES` of a regular file. What is read is what
/// counts, not what the metadata says: a symlink to `/dev/zero` grows
/// without end, and a FIFO would block the load (and a running daemon's
/// reload) until someone writes to it, so both are refused before reading.
pub fn read_capped(path: &Path) -> Result<Vec<u8>, Diagnostic> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e: std::io::Error| {
        Diagnostic::global(Code::Io, format!("cannot read {}: {e}", path.display()))
    };
    let kind = std::fs::metadata(path).map_err(io)?.file_type();
    if kind.is_dir() {
        return Err(Diagnostic::global(
            Code::Io,
            format!("{} is a folder, not a file", path.display()),
        )
        .hint("rule files are files ending in .rules, .yaml or .yml; rename the folder"));
    }
    if !kind.is_file() {
        return Err(not_regular(path));
    }
    // Non-blocking open: if a FIFO took the file's place since the check,
    // opening it does not wait for a writer; the check below refuses it.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    if !file.metadata().map_err(io)?.file_type().is_file() {
        return Err(not_regular(path));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Diagnostic::global(
            Code::TooLarge,
            format!(
                "{} is larger than the limit of {} MiB",
                path.display(),
                MAX_FILE_BYTES / (1024 * 1024)
            ),
        )
        .hint("split it into several files"));
    }
    Ok(bytes)
}

fn not_regular(path: &Path) -> Diagnostic {
    Diagnostic::global(
        Code::Io,
        format!(
            "{} is not a regular file (a FIFO, socket or device)",
            path.display()
        ),
    )
    .hint("only regular files are read; remove it from the folder")
}

/// A rule or plugin file that resolves outside both its folder and the
/// project (the config's folder) is refused: a symlink to a system file
/// would have its lines echoed in diagnostics, which `/v1/status` serves.
/// Links within the project (rule variants sharing files) are fine.
fn inside(roots: &[&Path], path: &Path) -> Result<(), Diagnostic> {
    let Ok(real) = path.canonicalize() else {
        return Ok(()); // reading it reports the error
    };
    let roots: Vec<PathBuf> = roots.iter().filter_map(|r| r.canonicalize().ok()).collect();
    if roots.is_empty() || roots.iter().any(|r| real.starts_with(r)) {
        return Ok(());
    }
    Err(Diagnostic::global(
        Code::Io,
        format!(
            "{} links to {}, outside the project",
            path.display(),
            real.display(),
        ),
    )
    .hint("rule and plugin files must lie inside the project's folder; copy the file in instead of linking"))
}

/// The config used when there is no `nudge.yaml` and no `--config`: what
/// most programmes start with. `nudge init` writes a commented one.
pub const BUILTIN_CONFIG: &str = "timezone: UTC
tiers: [bronze, silver, gold, diamond]
events:
  purchase:
    amount: money
    category: string?
";

/// Line terminators as the parsers see them. A file saved with classic-Mac
/// `\r` endings, or with U+0085 / U+2028 / U+2029 in it, would otherwise
/// be one long line, and a comment on its first line would swallow every
/// rule after it without a word. Each is replaced by `\n`, with spaces
/// before it to the same byte length, so every span still points into the
/// file as saved. A leading byte-order mark (Windows editors) is dropped.
pub fn normalize(text: String) -> String {
    let text = match text.strip_prefix('\u{FEFF}') {
        Some(rest) => rest.to_string(),
        None => text,
    };
    let unusual = |c: char| matches!(c, '\r' | '\u{85}' | '\u{2028}' | '\u{2029}');
    if !text.contains(unusual) {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => out.push('\r'),
            '\r' => out.push('\n'),
            // Padding before the break: the next line's columns stay right.
            '\u{85}' => out.push_str(" \n"),
            '\u{2028}' | '\u{2029}' => out.push_str("  \n"),
            c => out.push(c),
        }
    }
    out
}

/// The project's folder: the config's, or the working folder for a bare
/// `nudge.yaml`.
fn project_root(base: &Path) -> PathBuf {
    if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base.to_path_buf()
    }
}

/// Reads a text file into the source map, within the limits; an overlay's
/// text for it stands in for what is on disk.
fn read_source(
    sources: &mut SourceMap,
    path: &Path,
    overlay: &BTreeMap<PathBuf, String>,
) -> Result<SourceId, Diagnostic> {
    if let Some(text) = overlaid(overlay, path) {
        return Ok(sources.add(path, normalize(text.clone())));
    }
    let bytes = read_capped(path)?;
    match String::from_utf8(bytes) {
        Ok(text) => Ok(sources.add(path, normalize(text))),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let lossy = String::from_utf8_lossy(e.as_bytes()).into_owned();
            let at = lossy
                .char_indices()
                .map(|(i, _)| i)
                .nth(String::from_utf8_lossy(&e.as_bytes()[..at]).chars().count())
                .unwrap_or(lossy.len());
            let id = sources.add(path, lossy);
            Err(Diagnostic::new(
                Code::NotUtf8,
                id,
                Span::new(at, at + 1),
                format!("{} is not UTF-8 text (byte {at})", path.display()),
            )
            .label("not UTF-8")
            .hint("save the file as UTF-8; is it a binary file?"))
        }
    }
}

/// The overlay's text for `path`, by the path as written or as resolved
/// (the editor names files by their real path, the load by the config's).
fn overlaid<'a>(overlay: &'a BTreeMap<PathBuf, String>, path: &Path) -> Option<&'a String> {
    if overlay.is_empty() {
        return None;
    }
    overlay
        .get(path)
        .or_else(|| path.canonicalize().ok().and_then(|p| overlay.get(&p)))
}

/// Compiles each `plugins/NAME.rhai` to learn its functions. A missing
/// plugins folder just means no plugins.
fn load_plugins(
    l: &mut Load,
    dir: &Path,
    project: &Path,
    hasher: &mut xxhash_rust::xxh3::Xxh3,
    limits: &crate::config::PluginLimits,
    overlay: &BTreeMap<PathBuf, String>,
) -> Vec<Plugin> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "rhai"))
        .collect();
    paths.sort();
    let engine = crate::plugins::sandbox(limits);
    for path in paths {
        let read = inside(&[dir, project], &path)
            .and_then(|()| read_source(&mut l.sources, &path, overlay));
        let id = match read {
            Ok(id) => id,
            Err(d) => {
                l.diagnostics.push(d);
                continue;
            }
        };
        hash_source(hasher, &l.sources, id);
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || name.starts_with(|c: char| c.is_ascii_digit())
        {
            l.diagnostics.push(
                Diagnostic::new(
                    Code::PluginSyntax,
                    id,
                    Span::new(0, 0),
                    format!("`{name}` cannot be a plugin name"),
                )
                .hint("name plugin files like `crm.rhai`: letters, digits and `_`"),
            );
            continue;
        }
        let text = l.sources.text(id);
        match crate::plugins::compile(&engine, &name, text) {
            Ok(plugin) => out.push(plugin),
            Err(e) => {
                let p = e.position();
                let offset = offset_of(text, p.line().unwrap_or(1), p.position().unwrap_or(1));
                l.diagnostics.push(
                    Diagnostic::new(
                        Code::PluginSyntax,
                        id,
                        Span::char_at(text, offset),
                        format!("plugin `{name}` does not compile: {}", e.err_type()),
                    )
                    .label("here"),
                );
            }
        }
    }
    out
}

/// Byte offset of a 1-based line and column.
fn offset_of(text: &str, line: usize, col: usize) -> usize {
    let start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let line_text = &text[start.min(text.len())..];
    start
        + line_text
            .char_indices()
            .nth(col.saturating_sub(1))
            .map_or(line_text.len(), |(i, _)| i)
}

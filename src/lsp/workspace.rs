//! The editor's view of the projects: open documents (their unsaved text),
//! which project each belongs to, and the last load of each project with
//! the open texts standing in for the files. Owns turning a load's
//! diagnostics into LSP diagnostics per file; it does not answer requests
//! (completion, hover and the rest read the analyses it keeps).

use super::text;
use crate::base::diag::{Diagnostic as Finding, Severity};
use crate::project::load::{Load, LoadOptions, load};
use lsp_types::{Diagnostic, DiagnosticSeverity, NumberOrString, Uri};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// An open document.
pub struct Doc {
    pub uri: Uri,
    pub text: String,
}

/// Where a document's project is: its config, or the built-in defaults
/// for a rule file with no `nudge.yaml` above it (then checked alone).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProjectKey {
    Config(PathBuf),
    Alone(PathBuf),
}

/// One project's last load.
pub struct Analysis {
    pub load: Load,
    /// The config file, when there is one.
    pub config: Option<PathBuf>,
}

#[derive(Default)]
pub struct Workspace {
    pub root: Option<PathBuf>,
    pub docs: BTreeMap<PathBuf, Doc>,
    pub analyses: BTreeMap<ProjectKey, Analysis>,
    /// Files given diagnostics at the last publish, per project: they are
    /// cleared when their diagnostics go.
    published: BTreeMap<ProjectKey, BTreeSet<PathBuf>>,
}

/// What to send the editor after an analysis: every file's diagnostics.
pub type Publish = Vec<(Uri, Vec<Diagnostic>)>;

impl Workspace {
    pub fn new(root: Option<PathBuf>) -> Workspace {
        Workspace {
            root,
            ..Workspace::default()
        }
    }

    /// The project of the file at `path`: the nearest `nudge.yaml` above it;
    /// for an editor buffer never saved, the workspace folder's.
    pub fn project_of(&self, path: &Path) -> ProjectKey {
        let found = if path.starts_with(UNTITLED) {
            self.root
                .as_ref()
                .map(|r| r.join("nudge.yaml"))
                .filter(|c| c.is_file())
        } else {
            path.ancestors()
                .skip(1)
                .map(|d| d.join("nudge.yaml"))
                .find(|c| c.is_file() || self.docs.contains_key(c))
        };
        match found {
            Some(c) => ProjectKey::Config(c),
            None => ProjectKey::Alone(path.to_path_buf()),
        }
    }

    /// Loads the project again with the open texts, and says what to publish.
    pub fn analyse(&mut self, key: &ProjectKey) -> Publish {
        let analysis = self.load(key);
        let base = analysis.config.as_ref().and_then(|c| c.parent());
        let mut by_file: BTreeMap<PathBuf, Vec<Diagnostic>> = BTreeMap::new();
        for f in &analysis.load.diagnostics {
            let (path, mut diag) = match f.source {
                Some(s) => {
                    let path = analysis.load.sources.path(s).to_path_buf();
                    let text = analysis.load.sources.text(s);
                    (
                        path,
                        to_lsp(f, text::range(text, f.span.start, f.span.end), base),
                    )
                }
                // Findings about no file (an empty rules folder) go on the config.
                None => match &analysis.config {
                    Some(c) => (c.clone(), to_lsp(f, lsp_types::Range::default(), base)),
                    None => continue,
                },
            };
            let path = absolute(&path);
            // The other place the finding is about gets it too (both
            // definitions of a duplicate rule), pointing back here.
            if let (Some(s), Some((rs, rspan, label))) = (f.source, f.related.as_deref()) {
                let here = analysis.load.sources.text(s);
                let (line, col) = crate::base::diag::line_col(here, f.span.start);
                let rtext = analysis.load.sources.text(*rs);
                let mut other = f.clone();
                other.label = Some(label.clone());
                other.hint = Some(format!(
                    "this is the {label}; the other is at {}:{line}:{col}",
                    path.display()
                ));
                let rpath = absolute(analysis.load.sources.path(*rs));
                let rrange = text::range(rtext, rspan.start, rspan.end);
                let mut d = to_lsp(&other, rrange, base);
                // Each points at the other as related information too, a
                // link the editor can follow.
                let here_range = text::range(here, f.span.start, f.span.end);
                d.related_information = related(&path, here_range, f.label.as_deref());
                diag.related_information = related(&rpath, rrange, Some(label));
                by_file.entry(rpath).or_default().push(d);
            }
            by_file.entry(path).or_default().push(diag);
        }
        // Open files of this project with nothing to say are cleared too.
        for path in self.docs.keys() {
            if self.project_of(path) == *key {
                by_file.entry(path.clone()).or_default();
            }
        }
        let before = self.published.remove(key).unwrap_or_default();
        for path in before {
            by_file.entry(path).or_default();
        }
        let now = by_file
            .iter()
            .filter(|(_, d)| !d.is_empty())
            .map(|(p, _)| p.clone())
            .collect();
        self.published.insert(key.clone(), now);
        let previous = self.analyses.insert(key.clone(), analysis);
        if let (Some(old), Some(new)) = (previous, self.analyses.get_mut(key)) {
            // A broken config keeps the last good one for completion and hover.
            if new.load.schema.is_none() {
                new.load.schema = old.load.schema;
            }
        }
        by_file
            .into_iter()
            .filter_map(|(p, d)| {
                let uri = self.docs.get(&p).map(|doc| doc.uri.clone());
                Some((uri.or_else(|| super::uri_of(&p))?, d))
            })
            .collect()
    }

    fn load(&self, key: &ProjectKey) -> Analysis {
        let overlay: BTreeMap<PathBuf, String> = self
            .docs
            .iter()
            .map(|(p, d)| (p.clone(), d.text.clone()))
            .collect();
        let mut opts = LoadOptions {
            overlay,
            ..LoadOptions::default()
        };
        match key {
            ProjectKey::Config(c) => opts.config = c.clone(),
            ProjectKey::Alone(file) => {
                opts.builtin_config = true;
                opts.rules = Some(file.clone());
                opts.plugins = Some(file.with_file_name("plugins"));
            }
        }
        // The rules folder, to know which open files are outside it.
        let rules_dir = match key {
            ProjectKey::Alone(f) => f.clone(),
            ProjectKey::Config(c) => {
                let first = load(&LoadOptions {
                    config_only: true,
                    ..opts.clone()
                });
                let base = c.parent().unwrap_or(Path::new("/"));
                first
                    .schema
                    .as_ref()
                    .map_or_else(|| base.join("rules"), |s| s.paths.rules.clone())
            }
        };
        let rules_dir = absolute(&rules_dir);
        opts.extra_rules = self
            .docs
            .keys()
            .filter(|p| {
                // The walk of the rules folder finds saved files inside it.
                let inside = p.starts_with(&rules_dir);
                let saved = p.exists();
                (is_rules_text(p) && !(inside && saved)) || (inside && !saved && is_yaml(p))
            })
            .filter(|p| self.project_of(p) == *key)
            .cloned()
            .collect();
        Analysis {
            load: load(&opts),
            config: match key {
                ProjectKey::Config(c) => Some(c.clone()),
                ProjectKey::Alone(_) => None,
            },
        }
    }

    /// The analysis of the project `path` belongs to, if it was loaded.
    pub fn analysis_of(&self, path: &Path) -> Option<&Analysis> {
        self.analyses.get(&self.project_of(path))
    }
}

/// Where editor buffers that were never saved (`untitled:` URIs) are
/// placed: outside every folder, so they are rule files of the workspace's
/// project that no walk of a rules folder finds.
pub const UNTITLED: &str = "/untitled:";

/// A `.rules` file: a rule file wherever it is (YAML rule files are known
/// by being in the rules folder).
pub fn is_rules_text(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "rules")
}

fn is_yaml(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "yaml" || e == "yml")
}

/// The path made absolute and resolved where it exists, so that the
/// editor's paths and the load's compare equal.
pub fn absolute(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    })
}

/// A link to the other place a finding is about.
fn related(
    path: &Path,
    range: lsp_types::Range,
    label: Option<&str>,
) -> Option<Vec<lsp_types::DiagnosticRelatedInformation>> {
    let uri = super::uri_of(path)?;
    Some(vec![lsp_types::DiagnosticRelatedInformation {
        location: lsp_types::Location::new(uri, range),
        message: label.unwrap_or("the other place").to_string(),
    }])
}

/// A finding as the editor shows it; paths in its hint are shown relative
/// to the project (`base`), as `nudge check` run there shows them.
fn to_lsp(f: &Finding, range: lsp_types::Range, base: Option<&Path>) -> Diagnostic {
    let hint = f.hint.as_ref().map(|h| match base {
        Some(b) => h.replace(&format!("{}/", b.display()), ""),
        None => h.clone(),
    });
    let mut message = f.message.clone();
    // `nudge check` shows the label at the caret; here it follows the message.
    if let Some(l) = f.label.as_ref().filter(|l| !f.message.contains(l.as_str())) {
        message.push_str(&format!(" ({l})"));
    }
    if let Some(h) = &hint {
        message.push_str("\nhint: ");
        message.push_str(h);
    }
    Diagnostic {
        range,
        severity: Some(match f.severity() {
            Severity::Error => DiagnosticSeverity::ERROR,
            Severity::Warning => DiagnosticSeverity::WARNING,
        }),
        code: Some(NumberOrString::String(f.code.as_str().to_string())),
        source: Some("nudge".into()),
        message,
        data: hint.as_ref().map(|h| serde_json::json!({ "hint": h })),
        ..Diagnostic::default()
    }
}

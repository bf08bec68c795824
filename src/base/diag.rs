//! Diagnostics as data: stable codes, a source and a byte span, a message and
//! a hint. This module owns the codes and the source map that diagnostics
//! point into; it does not render anything (the binary renders with miette,
//! `nudge check --format json` prints the data as is).

use std::fmt;
use std::path::{Path, PathBuf};

/// A byte range in one source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }
    /// The character at byte `offset` of `text`: empty at (or past) the
    /// end, so a caret never points outside the file or into a character.
    pub fn char_at(text: &str, offset: usize) -> Span {
        let mut start = offset.min(text.len());
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let len = text[start..].chars().next().map_or(0, char::len_utf8);
        Span::new(start, start + len)
    }
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// Index of a source in the [`SourceMap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId(pub u32);

/// The files a load read: config, rule files, plugins. Diagnostics point into it.
#[derive(Debug, Default)]
pub struct SourceMap {
    files: Vec<(PathBuf, String)>,
}

impl SourceMap {
    pub fn add(&mut self, path: &Path, text: String) -> SourceId {
        self.files.push((path.to_path_buf(), text));
        SourceId((self.files.len() - 1) as u32)
    }
    pub fn path(&self, id: SourceId) -> &Path {
        &self.files[id.0 as usize].0
    }
    pub fn text(&self, id: SourceId) -> &str {
        &self.files[id.0 as usize].1
    }
    pub fn iter(&self) -> impl Iterator<Item = (SourceId, &Path, &str)> {
        self.files
            .iter()
            .enumerate()
            .map(|(i, (p, t))| (SourceId(i as u32), p.as_path(), t.as_str()))
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, id: SourceId, offset: usize) -> (usize, usize) {
        line_col(self.text(id), offset)
    }
}

/// 1-based line and column (in characters) of a byte offset in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let before = &text[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = text[line_start..offset].chars().count() + 1;
    (line, col)
}

pub fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

macro_rules! codes {
    ($($name:ident = $code:literal, $sev:ident, $doc:literal;)*) => {
        /// Every diagnostic nudge reports. The string codes are stable: tools
        /// and docs refer to them. E1xx: reading and syntax; E2xx: names and
        /// types; E3xx: the config; W4xx: warnings.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Code { $($name,)* }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$name,)*];
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$name => $code,)* }
            }
            pub fn severity(self) -> Severity {
                match self { $(Code::$name => Severity::$sev,)* }
            }
            /// One line saying what the code means (for docs and `--explain`).
            pub fn summary(self) -> &'static str {
                match self { $(Code::$name => $doc,)* }
            }
        }
    };
}

codes! {
    Io = "E100", Error, "a file or folder could not be read";
    NotUtf8 = "E101", Error, "a file is not valid UTF-8 text";
    TooLarge = "E102", Error, "a file is larger than the limit";
    Syntax = "E110", Error, "the text does not follow the rule grammar";
    TooDeep = "E111", Error, "brackets nest deeper than the limit";
    TooLong = "E112", Error, "an expression has more operators or nests deeper than the limit";
    BadLiteral = "E113", Error, "a literal is out of range or not a real value (a date, a number, a percentage)";
    YamlSyntax = "E120", Error, "a YAML rule file is not valid YAML";
    YamlShape = "E121", Error, "a YAML rule file has an unknown key, a missing key or a value of the wrong kind";
    UnknownName = "E201", Error, "a name is not a field, attribute, tier or function";
    UnknownTier = "E202", Error, "a tier is not one the config lists";
    UnknownCoupon = "E203", Error, "a coupon template is not in the config";
    UnknownChannel = "E204", Error, "a channel is not in the config";
    UnknownEvent = "E205", Error, "an event type is not in the config";
    UnknownEventField = "E206", Error, "an event field is not declared for the rule's event types";
    UnknownPlugin = "E207", Error, "a plugin or plugin function does not exist";
    UnknownFunction = "E208", Error, "a built-in function does not exist";
    UnknownSegment = "E209", Error, "a segment name is not defined in any rule file";
    TypeMismatch = "E210", Error, "a value has the wrong type for where it is used";
    EventInTick = "E211", Error, "a rule that only runs on ticks reads the triggering event";
    Arity = "E212", Error, "a function gets the wrong number of arguments";
    DuplicateRule = "E220", Error, "two rules have the same name";
    DuplicateClause = "E221", Error, "a rule has the same clause twice";
    MissingThen = "E222", Error, "a rule has no `then`";
    BadClause = "E223", Error, "a clause has a value it cannot take (limit 0, holdout over 100%, ...)";
    ReadOnly = "E224", Error, "an action sets a field the engine keeps itself";
    DuplicateSegment = "E225", Error, "two segments have the same name, or a segment uses itself";
    BadExperiment = "E226", Error, "an experiment's shares and holdout do not add up to 100%, or two variants share a name";
    NotKept = "E227", Error, "a segment query reads a windowed aggregate no rule or segment keeps";
    QueryPlugin = "E228", Error, "a segment query calls a plugin function (segments are counted without plugins)";
    PluginSyntax = "E130", Error, "a plugin does not compile";
    ConfigSyntax = "E300", Error, "the config is not valid YAML";
    ConfigShape = "E301", Error, "the config has an unknown key, a missing key or a value of the wrong kind";
    ConfigValue = "E302", Error, "a config value is invalid (time zone, duplicate tier, bad cap, unknown channel, ...)";
    NeverTrue = "W401", Warning, "a rule's condition can never be true";
    EventOnTick = "W402", Warning, "a rule that also runs on ticks (no `on`, or `on tick` among others) reads event fields, which are null on ticks";
    EmptyRules = "W403", Warning, "a rules folder has no rule files";
    NullArithmetic = "W404", Warning, "a `set` computes with an attribute that is null until set (give it a default)";
    ProbabilityRange = "W405", Warning, "a probability (`p_alive`, `churn_risk`) is compared with a number above 1";
}

/// One finding about the input: what, where, and what to do about it.
#[derive(Clone, Debug)]
pub struct Diagnostic {
    pub code: Code,
    pub message: String,
    /// Where it is; `None` for findings about no particular file.
    pub source: Option<SourceId>,
    pub span: Span,
    /// A short text shown at the caret.
    pub label: Option<String>,
    pub hint: Option<String>,
    /// Another place the finding is about (the first definition of a
    /// duplicate), with a label: editors mark it too.
    pub related: Option<Box<(SourceId, Span, String)>>,
}

impl Diagnostic {
    pub fn new(code: Code, source: SourceId, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            message: message.into(),
            source: Some(source),
            span,
            label: None,
            hint: None,
            related: None,
        }
    }
    pub fn global(code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            message: message.into(),
            source: None,
            span: Span::default(),
            label: None,
            hint: None,
            related: None,
        }
    }
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    pub fn related(mut self, source: SourceId, span: Span, label: impl Into<String>) -> Self {
        self.related = Some(Box::new((source, span, label.into())));
        self
    }
    pub fn maybe_hint(mut self, hint: Option<String>) -> Self {
        if hint.is_some() {
            self.hint = hint;
        }
        self
    }
    pub fn severity(&self) -> Severity {
        self.code.severity()
    }
    pub fn is_error(&self) -> bool {
        self.severity() == Severity::Error
    }
}

/// "did you mean `cycle`?" for the closest of `candidates`, if any is close.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(name, c);
        if score > 0.8 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| format!("did you mean `{c}`?"))
}

/// Diagnostics sorted by file, then position, so output is stable.
pub fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by(|a, b| {
        (a.source, a.span.start, a.code.as_str()).cmp(&(b.source, b.span.start, b.code.as_str()))
    });
}

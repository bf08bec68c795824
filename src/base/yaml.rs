//! The one place that parses YAML (the config and YAML rule files).
//!
//! It uses marked-yaml, which keeps the position of every node, because
//! diagnostics must point at the exact line and column of a bad value, also
//! inside a rule expression written as a YAML string; serde_yaml keeps no
//! positions (and is no longer maintained). Everything else in nudge sees
//! plain nodes, byte spans and diagnostics, never a YAML library type.

use crate::base::diag::Span;
pub use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode, MarkedSequenceNode};
pub use marked_yaml::{Node, Spanned};
use std::str::FromStr;

/// A YAML error with the byte offset it is about.
#[derive(Debug)]
pub struct YamlError {
    pub message: String,
    pub offset: usize,
    /// Bytes the error covers from `offset` (an unknown key's name); 0 for
    /// one character.
    pub len: usize,
    pub hint: Option<String>,
}

impl YamlError {
    /// Where the error is in `text`.
    pub fn span(&self, text: &str) -> Span {
        match self.len {
            0 => Span::char_at(text, self.offset),
            n => Span::new(self.offset, (self.offset + n).min(text.len())),
        }
    }
}

/// Converts marked-yaml's character positions to byte offsets.
pub struct Positions<'a> {
    text: &'a str,
    /// Byte offset of each character, only when the text is not ASCII.
    table: Option<Vec<usize>>,
}

impl<'a> Positions<'a> {
    pub fn new(text: &'a str) -> Self {
        let table = (!text.is_ascii()).then(|| text.char_indices().map(|(i, _)| i).collect());
        Positions { text, table }
    }

    pub fn byte(&self, character: usize) -> usize {
        match &self.table {
            None => character.min(self.text.len()),
            Some(t) => t.get(character).copied().unwrap_or(self.text.len()),
        }
    }

    /// The span of a node's start marker, one token wide.
    pub fn span(&self, span: &marked_yaml::Span) -> Span {
        let start = span.start().map_or(0, |m| self.byte(m.character()));
        let rest = &self.text[start.min(self.text.len())..];
        let len = rest
            .find(['\n', ':', ',', '#', ']', '}'])
            .unwrap_or(rest.len());
        let len = rest[..len].trim_end().len().max(1).min(rest.len());
        Span::new(start, start + len)
    }

    /// Where each byte of a scalar's value sits in the file, so that errors
    /// inside a rule expression written in YAML point at the right column.
    /// Walks the value and the source together, skipping what YAML adds
    /// (quotes, indentation, line folding); falls back to the start.
    pub fn scalar_offsets(&self, node: &MarkedScalarNode) -> Vec<usize> {
        let value = node.as_str();
        let src = self.text.as_bytes();
        let mut at = node.span().start().map_or(0, |m| self.byte(m.character()));
        if let Some(&q) = src.get(at)
            && matches!(q, b'"' | b'\'' | b'|' | b'>')
        {
            at += 1;
            if matches!(q, b'|' | b'>') {
                while at < src.len() && src[at] != b'\n' {
                    at += 1;
                }
            }
        }
        let mut table = Vec::with_capacity(value.len() + 1);
        for b in value.bytes() {
            if !b.is_ascii_whitespace() {
                while at < src.len() && src[at] != b {
                    at += 1;
                }
            } else if at < src.len() && !src[at].is_ascii_whitespace() {
                // Folded line breaks: the value has a space the source lacks.
                table.push(at);
                continue;
            }
            table.push(at.min(src.len()));
            at += 1;
        }
        table.push(at.min(src.len()));
        table
    }
}

/// What the top level of a document must be.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Top {
    Mapping,
    List,
}

/// Parses a YAML document. An empty document is an empty mapping or list.
/// Duplicate keys are errors.
/// The byte offset of a document marker (`---` or `...` at the start of a
/// line) after the first document's content. marked-yaml reads the first
/// document and silently drops the rest: rules or settings below a `---`
/// would vanish from a file that "loads fine". A `---` before any content
/// (the usual header) is fine.
fn second_document(text: &str) -> Option<usize> {
    let mut content = false;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let marker = ["---", "..."].iter().any(|m| {
            line.strip_prefix(m)
                .is_some_and(|r| r.is_empty() || r.starts_with(char::is_whitespace))
        });
        let more = || {
            text[offset + line.len()..]
                .lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        };
        if marker && content && more() {
            return Some(offset);
        }
        let t = line.trim();
        if !marker && !t.is_empty() && !t.starts_with('#') {
            content = true;
        }
        offset += line.len();
    }
    None
}

pub fn parse(text: &str, top: Top) -> Result<Node, YamlError> {
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        let blank = marked_yaml::Span::new_blank();
        return Ok(match top {
            Top::Mapping => Node::from(MarkedMappingNode::new_empty(blank)),
            Top::List => Node::from(MarkedSequenceNode::new_empty(blank)),
        });
    }
    if let Some(offset) = second_document(text) {
        return Err(YamlError {
            message: "a second YAML document starts here; nudge reads one document a file, and everything after this line would be lost".into(),
            offset,
            len: 0,
            hint: None,
        });
    }
    let pos = Positions::new(text);
    // Quoted scalars stay strings (`id: "4"` is the string 4).
    let mut opts = marked_yaml::LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .prevent_coercion(true);
    if top == Top::List {
        opts = opts.toplevel_sequence();
    }
    marked_yaml::parse_yaml_with_options(0, text, opts).map_err(|e| {
        use marked_yaml::LoadError as L;
        let (m, msg): (marked_yaml::Marker, String) = match &e {
            L::TopLevelMustBeMapping(m) => (
                *m,
                "the top level must be a mapping of `key: value` lines".to_string(),
            ),
            L::TopLevelMustBeSequence(m) => (
                *m,
                "the top level must be a list of rules, each starting with `- rule: NAME`"
                    .to_string(),
            ),
            L::UnexpectedAnchor(m) => (
                *m,
                "anchors and aliases (`&x`, `*x`) are not supported".to_string(),
            ),
            L::MappingKeyMustBeScalar(m) => (*m, "keys must be plain names".to_string()),
            L::UnexpectedTag(m) => (*m, "YAML tags (`!x`) are not supported".to_string()),
            L::ScanError(m, s) => (*m, s.info().to_string()),
            L::DuplicateKey(d) => (
                d.key
                    .span()
                    .start()
                    .copied()
                    .unwrap_or(marked_yaml::Marker::new(0, 0, 1, 1)),
                format!("key `{}` appears twice", d.key.as_str()),
            ),
        };
        let offset = pos.byte(m.character());
        YamlError {
            hint: scan_hint(text, offset, &msg),
            message: msg,
            offset,
            len: 0,
        }
    })
}

/// What usually causes two of the YAML scanner's terse errors.
fn scan_hint(text: &str, offset: usize, message: &str) -> Option<String> {
    if message.contains("trailing content after") && message.contains("quoted scalar") {
        return Some("a value that starts with a quote ends at its closing quote; to start a condition with a string, quote the whole value: `when: '\"mom\" in tags'`".into());
    }
    if message.contains("indentation") || message.contains("did not find expected") {
        // A flow mapping or list left open on an earlier line makes the
        // next line's indentation look wrong.
        let line_start = text[..offset.min(text.len())].rfind('\n').unwrap_or(0);
        let above = text[..line_start]
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))?;
        let open = |o: char, c: char| {
            above.chars().filter(|&x| x == o).count() > above.chars().filter(|&x| x == c).count()
        };
        if open('{', '}') || open('[', ']') {
            return Some(format!(
                "the line above opens a `{{` or `[` it does not close: `{}`",
                above.trim()
            ));
        }
    }
    None
}

/// Deserializes a node into a config type. The error carries the offset of
/// the offending node.
pub fn from_node<'de, T: serde::Deserialize<'de>>(
    node: &'de Node,
    text: &str,
) -> Result<T, YamlError> {
    marked_yaml::from_node(node).map_err(|e| {
        let pos = Positions::new(text);
        let mut offset = e.start_mark().map_or(0, |m| pos.byte(m.character()));
        if let marked_yaml::Error::UnknownFieldError(field, _, span) = &*e
            && let Some(key) = find_key(node, span.start().map(|m| m.character()), field)
        {
            offset = pos.byte(key);
        }
        let (message, len, hint) = match &*e {
            marked_yaml::Error::UnknownFieldError(field, expected, _) => (
                format!("unknown key `{field}` (keys here: {})", expected.join(", ")),
                field.len(),
                crate::base::diag::did_you_mean(field, expected.iter().copied()),
            ),
            other => {
                // A path through a map of names reads `rewards.?`: the
                // position says more, so it is left out then.
                let path = e.path().filter(|p| !p.contains('?'));
                let (message, hint) = plain_serde(&other.to_string(), path);
                (message, 0, hint)
            }
        };
        YamlError {
            message,
            offset,
            len,
            hint,
        }
    })
}

/// serde's words (`invalid type: string "5", expected struct Storage`) in
/// the config's (`` `storage` should be a mapping of `key: value` lines,
/// not `5` ``), with a hint when one value stands where a list goes
/// (`tiers: gold`: write `tiers: [gold]`). YAML scalars reach serde as
/// strings, so a number is shown as written, not as a string.
fn plain_serde(message: &str, path: Option<&str>) -> (String, Option<String>) {
    // Scalars (numbers, durations, names) are all strings to serde.
    let expected = |e: &str| match e {
        e if e.starts_with("struct ") => "a mapping of `key: value` lines".to_string(),
        "u8" | "u16" | "u32" | "u64" | "usize" | "i32" | "i64" => "a whole number".to_string(),
        "a string" => "a single value".to_string(),
        "a sequence" => "a list".to_string(),
        e => e.to_string(),
    };
    if message.contains("untagged enum AttrFile") {
        let what = path.map_or("an attribute".to_string(), |p| format!("`{p}`"));
        return (
            format!(
                "{what} should be a type (`int`, `decimal`, `money`, `string`, `bool`, `date`, `duration`) or a mapping like `{{ type: int, default: 0 }}`"
            ),
            None,
        );
    }
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((found, wanted)) = rest.split_once(", expected ")
    {
        let scalar = found.strip_prefix("string ").map(|v| v.trim_matches('"'));
        let found = match (scalar, found) {
            (Some(v), _) => format!("`{v}`"),
            (None, "sequence") => "a list".to_string(),
            (None, "map") => "a mapping".to_string(),
            (None, f) => f.to_string(),
        };
        let wanted = expected(wanted);
        let key = path.and_then(|p| p.rsplit('.').next());
        let hint = match (scalar, key) {
            (Some(v), Some(k)) if wanted == "a list" => Some(format!("write `{k}: [{v}]`")),
            _ => None,
        };
        let message = match path {
            Some(p) => format!("`{p}` should be {wanted}, not {found}"),
            None => format!("expected {wanted}, not {found}"),
        };
        return (message, hint);
    }
    let message = match message.split_once("expected struct ") {
        Some((head, _)) => format!("{head}expected a mapping of `key: value` lines"),
        None => message.to_string(),
    };
    match path {
        Some(p) => (format!("{message} at `{p}`"), None),
        None => (message, None),
    }
}

/// The character position of key `field` in the mapping that starts at
/// `at` (marked-yaml reports unknown keys at their mapping).
fn find_key(node: &Node, at: Option<usize>, field: &str) -> Option<usize> {
    match node {
        Node::Mapping(m) => {
            let here = m.span().start().map(|s| s.character());
            for (k, v) in m.iter() {
                if k.as_str() == field && (here == at || at.is_none()) {
                    return k.span().start().map(|s| s.character());
                }
                if let Some(p) = find_key(v, at, field) {
                    return Some(p);
                }
            }
            None
        }
        Node::Sequence(seq) => seq.iter().find_map(|n| find_key(n, at, field)),
        Node::Scalar(_) => None,
    }
}

/// A node as JSON: plain scalars that read as numbers, booleans or null
/// become those (only when the number prints back the same, so `0012`
/// stays a string); everything else is a string.
pub fn to_json(node: &Node) -> serde_json::Value {
    match node {
        Node::Scalar(s) => {
            let text = s.as_str();
            if !s.may_coerce() {
                return text.into();
            }
            match text {
                "true" => return true.into(),
                "false" => return false.into(),
                "null" | "~" => return serde_json::Value::Null,
                _ => {}
            }
            match serde_json::Number::from_str(text) {
                Ok(n) if n.to_string() == text => serde_json::Value::Number(n),
                _ => text.into(),
            }
        }
        Node::Sequence(seq) => seq.iter().map(to_json).collect(),
        Node::Mapping(m) => m
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), to_json(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_scalars_stay_strings() {
        let n = parse("- { a: \"4\", b: 4, c: 'true', d: true }\n", Top::List).expect("yaml");
        assert_eq!(
            to_json(&n).to_string(),
            r#"[{"a":"4","b":4,"c":"true","d":true}]"#
        );
    }
}

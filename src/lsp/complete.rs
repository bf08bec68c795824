//! Completion: what may come at the cursor, from the text before it and
//! the project's last load: event fields after `event.` (for the rule's
//! triggers), plugin functions after `plugin.`, templates after `coupon`,
//! channels after `via`, tiers after `tier >=`, triggers after `on`,
//! segment names and tags inside their quotes, and otherwise the fields,
//! functions, keywords, attributes and tiers.

use super::symbol::{FUNCTIONS, KEYWORDS, plugin_fns};
use super::text;
use super::workspace::{Analysis, Workspace};
use crate::config::Schema;
use crate::model::fields::{BUILTIN_FIELDS, BUILTIN_TRIGGERS, builtin_doc};
use lsp_types::{CompletionItem, CompletionItemKind, CompletionParams, CompletionResponse};
use std::collections::BTreeSet;

pub fn complete(ws: &Workspace, p: &CompletionParams) -> Option<CompletionResponse> {
    let tp = &p.text_document_position;
    let path = super::path_of(&tp.text_document.uri)?;
    let doc = ws.docs.get(&path)?;
    let a = ws.analysis_of(&path);
    if a.is_some_and(|a| a.config.as_deref() == Some(path.as_path())) {
        return None; // the config is YAML of its own, not rule text
    }
    let at = text::offset(&doc.text, tp.position);
    Some(CompletionResponse::Array(items(a, &doc.text, at)))
}

/// The completions at byte `at` of `text`.
pub fn items(a: Option<&Analysis>, text: &str, at: usize) -> Vec<CompletionItem> {
    let schema = a.and_then(|a| a.load.schema.as_ref());
    let typed_from = text::word_at(text, at).map_or(at, |(s, _)| s.min(at));
    let before = &text[..typed_from];
    let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
    // Inside quotes: segment names or tags.
    if line.matches('"').count() % 2 == 1 {
        let q = line.rfind('"').unwrap_or(0);
        let lead = line[..q].trim_end();
        if lead.ends_with("segment") {
            return names(segments(a), CompletionItemKind::REFERENCE, "segment");
        }
        return names(tags(a), CompletionItemKind::VALUE, "tag");
    }
    if let Some(owner) = before.strip_suffix('.') {
        let owner = &owner[text::word_at(owner, owner.len()).map_or(owner.len(), |w| w.0)..];
        return after_dot(a, schema, text, at, owner);
    }
    let trimmed = before.trim_end();
    let prev = trimmed
        .rsplit([' ', '\n', '\t', '(', ','])
        .next()
        .unwrap_or("");
    if let Some(s) = schema
        && let Some(list) = after_word(s, trimmed, prev)
    {
        return list;
    }
    everything(a, schema)
}

fn after_dot(
    a: Option<&Analysis>,
    schema: Option<&Schema>,
    text: &str,
    at: usize,
    owner: &str,
) -> Vec<CompletionItem> {
    let Some(s) = schema else { return Vec::new() };
    let events: Vec<usize> = if owner == "event" {
        triggers_at(s, text, at)
    } else if let Some((i, _)) = s.event(owner) {
        vec![i]
    } else {
        return plugin_fns_of(a, owner);
    };
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for i in events {
        for f in &s.events[i].fields {
            if seen.insert(f.name.clone()) {
                out.push(item(
                    &f.name,
                    CompletionItemKind::FIELD,
                    &format!("{} ({})", f.ty.name(), s.events[i].name),
                ));
            }
        }
    }
    out
}

fn plugin_fns_of(a: Option<&Analysis>, plugin: &str) -> Vec<CompletionItem> {
    let Some(a) = a else { return Vec::new() };
    plugin_fns(a)
        .into_iter()
        .filter(|f| f.plugin == plugin)
        .map(|f| {
            let mut it = item(
                &f.name,
                CompletionItemKind::FUNCTION,
                &format!("fn {}({})", f.name, f.params.join(", ")),
            );
            if !f.doc.is_empty() {
                it.documentation = Some(lsp_types::Documentation::String(f.doc));
            }
            it
        })
        .collect()
}

/// Completions decided by the word before the cursor.
fn after_word(s: &Schema, trimmed: &str, prev: &str) -> Option<Vec<CompletionItem>> {
    let list = |v: Vec<&str>, kind, detail: &str| {
        Some(names(
            v.into_iter().map(String::from).collect(),
            kind,
            detail,
        ))
    };
    match prev {
        "coupon" => list(
            s.coupons.iter().map(|c| c.name.as_str()).collect(),
            CompletionItemKind::CONSTANT,
            "coupon template",
        ),
        "via" => list(
            s.channels.iter().map(|c| c.name.as_str()).collect(),
            CompletionItemKind::CONSTANT,
            "channel",
        ),
        "on" => list(
            s.events
                .iter()
                .map(|e| e.name.as_str())
                .chain(BUILTIN_TRIGGERS.iter().copied())
                .collect(),
            CompletionItemKind::EVENT,
            "trigger",
        ),
        "send" => list(
            vec!["coupon", "voucher", "message"],
            CompletionItemKind::KEYWORD,
            "action",
        ),
        "award" | "deduct" => list(vec!["points"], CompletionItemKind::KEYWORD, "action"),
        "credit" | "debit" => list(vec!["wallet"], CompletionItemKind::KEYWORD, "action"),
        "redeem" => list(vec!["reward"], CompletionItemKind::KEYWORD, "action"),
        "set" => list(
            std::iter::once("tier")
                .chain(std::iter::once("birthday"))
                .chain(s.attributes.iter().map(|f| f.name.as_str()))
                .collect(),
            CompletionItemKind::FIELD,
            "what to set",
        ),
        "tier" if trimmed.ends_with("set tier") => Some(names(
            s.tiers.clone(),
            CompletionItemKind::ENUM_MEMBER,
            "tier",
        )),
        "==" | "!=" | "<" | "<=" | ">" | ">=" | "in" => {
            let lhs = trimmed[..trimmed.len() - prev.len()].trim_end();
            let lhs = lhs.strip_suffix("not").unwrap_or(lhs).trim_end();
            lhs.ends_with("tier")
                .then(|| names(s.tiers.clone(), CompletionItemKind::ENUM_MEMBER, "tier"))
        }
        _ => None,
    }
}

/// Everything a condition may name.
fn everything(a: Option<&Analysis>, schema: Option<&Schema>) -> Vec<CompletionItem> {
    let mut out: Vec<CompletionItem> = BUILTIN_FIELDS
        .iter()
        .map(|(n, _)| {
            let mut it = item(n, CompletionItemKind::FIELD, "built-in field");
            it.documentation = builtin_doc(n).map(|d| lsp_types::Documentation::String(d.into()));
            it
        })
        .collect();
    out.extend(FUNCTIONS.iter().map(|(n, sig, doc)| {
        let mut it = item(n, CompletionItemKind::FUNCTION, sig);
        it.documentation = Some(lsp_types::Documentation::String((*doc).into()));
        it
    }));
    out.extend(KEYWORDS.iter().map(|(k, doc)| {
        let mut it = item(k, CompletionItemKind::KEYWORD, "keyword");
        it.documentation = Some(lsp_types::Documentation::String((*doc).into()));
        it
    }));
    for k in [
        "and", "or", "not", "in", "between", "is", "null", "true", "false", "once", "per", "where",
        "event",
    ] {
        if !out.iter().any(|i| i.label == k) {
            out.push(item(k, CompletionItemKind::KEYWORD, "keyword"));
        }
    }
    if let Some(s) = schema {
        out.extend(s.attributes.iter().map(|f| {
            item(
                &f.name,
                CompletionItemKind::VARIABLE,
                &format!("{} attribute", f.ty.name()),
            )
        }));
        out.extend(
            s.tiers
                .iter()
                .map(|t| item(t, CompletionItemKind::ENUM_MEMBER, "tier")),
        );
    }
    if let Some(a) = a {
        let plugins: BTreeSet<String> = plugin_fns(a).into_iter().map(|f| f.plugin).collect();
        out.extend(
            plugins
                .iter()
                .map(|p| item(p, CompletionItemKind::MODULE, "plugin")),
        );
    }
    out
}

/// The event types the rule around `at` runs on (`on a, b`); every type
/// when it names none.
fn triggers_at(s: &Schema, text: &str, at: usize) -> Vec<usize> {
    let start = ["\nrule ", "\nsegment "]
        .iter()
        .filter_map(|k| text[..at].rfind(k))
        .max()
        .unwrap_or(0);
    let end = ["\nrule ", "\nsegment "]
        .iter()
        .filter_map(|k| text[at..].find(k).map(|i| at + i))
        .min()
        .unwrap_or(text.len());
    let region = &text[start..end];
    let mut found = Vec::new();
    let words: Vec<&str> = region
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .collect();
    if let Some(i) = words.iter().position(|w| *w == "on") {
        for w in &words[i + 1..] {
            match s.event(w) {
                Some((e, _)) => found.push(e),
                None => break,
            }
        }
    }
    if found.is_empty() {
        found = (0..s.events.len()).collect();
    }
    found
}

/// Segment names the project's rule files define.
fn segments(a: Option<&Analysis>) -> Vec<String> {
    let mut out = BTreeSet::new();
    for src in rule_texts(a) {
        for line in src.lines() {
            if let Some(rest) = line.trim_start().strip_prefix("segment \"")
                && let Some((name, _)) = rest.split_once('"')
            {
                out.insert(name.to_string());
            }
        }
    }
    out.into_iter().collect()
}

/// Tags the project's rule files give, take or test.
fn tags(a: Option<&Analysis>) -> Vec<String> {
    let mut out = BTreeSet::new();
    for src in rule_texts(a) {
        for key in ["tag \"", "untag \""] {
            for (i, _) in src.match_indices(key) {
                if let Some((name, _)) = src[i + key.len()..].split_once('"') {
                    out.insert(name.to_string());
                }
            }
        }
        for (i, _) in src.match_indices("\" in tags") {
            if let Some(open) = src[..i].rfind('"') {
                out.insert(src[open + 1..i].to_string());
            }
        }
    }
    out.retain(|t| !t.is_empty() && !t.contains('\n'));
    out.into_iter().collect()
}

fn rule_texts(a: Option<&Analysis>) -> Vec<&str> {
    let Some(a) = a else { return Vec::new() };
    a.load
        .sources
        .iter()
        .filter(|(_, p, _)| {
            p.extension()
                .is_some_and(|e| e == "rules" || e == "yaml" || e == "yml")
        })
        .filter(|(_, p, _)| Some(*p) != a.config.as_deref())
        .map(|(_, _, t)| t)
        .collect()
}

fn names(v: Vec<String>, kind: CompletionItemKind, detail: &str) -> Vec<CompletionItem> {
    v.iter().map(|n| item(n, kind, detail)).collect()
}

fn item(label: &str, kind: CompletionItemKind, detail: &str) -> CompletionItem {
    CompletionItem {
        label: label.to_string(),
        kind: Some(kind),
        detail: Some(detail.to_string()),
        ..CompletionItem::default()
    }
}

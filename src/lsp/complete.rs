//! Completion: what may come at the cursor, from the text before it and
//! the project's last load: event fields after `event.` (for the rule's
//! triggers), plugin functions after `plugin.`, templates after `coupon`,
//! channels after `via`, tiers after `tier >=`, triggers after `on`,
//! segment names and tags inside their quotes, and otherwise the fields,
//! functions, keywords, attributes and tiers.

use super::symbol::{FUNCTIONS, KEYWORDS, plugin_fns, segment_defs, triggers_at};
use super::text;
use super::workspace::{Analysis, Workspace};
use crate::config::Schema;
use crate::model::fields::{BUILTIN_FIELDS, BUILTIN_TRIGGERS, builtin_doc};
use lsp_types::{CompletionItem, CompletionItemKind, CompletionParams, CompletionResponse};
use std::collections::BTreeSet;

pub fn complete(ws: &Workspace, p: &CompletionParams) -> Option<CompletionResponse> {
    let (a, text, at) = super::symbol::locate(ws, &p.text_document_position)?;
    Some(CompletionResponse::Array(items(a, text, at)))
}

/// The completions at byte `at` of `text`.
pub fn items(a: Option<&Analysis>, text: &str, at: usize) -> Vec<CompletionItem> {
    let schema = a.and_then(|a| a.load.schema.as_ref());
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    match text::line_state(&text[line_start..at]) {
        text::Line::Comment => return Vec::new(),
        text::Line::String(q) => return in_string(a, schema, text, line_start + q, at),
        text::Line::Code => {}
    }
    let typed_from = text::word_at(text, at).map_or(at, |(s, _)| s.min(at));
    let before = &text[..typed_from];
    if let Some(owner) = before.strip_suffix('.') {
        let owner = &owner[text::word_at(owner, owner.len()).map_or(owner.len(), |w| w.0)..];
        return after_dot(a, schema, text, at, owner);
    }
    let trimmed = before.trim_end();
    let Some(s) = schema else {
        return everything(a, schema);
    };
    if in_trigger_list(&trimmed[trimmed.rfind('\n').map_or(0, |i| i + 1)..]) {
        let triggers = s.events.iter().map(|e| e.name.clone());
        let builtin = BUILTIN_TRIGGERS.iter().map(|t| t.to_string());
        return names(
            triggers.chain(builtin).collect(),
            CompletionItemKind::EVENT,
            "trigger",
        );
    }
    if in_tier_list(trimmed) {
        return names(s.tiers.clone(), CompletionItemKind::ENUM_MEMBER, "tier");
    }
    let prev = trimmed
        .rsplit([' ', '\n', '\t', '(', ','])
        .next()
        .unwrap_or("");
    after_word(s, trimmed, prev).unwrap_or_else(|| everything(a, schema))
}

/// Inside quotes: segment names after `segment "`, tags after `tag "` or
/// where a condition starts (`"vip" in tags`), rewards after `reward "`.
/// Each replaces what is typed since the quote (names have spaces).
fn in_string(
    a: Option<&Analysis>,
    schema: Option<&Schema>,
    text: &str,
    quote: usize,
    at: usize,
) -> Vec<CompletionItem> {
    let lead = text[..quote].trim_end();
    let word = &lead[text::word_at(lead, lead.len()).map_or(lead.len(), |w| w.0)..];
    let (list, kind, detail) = match word {
        "segment" => (segments(a), CompletionItemKind::REFERENCE, "segment"),
        "tag" | "untag" => (tags(a), CompletionItemKind::VALUE, "tag"),
        "reward" => (
            schema.map_or(Vec::new(), |s| {
                s.rewards.iter().map(|r| r.name.clone()).collect()
            }),
            CompletionItemKind::CONSTANT,
            "reward",
        ),
        // A string that starts a condition or a bracketed one: `"vip" in tags`.
        _ if matches!(word, "when" | "and" | "or" | "not") || opens_group(lead) => {
            (tags(a), CompletionItemKind::VALUE, "tag")
        }
        _ => return Vec::new(),
    };
    let typed = &text[quote + 1..at];
    // The whole name is replaced, also when the cursor is inside it.
    let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let end = text[at..line_end].find('"').map_or(at, |i| at + i);
    let range = text::range(text, quote + 1, end);
    list.into_iter()
        .filter(|n| n != typed)
        .map(|n| {
            let mut it = item(&n, kind, detail);
            it.text_edit = Some(lsp_types::CompletionTextEdit::Edit(
                lsp_types::TextEdit::new(range, n.clone()),
            ));
            it.filter_text = Some(n);
            it
        })
        .collect()
}

/// Whether `lead` ends with a bracket that groups (`(` after an operator or
/// a keyword), not one that calls a function or plugin (`crm.is_vip(`).
fn opens_group(lead: &str) -> bool {
    let Some(before) = lead.strip_suffix('(') else {
        return false;
    };
    let before = before.trim_end();
    !before.ends_with(|c: char| c.is_alphanumeric() || c == '_')
        || before.ends_with("when")
        || before.ends_with("and")
        || before.ends_with("or")
        || before.ends_with("not")
}

/// `on purchase, ` (a line that is an `on` clause up to a comma).
fn in_trigger_list(line: &str) -> bool {
    let Some(list) = line.trim_start().strip_prefix("on ") else {
        return false;
    };
    list.trim_end().ends_with(',')
        && list
            .split(',')
            .all(|w| w.trim().chars().all(|c| c.is_alphanumeric() || c == '_'))
}

/// `tier in [silver, ` (an open list after `tier in`).
fn in_tier_list(before: &str) -> bool {
    let Some(open) = before.rfind('[') else {
        return false;
    };
    if before[open..].contains(']') {
        return false;
    }
    let lead = before[..open].trim_end();
    let lead = lead.strip_suffix("in").unwrap_or("").trim_end();
    let lead = lead.strip_suffix("not").unwrap_or(lead).trim_end();
    lead.ends_with("tier")
}

fn after_dot(
    a: Option<&Analysis>,
    schema: Option<&Schema>,
    text: &str,
    at: usize,
    owner: &str,
) -> Vec<CompletionItem> {
    let Some(s) = schema else { return Vec::new() };
    // `event.` reads the counted event inside an aggregate, else the
    // trigger; with several triggers, a field must be in each (E206).
    let (events, every) = if owner == "event" {
        match aggregate_event(s, text, at) {
            Some(i) => (vec![i], true),
            None => match triggers_at(s, text, at) {
                Some(listed) => (listed, true),
                None => ((0..s.events.len()).collect(), false),
            },
        }
    } else if let Some((i, _)) = s.event(owner) {
        (vec![i], true)
    } else {
        return plugin_fns_of(a, owner);
    };
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for &i in &events {
        for f in &s.events[i].fields {
            let in_each = events.iter().all(|&j| s.events[j].field(&f.name).is_some());
            if (!every || in_each) && seen.insert(f.name.clone()) {
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

/// The event type counted by the aggregate the cursor is inside:
/// `count(purchase where event.|`.
fn aggregate_event(s: &Schema, text: &str, at: usize) -> Option<usize> {
    let mut depth = 0;
    let open = text[..at].char_indices().rev().find_map(|(i, c)| {
        match c {
            ')' => depth += 1,
            '(' if depth == 0 => return Some(i),
            '(' => depth -= 1,
            '\n' if text[i + 1..at].trim_start().starts_with("rule ") => return Some(usize::MAX),
            _ => {}
        }
        None
    })?;
    if open == usize::MAX {
        return None;
    }
    let before = text[..open].trim_end();
    let name = &before[text::word_at(before, before.len()).map_or(before.len(), |w| w.0)..];
    if !matches!(
        name,
        "count" | "sum" | "avg" | "min" | "max" | "cycle" | "days_since_last"
    ) {
        return None;
    }
    let inside = text[open + 1..at].trim_start();
    let ident: String = inside
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    s.event(&ident).map(|(i, _)| i)
}

/// Segment names the project's rule files define.
fn segments(a: Option<&Analysis>) -> Vec<String> {
    let names: BTreeSet<&str> = rule_texts(a)
        .into_iter()
        .flat_map(|src| segment_defs(src).map(|(_, n)| n))
        .collect();
    names.into_iter().map(String::from).collect()
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

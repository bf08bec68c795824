//! What a name in a rule file is (a built-in field, a tier, a coupon
//! template, a plugin function, ...), what to show when the pointer rests
//! on it (hover) and where it is defined (go to definition). Owns the
//! one-line docs of functions and keywords; field docs live with the
//! fields (`model::fields::builtin_doc`).

use super::text;
use super::workspace::{Analysis, Workspace};
use crate::base::diag::Span;
use crate::base::yaml::{self, Node};
use crate::config::Schema;
use crate::model::fields::{BUILTIN_FIELDS, BUILTIN_TRIGGERS, BuiltinTy, builtin_doc};
use lsp_types::{
    GotoDefinitionParams, GotoDefinitionResponse, Hover, HoverContents, HoverParams, Location,
    MarkupContent, MarkupKind, TextDocumentPositionParams,
};
use std::path::{Path, PathBuf};

/// Built-in functions and aggregates: name, signature, meaning.
pub const FUNCTIONS: &[(&str, &str, &str)] = &[
    (
        "count",
        "count(EVENT [where COND], WINDOW)",
        "Events of a type in the last WINDOW days: `count(purchase, 30d)`.",
    ),
    (
        "sum",
        "sum(EVENT.FIELD [where COND], WINDOW)",
        "The sum of an event field over a window: `sum(purchase.amount, 365d)`.",
    ),
    (
        "avg",
        "avg(EVENT.FIELD [where COND], WINDOW)",
        "The mean of an event field over a window.",
    ),
    (
        "min",
        "min(EVENT.FIELD [where COND], WINDOW)",
        "The least value of an event field over a window.",
    ),
    (
        "max",
        "max(EVENT.FIELD [where COND], WINDOW)",
        "The greatest value of an event field over a window.",
    ),
    (
        "cycle",
        "cycle(EVENT where COND)",
        "The repurchase cycle of matching events: the mean gap in days between their distinct days (all history).",
    ),
    (
        "days_since_last",
        "days_since_last(EVENT where COND)",
        "Days since the last matching event; null before one.",
    ),
    ("floor", "floor(x)", "Rounds down to a whole number."),
    ("ceil", "ceil(x)", "Rounds up to a whole number."),
    (
        "round",
        "round(x)",
        "Rounds to a whole number, halves away from zero.",
    ),
    ("abs", "abs(x)", "The value without its sign."),
    (
        "day_of_month",
        "day_of_month(date)",
        "The day of the month, 1-31: `day_of_month(today) == 8`.",
    ),
    (
        "weekday",
        "weekday(date)",
        "The day of the week, 1 = Monday ... 7 = Sunday.",
    ),
    ("month", "month(date)", "The month, 1-12."),
    (
        "points_expiring",
        "points_expiring(WINDOW)",
        "The member's points that expire within the window (with `points.expire_after` in the config).",
    ),
    (
        "expected_purchases",
        "expected_purchases(WINDOW)",
        "Purchases the current fit expects from the member in the next WINDOW (docs/prediction.md).",
    ),
    (
        "predicted_clv",
        "predicted_clv(WINDOW)",
        "Expected purchases in the window times the Gamma-Gamma expected spend (docs/prediction.md).",
    ),
];

/// Keywords of the language and what they start.
pub const KEYWORDS: &[(&str, &str)] = &[
    ("rule", "`rule \"name\"` starts a rule; its clauses follow."),
    (
        "segment",
        "`segment \"name\" when COND` names a condition; rules use it with `in segment \"name\"`.",
    ),
    (
        "on",
        "`on purchase`, `on tick`, `on tier_up`: when the rule runs (without it: on every event and tick, on the rising edge).",
    ),
    ("when", "`when COND`: the condition."),
    (
        "then",
        "`then ACTION, ACTION`: what the rule does when it fires.",
    ),
    (
        "variant",
        "`variant \"A\" 45% then ...`: an experiment arm.",
    ),
    (
        "limit",
        "`limit once`, `limit 3 per 90d`: how often the rule may fire for a member.",
    ),
    (
        "holdout",
        "`holdout 10%`: a control share held out of the rule, for uplift.",
    ),
    ("priority", "`priority 10`: higher runs first."),
    (
        "group",
        "`group \"winback\"`: only the first firing rule of a group fires per trigger.",
    ),
    (
        "budget",
        "`budget 5000` firings, or `budget 30000 per month` of coupon value.",
    ),
    (
        "active",
        "`active 2026-02-01 to 2026-02-14`: the campaign's days.",
    ),
    (
        "send",
        "`send coupon 30-6`, `send coupon welcome via sms`, `send voucher EXPR`, `send message \"...\" via CHANNEL`.",
    ),
    ("award", "`award points EXPR`."),
    ("deduct", "`deduct points EXPR` (at most the balance)."),
    ("credit", "`credit wallet EXPR`: adds stored value."),
    (
        "debit",
        "`debit wallet EXPR`: takes stored value; refused over the balance.",
    ),
    (
        "redeem",
        "`redeem reward EXPR`: buys a reward of the points mall.",
    ),
    ("set", "`set tier gold`, `set city = event.city`."),
    ("tag", "`tag \"name\"`: gives the member a tag."),
    ("untag", "`untag \"name\"`: takes a tag away."),
    ("call", "`call plugin.function(args)`: a plugin action."),
    ("via", "`via CHANNEL`: the channel of a coupon or message."),
    ("to", "`to EXPR`: for another member (by id)."),
    ("today", "The evaluation's day (a date)."),
    (
        "member",
        "The member being evaluated, as a plugin argument.",
    ),
];

/// A plugin function as its `.rhai` file declares it.
pub struct PluginFn {
    pub plugin: String,
    pub name: String,
    pub params: Vec<String>,
    /// Its `///` comment lines.
    pub doc: String,
    pub path: PathBuf,
    pub line: u32,
}

/// What a name is.
pub enum Symbol {
    Field(&'static str, BuiltinTy),
    Function(&'static str, &'static str),
    Keyword(&'static str, &'static str),
    Attribute(String),
    Tier(String),
    Coupon(String),
    Channel(String),
    EventType(String),
    EventField(String),
    Plugin(PluginFn),
    Segment(String),
}

/// The functions of every plugin the load read, from their source.
pub fn plugin_fns(a: &Analysis) -> Vec<PluginFn> {
    let mut out = Vec::new();
    for (_, path, src) in a.load.sources.iter() {
        if path.extension().is_none_or(|e| e != "rhai") {
            continue;
        }
        let plugin = path
            .file_stem()
            .map_or(String::new(), |s| s.to_string_lossy().into_owned());
        let mut doc = Vec::new();
        for (i, line) in src.lines().enumerate() {
            let t = line.trim();
            if let Some(d) = t.strip_prefix("///") {
                doc.push(d.trim().to_string());
                continue;
            }
            let Some(rest) = t.strip_prefix("fn ") else {
                doc.clear();
                continue;
            };
            let Some((name, tail)) = rest.split_once('(') else {
                continue;
            };
            let params = tail
                .split(')')
                .next()
                .unwrap_or("")
                .split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect();
            out.push(PluginFn {
                plugin: plugin.clone(),
                name: name.trim().to_string(),
                params,
                doc: std::mem::take(&mut doc).join("\n"),
                path: path.to_path_buf(),
                line: i as u32,
            });
        }
    }
    out
}

/// The name at byte `at` of `text`, and what it is.
pub fn classify(a: Option<&Analysis>, text: &str, at: usize) -> Option<(Symbol, Span)> {
    if let Some((name, span)) = segment_name_at(text, at) {
        return Some((Symbol::Segment(name), span));
    }
    // Words in comments and other strings are prose (`# gold members`,
    // `tag "gold"`), not the tier: nothing to show, as completion offers
    // nothing there.
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    if !matches!(text::line_state(&text[line_start..at]), text::Line::Code) {
        return None;
    }
    let (s, e) = text::word_at(text, at)?;
    let word = &text[s..e];
    let span = Span::new(s, e);
    let before = text[..s].trim_end_matches(' ');
    let schema = a.and_then(|a| a.load.schema.as_ref());
    if let Some(owner) = before.strip_suffix('.') {
        let owner =
            &text[text::word_at(owner, owner.len()).map_or(owner.len(), |w| w.0)..owner.len()];
        if owner == "event" || schema.is_some_and(|s| s.event(owner).is_some()) {
            return Some((Symbol::EventField(word.to_string()), span));
        }
        let f = a.and_then(|a| {
            plugin_fns(a)
                .into_iter()
                .find(|f| f.plugin == owner && f.name == word)
        })?;
        return Some((Symbol::Plugin(f), span));
    }
    let prev = before
        .rsplit([' ', '\n', '\t', '(', ','])
        .next()
        .unwrap_or("");
    if let Some(s) = schema {
        match prev {
            "coupon" if s.coupons.iter().any(|c| c.name == word) => {
                return Some((Symbol::Coupon(word.into()), span));
            }
            "via" if s.channels.iter().any(|c| c.name == word) => {
                return Some((Symbol::Channel(word.into()), span));
            }
            _ => {}
        }
    }
    let called = text[e..].trim_start().starts_with('(');
    if called && let Some(&(_, sig, doc)) = FUNCTIONS.iter().find(|f| f.0 == word) {
        return Some((Symbol::Function(sig, doc), span));
    }
    if let Some(&(n, ty)) = BUILTIN_FIELDS.iter().find(|f| f.0 == word) {
        return Some((Symbol::Field(n, ty), span));
    }
    if let Some(s) = schema {
        if s.tier(word).is_some() {
            return Some((Symbol::Tier(word.into()), span));
        }
        if s.attribute(word).is_some() {
            return Some((Symbol::Attribute(word.into()), span));
        }
        if s.event(word).is_some() {
            return Some((Symbol::EventType(word.into()), span));
        }
    }
    let &(k, doc) = KEYWORDS.iter().find(|k| k.0 == word)?;
    Some((Symbol::Keyword(k, doc), span))
}

/// The name in `segment "NAME"` around `at`.
fn segment_name_at(text: &str, at: usize) -> Option<(String, Span)> {
    let line_start = text[..at.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let line = &text[line_start..line_end];
    let mut from = 0;
    while let Some(i) = line[from..].find("segment \"") {
        let open = line_start + from + i + "segment \"".len();
        let close = text[open..line_end].find('"').map(|j| open + j)?;
        if (open..=close).contains(&at) {
            return Some((text[open..close].to_string(), Span::new(open, close)));
        }
        from = close - line_start;
    }
    None
}

pub fn hover(ws: &Workspace, p: &HoverParams) -> Option<Hover> {
    let (a, text, at) = locate(ws, &p.text_document_position_params)?;
    let (sym, span) = classify(a, text, at)?;
    let value = match &sym {
        Symbol::Segment(name) => segment_doc(ws, a?, name)?,
        Symbol::EventField(name) => {
            let s = a?.load.schema.as_ref()?;
            let only = triggers_at(s, text, at).filter(|t| !t.is_empty());
            event_field_doc(s, name, only.as_deref())?
        }
        _ => describe(a, &sym)?,
    };
    Some(Hover {
        contents: HoverContents::Markup(MarkupContent {
            kind: MarkupKind::Markdown,
            value,
        }),
        range: Some(text::range(text, span.start, span.end)),
    })
}

/// The document and analysis a position is in, and its byte offset;
/// `None` in the config, which is YAML of its own, not rule text.
pub(super) fn locate<'a>(
    ws: &'a Workspace,
    p: &TextDocumentPositionParams,
) -> Option<(Option<&'a Analysis>, &'a str, usize)> {
    let path = super::path_of(&p.text_document.uri)?;
    let doc = ws.docs.get(&path)?;
    let a = ws.analysis_of(&path);
    if a.is_some_and(|a| a.config.as_deref() == Some(path.as_path())) {
        return None;
    }
    let at = text::offset(&doc.text, p.position);
    Some((a, doc.text.as_str(), at))
}

fn describe(a: Option<&Analysis>, sym: &Symbol) -> Option<String> {
    let schema = a.and_then(|a| a.load.schema.as_ref());
    Some(match sym {
        Symbol::Field(name, ty) => format!(
            "**{name}** · {} (built-in field)\n\n{}",
            ty_name(*ty),
            builtin_doc(name).unwrap_or("")
        ),
        Symbol::Function(sig, doc) => format!("```nudge\n{sig}\n```\n\n{doc}"),
        Symbol::Keyword(k, doc) => format!("**{k}**\n\n{doc}"),
        Symbol::Tier(t) => tier_doc(schema?, t),
        Symbol::Attribute(n) => {
            let (_, f) = schema?.attribute(n)?;
            let default = f
                .default
                .as_ref()
                .map_or(", null until set".to_string(), |d| {
                    format!(", default {}", value_text(d))
                });
            format!(
                "**{n}** · {} attribute{default}\n\nDeclared in `nudge.yaml` (`attributes`).",
                f.ty.name()
            )
        }
        Symbol::Coupon(n) => {
            let c = schema?.coupons.iter().find(|c| &c.name == n)?;
            let via = c
                .channel
                .as_ref()
                .map_or(String::new(), |ch| format!(", via {ch}"));
            format!(
                "**{n}** · coupon template\n\nspend {}, save {}, valid {} days{via}",
                c.threshold, c.discount, c.valid_days
            )
        }
        Symbol::Channel(n) => channel_doc(schema?, n)?,
        Symbol::EventType(n) => {
            let (_, e) = schema?.event(n)?;
            let fields: Vec<String> = e
                .fields
                .iter()
                .map(|f| format!("`{}`: {}", f.name, f.ty.name()))
                .collect();
            format!(
                "**{n}** · event type\n\nfields: {}",
                if fields.is_empty() {
                    "none".into()
                } else {
                    fields.join(", ")
                }
            )
        }
        Symbol::EventField(n) => event_field_doc(schema?, n, None)?,
        Symbol::Plugin(f) => format!(
            "```rhai\nfn {}.{}({})\n```\n\n{}",
            f.plugin,
            f.name,
            f.params.join(", "),
            f.doc
        ),
        Symbol::Segment(n) => format!("**{n}** · segment"),
    })
}

fn channel_doc(s: &Schema, n: &str) -> Option<String> {
    let c = s.channels.iter().find(|c| c.name == n)?;
    let mut terms = Vec::new();
    if let Some(cap) = &c.cap {
        terms.push(format!(
            "at most {} per {} days",
            cap.count,
            cap.per_secs / 86_400
        ));
    }
    if let Some((from, to)) = c.quiet_hours {
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        terms.push(format!("quiet {}-{}", hm(from), hm(to)));
    }
    if c.opt_in {
        terms.push("opt-in: only members who consented".into());
    }
    if terms.is_empty() {
        terms.push("no cap".into());
    }
    Some(format!("**{n}** · channel\n\n{}", terms.join("; ")))
}

/// An event field's type in each event type that has it (of `only`, the
/// rule's triggers, when given); `money?` where events may leave it out.
fn event_field_doc(s: &Schema, n: &str, only: Option<&[usize]>) -> Option<String> {
    let types: Vec<String> = s
        .events
        .iter()
        .enumerate()
        .filter(|(i, _)| only.is_none_or(|o| o.contains(i)))
        .filter_map(|(_, e)| {
            let f = e.fields.iter().find(|f| f.name == n)?;
            let opt = if f.optional { "?" } else { "" };
            Some(format!("{}{opt} in `{}`", f.ty.name(), e.name))
        })
        .collect();
    if types.is_empty() {
        return None;
    }
    Some(format!(
        "**event.{n}** · event field\n\n{}",
        types.join(", ")
    ))
}

fn tier_doc(s: &Schema, t: &str) -> String {
    let place = s.tier(t).map_or(0, |i| i as usize + 1);
    let order: Vec<String> = s
        .tiers
        .iter()
        .map(|x| {
            if x == t {
                format!("**{x}**")
            } else {
                x.clone()
            }
        })
        .collect();
    format!(
        "**{t}** · tier {place} of {}\n\n{}",
        s.tiers.len(),
        order.join(" < ")
    )
}

fn ty_name(ty: BuiltinTy) -> &'static str {
    match ty {
        BuiltinTy::Int => "number",
        BuiltinTy::Dec => "decimal",
        BuiltinTy::Money => "money",
        BuiltinTy::Tier => "tier",
        BuiltinTy::Tags => "tag set",
        BuiltinTy::Date => "date",
    }
}

pub fn definition(ws: &Workspace, p: &GotoDefinitionParams) -> Option<GotoDefinitionResponse> {
    let (a, text, at) = locate(ws, &p.text_document_position_params)?;
    let a = a?;
    let (sym, _) = classify(Some(a), text, at)?;
    let (path, src, span) = match sym {
        Symbol::Plugin(f) => {
            let src = source_text(a, &f.path)?;
            let start = src.lines().take(f.line as usize).map(|l| l.len() + 1).sum();
            let col = src[start..].find("fn ").unwrap_or(0) + 3;
            (
                f.path.clone(),
                src,
                Span::new(start + col, start + col + f.name.len()),
            )
        }
        Symbol::Segment(name) => segment_definition(ws, a, &name)?,
        Symbol::Tier(n) => config_place(a, "tiers", &n)?,
        Symbol::Attribute(n) => config_place(a, "attributes", &n)?,
        Symbol::Coupon(n) => config_place(a, "coupons", &n)?,
        Symbol::Channel(n) => config_place(a, "channels", &n)?,
        Symbol::EventType(n) => config_place(a, "events", &n)?,
        _ => return None,
    };
    let uri = super::uri_of(&path)?;
    Some(GotoDefinitionResponse::Scalar(Location::new(
        uri,
        text::range(&src, span.start, span.end),
    )))
}

fn source_text(a: &Analysis, path: &Path) -> Option<String> {
    a.load
        .sources
        .iter()
        .find(|(_, p, _)| *p == path)
        .map(|(_, _, t)| t.to_string())
}

/// Where `name` is a key (or a list item) of the config's `section`.
fn config_place(a: &Analysis, section: &str, name: &str) -> Option<(PathBuf, String, Span)> {
    let path = a.config.clone()?;
    let src = source_text(a, &path)?;
    let root = yaml::parse(&src, yaml::Top::Mapping).ok()?;
    let pos = yaml::Positions::new(&src);
    let section = root.as_mapping()?.get_node(section)?;
    let span = match section {
        Node::Mapping(m) => m
            .keys()
            .find(|k| k.as_str() == name)
            .map(|k| pos.span(k.span()))?,
        Node::Sequence(s) => s
            .iter()
            .find(|n| n.as_scalar().is_some_and(|x| x.as_str() == name))
            .map(|n| pos.span(n.span()))?,
        Node::Scalar(_) => return None,
    };
    Some((path, src, span))
}

/// The event types the rule around `at` names in `on` (none for `on
/// tick`, which has no event); `None` when it has no `on` (it runs on
/// every event).
pub fn triggers_at(s: &Schema, text: &str, at: usize) -> Option<Vec<usize>> {
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
    if text[start..end].trim_start().starts_with("segment ") {
        return Some(Vec::new()); // a segment has no event (E211)
    }
    let words: Vec<&str> = text[start..end]
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .collect();
    let i = words.iter().position(|w| *w == "on")?;
    let mut found = Vec::new();
    for w in &words[i + 1..] {
        match s.event(w) {
            Some((e, _)) => found.push(e),
            None if BUILTIN_TRIGGERS.contains(w) => {}
            None => break,
        }
    }
    Some(found)
}

/// A segment's definition as written, up to the next blank line or rule.
fn segment_doc(ws: &Workspace, a: &Analysis, name: &str) -> Option<String> {
    let (_, src, span) = segment_definition(ws, a, name)?;
    let start = src[..span.start].rfind('\n').map_or(0, |i| i + 1);
    let mut end = start;
    for (i, line) in src[start..].split_inclusive('\n').enumerate() {
        let t = line.trim_start();
        if i > 0 && (t.is_empty() || t.starts_with("rule ") || t.starts_with("segment ")) {
            break;
        }
        end += line.len();
    }
    Some(format!(
        "**{name}** · segment\n\n```nudge\n{}\n```",
        src[start..end].trim_end()
    ))
}

/// Where `segment "NAME"` is written, in the project's rule files.
fn segment_definition(ws: &Workspace, a: &Analysis, name: &str) -> Option<(PathBuf, String, Span)> {
    for (_, path, src) in a.load.sources.iter() {
        let src = ws.docs.get(path).map_or(src, |d| d.text.as_str());
        if let Some((at, _)) = segment_defs(src).find(|(_, n)| *n == name) {
            let span = Span::new(at, at + name.len());
            return Some((path.to_path_buf(), src.to_string(), span));
        }
    }
    None
}

/// The segments a rule file defines (`segment "NAME"` starting a line;
/// uses read `in segment "..."`): each name's byte offset and the name.
pub fn segment_defs(src: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut line_start = 0;
    src.split_inclusive('\n').filter_map(move |line| {
        let at = line_start;
        line_start += line.len();
        let rest = line.trim_start();
        let name = rest.strip_prefix("segment \"")?.split_once('"')?.0;
        let open = at + (line.len() - rest.len()) + "segment \"".len();
        Some((open, name))
    })
}

fn value_text(v: &crate::base::value::Value) -> String {
    use crate::base::value::Value;
    match v {
        Value::Int(i) => i.to_string(),
        Value::Dec(d) => d.to_string(),
        Value::Str(s) => format!("\"{s}\""),
        Value::Bool(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

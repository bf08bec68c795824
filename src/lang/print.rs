//! `nudge fmt`: rule files printed back in one canonical layout. Owns the
//! layout (one clause per line, clauses in a fixed order, the fewest
//! parentheses that keep the meaning) and keeps `#` comments; it does not
//! check names or types, and leaves YAML rule files alone.
//!
//! A bare rule (`when ... then ...` without `rule "name"`) is named after
//! its line, so moving it would rename it and lose its limits and state:
//! the formatter writes it as `rule "file:LINE"` with the name it has now.

use super::ast::*;
use super::parse::parse_file;
use crate::base::diag::{Diagnostic, SourceId};
use std::fmt::Write as _;

/// The formatted text of a `.rules` file, or the parse errors that stop it.
pub fn format_file(source: SourceId, text: &str, stem: &str) -> Result<String, Vec<Diagnostic>> {
    let (file, diags) = parse_file(source, text, stem);
    if !diags.is_empty() {
        return Err(diags);
    }
    let spaced: Vec<bool> = file
        .rules
        .iter()
        .map(|r| blank_before(text, r.span.start))
        .collect();
    Ok(print_file(&file.rules, &spaced, &comments(text)))
}

/// Whether a blank line comes right before `at` (after earlier content).
fn blank_before(text: &str, at: usize) -> bool {
    let line = text[..at].trim_end_matches([' ', '\t', '\r']);
    line.strip_suffix('\n').is_some_and(|b| {
        let b = b.trim_end_matches([' ', '\t', '\r']);
        b.ends_with('\n') && !b.trim().is_empty()
    })
}

/// Prints rules, with each comment above the rule it was in or before;
/// comments after the last rule stay at the end.
///
/// `spaced[i]`: rule `i` had a blank line before it (kept after comments).
pub fn print_file(rules: &[Rule], spaced: &[bool], comments: &[Comment]) -> String {
    let mut out = String::new();
    let mut next = comments.iter().peekable();
    let gap = |out: &mut String, blank: bool| {
        if blank && !out.is_empty() && !out.ends_with("\n\n") {
            out.push('\n');
        }
    };
    let comment = |out: &mut String, c: &Comment| {
        gap(out, c.blank_before);
        out.push_str(&c.text);
        out.push('\n');
    };
    for (i, r) in rules.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        while let Some(c) = next.next_if(|c| c.at < r.span.start) {
            comment(&mut out, c);
        }
        gap(&mut out, spaced.get(i).copied().unwrap_or(false));
        // Comments inside the rule, or after code on its last line, go
        // right above it.
        while let Some(c) =
            next.next_if(|c| c.at < r.span.end || (c.trailing && c.line_start <= r.span.end))
        {
            out.push_str(&c.text);
            out.push('\n');
        }
        print_rule(&mut out, r);
    }
    for (i, c) in next.enumerate() {
        if i == 0 && !rules.is_empty() {
            out.push('\n');
        }
        comment(&mut out, c);
    }
    out
}

/// A `#` comment line of a rule file.
#[derive(Clone, Debug)]
pub struct Comment {
    pub at: usize,
    pub text: String,
    /// A blank line separates it from what came before (kept).
    pub blank_before: bool,
    /// It follows code on its line.
    pub trailing: bool,
    pub line_start: usize,
}

/// The `#` comments of a rule file (not `#` in strings).
pub fn comments(text: &str) -> Vec<Comment> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut in_str) = (0, false);
    while i < b.len() {
        match (in_str, b[i]) {
            (true, b'\\') => i += 1,
            (true, b'"') | (false, b'"') => in_str = !in_str,
            (false, b'#') => {
                let end = text[i..].find('\n').map_or(text.len(), |n| i + n);
                let line_start = text[..i].rfind('\n').map_or(0, |n| n + 1);
                out.push(Comment {
                    at: i,
                    text: text[i..end].trim_end().to_string(),
                    blank_before: blank_before(text, i),
                    trailing: !text[line_start..i].trim().is_empty(),
                    line_start,
                });
                i = end;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

pub fn print_rule(out: &mut String, r: &Rule) {
    if r.segment {
        let _ = writeln!(out, "segment {}", quote(&r.name));
        if let Some(w) = &r.when {
            let _ = writeln!(out, "  when {}", condition(w));
        }
        return;
    }
    let _ = writeln!(out, "rule {}", quote(&r.name));
    if let Some(on) = &r.on {
        let names: Vec<&str> = on.iter().map(|i| i.name.as_str()).collect();
        let _ = writeln!(out, "  on {}", names.join(", "));
    }
    if let Some(w) = &r.when {
        let _ = writeln!(out, "  when {}", condition(w));
    }
    if !r.then.is_empty() {
        let _ = writeln!(out, "  then {}", actions(&r.then, 7));
    }
    for v in &r.variants {
        let head = format!("  variant {} {}% then ", quote(&v.name), v.percent);
        let _ = writeln!(out, "{head}{}", actions(&v.then, head.len()));
    }
    if let Some(l) = &r.limit {
        let count = match l.count {
            1 => "once".to_string(),
            n => n.to_string(),
        };
        let per = l
            .per
            .map_or(String::new(), |d| format!(" per {}", duration(d.secs)));
        let _ = writeln!(out, "  limit {count}{per}");
    }
    if let Some(h) = &r.holdout {
        let _ = writeln!(out, "  holdout {}%", h.percent);
    }
    if let Some((p, _)) = r.priority {
        let _ = writeln!(out, "  priority {p}");
    }
    if let Some((g, _)) = &r.group {
        let _ = writeln!(out, "  group {}", quote(g));
    }
    if let Some(b) = &r.budget {
        let per = b
            .per
            .as_ref()
            .map_or(String::new(), |p| format!(" per {}", p.name));
        let _ = writeln!(out, "  budget {}{per}", b.amount);
    }
    if let Some(a) = &r.active {
        let _ = writeln!(out, "  active {} to {}", date(a.from), date(a.to));
    }
}

/// Actions after a `then` that starts `indent` characters in: on one line
/// when they fit, else one per line.
fn actions(list: &[Action], indent: usize) -> String {
    let actions: Vec<String> = list.iter().map(action).collect();
    let one = actions.join(", ");
    let sep = if one.len() + indent <= WIDTH {
        ", "
    } else {
        ",\n    "
    };
    actions.join(sep)
}

fn action(a: &Action) -> String {
    let via = |v: &Option<Ident>| {
        v.as_ref()
            .map_or(String::new(), |v| format!(" via {}", v.name))
    };
    let mut s = match &a.kind {
        ActionKind::Coupon { coupon, via: v, .. } => {
            let c = match coupon {
                CouponRef::Literal {
                    threshold,
                    discount,
                } => format!("{threshold}-{discount}"),
                CouponRef::Template(t) if is_ident(t) => t.clone(),
                CouponRef::Template(t) => quote(t),
            };
            format!("send coupon {c}{}", via(v))
        }
        ActionKind::Message { template, via: v } => {
            format!("send message {}{}", quote(template), via(v))
        }
        ActionKind::Points { deduct, amount } => format!(
            "{} points {}",
            if *deduct { "deduct" } else { "award" },
            expr(amount)
        ),
        ActionKind::Set { target, value } if target.name == "tier" => {
            format!("set tier {}", expr(value))
        }
        ActionKind::Set { target, value } => format!("set {} = {}", target.name, expr(value)),
        ActionKind::Tag { tag, untag } => {
            format!("{} {}", if *untag { "untag" } else { "tag" }, quote(tag))
        }
        ActionKind::Call { call } => format!("call {}", plugin_call(call)),
        ActionKind::Voucher {
            threshold: None,
            discount,
            via: v,
        } => format!("send voucher {}{}", expr(discount), via(v)),
        ActionKind::Voucher {
            threshold: Some(t),
            discount,
            via: v,
        } => format!("send coupon ({})-({}){}", expr(t), expr(discount), via(v)),
        ActionKind::Wallet { debit, amount } => format!(
            "{} wallet {}",
            if *debit { "debit" } else { "credit" },
            expr(amount)
        ),
        ActionKind::Reward { name } => format!("redeem reward {}", expr(name)),
    };
    if let Some(to) = &a.to {
        let _ = write!(s, " to {}", expr(to));
    }
    s
}

/// Longest `when` line kept on one line; longer `and`/`or` chains get one
/// operand per line.
const WIDTH: usize = 100;

fn condition(w: &Expr) -> String {
    let one = expr(w);
    let ExprKind::Binary(op @ (BinOp::And | BinOp::Or), ..) = &w.kind else {
        return one;
    };
    if one.len() + 7 <= WIDTH {
        return one;
    }
    // The left spine of the same operator, in source order.
    let mut parts = Vec::new();
    let mut at = w;
    while let ExprKind::Binary(o, a, b) = &at.kind
        && o == op
    {
        parts.push(b.as_ref());
        at = a;
    }
    parts.push(at);
    parts.reverse();
    let p = prec(w) + 1;
    let sep = format!("\n    {} ", op.symbol());
    parts
        .iter()
        .map(|e| at_least(e, p))
        .collect::<Vec<_>>()
        .join(&sep)
}

/// Binding strength, loosest first, as in the grammar.
fn prec(e: &Expr) -> u8 {
    match &e.kind {
        ExprKind::Binary(BinOp::Or, ..) => 1,
        ExprKind::Binary(BinOp::And, ..) => 2,
        ExprKind::Not(_) => 3,
        ExprKind::Binary(op, ..) if op.is_comparison() => 4,
        ExprKind::In { .. } | ExprKind::Between { .. } | ExprKind::IsNull { .. } => 4,
        ExprKind::Binary(BinOp::Add | BinOp::Sub, ..) => 5,
        ExprKind::Binary(..) => 6,
        ExprKind::Neg(_) => 7,
        _ => 8,
    }
}

/// `e` printed where the grammar wants at least strength `min`.
fn at_least(e: &Expr, min: u8) -> String {
    if prec(e) >= min {
        expr(e)
    } else {
        format!("({})", expr(e))
    }
}

pub fn expr(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Lit(l) => literal(l),
        ExprKind::Path(p) => p
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join("."),
        ExprKind::Neg(a) => format!("-{}", at_least(a, 7)),
        // `not` takes a comparison or another `not`.
        ExprKind::Not(a) => format!("not {}", at_least(a, 3)),
        ExprKind::Binary(op, a, b) => {
            let p = prec(e);
            // Comparisons do not chain: both sides are arithmetic.
            let (left, right) = if op.is_comparison() {
                (5, 5)
            } else {
                (p, p + 1)
            };
            format!(
                "{} {} {}",
                at_least(a, left),
                op.symbol(),
                at_least(b, right)
            )
        }
        ExprKind::In { negated, item, set } => format!(
            "{} {}in {}",
            at_least(item, 5),
            if *negated { "not " } else { "" },
            at_least(set, 5)
        ),
        ExprKind::Between {
            negated,
            value,
            low,
            high,
        } => format!(
            "{} {}between {} and {}",
            at_least(value, 5),
            if *negated { "not " } else { "" },
            at_least(low, 5),
            at_least(high, 5)
        ),
        ExprKind::IsNull { negated, value } => format!(
            "{} is {}null",
            at_least(value, 5),
            if *negated { "not " } else { "" }
        ),
        ExprKind::List(items) => {
            format!(
                "[{}]",
                items.iter().map(expr).collect::<Vec<_>>().join(", ")
            )
        }
        ExprKind::Aggregate(a) => {
            let field = a
                .field
                .as_ref()
                .map_or(String::new(), |f| format!(".{}", f.name));
            let filter = a
                .filter
                .as_ref()
                .map_or(String::new(), |f| format!(" where {}", expr(f)));
            if a.func.is_history() && a.window.secs == 0 {
                format!("{}({}{field}{filter})", a.func.name(), a.event.name)
            } else {
                format!(
                    "{}({}{field}{filter}, {})",
                    a.func.name(),
                    a.event.name,
                    duration(a.window.secs)
                )
            }
        }
        ExprKind::Func { name, args } => format!("{}({})", name.name, list(args)),
        ExprKind::Plugin(c) => plugin_call(c),
        ExprKind::InSegment(name) => format!("in segment {}", quote(name)),
    }
}

fn list(args: &[Expr]) -> String {
    args.iter().map(expr).collect::<Vec<_>>().join(", ")
}

fn plugin_call(c: &PluginCall) -> String {
    format!("{}.{}({})", c.plugin.name, c.function.name, list(&c.args))
}

fn literal(l: &Literal) -> String {
    match l {
        Literal::Int(i) => i.to_string(),
        Literal::Decimal(d) => d.to_string(),
        Literal::Percent(p) => format!("{p}%"),
        Literal::Str(s) => quote(s),
        Literal::Bool(b) => b.to_string(),
        Literal::Null => "null".into(),
        Literal::Date(days) => date(*days),
        Literal::Duration(secs) => duration(*secs),
    }
}

/// Days when whole days, else hours (the grammar's smallest unit).
fn duration(secs: i64) -> String {
    if secs % 86_400 == 0 {
        format!("{}d", secs / 86_400)
    } else {
        format!("{}h", secs / 3_600)
    }
}

fn date(days: i32) -> String {
    let epoch = jiff::civil::date(1970, 1, 1);
    epoch
        .checked_add(jiff::Span::new().days(days))
        .map_or_else(|_| format!("{days}"), |d| d.to_string())
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

const KEYWORDS: &[&str] = &[
    "rule", "when", "then", "on", "limit", "holdout", "priority", "group", "budget", "and", "or",
    "not", "in", "between", "is", "null", "true", "false", "once", "per", "via", "where", "send",
    "award", "deduct", "set", "tag", "untag", "call", "to",
];

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !KEYWORDS.contains(&s)
}

/// Whether two parses say the same thing: equal but for where they were
/// written (spans). Used by `nudge fmt` before it writes anything.
pub fn same_rules(a: &[Rule], b: &[Rule]) -> bool {
    without_spans(&format!("{a:?}")) == without_spans(&format!("{b:?}"))
}

fn without_spans(debug: &str) -> String {
    let mut out = String::with_capacity(debug.len());
    let mut rest = debug;
    while let Some(i) = rest.find("Span {") {
        out.push_str(&rest[..i]);
        out.push_str("Span");
        match rest[i..].find('}') {
            Some(j) => rest = &rest[i + j + 1..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

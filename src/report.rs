//! Rendering diagnostics at the edge: miette's graphical reports for
//! people, JSON for editors and CI. Only the binary renders.

use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteDiagnostic, NamedSource, Report,
};
use nudge::diag::{Diagnostic, Severity, SourceMap};
use nudge::load::Load;
use serde_json::json;

/// Width of rendered reports when not on a terminal, so output (and the
/// snapshot tests that compare it) does not depend on who runs it.
const WIDTH: usize = 100;

pub fn human(l: &Load, color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(WIDTH)
        .with_links(false);
    let mut out = String::new();
    for d in &l.diagnostics {
        let report = to_report(d, &l.sources);
        if handler.render_report(&mut out, report.as_ref()).is_err() {
            out.push_str(&format!(
                "{}[{}]: {}\n",
                d.severity(),
                d.code.as_str(),
                d.message
            ));
        }
    }
    let (e, w) = (l.errors(), l.warnings());
    let rules = l.rules.as_ref().map_or(0, |r| r.rules.len());
    if e > 0 {
        out.push_str(&format!(
            "{} {}, {} {}; no rules loaded\n",
            e,
            plural(e, "error"),
            w,
            plural(w, "warning")
        ));
    } else {
        out.push_str(&format!(
            "ok: {} {} checked, {} {}\n",
            rules,
            plural(rules, "rule"),
            w,
            plural(w, "warning")
        ));
    }
    out
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}

fn to_report(d: &Diagnostic, sources: &SourceMap) -> Report {
    let mut m = MietteDiagnostic::new(d.message.clone())
        .with_code(d.code.as_str())
        .with_severity(match d.severity() {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        });
    if let Some(h) = &d.hint {
        m = m.with_help(h.clone());
    }
    let Some(src) = d.source else {
        return Report::new(m);
    };
    let text = sources.text(src);
    let start = d.span.start.min(text.len());
    let len = d
        .span
        .end
        .saturating_sub(d.span.start)
        .min(text.len() - start);
    m = m.with_label(LabeledSpan::new(d.label.clone(), start, len));
    let name = sources.path(src).display().to_string();
    Report::new(m).with_source_code(NamedSource::new(name, text.to_string()))
}

pub fn json(l: &Load) -> String {
    let diags: Vec<serde_json::Value> = l
        .diagnostics
        .iter()
        .map(|d| {
            let mut v = json!({
                "code": d.code.as_str(),
                "severity": d.severity().to_string(),
                "message": d.message,
                "label": d.label,
                "hint": d.hint,
            });
            if let Some(src) = d.source {
                let (line, column) = l.sources.line_col(src, d.span.start);
                let (end_line, end_column) = l.sources.line_col(src, d.span.end);
                v["file"] = json!(l.sources.path(src).display().to_string());
                v["line"] = json!(line);
                v["column"] = json!(column);
                v["end_line"] = json!(end_line);
                v["end_column"] = json!(end_column);
            }
            v
        })
        .collect();
    json!({
        "diagnostics": diags,
        "errors": l.errors(),
        "warnings": l.warnings(),
        "rules": l.rules.as_ref().map_or(0, |r| r.rules.len()),
        "ruleset": l.rules.as_ref().map(|r| r.version.clone()),
    })
    .to_string()
}

/// The summary table of a run: effects per rule and status, reach, coupons, points.
pub fn summary(s: &nudge::replay::Summary) -> String {
    let mut out = String::new();
    let statuses = ["sent", "held_out", "deferred", "capped"];
    let width = s.by_rule.keys().map(|k| k.len()).max().unwrap_or(4).max(4);
    out.push_str(&format!(
        "{:<width$}  {:>8}  {:>8}  {:>8}  {:>8}\n",
        "rule", "sent", "held_out", "deferred", "capped"
    ));
    for (rule, counts) in &s.by_rule {
        out.push_str(&format!("{rule:<width$}"));
        for st in statuses {
            out.push_str(&format!("  {:>8}", counts.get(st).copied().unwrap_or(0)));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "members reached: {}; coupons: {} worth {}; points awarded: {}\n",
        s.members_reached,
        s.coupons,
        s.coupon_value.normalize(),
        s.points_awarded
    ));
    out
}

/// A member's stored state as JSON.
pub fn member_json(
    id: &str,
    rec: &nudge::model::MemberRecord,
    schema: &nudge::schema::Schema,
    rules: &nudge::lang::RuleSet,
) -> String {
    use nudge::model::day_string;
    let day = |d: Option<i32>| d.map(day_string);
    let rule_name = |k: u64| {
        rules
            .rules
            .iter()
            .find(|r| xxhash_rust::xxh3::xxh3_64(r.name.as_bytes()) == k)
            .map_or(format!("{k:016x}"), |r| r.name.clone())
    };
    let attrs: serde_json::Map<String, serde_json::Value> = rec
        .attributes
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                nudge::model::value_json(&v.into(), &schema.tiers),
            )
        })
        .collect();
    let rule_states: Vec<serde_json::Value> = rec
        .rules
        .iter()
        .map(|r| json!({"rule": rule_name(r.rule), "armed": r.armed, "fired": r.fired, "recent": r.recent.iter().map(|d| day_string(*d)).collect::<Vec<_>>()}))
        .collect();
    json!({
        "member": id,
        "tier": schema.tiers.get(rec.tier as usize),
        "points": rec.points,
        "orders": rec.orders,
        "spend": nudge::model::json_number(rec.spend),
        "joined_at": day_string(rec.joined),
        "first_purchase_at": day(rec.first_purchase),
        "last_purchase_at": day(rec.last_purchase),
        "purchase_days": rec.purchase_days,
        "tags": rec.tags,
        "birthday": day(rec.birthday),
        "attributes": attrs,
        "rules": rule_states,
    })
    .to_string()
}

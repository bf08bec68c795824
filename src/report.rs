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
    json!({
        "diagnostics": l.diagnostics_json(),
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
    let statuses = [
        "sent",
        "deferred",
        "held_out",
        "capped",
        "no_consent",
        "redeemed",
    ];
    let width = s.by_rule.keys().map(|k| k.len()).max().unwrap_or(4).max(4);
    out.push_str(&format!("{:<width$}", "rule"));
    for st in statuses.iter().chain(&["response"]) {
        out.push_str(&format!("  {st:>10}"));
    }
    out.push('\n');
    for (rule, counts) in &s.by_rule {
        out.push_str(&format!("{rule:<width$}"));
        for st in statuses {
            out.push_str(&format!("  {:>10}", counts.get(st).copied().unwrap_or(0)));
        }
        match s.response_rate(rule) {
            Some(r) => out.push_str(&format!("  {:>9.1}%", r * 100.0)),
            None => out.push_str(&format!("  {:>10}", "-")),
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

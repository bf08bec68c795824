//! Rendering at the edge: diagnostics (miette's graphical reports for
//! people, JSON for editors and CI), run summaries, uplift, comparisons
//! and explanations. Only the binary renders.

use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteDiagnostic, NamedSource, Report,
};
use nudge::base::diag::{Diagnostic, Severity, SourceMap};
use nudge::project::load::Load;
use serde_json::json;

/// Width of rendered reports when not on a terminal, so output (and the
/// snapshot tests that compare it) does not depend on who runs it.
const WIDTH: usize = 100;

pub fn human(l: &Load, color: bool) -> String {
    let mut out = diagnostics(l, 0, color);
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
    Report::new(m).with_source_code(CharColumns(NamedSource::new(name, text.to_string())))
}

/// A source whose `file:line:col` header counts columns in characters, as
/// editors and `--format json` do; miette counts bytes, which put a column
/// after Chinese text several places too far.
struct CharColumns(NamedSource<String>);

impl miette::SourceCode for CharColumns {
    fn read_span<'a>(
        &'a self,
        span: &miette::SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        let contents = self.0.read_span(span, before, after)?;
        // Only the header's read (no context lines) reports a column.
        if before > 0 || after > 0 {
            return Ok(contents);
        }
        let text = self.0.inner();
        let start = span.offset().min(text.len());
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let column = text
            .get(line_start..start)
            .map_or(contents.column(), |t| t.chars().count());
        Ok(Box::new(miette::MietteSpanContents::new_named(
            contents.name().unwrap_or_default().to_string(),
            contents.data(),
            *contents.span(),
            contents.line(),
            column,
            contents.line_count(),
        )))
    }
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
pub fn summary(s: &nudge::model::summary::Summary) -> String {
    let mut out = String::from(
        "firings per rule (one firing: what a rule did for one member on one trigger)\n",
    );
    let statuses = nudge::model::summary::STATUSES;
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
    if !s.sent_by_action.is_empty() {
        let actions: Vec<String> = s
            .sent_by_action
            .iter()
            .map(|(a, n)| format!("{a} {n}"))
            .collect();
        out.push_str(&format!("effects sent: {}\n", actions.join(", ")));
    }
    if let Some(n) = s.members_reached {
        out.push_str(&format!(
            "members reached (sent a coupon, points or a message): {n}\n"
        ));
    }
    out.push_str(&format!(
        "coupons: {} worth {}; points awarded: {}\n",
        s.coupons,
        s.coupon_value.normalize(),
        s.points_awarded
    ));
    if !s.refused.is_empty() {
        let total: usize = s.refused.values().sum();
        let why: Vec<String> = s.refused.iter().map(|(r, n)| format!("{r} {n}")).collect();
        out.push_str(&format!("refused: {total} ({})\n", why.join(", ")));
    }
    out
}

/// Treated against held-out members, per rule with a holdout.
pub fn uplift(us: &[nudge::sim::backtest::Uplift], window_days: i64) -> String {
    let mut out = String::new();
    for u in us {
        let (t, h) = (&u.treated, &u.held_out);
        out.push_str(&format!(
            "uplift of {} ({window_days}d after the first firing): treated {} members, held out {}\n",
            u.rule, t.members, h.members
        ));
        out.push_str(&format!(
            "  conversion  {:>6.1}% vs {:>6.1}%  difference {:+.1} pts (95% CI {:+.1} to {:+.1})\n",
            t.conversion() * 100.0,
            h.conversion() * 100.0,
            u.conversion_diff.value * 100.0,
            u.conversion_diff.low * 100.0,
            u.conversion_diff.high * 100.0
        ));
        out.push_str(&format!(
            "  revenue per member  {:.2} vs {:.2}  difference {:+.2} (95% CI {:+.2} to {:+.2})\n",
            t.revenue_per_member(),
            h.revenue_per_member(),
            u.revenue_diff.value,
            u.revenue_diff.low,
            u.revenue_diff.high
        ));
        out.push_str(&format!(
            "  coupons redeemed  {} of {} treated members\n",
            t.redeemed, t.members
        ));
        for a in &u.arms {
            out.push_str(&format!(
                "  variant {}: {} members, conversion {:.1}% ({:+.1} pts vs held out, 95% CI {:+.1} to {:+.1}), revenue per member {:.2} ({:+.2}, 95% CI {:+.2} to {:+.2}), redeemed {}\n",
                a.variant,
                a.group.members,
                a.group.conversion() * 100.0,
                a.conversion_diff.value * 100.0,
                a.conversion_diff.low * 100.0,
                a.conversion_diff.high * 100.0,
                a.group.revenue_per_member(),
                a.revenue_diff.value,
                a.revenue_diff.low,
                a.revenue_diff.high,
                a.group.redeemed
            ));
        }
        for b in &u.between {
            out.push_str(&format!(
                "  variant {} vs {}: conversion {:+.1} pts (95% CI {:+.1} to {:+.1}), revenue per member {:+.2} (95% CI {:+.2} to {:+.2})\n",
                b.variant,
                b.base,
                b.conversion_diff.value * 100.0,
                b.conversion_diff.low * 100.0,
                b.conversion_diff.high * 100.0,
                b.revenue_diff.value,
                b.revenue_diff.low,
                b.revenue_diff.high
            ));
        }
    }
    out
}

/// What changes from run A to run B, per rule and per channel.
pub fn comparison(c: &nudge::sim::backtest::Comparison) -> String {
    let mut out = String::from("\ncompare: A = --rules, B = --compare\n");
    let width = c.rules.keys().map(|k| k.len()).max().unwrap_or(4).max(4);
    out.push_str(&format!(
        "{:<width$}  {:>9}  {:>9}  {:>7}  {:>7}  {:>7}  {:>10}  {:>10}\n",
        "rule", "effects A", "effects B", "added", "removed", "members", "cost A", "cost B"
    ));
    for (rule, d) in &c.rules {
        out.push_str(&format!(
            "{rule:<width$}  {:>9}  {:>9}  {:>7}  {:>7}  {:>7}  {:>10}  {:>10}\n",
            d.effects_a,
            d.effects_b,
            d.added,
            d.removed,
            d.members,
            d.cost_a.normalize(),
            d.cost_b.normalize()
        ));
    }
    for (ch, (a, b)) in &c.channels {
        out.push_str(&format!("contacts on {ch}: {a} -> {b}\n"));
    }
    let change = c.cost_change_percent().map_or(String::new(), |p| {
        let p = p.round_dp(1);
        format!(" ({}{p}%)", if p.is_sign_negative() { "" } else { "+" })
    });
    out.push_str(&format!(
        "coupons: {} -> {} ({:+}); coupon cost: {} -> {}{change}\n",
        c.coupons_a,
        c.coupons_b,
        c.coupons_b as i64 - c.coupons_a as i64,
        c.cost_a.normalize(),
        c.cost_b.normalize()
    ));
    out.push_str(&format!(
        "members whose outcome changed: {}\n",
        c.members_changed
    ));
    for (member, changes) in &c.sample {
        out.push_str(&format!("  {member}: {}\n", changes.join("; ")));
    }
    out
}

/// An explanation as text: per rule, the condition now with each test's
/// values, and the recent decisions.
pub fn explanation(x: &nudge::sim::explain::Explanation, as_of: &str) -> String {
    let mut out = format!("member {}, evaluated for {} ({as_of})\n", x.member, x.day);
    if let Some(p) = &x.predictions {
        out.push_str(&format!(
            "predictions (fit of {}: r {:.4}, alpha {:.2} days, a {:.4}, b {:.4}; x {}, t_x {}, T {}): p_alive {:.4}, churn_risk {:.4}, expected_purchases(90d) {:.4}, expected_next_purchase {}\n",
            p.fitted_on,
            p.bgnbd.r,
            p.bgnbd.alpha,
            p.bgnbd.a,
            p.bgnbd.b,
            p.x,
            p.t_x,
            p.t,
            p.p_alive,
            p.churn_risk,
            p.expected_purchases_90d,
            p.expected_next_purchase
                .map_or("null (beyond ten years)".to_string(), |d| format!("{d} days"))
        ));
    }
    let mark = |r: Option<bool>| match r {
        Some(true) => "true",
        Some(false) => "false",
        None => "null",
    };
    for r in &x.rules {
        out.push_str(&format!("\nrule \"{}\": {}\n", r.rule, r.now));
        let width = r.tests.iter().map(|t| t.text.len()).max().unwrap_or(0);
        for t in &r.tests {
            out.push_str(&format!(
                "  {:<width$}   {}  ->  {}\n",
                t.text,
                t.values,
                mark(t.result)
            ));
        }
        if r.history.is_empty() {
            out.push_str("  history: never fired, never stopped (in the kept history)\n");
        }
        for (day, what) in &r.history {
            out.push_str(&format!("  {day}: {what}\n"));
        }
    }
    out
}

/// The diagnostics from index `from` on, rendered with their source lines
/// and carets, without the summary line.
pub fn diagnostics(l: &Load, from: usize, color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(WIDTH)
        .with_links(false);
    let mut out = String::new();
    for d in &l.diagnostics[from.min(l.diagnostics.len())..] {
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
    out
}

//! Named segments (`segment "lapsed vip" when ...`), the clauses that
//! shape a rule's firing beyond its condition (`variant`, `active`), and
//! segment queries (`nudge segment 'EXPR'`) checked against a loaded
//! rule set. A segment's condition is about members: it reads no event.
//! A rule that says `in segment "x"` gets the segment's checked condition
//! in place, so compiling, evaluating and the due index see one condition.

use super::*;
use crate::base::diag::{Code, Diagnostic, Span, did_you_mean};
use crate::lang::ast;
use crate::lang::program::{Cmp, Value};

/// The segments of a load: where each is defined, and each one checked.
#[derive(Default)]
pub(super) struct Segments {
    defs: HashMap<String, (SourceId, Span, Option<ast::Expr>)>,
    /// Checked conditions; `None` when the segment has errors (reported
    /// where it is defined, not again at each use).
    done: HashMap<String, Option<TExpr>>,
    /// The segments being checked, innermost last (a cycle is an error).
    stack: Vec<String>,
}

/// Checks a segment query (`nudge segment 'EXPR'`, `POST /v1/segments/...`)
/// against the loaded project: its layout and its named segments. The
/// query may read any member field, tag and named segment; a windowed
/// aggregate only if the rules already keep it (member records hold only
/// those). Returns the layout grown by what the query reads (its tags,
/// `points_expiring` windows) and the condition.
pub fn check_query(
    schema: &Schema,
    layout: &Layout,
    segments: &[CheckedSegment],
    plugins: &PluginSigs,
    source: SourceId,
    expr: &ast::Expr,
    values: &[ast::Expr],
) -> Result<(Layout, TExpr), Vec<Diagnostic>> {
    let mut cx = Checker::new(schema, plugins, layout.clone(), source);
    cx.rule = Some(segment_cx());
    cx.frozen_aggregates = Some(layout.aggregates.len());
    for s in segments {
        cx.segments
            .defs
            .insert(s.name.clone(), (s.source, s.span, None));
        cx.segments
            .done
            .insert(s.name.clone(), Some(s.cond.clone()));
    }
    // Values an export lists (`expected_purchases(90d)`): checked, so
    // their slots are in the layout the scan fills.
    for v in values {
        let _ = cx.expr(v);
    }
    match cx.bool_expr(expr) {
        Ok(t) if cx.diags.iter().all(|d| !d.is_error()) => Ok((cx.layout, t)),
        _ => Err(cx.diags),
    }
}

/// What to do instead of a segment query calling the plugin function `f`
/// (E228): segments are counted without plugins, so a rule that calls it
/// gives a tag to query.
pub fn query_plugin_hint(f: &str) -> String {
    format!(
        "tag the members with a rule (`when {f}(...) then tag \"...\"`) and query `\"...\" in tags`; members get the tag at the next event or tick the rule runs on"
    )
}

/// The checking context of a segment's condition: the daily tick's, with
/// no event.
fn segment_cx() -> RuleCx {
    RuleCx {
        triggers: Triggers {
            events: Vec::new(),
            tick: true,
            tier_up: false,
            tier_down: false,
            state: false,
        },
        warned_event_on_tick: false,
        segment: true,
    }
}

impl Checker<'_> {
    /// Collects every segment of every file, then checks each one.
    pub(super) fn segments_of(
        &mut self,
        files: &[ast::RuleFile],
        sources: &SourceMap,
    ) -> Vec<CheckedSegment> {
        let mut order = Vec::new();
        for file in files {
            for r in file.rules.iter().filter(|r| r.segment) {
                if let Some((src, span, _)) = self.segments.defs.get(&r.name) {
                    let (line, col) = sources.line_col(*src, span.start);
                    self.diags.push(
                        Diagnostic::new(
                            Code::DuplicateSegment,
                            file.source,
                            r.name_span,
                            format!("segment \"{}\" is defined twice", r.name),
                        )
                        .label("second definition")
                        .hint(format!(
                            "the first is at {}:{line}:{col}; segment names must be unique across files",
                            sources.path(*src).display()
                        )),
                    );
                    continue;
                }
                self.segments
                    .defs
                    .insert(r.name.clone(), (file.source, r.name_span, r.when.clone()));
                order.push((r.name.clone(), file.source, r.name_span));
            }
        }
        let mut out = Vec::new();
        for (name, source, span) in order {
            if let Some(cond) = self.segment(&name) {
                out.push(CheckedSegment {
                    name,
                    source,
                    span,
                    cond,
                });
            }
        }
        out
    }

    /// The checked condition of segment `name` (checked on first use).
    fn segment(&mut self, name: &str) -> Option<TExpr> {
        if let Some(done) = self.segments.done.get(name) {
            return done.clone();
        }
        let (source, span, when) = self.segments.defs.get(name)?.clone();
        let saved = (
            self.source,
            self.rule.replace(segment_cx()),
            self.filter_event.take(),
        );
        self.source = source;
        self.segments.stack.push(name.to_string());
        let cond = match &when {
            Some(w) => self.bool_expr(w).ok(),
            None => {
                self.error(
                    Code::YamlShape,
                    span,
                    format!("segment \"{name}\" has no `when`"),
                    Some("a segment is a condition: add `when: ...`".into()),
                );
                None
            }
        };
        self.segments.stack.pop();
        (self.source, self.rule, self.filter_event) = saved;
        self.segments.done.insert(name.to_string(), cond.clone());
        cond
    }

    /// `in segment "name"`.
    pub(super) fn segment_ref(&mut self, name: &str, span: Span) -> R<TExpr> {
        if self.segments.stack.iter().any(|s| s == name) {
            let chain = self.segments.stack.join("\" -> \"");
            self.error(
                Code::DuplicateSegment,
                span,
                format!("segment \"{name}\" uses itself"),
                Some(format!(
                    "\"{chain}\" -> \"{name}\" goes round; write the condition out in one of them"
                )),
            );
            return Err(());
        }
        if !self.segments.defs.contains_key(name) {
            let names: Vec<&str> = self.segments.defs.keys().map(String::as_str).collect();
            let hint = did_you_mean(name, names.iter().copied()).unwrap_or_else(|| {
                if names.is_empty() {
                    "no rule file defines a segment; define one with `segment \"NAME\" when ...`"
                        .into()
                } else {
                    format!("segments are: {}", dedup(names).join(", "))
                }
            });
            self.error(
                Code::UnknownSegment,
                span,
                format!("unknown segment \"{name}\""),
                Some(hint),
            );
            return Err(());
        }
        let cond = self.segment(name).ok_or(())?;
        Ok(named(cond, span))
    }

    /// The rule's condition with its campaign window (`active FROM to TO`)
    /// in front: outside the window the condition is false, so the rule
    /// does not fire, `explain` shows the window as the failing test, and
    /// the due index knows the days it opens and closes.
    pub(super) fn active(&mut self, r: &ast::Rule, cond: Option<TExpr>) -> Option<TExpr> {
        let Some(a) = &r.active else { return cond };
        let day = |d: i32| lit(Ty::Date, Value::Date(d), a.span);
        let today = TExpr {
            ty: Ty::Date,
            konst: false,
            span: a.span,
            kind: TKind::Today,
        };
        let test = |cmp: Cmp, d: i32| TExpr {
            ty: Ty::Bool,
            konst: false,
            span: a.span,
            kind: TKind::Cmp(cmp, Box::new(today.clone()), Box::new(day(d))),
        };
        let window = and(test(Cmp::Ge, a.from), test(Cmp::Le, a.to), a.span);
        let window = named(window, a.span);
        Some(match cond {
            Some(c) => {
                let span = c.span;
                and(window, c, span)
            }
            None if r.when.is_some() => return None,
            None => window,
        })
    }

    /// Checks the variants of an experiment: their actions go after the
    /// rule's own in `actions`; their shares and the holdout make 100%.
    pub(super) fn variants(
        &mut self,
        r: &ast::Rule,
        triggers: &Triggers,
        actions: &mut Vec<TAction>,
    ) -> Vec<(String, u32, std::ops::Range<usize>)> {
        let mut out: Vec<(String, u32, std::ops::Range<usize>)> = Vec::new();
        if r.variants.is_empty() {
            return out;
        }
        if !r.then.is_empty() {
            let span = r.then_span.unwrap_or(r.name_span);
            self.error(
                Code::BadExperiment,
                span,
                format!("rule \"{}\" has both `then` and variants", r.name),
                Some("give every action to a variant: `variant \"A\" 50% then ...`".into()),
            );
        }
        let mut total = Decimal::ZERO;
        for v in &r.variants {
            if out.iter().any(|(n, _, _)| *n == v.name) {
                self.error(
                    Code::BadExperiment,
                    v.name_span,
                    format!("variant \"{}\" is named twice", v.name),
                    Some("give each variant its own name".into()),
                );
            }
            if v.name.trim().is_empty() {
                self.error(
                    Code::BadExperiment,
                    v.name_span,
                    "a variant needs a name",
                    Some(
                        "effects carry it as `variant`: write e.g. `variant \"A\" 50% then ...`"
                            .into(),
                    ),
                );
            }
            if v.percent <= Decimal::ZERO {
                self.error(
                    Code::BadExperiment,
                    v.percent_span,
                    "a variant's share must be more than 0%",
                    Some("remove the variant, or give it a share".into()),
                );
            }
            total += v.percent;
            let start = actions.len();
            actions.extend(
                v.then
                    .iter()
                    .filter_map(|a| self.action_for(a, triggers).ok()),
            );
            out.push((v.name.clone(), ppm(v.percent), start..actions.len()));
        }
        let holdout = r.holdout.as_ref().map_or(Decimal::ZERO, |h| h.percent);
        if total + holdout != Decimal::from(100) {
            let shares = r
                .variants
                .iter()
                .map(|v| format!("{}%", v.percent))
                .collect::<Vec<_>>()
                .join(" + ");
            self.error(
                Code::BadExperiment,
                r.name_span,
                format!(
                    "the shares of rule \"{}\" add up to {}%, not 100%",
                    r.name,
                    total + holdout
                ),
                Some(format!(
                    "variants {shares} and holdout {holdout}%: each member is in exactly one, so together they make 100%"
                )),
            );
        }
        out
    }
}

/// Parts per million of a percentage.
fn ppm(percent: Decimal) -> u32 {
    (percent * Decimal::from(10_000))
        .trunc()
        .try_into()
        .unwrap_or(0)
}

fn lit(ty: Ty, v: Value, span: Span) -> TExpr {
    TExpr {
        ty,
        konst: true,
        span,
        kind: TKind::Lit(v),
    }
}

fn and(a: TExpr, b: TExpr, span: Span) -> TExpr {
    TExpr {
        ty: Ty::Bool,
        konst: a.konst && b.konst,
        span,
        kind: TKind::And(Box::new(a), Box::new(b)),
    }
}

/// `e` shown as one term, at `span`.
fn named(e: TExpr, span: Span) -> TExpr {
    TExpr {
        ty: Ty::Bool,
        konst: e.konst,
        span,
        kind: TKind::Named(Box::new(e)),
    }
}

//! Names and types: syntax trees plus the schema in, typed rules out.
//!
//! Resolves every name (member fields, attributes, tiers, event fields,
//! coupons, channels, plugin functions) to a slot or an index, checks types
//! (`tier > 3` is an error, money is not mixed with plain numbers), and
//! collects every error in every file in one pass. It decides the member
//! slot layout the compiler and engine share. It evaluates nothing.

mod actions;
mod aggregate;
mod expr;
mod names;
mod segments;
mod tree;

pub use segments::{check_query, query_plugin_hint};
pub use tree::*;

use super::ast::{self};
pub use super::program::Func;
use crate::base::diag::{Code, Diagnostic, SourceId, SourceMap, Span, did_you_mean};
use crate::config::Schema;
pub use crate::model::fields::{BUILTIN_FIELDS, BuiltinTy, FieldType, slot};
use rust_decimal::Decimal;
use std::collections::HashMap;

/// Checks every rule of every file against the schema. Returns what could
/// be checked and every diagnostic (errors and warnings).
pub fn check(
    schema: &Schema,
    files: &[ast::RuleFile],
    plugins: &PluginSigs,
    sources: &SourceMap,
) -> (Checked, Vec<Diagnostic>) {
    let mut layout = Layout::default();
    for (name, t) in BUILTIN_FIELDS {
        layout.fields.push((name.to_string(), Ty::builtin(*t)));
    }
    for a in &schema.attributes {
        if let Some(d) = &a.default {
            layout
                .defaults
                .push((layout.fields.len() as u16, d.clone()));
        }
        layout.fields.push((a.name.clone(), Ty::from_field(a.ty)));
    }
    let mut cx = Checker::new(schema, plugins, layout, SourceId(0));
    let segments = cx.segments_of(files, sources);
    let mut rules = Vec::new();
    let mut names: HashMap<String, (SourceId, Span)> = HashMap::new();
    for file in files {
        cx.source = file.source;
        for r in file.rules.iter().filter(|r| !r.segment) {
            if let Some((src, span)) = names.get(&r.name) {
                let (line, col) = sources.line_col(*src, span.start);
                cx.diags.push(
                    Diagnostic::new(
                        Code::DuplicateRule,
                        file.source,
                        r.name_span,
                        format!("rule \"{}\" is defined twice", r.name),
                    )
                    .label("second definition")
                    .related(*src, *span, "first definition")
                    .hint(format!(
                        "the first is at {}:{line}:{col}; rule names must be unique across files",
                        sources.path(*src).display()
                    )),
                );
                // Its own mistakes are reported too (the load fails anyway,
                // so what checking it adds to the layout is never used).
                let _ = cx.rule(r);
                continue;
            }
            names.insert(r.name.clone(), (file.source, r.name_span));
            if let Some(c) = cx.rule(r) {
                rules.push(c);
            }
        }
    }
    rules.sort_by_key(|r| std::cmp::Reverse(r.priority));
    (
        Checked {
            rules,
            segments,
            layout: cx.layout,
            const_conds: cx.const_conds,
        },
        cx.diags,
    )
}

struct RuleCx {
    triggers: Triggers,
    warned_event_on_tick: bool,
    /// Checking a segment's condition: about members, with no event.
    segment: bool,
}

struct Checker<'a> {
    schema: &'a Schema,
    plugins: &'a PluginSigs,
    layout: Layout,
    diags: Vec<Diagnostic>,
    source: SourceId,
    rule: Option<RuleCx>,
    /// Inside an aggregate's `where`: the aggregated event type.
    filter_event: Option<usize>,
    event_slots: HashMap<String, u16>,
    const_conds: Vec<(SourceId, TExpr)>,
    segments: segments::Segments,
    /// Checking a query against a loaded rule set: aggregates past this
    /// many are not kept in member records (E227).
    frozen_aggregates: Option<usize>,
}

type R<T> = Result<T, ()>;

impl<'a> Checker<'a> {
    /// A checker with nothing checked yet, outside any rule.
    fn new(
        schema: &'a Schema,
        plugins: &'a PluginSigs,
        layout: Layout,
        source: SourceId,
    ) -> Checker<'a> {
        Checker {
            schema,
            plugins,
            layout,
            diags: Vec::new(),
            source,
            rule: None,
            filter_event: None,
            event_slots: HashMap::new(),
            const_conds: Vec::new(),
            segments: segments::Segments::default(),
            frozen_aggregates: None,
        }
    }
}

impl Checker<'_> {
    fn err(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn error(&mut self, code: Code, span: Span, msg: impl Into<String>, hint: Option<String>) {
        let d = Diagnostic::new(code, self.source, span, msg).maybe_hint(hint);
        self.diags.push(d);
    }

    fn rule(&mut self, r: &ast::Rule) -> Option<CheckedRule> {
        let before = self.error_count();
        let triggers = self.triggers(r);
        self.rule = Some(RuleCx {
            triggers: triggers.clone(),
            warned_event_on_tick: false,
            segment: false,
        });
        let cond = r.when.as_ref().and_then(|w| self.bool_expr(w).ok());
        let cond = self.active(r, cond);
        if r.then.is_empty() && r.variants.is_empty() {
            self.error(
                Code::MissingThen,
                r.name_span,
                format!("rule \"{}\" has no `then`", r.name),
                Some(
                    "say what it does: `then send coupon 30-6`, `then award points 10`, ...".into(),
                ),
            );
        }
        let mut actions: Vec<TAction> = r
            .then
            .iter()
            .filter_map(|a| self.action_for(a, &triggers).ok())
            .collect();
        let variants = self.variants(r, &triggers, &mut actions);
        if let Some(c) = &cond {
            self.never_true(c);
        }
        let limit = r
            .limit
            .as_ref()
            .map(|l| (l.count, l.per.map(|d| (d.secs / 86_400).max(1) as u32)));
        if let Some(l) = &r.limit
            && let Some(p) = l.per
            && p.secs % 86_400 != 0
        {
            self.error(
                Code::BadClause,
                p.span,
                "limit windows are whole days",
                Some("write e.g. `limit once per 30d`".into()),
            );
        }
        let holdout_ppm = r
            .holdout
            .as_ref()
            .map(|h| {
                (h.percent * Decimal::from(10_000))
                    .trunc()
                    .try_into()
                    .unwrap_or(0u32)
            })
            .unwrap_or(0);
        let budget = r.budget.as_ref().and_then(|b| self.budget(b));
        self.rule = None;
        if self.error_count() > before {
            return None;
        }
        Some(CheckedRule {
            name: r.name.clone(),
            source: self.source,
            span: r.name_span,
            triggers,
            cond,
            actions,
            limit,
            holdout_ppm,
            priority: r.priority.map_or(0, |p| p.0),
            group: r.group.as_ref().map(|g| g.0.clone()),
            budget,
            variants,
        })
    }

    fn error_count(&self) -> usize {
        self.diags.iter().filter(|d| d.is_error()).count()
    }

    fn budget(&mut self, b: &ast::Budget) -> Option<BudgetSpec> {
        match &b.per {
            None => Some(BudgetSpec::Firings(
                u64::try_from(b.amount).unwrap_or(u64::MAX),
            )),
            Some(p) => {
                let period = match p.name.as_str() {
                    "day" => Period::Day,
                    "week" => Period::Week,
                    "month" => Period::Month,
                    "year" => Period::Year,
                    other => {
                        self.error(
                            Code::BadClause,
                            p.span,
                            format!("`{other}` is not a budget period"),
                            Some("periods are: day, week, month, year".into()),
                        );
                        return None;
                    }
                };
                Some(BudgetSpec::Money {
                    amount: b.amount,
                    period,
                })
            }
        }
    }

    fn triggers(&mut self, r: &ast::Rule) -> Triggers {
        let mut t = Triggers {
            events: Vec::new(),
            tick: false,
            tier_up: false,
            tier_down: false,
            state: r.on.is_none(),
        };
        for id in r.on.iter().flatten() {
            match id.name.as_str() {
                "tick" => t.tick = true,
                "tier_up" => t.tier_up = true,
                "tier_down" => t.tier_down = true,
                name => match self.schema.event(name) {
                    Some((i, _)) => {
                        if !t.events.contains(&i) {
                            t.events.push(i)
                        }
                    }
                    None => {
                        let cands: Vec<&str> = self
                            .schema
                            .events
                            .iter()
                            .map(|e| e.name.as_str())
                            .chain(crate::model::fields::BUILTIN_TRIGGERS.iter().copied())
                            .collect();
                        let hint = did_you_mean(name, cands.iter().copied())
                            .unwrap_or_else(|| format!("triggers are: {}", cands.join(", ")));
                        self.error(
                            Code::UnknownEvent,
                            id.span,
                            format!("unknown event type `{name}`"),
                            Some(hint),
                        );
                    }
                },
            }
        }
        t
    }

    // ---------------------------------------------------------- actions

    // ------------------------------------------------------ expressions

    /// Keeps a condition made of literals for `compile::never_true`,
    /// which evaluates it (the checker cannot: it sits below the compiler).
    fn never_true(&mut self, c: &TExpr) {
        if c.konst && !matches!(c.kind, TKind::HasTag(_)) {
            self.const_conds.push((self.source, c.clone()));
        }
    }
}

fn dedup(mut v: Vec<&str>) -> Vec<&str> {
    v.sort_unstable();
    v.dedup();
    v
}

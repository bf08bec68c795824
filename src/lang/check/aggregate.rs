//! Windowed aggregates (`count(purchase in 30d where ...)`), built-in
//! functions and `points_expiring(...)`; equal aggregates share a slot.

use super::*;
use crate::base::diag::{Code, Span, did_you_mean};
use crate::lang::ast::{self, AggFn, ExprKind, Literal};
use crate::lang::program::Func;
use crate::model::fields::FieldType;

impl Checker<'_> {
    // Long because an aggregate has several parts (function, event type, field, window, filter), each checked with its own hint.
    pub(super) fn aggregate(&mut self, a: &ast::Aggregate, span: Span) -> R<TExpr> {
        let Some((et, ety)) = self.schema.event(&a.event.name) else {
            let hint = did_you_mean(
                &a.event.name,
                self.schema.events.iter().map(|e| e.name.as_str()),
            )
            .unwrap_or_else(|| {
                format!(
                    "event types are: {}",
                    self.schema
                        .events
                        .iter()
                        .map(|e| e.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
            self.error(
                Code::UnknownEvent,
                a.event.span,
                format!("unknown event type `{}`", a.event.name),
                Some(hint),
            );
            return Err(());
        };
        let (field_slot, ty) = match (&a.field, a.func) {
            (None, AggFn::Count) => (None, Ty::Int),
            (None, AggFn::Cycle) => (None, Ty::Dec),
            (None, AggFn::DaysSinceLast) => (None, Ty::Int),
            (Some(f), func) if func.is_history() => {
                self.error(
                    Code::TypeMismatch,
                    f.span,
                    format!("`{}` reads the days of events, not a field", func.name()),
                    Some(format!(
                        "write `{}({} where ...)`",
                        func.name(),
                        a.event.name
                    )),
                );
                return Err(());
            }
            (Some(f), AggFn::Count) => {
                self.error(
                    Code::TypeMismatch,
                    f.span,
                    "`count` counts events, not a field",
                    Some(format!(
                        "write `count({}, ...)`, or `sum({}.{}, ...)`",
                        a.event.name, a.event.name, f.name
                    )),
                );
                return Err(());
            }
            (None, func) => {
                self.error(
                    Code::TypeMismatch,
                    a.event.span,
                    format!("`{}` needs a field", func.name()),
                    Some(format!(
                        "write e.g. `{}({}.amount, 30d)`",
                        func.name(),
                        a.event.name
                    )),
                );
                return Err(());
            }
            (Some(f), func) => match ety.field(&f.name) {
                Some((_, fl))
                    if matches!(
                        fl.ty,
                        FieldType::Int | FieldType::Decimal | FieldType::Money
                    ) =>
                {
                    let base = Ty::from_field(fl.ty);
                    let ty = if func == AggFn::Avg && base == Ty::Int {
                        Ty::Dec
                    } else {
                        base
                    };
                    let name = f.name.clone();
                    (Some(self.event_slot(&name)), ty)
                }
                Some(_) => {
                    self.error(
                        Code::TypeMismatch,
                        f.span,
                        format!("`{}` of a field that is not a number", func.name()),
                        None,
                    );
                    return Err(());
                }
                None => {
                    let hint = did_you_mean(&f.name, ety.fields.iter().map(|x| x.name.as_str()));
                    self.error(
                        Code::UnknownEventField,
                        f.span,
                        format!("`{}` has no field `{}`", a.event.name, f.name),
                        hint,
                    );
                    return Err(());
                }
            },
        };
        let filter = match &a.filter {
            Some(f) => {
                let saved = self.filter_event.replace(et);
                let r = self.bool_expr(f);
                self.filter_event = saved;
                Some(r?)
            }
            None => None,
        };
        match (a.func.is_history(), a.window.secs) {
            (true, 0) | (false, 1..) => {}
            (true, _) => {
                self.error(
                    Code::BadClause,
                    a.window.span,
                    format!("`{}` covers all history: it takes no window", a.func.name()),
                    Some(format!(
                        "write `{}({} where ...)`",
                        a.func.name(),
                        a.event.name
                    )),
                );
                return Err(());
            }
            (false, _) => {
                self.error(
                    Code::Syntax,
                    span,
                    format!("`{}` needs a window", a.func.name()),
                    Some(format!(
                        "write e.g. `{}({}, 30d)`",
                        a.func.name(),
                        a.event.name
                    )),
                );
                return Err(());
            }
        }
        if a.window.secs % 86_400 != 0 {
            self.error(
                Code::BadClause,
                a.window.span,
                "aggregate windows are whole days",
                Some("write e.g. `30d` or `2w`".into()),
            );
            return Err(());
        }
        let window_days = (a.window.secs / 86_400) as u32;
        let key = format!(
            "{}({}{}{},{}d)",
            a.func.name(),
            a.event.name,
            a.field
                .as_ref()
                .map(|f| format!(".{}", f.name))
                .unwrap_or_default(),
            a.filter
                .as_ref()
                .map(|f| format!(" where {}", expr_key(f)))
                .unwrap_or_default(),
            window_days
        );
        let text = crate::lang::print::expr(&ast::Expr {
            kind: ast::ExprKind::Aggregate(Box::new(a.clone())),
            span,
        });
        let slot = match self.layout.aggregates.iter().find(|s| s.key == key) {
            Some(s) => s.slot,
            None if self.frozen_aggregates.is_some() => {
                let kept: Vec<String> = self
                    .layout
                    .aggregates
                    .iter()
                    .map(|a| format!("`{}`", a.text))
                    .collect();
                self.error(
                    Code::NotKept,
                    span,
                    format!("member records do not keep `{text}`: no rule or segment reads it"),
                    Some(if kept.is_empty() {
                        "add it to a rule or a named segment; records keep it from the next events on".into()
                    } else {
                        format!(
                            "kept are: {}; or add it to a named segment, and records keep it from the next events on",
                            kept.join(", ")
                        )
                    }),
                );
                return Err(());
            }
            None => {
                let slot = self.layout.fields.len() as u16;
                self.layout.fields.push((key.clone(), ty.clone()));
                self.layout.aggregates.push(AggSpec {
                    func: a.func,
                    event_type: et,
                    field: field_slot,
                    filter,
                    window_days,
                    slot,
                    key,
                    text,
                });
                slot
            }
        };
        Ok(TExpr {
            ty,
            konst: false,
            span,
            kind: TKind::Slot(slot),
        })
    }

    pub(super) fn func(&mut self, name: &ast::Ident, args: &[ast::Expr], span: Span) -> R<TExpr> {
        if name.name == "points_expiring" {
            return self.points_expiring(args, span);
        }
        if let Some(what) = match name.name.as_str() {
            "expected_purchases" => Some(Predicted::Purchases),
            "predicted_clv" => Some(Predicted::Clv),
            _ => None,
        } {
            return self.predicted(what, &name.name, args, span);
        }
        let f = match name.name.as_str() {
            "floor" => Func::Floor,
            "ceil" => Func::Ceil,
            "round" => Func::Round,
            "abs" => Func::Abs,
            "day_of_month" => Func::DayOfMonth,
            "weekday" => Func::Weekday,
            "month" => Func::Month,
            other => {
                let hint = did_you_mean(
                    other,
                    [
                        "floor",
                        "ceil",
                        "round",
                        "abs",
                        "day_of_month",
                        "weekday",
                        "month",
                        "count",
                        "sum",
                        "avg",
                        "min",
                        "max",
                    ],
                )
                .unwrap_or_else(|| {
                    "functions are: floor, ceil, round, abs, day_of_month, weekday, month; aggregates: count, sum, avg, min, max"
                        .into()
                });
                self.error(
                    Code::UnknownFunction,
                    name.span,
                    format!("unknown function `{other}`"),
                    Some(hint),
                );
                return Err(());
            }
        };
        if args.len() != 1 {
            self.error(
                Code::Arity,
                span,
                format!("`{}` takes one argument", name.name),
                None,
            );
            return Err(());
        }
        let a = self.expr(&args[0])?;
        let ty = match (f, &a.ty) {
            (Func::Abs, Ty::Int | Ty::Dec | Ty::Money | Ty::Duration) => a.ty.clone(),
            (Func::Floor | Func::Ceil | Func::Round, Ty::Int | Ty::Dec | Ty::Money) => Ty::Int,
            (Func::DayOfMonth | Func::Weekday | Func::Month, Ty::Date) => Ty::Int,
            (_, Ty::Any) => Ty::Int,
            (Func::DayOfMonth | Func::Weekday | Func::Month, _) => {
                self.error(
                    Code::TypeMismatch,
                    a.span,
                    format!("`{}` needs a date, found {}", name.name, a.ty.name()),
                    Some(format!("e.g. `{}(today)`", name.name)),
                );
                return Err(());
            }
            _ => {
                self.error(
                    Code::TypeMismatch,
                    a.span,
                    format!("`{}` needs a number, found {}", name.name, a.ty.name()),
                    None,
                );
                return Err(());
            }
        };
        Ok(TExpr {
            ty,
            konst: a.konst,
            span,
            kind: TKind::Func(f, Box::new(a)),
        })
    }

    /// `points_expiring(30d)`: points in lots that expire within the window.
    pub(super) fn points_expiring(&mut self, args: &[ast::Expr], span: Span) -> R<TExpr> {
        let days = match args {
            [
                ast::Expr {
                    kind: ExprKind::Lit(Literal::Duration(secs)),
                    ..
                },
            ] if secs % 86_400 == 0 => (secs / 86_400) as u32,
            _ => {
                self.error(
                    Code::Arity,
                    span,
                    "`points_expiring` takes one window in days",
                    Some("write e.g. `points_expiring(30d)`".into()),
                );
                return Err(());
            }
        };
        if self.schema.points.expire_after_days.is_none() {
            self.error(
                Code::UnknownFunction,
                span,
                "points do not expire in this config",
                Some("set `points: { expire_after: 365d }` in the config".into()),
            );
            return Err(());
        }
        let key = format!("points_expiring({days}d)");
        let slot = match self
            .layout
            .expiring
            .iter()
            .find(|(s, d)| *d == days && self.layout.fields[*s as usize].0 == key)
        {
            Some((s, _)) => *s,
            None => {
                let s = self.layout.fields.len() as u16;
                self.layout.fields.push((key, Ty::Int));
                self.layout.expiring.push((s, days));
                s
            }
        };
        Ok(TExpr {
            ty: Ty::Int,
            konst: false,
            span,
            kind: TKind::Slot(slot),
        })
    }
}

/// A canonical text of an expression, to tell equal aggregate filters apart.
pub(super) fn expr_key(e: &ast::Expr) -> String {
    format!("{:?}", strip_spans(e))
}

pub(super) fn strip_spans(e: &ast::Expr) -> ast::Expr {
    let mut e = e.clone();
    fn walk(e: &mut ast::Expr) {
        e.span = Span::default();
        match &mut e.kind {
            ExprKind::Path(p) => p.iter_mut().for_each(|i| i.span = Span::default()),
            ExprKind::InSegment(_) => {}
            ExprKind::Neg(a) | ExprKind::Not(a) => walk(a),
            ExprKind::Binary(_, a, b)
            | ExprKind::In {
                item: a, set: b, ..
            } => {
                walk(a);
                walk(b)
            }
            ExprKind::Between {
                value, low, high, ..
            } => {
                walk(value);
                walk(low);
                walk(high)
            }
            ExprKind::IsNull { value, .. } => walk(value),
            ExprKind::List(items) => items.iter_mut().for_each(walk),
            ExprKind::Func { name, args } => {
                name.span = Span::default();
                args.iter_mut().for_each(walk)
            }
            ExprKind::Plugin(c) => {
                c.plugin.span = Span::default();
                c.function.span = Span::default();
                c.args.iter_mut().for_each(walk)
            }
            ExprKind::Aggregate(a) => {
                a.event.span = Span::default();
                if let Some(f) = &mut a.field {
                    f.span = Span::default()
                }
                a.window.span = Span::default();
                if let Some(f) = &mut a.filter {
                    walk(f)
                }
            }
            ExprKind::Lit(_) => {}
        }
    }
    walk(&mut e);
    e
}

impl Checker<'_> {
    /// `expected_purchases(90d)`, `predicted_clv(365d)`: a slot per window.
    fn predicted(
        &mut self,
        what: Predicted,
        name: &str,
        args: &[ast::Expr],
        span: Span,
    ) -> R<TExpr> {
        let days = match args {
            [
                ast::Expr {
                    kind: ExprKind::Lit(Literal::Duration(secs)),
                    ..
                },
            ] if secs % 86_400 == 0 && *secs > 0 => (secs / 86_400) as u32,
            _ => {
                self.error(
                    Code::Arity,
                    span,
                    format!("`{name}` takes one window in days"),
                    Some(format!("write e.g. `{name}(90d)`")),
                );
                return Err(());
            }
        };
        let key = format!("{name}({days}d)");
        let ty = match what {
            Predicted::Purchases => Ty::Dec,
            Predicted::Clv => Ty::Money,
        };
        let slot = match self
            .layout
            .predicted
            .iter()
            .find(|(_, w, d)| *w == what && *d == days)
        {
            Some((s, _, _)) => *s,
            None => {
                let s = self.layout.fields.len() as u16;
                self.layout.fields.push((key, ty.clone()));
                self.layout.predicted.push((s, what, days));
                s
            }
        };
        Ok(TExpr {
            ty,
            konst: false,
            span,
            kind: TKind::Slot(slot),
        })
    }
}

//! Typing expressions: literals, operators (arithmetic, comparisons,
//! `in`, `between`), tiers by name, and conversions a rule may rely on.

use super::*;
use crate::base::diag::{Code, Diagnostic, Span, did_you_mean};
use crate::lang::ast::{self, BinOp, ExprKind, Literal};
use crate::lang::program::{Cmp, Value};
use crate::model::fields::slot;

impl Checker<'_> {
    pub(super) fn bool_expr(&mut self, e: &ast::Expr) -> R<TExpr> {
        let t = self.expr(e)?;
        self.expect(t, &Ty::Bool, "a condition is true or false")
    }

    /// `e` as type `want`: equal types, a plugin value, or a plain number
    /// where money is wanted.
    pub(super) fn expect(&mut self, mut e: TExpr, want: &Ty, why: &str) -> R<TExpr> {
        if e.ty == *want {
            return Ok(e);
        }
        match (&e.ty, want) {
            (Ty::Any, _) => {
                e.ty = want.clone();
                Ok(e)
            }
            (Ty::Null, _) => {
                e.ty = want.clone();
                Ok(e)
            }
            (Ty::Int, Ty::Dec) => Ok(e),
            (Ty::Int | Ty::Dec, Ty::Money) if e.konst => Ok(e),
            (Ty::Dec | Ty::Money, Ty::Int) => {
                let hint =
                    format!("{why}; round it with `floor(...)`, `round(...)` or `ceil(...)`");
                self.error(
                    Code::TypeMismatch,
                    e.span,
                    format!("expected a whole number, found {}", e.ty.name()),
                    Some(hint),
                );
                Err(())
            }
            (Ty::Str, Ty::Tier) => {
                self.error(
                    Code::TypeMismatch,
                    e.span,
                    "expected a tier, found a string",
                    Some(format!(
                        "write the tier name without quotes; tiers are: {}",
                        self.schema.tiers_list()
                    )),
                );
                Err(())
            }
            _ => {
                self.error(
                    Code::TypeMismatch,
                    e.span,
                    format!("expected {}, found {}", want.name(), e.ty.name()),
                    Some(why.to_string()),
                );
                Err(())
            }
        }
    }

    // Long because one match over the expression kinds, each arm short.
    pub(super) fn expr(&mut self, e: &ast::Expr) -> R<TExpr> {
        let span = e.span;
        let mk = |ty: Ty, konst: bool, kind: TKind| TExpr {
            ty,
            konst,
            span,
            kind,
        };
        match &e.kind {
            ExprKind::Lit(l) => Ok(match l {
                Literal::Int(i) => mk(Ty::Int, true, TKind::Lit(Value::Int(*i))),
                Literal::Decimal(d) => mk(Ty::Dec, true, TKind::Lit(Value::Dec(*d))),
                Literal::Percent(p) => mk(
                    Ty::Dec,
                    true,
                    TKind::Lit(Value::Dec(*p / rust_decimal::Decimal::ONE_HUNDRED)),
                ),
                Literal::Str(s) => mk(Ty::Str, true, TKind::Lit(Value::Str(s.as_str().into()))),
                Literal::Bool(b) => mk(Ty::Bool, true, TKind::Lit(Value::Bool(*b))),
                Literal::Null => mk(Ty::Null, true, TKind::Lit(Value::Null)),
                Literal::Date(d) => mk(Ty::Date, true, TKind::Lit(Value::Date(*d))),
                Literal::Duration(s) => mk(Ty::Duration, true, TKind::Lit(Value::Duration(*s))),
            }),
            ExprKind::Path(parts) => self.path(parts, span),
            ExprKind::Neg(a) => {
                let a = self.expr(a)?;
                match a.ty {
                    Ty::Int | Ty::Dec | Ty::Money | Ty::Duration | Ty::Any => {
                        Ok(mk(a.ty.clone(), a.konst, TKind::Neg(Box::new(a))))
                    }
                    _ => {
                        self.error(
                            Code::TypeMismatch,
                            a.span,
                            format!("cannot negate {}", a.ty.name()),
                            None,
                        );
                        Err(())
                    }
                }
            }
            ExprKind::Not(a) => {
                let a = self.bool_expr(a)?;
                Ok(mk(Ty::Bool, a.konst, TKind::Not(Box::new(a))))
            }
            ExprKind::Binary(op, a, b) => self.binary(*op, a, b, span),
            ExprKind::In { negated, item, set } => {
                let e = self.in_expr(item, set, span)?;
                Ok(if *negated {
                    mk(Ty::Bool, e.konst, TKind::Not(Box::new(e)))
                } else {
                    e
                })
            }
            ExprKind::Between {
                negated,
                value,
                low,
                high,
            } => {
                let v = self.expr(value)?;
                let lo = self.expr(low)?;
                let hi = self.expr(high)?;
                let ge = self.compare(BinOp::Ge, v.clone(), lo, span)?;
                let le = self.compare(BinOp::Le, v, hi, span)?;
                let konst = ge.konst && le.konst;
                let both = mk(Ty::Bool, konst, TKind::And(Box::new(ge), Box::new(le)));
                Ok(if *negated {
                    mk(Ty::Bool, konst, TKind::Not(Box::new(both)))
                } else {
                    both
                })
            }
            ExprKind::IsNull { negated, value } => {
                let v = self.expr(value)?;
                if matches!(v.ty, Ty::Tags | Ty::Member | Ty::List(_)) {
                    self.error(
                        Code::TypeMismatch,
                        v.span,
                        format!("{} is never null", v.ty.name()),
                        None,
                    );
                    return Err(());
                }
                let konst = v.konst;
                let e = mk(Ty::Bool, konst, TKind::IsNull(Box::new(v)));
                Ok(if *negated {
                    mk(Ty::Bool, konst, TKind::Not(Box::new(e)))
                } else {
                    e
                })
            }
            ExprKind::List(_) => {
                self.error(
                    Code::TypeMismatch,
                    span,
                    "a list can only stand after `in`",
                    Some("write e.g. `tier in [gold, diamond]`".into()),
                );
                Err(())
            }
            ExprKind::Aggregate(a) => self.aggregate(a, span),
            ExprKind::InSegment(name) => self.segment_ref(name, span),
            ExprKind::Func { name, args } => self.func(name, args, span),
            ExprKind::Plugin(call) => {
                let (plugin, args) = self.plugin_call(call)?;
                Ok(mk(
                    Ty::Any,
                    false,
                    TKind::Plugin {
                        plugin,
                        function: call.function.name.clone(),
                        args,
                    },
                ))
            }
        }
    }

    pub(super) fn binary(
        &mut self,
        op: BinOp,
        a: &ast::Expr,
        b: &ast::Expr,
        span: Span,
    ) -> R<TExpr> {
        if matches!(op, BinOp::And | BinOp::Or) {
            let l = self.bool_expr(a);
            let r = self.bool_expr(b);
            let (l, r) = (l?, r?);
            let konst = l.konst && r.konst;
            let kind = if op == BinOp::And {
                TKind::And(Box::new(l), Box::new(r))
            } else {
                TKind::Or(Box::new(l), Box::new(r))
            };
            return Ok(TExpr {
                ty: Ty::Bool,
                konst,
                span,
                kind,
            });
        }
        if op.is_comparison() {
            let l = self.expr_or_tier(a, b);
            let r = self.expr_or_tier(b, a);
            return self.compare(op, l?, r?, span);
        }
        let l = self.expr(a);
        let r = self.expr(b);
        let (l, r) = (l?, r?);
        if op.is_comparison() {
            return self.compare(op, l, r, span);
        }
        let aop = match op {
            BinOp::Add => Arith::Add,
            BinOp::Sub => Arith::Sub,
            BinOp::Mul => Arith::Mul,
            BinOp::Rem => Arith::Rem,
            _ => Arith::Div,
        };
        self.arith(aop, op, l, r, span)
    }

    /// `e`, where an unknown bare name next to a tier (`tier >= platinum`)
    /// is reported as an unknown tier rather than an unknown field.
    pub(super) fn expr_or_tier(&mut self, e: &ast::Expr, other: &ast::Expr) -> R<TExpr> {
        let is_tier = |x: &ast::Expr| matches!(&x.kind, ExprKind::Path(p) if p.len() == 1 && p[0].name == "tier");
        if is_tier(other) {
            self.tier_name(e)
        } else {
            self.expr(e)
        }
    }

    /// `e` where a tier is wanted.
    pub(super) fn tier_name(&mut self, e: &ast::Expr) -> R<TExpr> {
        if let ExprKind::Path(p) = &e.kind
            && p.len() == 1
            && self.schema.tier(&p[0].name).is_none()
            && !self.layout.fields.iter().any(|(n, _)| *n == p[0].name)
        {
            let name = &p[0].name;
            let hint = did_you_mean(name, self.schema.tiers.iter().map(|t| t.as_str()))
                .unwrap_or_else(|| format!("tiers are: {}", self.schema.tiers_list()));
            self.error(
                Code::UnknownTier,
                p[0].span,
                format!("unknown tier `{name}`"),
                Some(hint),
            );
            return Err(());
        }
        self.expr(e)
    }

    pub(super) fn arith(
        &mut self,
        aop: Arith,
        op: BinOp,
        mut l: TExpr,
        mut r: TExpr,
        span: Span,
    ) -> R<TExpr> {
        // A plugin value takes the type of the other side.
        if l.ty == Ty::Any && r.ty != Ty::Any {
            l.ty = r.ty.clone();
        }
        if r.ty == Ty::Any && l.ty != Ty::Any {
            r.ty = l.ty.clone();
        }
        use Ty::*;
        let ty = match (aop, &l.ty, &r.ty) {
            (Arith::Rem, Int | Any, Int | Any) => Int,
            (Arith::Rem, _, _) => {
                self.error(
                    Code::TypeMismatch,
                    span,
                    format!(
                        "`%` takes whole numbers, not {} and {}",
                        l.ty.name(),
                        r.ty.name()
                    ),
                    Some("e.g. `member_days % 365 == 0`".into()),
                );
                return Err(());
            }
            (_, Any, Any) => Dec,
            (Arith::Div, x, y) if x.numeric() && y.numeric() => Dec,
            (_, Int, Int) => Int,
            (_, x, y) if x.numeric() && y.numeric() => Dec,
            (Arith::Add | Arith::Sub, Money, Money) => Money,
            (Arith::Add | Arith::Sub, Money, x) if x.numeric() && r.konst => Money,
            (Arith::Add | Arith::Sub, x, Money) if x.numeric() && l.konst => Money,
            (Arith::Mul, Money, x) | (Arith::Mul, x, Money) if x.numeric() => Money,
            (Arith::Div, Money, x) if x.numeric() => Money,
            (Arith::Div, Money, Money) => Dec,
            (Arith::Add | Arith::Sub, Date, Duration) => Date,
            (Arith::Add, Duration, Date) => Date,
            (Arith::Sub, Date, Date) => Duration,
            (Arith::Add | Arith::Sub, Duration, Duration) => Duration,
            (Arith::Mul, Duration, Int) | (Arith::Mul, Int, Duration) => Duration,
            _ => {
                let hint = match (&l.ty, &r.ty) {
                    (Money, x) | (x, Money) if x.numeric() => Some(
                        "money and plain numbers do not mix: is one of them points or a count?"
                            .to_string(),
                    ),
                    (Tier, _) | (_, Tier) => {
                        Some("tiers are ordered names, not numbers".to_string())
                    }
                    (Date, x) | (x, Date) if x.numeric() => {
                        Some("add a duration to a date: `last_purchase_at + 30d`".to_string())
                    }
                    _ => None,
                };
                self.error(
                    Code::TypeMismatch,
                    span,
                    format!(
                        "cannot apply `{}` to {} and {}",
                        op.symbol(),
                        l.ty.name(),
                        r.ty.name()
                    ),
                    hint,
                );
                return Err(());
            }
        };
        let konst = l.konst && r.konst;
        Ok(TExpr {
            ty,
            konst,
            span,
            kind: TKind::Arith(aop, Box::new(l), Box::new(r)),
        })
    }

    pub(super) fn compare(
        &mut self,
        op: BinOp,
        mut l: TExpr,
        mut r: TExpr,
        span: Span,
    ) -> R<TExpr> {
        let cmp = match op {
            BinOp::Eq => Cmp::Eq,
            BinOp::Ne => Cmp::Ne,
            BinOp::Lt => Cmp::Lt,
            BinOp::Le => Cmp::Le,
            BinOp::Gt => Cmp::Gt,
            _ => Cmp::Ge,
        };
        if l.ty == Ty::Null || r.ty == Ty::Null {
            let hint = if matches!(cmp, Cmp::Ne) {
                "write `x is not null`"
            } else {
                "write `x is null`"
            };
            self.error(
                Code::TypeMismatch,
                span,
                "a comparison with null is never true",
                Some(hint.into()),
            );
            return Err(());
        }
        // A plugin value takes the other side's type, but against a whole
        // number it is any number (`crm.score(member) > 40` for 40.5).
        let plugin_ty = |other: &Ty| match other {
            Ty::Any | Ty::Int => Ty::Dec,
            t => t.clone(),
        };
        if l.ty == Ty::Any {
            l.ty = plugin_ty(&r.ty);
        }
        if r.ty == Ty::Any {
            r.ty = plugin_ty(&l.ty);
        }
        use Ty::*;
        let ok = match (&l.ty, &r.ty) {
            (x, y) if x.numeric() && y.numeric() => true,
            (Money, Money) => true,
            (Money, x) if x.numeric() => r.konst,
            (x, Money) if x.numeric() => l.konst,
            (Str, Str) | (Bool, Bool) => matches!(cmp, Cmp::Eq | Cmp::Ne),
            (Date, Date) | (Duration, Duration) | (Tier, Tier) => true,
            _ => false,
        };
        if !ok && l.ty == r.ty {
            self.error(
                Code::TypeMismatch,
                span,
                format!("`{}` does not apply to {}", op.symbol(), l.ty.name()),
                Some("strings and true/false compare only with `==` and `!=`".into()),
            );
            return Err(());
        }
        if !ok {
            let hint = match (&l.ty, &r.ty) {
                (Tier, Int | Dec) | (Int | Dec, Tier) => Some(format!("compare tiers with tier names: `tier >= {}`; tiers are: {}", self.schema.tiers.get(1).or(self.schema.tiers.first()).map_or("silver", |s| s.as_str()), self.schema.tiers_list())),
                (Tier, Str) | (Str, Tier) => Some(format!("write the tier name without quotes; tiers are: {}", self.schema.tiers_list())),
                (Money, x) | (x, Money) if x.numeric() => Some("money compares with money or a plain amount like `100`, not with points or counts".into()),
                (Tags, _) | (_, Tags) => Some("test tags with `\"mom\" in tags`".into()),
                (Int | Dec, Duration) | (Duration, Int | Dec) => Some(duration_hint(&l, &r)),
                // `2025-7-1` is a subtraction: a date needs two-digit parts.
                (Date, Int) if r.konst => Some("write a date as YYYY-MM-DD, with two digits for the month and the day (`2025-07-01`); without them it reads as a subtraction".into()),
                (Int, Date) if l.konst => Some("write a date as YYYY-MM-DD, with two digits for the month and the day (`2025-07-01`); without them it reads as a subtraction".into()),
                (Date, Str) | (Str, Date) => {
                    let quoted = [&l, &r].into_iter().find_map(|e| match &e.kind {
                        TKind::Lit(Value::Str(t)) if crate::base::time::parse_date(t).is_some() => Some(t.to_string()),
                        _ => None,
                    });
                    Some(match quoted {
                        Some(d) => format!("write the date without quotes: `{d}`"),
                        None => "dates are written without quotes, like `2026-02-14`".into(),
                    })
                }
                _ => None,
            };
            self.error(
                Code::TypeMismatch,
                span,
                format!("cannot compare {} with {}", l.ty.name(), r.ty.name()),
                hint,
            );
            return Err(());
        }
        self.tier_extreme(cmp, &l, &r, span);
        self.probability_range(&l, &r, span);
        let konst = l.konst && r.konst;
        Ok(TExpr {
            ty: Bool,
            konst,
            span,
            kind: TKind::Cmp(cmp, Box::new(l), Box::new(r)),
        })
    }

    /// Warns about a probability (`p_alive`, `churn_risk`) compared with a
    /// number above 1: `p_alive < 30` meant 30%.
    fn probability_range(&mut self, l: &TExpr, r: &TExpr, span: Span) {
        let (s, v) = match (&l.kind, &r.kind) {
            (TKind::Slot(s), TKind::Lit(v)) | (TKind::Lit(v), TKind::Slot(s))
                if matches!(*s, slot::P_ALIVE | slot::CHURN_RISK) =>
            {
                (s, v)
            }
            _ => return,
        };
        let Some(n) = v.dec().filter(|n| *n > rust_decimal::Decimal::ONE) else {
            return;
        };
        let name = if *s == slot::P_ALIVE {
            "p_alive"
        } else {
            "churn_risk"
        };
        self.err(
            Diagnostic::new(
                Code::ProbabilityRange,
                self.source,
                span,
                format!("`{name}` is a probability between 0 and 1, compared here with {n}"),
            )
            .hint(format!(
                "write a share as a percentage or a fraction: `{n}%`"
            )),
        );
    }

    /// Warns about `tier > TOP` and `tier < BOTTOM`, which nobody can meet.
    pub(super) fn tier_extreme(&mut self, cmp: Cmp, l: &TExpr, r: &TExpr, span: Span) {
        let top = self.schema.tiers.len().saturating_sub(1) as u8;
        if let (TKind::Slot(slot::TIER), TKind::Lit(Value::Tier(t))) = (&l.kind, &r.kind) {
            let never = (cmp == Cmp::Gt && *t == top) || (cmp == Cmp::Lt && *t == 0);
            if never {
                self.err(
                    Diagnostic::new(
                        Code::NeverTrue,
                        self.source,
                        span,
                        format!(
                            "no member has a tier {} `{}`",
                            if cmp == Cmp::Gt { "above" } else { "below" },
                            self.schema.tiers[*t as usize]
                        ),
                    )
                    .hint(format!(
                        "tiers are, lowest first: {}",
                        self.schema.tiers_list()
                    )),
                );
            }
        }
    }

    pub(super) fn in_expr(&mut self, item: &ast::Expr, set: &ast::Expr, span: Span) -> R<TExpr> {
        // `vip in tags`: a tag written without quotes reads as a field.
        if let (ExprKind::Path(item_path), ExprKind::Path(set_path)) = (&item.kind, &set.kind)
            && let ([tag], [tags]) = (item_path.as_slice(), set_path.as_slice())
            && tags.name == "tags"
            && !self.layout.fields.iter().any(|(n, _)| *n == tag.name)
        {
            self.error(
                Code::UnknownName,
                item.span,
                format!("unknown field `{}`", tag.name),
                Some(format!(
                    "a tag is written in quotes: `\"{}\" in tags`",
                    tag.name
                )),
            );
            return Err(());
        }
        let it = self.expr(item)?;
        if let ExprKind::List(items) = &set.kind {
            let mut out = Vec::new();
            for i in items {
                let e = if it.ty == Ty::Tier {
                    self.tier_name(i)?
                } else {
                    self.expr(i)?
                };
                if !e.konst {
                    self.error(
                        Code::TypeMismatch,
                        e.span,
                        "list items must be literal values",
                        Some("compare with a field using `==` and `or` instead".into()),
                    );
                    return Err(());
                }
                let e = self.compare(BinOp::Eq, it.clone(), e, i.span)?;
                let TKind::Cmp(_, _, r) = e.kind else {
                    return Err(());
                };
                out.push(*r);
            }
            let konst = it.konst;
            return Ok(TExpr {
                ty: Ty::Bool,
                konst,
                span,
                kind: TKind::In(Box::new(it), out),
            });
        }
        let s = self.expr(set)?;
        if s.ty == Ty::Tags {
            return match &it.kind {
                TKind::Lit(Value::Str(tag)) => {
                    let bit = self.intern_tag(tag);
                    Ok(TExpr {
                        ty: Ty::Bool,
                        konst: false,
                        span,
                        kind: TKind::HasTag(bit),
                    })
                }
                _ => {
                    self.error(
                        Code::TypeMismatch,
                        it.span,
                        "the tag to look for must be a quoted string",
                        Some("write e.g. `\"coffee\" in tags`".into()),
                    );
                    Err(())
                }
            };
        }
        self.error(
            Code::TypeMismatch,
            s.span,
            format!("`in` needs a list or `tags`, found {}", s.ty.name()),
            Some("write e.g. `tier in [gold, diamond]` or `\"mom\" in tags`".into()),
        );
        Err(())
    }
}

/// The hint for a number compared with a duration: a duration literal
/// beside a count of days loses its unit; a number beside a duration
/// field gains one.
fn duration_hint(l: &TExpr, r: &TExpr) -> String {
    let literal = [l, r].into_iter().find_map(|e| match e.kind {
        TKind::Lit(Value::Duration(secs)) if secs % 86_400 == 0 => Some(secs / 86_400),
        _ => None,
    });
    match literal {
        Some(days) => format!("a count of days is a plain number: write `{days}`, not `{days}d`"),
        None => "durations need a unit: `30d`".into(),
    }
}

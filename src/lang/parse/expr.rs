//! Expressions: operators and their chains (bounded in depth), comparisons,
//! aggregates, plugin calls and literals.

use super::Rule;
use super::*;
use crate::base::diag::{Code, Diagnostic, Span};
use crate::base::time::parse_date;
use crate::lang::ast::*;
use pest::iterators::Pair;

impl Builder<'_> {
    pub(super) fn expr(&mut self, pair: Pair<'_, Rule>, nest: usize) -> Res<Expr> {
        let e = self.expr_inner(pair, nest)?;
        if nest == 0 {
            let d = depth(&e);
            if d > MAX_DEPTH {
                return Err(Diagnostic::new(
                    Code::TooLong,
                    self.source,
                    e.span,
                    format!("this expression is {d} operators deep; the limit is {MAX_DEPTH}"),
                )
                .hint(
                    "split it into several rules, or use `in [...]` instead of a chain of `or`",
                ));
            }
        }
        Ok(e)
    }

    pub(super) fn expr_inner(&mut self, pair: Pair<'_, Rule>, nest: usize) -> Res<Expr> {
        let span = self.span(pair.as_span());
        match pair.as_rule() {
            Rule::expr | Rule::paren => {
                let inner = pair.into_inner().next();
                match inner {
                    Some(i) => self.expr_inner(i, nest + 1),
                    None => Err(self.error(Code::Syntax, span, "empty expression")),
                }
            }
            Rule::or_expr | Rule::and_expr | Rule::arith | Rule::term => self.chain(pair, nest),
            Rule::not_expr | Rule::unary => {
                let parts: Vec<_> = pair.into_inner().collect();
                let n_prefix = parts.len().saturating_sub(1);
                if n_prefix > MAX_PREFIX {
                    return Err(self
                        .error(
                            Code::TooLong,
                            span,
                            format!("more than {MAX_PREFIX} `not` or `-` in a row"),
                        )
                        .hint("two of them cancel out"));
                }
                let mut it = parts.into_iter().rev();
                let operand = it
                    .next()
                    .ok_or_else(|| self.error(Code::Syntax, span, "missing operand"))?;
                let mut e = self.expr_inner(operand, nest)?;
                for op in it {
                    let s = self.span(op.as_span()).to(e.span);
                    let kind = if op.as_rule() == Rule::not_op {
                        ExprKind::Not(Box::new(e))
                    } else {
                        ExprKind::Neg(Box::new(e))
                    };
                    e = Expr { kind, span: s };
                }
                Ok(e)
            }
            Rule::cmp_expr => self.comparison(pair, nest),
            Rule::list => {
                let items = pair
                    .into_inner()
                    .map(|p| self.expr_inner(p, nest + 1))
                    .collect::<Res<Vec<_>>>()?;
                Ok(Expr {
                    kind: ExprKind::List(items),
                    span,
                })
            }
            Rule::aggregate => self.aggregate(pair, nest),
            Rule::plugin_call => Ok(Expr {
                kind: ExprKind::Plugin(self.plugin_call(pair, nest)?),
                span,
            }),
            Rule::func_call => {
                let mut it = pair.into_inner();
                let name = it
                    .next()
                    .map(|p| self.ident(&p))
                    .ok_or_else(|| self.error(Code::Syntax, span, "missing function name"))?;
                let args = match it.next() {
                    Some(a) => self.args(a, nest)?,
                    None => Vec::new(),
                };
                Ok(Expr {
                    kind: ExprKind::Func { name, args },
                    span,
                })
            }
            Rule::segment_ref => {
                let name = pair
                    .into_inner()
                    .find(|p| p.as_rule() == Rule::string)
                    .map(|p| self.string(&p))
                    .unwrap_or_default();
                Ok(Expr {
                    kind: ExprKind::InSegment(name),
                    span,
                })
            }
            Rule::path => Ok(Expr {
                kind: ExprKind::Path(pair.into_inner().map(|p| self.ident(&p)).collect()),
                span,
            }),
            _ => self.literal(pair).map(|l| Expr {
                kind: ExprKind::Lit(l),
                span,
            }),
        }
    }

    pub(super) fn args(&mut self, pair: Pair<'_, Rule>, nest: usize) -> Res<Vec<Expr>> {
        pair.into_inner()
            .map(|p| self.expr_inner(p, nest + 1))
            .collect()
    }

    pub(super) fn plugin_call(&mut self, pair: Pair<'_, Rule>, nest: usize) -> Res<PluginCall> {
        let span = self.span(pair.as_span());
        let mut it = pair.into_inner();
        let (Some(plugin), Some(function)) = (it.next(), it.next()) else {
            return Err(self.error(Code::Syntax, span, "incomplete plugin call"));
        };
        let args = match it.next() {
            Some(a) => self.args(a, nest)?,
            None => Vec::new(),
        };
        Ok(PluginCall {
            plugin: self.ident(&plugin),
            function: self.ident(&function),
            args,
        })
    }

    /// `a op b op c` folded left.
    pub(super) fn chain(&mut self, pair: Pair<'_, Rule>, nest: usize) -> Res<Expr> {
        let mut it = pair.into_inner();
        let first = it
            .next()
            .ok_or_else(|| self.error(Code::Syntax, Span::default(), "missing operand"))?;
        let mut lhs = self.expr_inner(first, nest)?;
        while let (Some(op), Some(rhs)) = (it.next(), it.next()) {
            let op = match op.as_str() {
                "or" => BinOp::Or,
                "and" => BinOp::And,
                "+" => BinOp::Add,
                "-" => BinOp::Sub,
                "*" => BinOp::Mul,
                "%" => BinOp::Rem,
                _ => BinOp::Div,
            };
            let rhs = self.expr_inner(rhs, nest)?;
            let span = lhs.span.to(rhs.span);
            lhs = Expr {
                kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
                span,
            };
            if depth_at_most(&lhs, MAX_DEPTH + 1).is_none() {
                return Err(Diagnostic::new(
                    Code::TooLong,
                    self.source,
                    span,
                    format!("this expression is more than {MAX_DEPTH} operators deep"),
                )
                .hint(
                    "split it into several rules, or use `in [...]` instead of a chain of `or`",
                ));
            }
        }
        Ok(lhs)
    }

    pub(super) fn comparison(&mut self, pair: Pair<'_, Rule>, nest: usize) -> Res<Expr> {
        let span = self.span(pair.as_span());
        let mut it = pair.into_inner();
        let lhs_pair = it
            .next()
            .ok_or_else(|| self.error(Code::Syntax, span, "missing operand"))?;
        let lhs = self.expr_inner(lhs_pair, nest)?;
        let Some(tail) = it.next() else {
            return Ok(lhs);
        };
        let which = tail.as_rule();
        let parts: Vec<_> = tail.into_inner().collect();
        let negated = parts.iter().any(|p| p.as_rule() == Rule::kw_not);
        let operands: Vec<_> = parts
            .iter()
            .filter(|p| {
                !matches!(
                    p.as_rule(),
                    Rule::kw_not
                        | Rule::kw_in
                        | Rule::kw_between
                        | Rule::kw_and
                        | Rule::kw_is
                        | Rule::kw_null
                        | Rule::cmp_op
                )
            })
            .cloned()
            .collect();
        let mut ops = Vec::new();
        for o in operands {
            ops.push(self.expr_inner(o, nest)?);
        }
        let missing = || self.error(Code::Syntax, span, "missing operand");
        let kind = match which {
            Rule::cmp_tail => {
                let op = match parts.first().map(|p| p.as_str()) {
                    Some("==") => BinOp::Eq,
                    Some("!=") => BinOp::Ne,
                    Some("<=") => BinOp::Le,
                    Some(">=") => BinOp::Ge,
                    Some("<") => BinOp::Lt,
                    _ => BinOp::Gt,
                };
                let rhs = ops.pop().ok_or_else(missing)?;
                ExprKind::Binary(op, Box::new(lhs), Box::new(rhs))
            }
            Rule::in_tail => ExprKind::In {
                negated,
                item: Box::new(lhs),
                set: Box::new(ops.pop().ok_or_else(missing)?),
            },
            Rule::between_tail => {
                let high = ops.pop().ok_or_else(missing)?;
                let low = ops.pop().ok_or_else(missing)?;
                ExprKind::Between {
                    negated,
                    value: Box::new(lhs),
                    low: Box::new(low),
                    high: Box::new(high),
                }
            }
            _ => ExprKind::IsNull {
                negated,
                value: Box::new(lhs),
            },
        };
        Ok(Expr { kind, span })
    }

    pub(super) fn aggregate(&mut self, pair: Pair<'_, Rule>, nest: usize) -> Res<Expr> {
        let span = self.span(pair.as_span());
        let mut func = AggFn::Count;
        let mut idents = Vec::new();
        let mut filter = None;
        let mut window = None;
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::agg_fn => {
                    func = match p.as_str() {
                        "count" => AggFn::Count,
                        "sum" => AggFn::Sum,
                        "avg" => AggFn::Avg,
                        "min" => AggFn::Min,
                        "cycle" => AggFn::Cycle,
                        "days_since_last" => AggFn::DaysSinceLast,
                        _ => AggFn::Max,
                    }
                }
                Rule::ident => idents.push(self.ident(&p)),
                Rule::expr => filter = Some(self.expr_inner(p, nest + 1)?),
                Rule::duration => window = Some(self.duration(&p)?),
                _ => {}
            }
        }
        let mut idents = idents.into_iter();
        let Some(event) = idents.next() else {
            return Err(self.error(Code::Syntax, span, "incomplete aggregate"));
        };
        // No window: all history (`cycle(...)`); the checker says whether
        // the function takes one.
        let window = window.unwrap_or(Duration {
            secs: 0,
            span: Span::new(span.end, span.end),
        });
        Ok(Expr {
            kind: ExprKind::Aggregate(Box::new(Aggregate {
                func,
                event,
                field: idents.next(),
                filter,
                window,
            })),
            span,
        })
    }

    pub(super) fn literal(&self, p: Pair<'_, Rule>) -> Res<Literal> {
        let span = self.span(p.as_span());
        let s = p.as_str();
        Ok(match p.as_rule() {
            Rule::int => match s.parse::<i64>() {
                Ok(i) => Literal::Int(i),
                Err(_) => Literal::Decimal(self.decimal(s, span)?),
            },
            Rule::decimal => Literal::Decimal(self.decimal(s, span)?),
            Rule::percent_lit => {
                let d = self.decimal(s.trim_end_matches('%'), span)?;
                Literal::Percent(d)
            }
            Rule::string => Literal::Str(self.string(&p)),
            Rule::boolean => Literal::Bool(s == "true"),
            Rule::null => Literal::Null,
            Rule::duration => Literal::Duration(self.duration(&p)?.secs),
            Rule::date => Literal::Date(parse_date(s).ok_or_else(|| {
                Diagnostic::new(
                    Code::BadLiteral,
                    self.source,
                    span,
                    format!("`{s}` is not a calendar day"),
                )
                .hint("dates are YYYY-MM-DD, e.g. 2026-02-14")
            })?),
            _ => return Err(self.error(Code::Syntax, span, format!("unexpected `{s}`"))),
        })
    }
}

/// Depth of an expression tree, computed without recursion.
pub fn depth(e: &Expr) -> usize {
    depth_at_most(e, usize::MAX).unwrap_or(usize::MAX)
}

/// The depth if it is at most `limit`.
pub(super) fn depth_at_most(e: &Expr, limit: usize) -> Option<usize> {
    let mut max = 0;
    let mut stack = vec![(e, 1usize)];
    while let Some((e, d)) = stack.pop() {
        if d > limit {
            return None;
        }
        max = max.max(d);
        for_each_child(e, |c| stack.push((c, d + 1)));
    }
    Some(max)
}

pub fn for_each_child<'e>(e: &'e Expr, mut f: impl FnMut(&'e Expr)) {
    match &e.kind {
        ExprKind::Lit(_) | ExprKind::Path(_) | ExprKind::InSegment(_) => {}
        ExprKind::Neg(a) | ExprKind::Not(a) => f(a),
        ExprKind::Binary(_, a, b) => {
            f(a);
            f(b)
        }
        ExprKind::In { item, set, .. } => {
            f(item);
            f(set)
        }
        ExprKind::Between {
            value, low, high, ..
        } => {
            f(value);
            f(low);
            f(high)
        }
        ExprKind::IsNull { value, .. } => f(value),
        ExprKind::List(items) | ExprKind::Func { args: items, .. } => items.iter().for_each(f),
        ExprKind::Plugin(c) => c.args.iter().for_each(f),
        ExprKind::Aggregate(a) => {
            if let Some(filter) = &a.filter {
                f(filter)
            }
        }
    }
}

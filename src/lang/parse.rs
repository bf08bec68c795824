//! Text to syntax tree: the only user of pest. Owns the limits that keep
//! hostile input from exhausting the stack (bracket nesting, operator chains,
//! expression depth) and turns pest's errors into E11x diagnostics. It does
//! not know which names exist; that is the checker's job.

use super::ast::*;
use crate::diag::{Code, Diagnostic, SourceId, Span, line_col};
use pest::Parser;
use pest::error::InputLocation;
use pest::iterators::Pair;
use rust_decimal::Decimal;
use std::str::FromStr;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/nudge.pest"]
struct Grammar;

/// Brackets (`(`, `[`) may nest this deep. The grammar recurses once per
/// bracket, and so do the checker and compiler; 32 is far beyond any real
/// rule and far below what a 2 MiB thread stack can take.
pub const MAX_NESTING: usize = 32;
/// Depth of an expression tree (operators applied to operators). A chain
/// like `a + b + c` is a left-deep tree, so this also bounds chain length.
pub const MAX_DEPTH: usize = 128;
/// Repeated `not` or unary `-` in a row.
const MAX_PREFIX: usize = 8;

/// Where each byte of a parsed text sits in its file. Rule files map to
/// themselves; a YAML value maps into the YAML file around it.
pub enum Offsets<'a> {
    Identity,
    Table(&'a [usize]),
}

impl Offsets<'_> {
    fn map(&self, i: usize) -> usize {
        match self {
            Offsets::Identity => i,
            Offsets::Table(t) => t.get(i).or(t.last()).copied().unwrap_or(0),
        }
    }
}

struct Builder<'a> {
    source: SourceId,
    text: &'a str,
    offsets: Offsets<'a>,
    diags: Vec<Diagnostic>,
}

type Res<T> = Result<T, Diagnostic>;

/// Parses a whole `.rules` file. `stem` names its bare rules (`stem:line`).
/// Syntax errors stop the file; other errors (a bad date, a repeated clause)
/// are collected and the rest of the file is still built.
pub fn parse_file(source: SourceId, text: &str, stem: &str) -> (RuleFile, Vec<Diagnostic>) {
    let mut b = Builder::new(source, text, Offsets::Identity);
    let mut file = RuleFile {
        source,
        rules: Vec::new(),
    };
    if let Err(d) = b.prescan() {
        return (file, vec![d]);
    }
    let pairs = match Grammar::parse(Rule::file, text) {
        Ok(mut p) => p.next().map(|p| p.into_inner()),
        Err(e) => return (file, vec![b.syntax_error(e)]),
    };
    for pair in pairs.into_iter().flatten() {
        match pair.as_rule() {
            Rule::rule_block | Rule::bare_rule => match b.rule(pair, stem) {
                Ok(r) => file.rules.push(r),
                Err(d) => b.diags.push(d),
            },
            _ => {}
        }
    }
    (file, b.diags)
}

/// The pieces of a rule that a YAML rule file gives as separate values.
pub enum Fragment {
    Expr(Expr),
    Actions(Vec<Action>),
    On(Vec<Ident>),
    Limit(Limit),
    Holdout(Holdout),
    Budget(Budget),
}

#[derive(Clone, Copy, Debug)]
pub enum FragmentKind {
    Expr,
    Actions,
    On,
    Limit,
    Holdout,
    Budget,
}

/// Parses one YAML value as the rule piece `kind`; spans map into the YAML
/// file through `offsets`.
pub fn parse_fragment(
    kind: FragmentKind,
    source: SourceId,
    text: &str,
    offsets: Offsets<'_>,
) -> Result<Fragment, Vec<Diagnostic>> {
    let mut b = Builder::new(source, text, offsets);
    b.prescan().map_err(|d| vec![d])?;
    let rule = match kind {
        FragmentKind::Expr => Rule::yaml_expr,
        FragmentKind::Actions => Rule::yaml_actions,
        FragmentKind::On => Rule::yaml_on,
        FragmentKind::Limit => Rule::yaml_limit,
        FragmentKind::Holdout => Rule::yaml_holdout,
        FragmentKind::Budget => Rule::yaml_budget,
    };
    let mut pairs = Grammar::parse(rule, text).map_err(|e| vec![b.syntax_error(e)])?;
    let inner = pairs
        .next()
        .and_then(|p| p.into_inner().next())
        .ok_or_else(|| vec![b.error(Code::Syntax, Span::new(0, 0), "nothing to parse")])?;
    let frag = match kind {
        FragmentKind::Expr => b.expr(inner, 0).map(Fragment::Expr),
        FragmentKind::Actions => b.actions(inner).map(Fragment::Actions),
        FragmentKind::On => Ok(Fragment::On(b.idents(inner))),
        FragmentKind::Limit => b.limit(inner).map(Fragment::Limit),
        FragmentKind::Holdout => b.holdout(inner).map(Fragment::Holdout),
        FragmentKind::Budget => b.budget(inner).map(Fragment::Budget),
    };
    match frag {
        Ok(f) if b.diags.is_empty() => Ok(f),
        Ok(_) => Err(b.diags),
        Err(d) => {
            b.diags.push(d);
            Err(b.diags)
        }
    }
}

impl<'a> Builder<'a> {
    fn new(source: SourceId, text: &'a str, offsets: Offsets<'a>) -> Self {
        Builder {
            source,
            text,
            offsets,
            diags: Vec::new(),
        }
    }

    /// A pair's span, without the whitespace and comments pest lets a
    /// trailing optional element swallow.
    fn span(&self, s: pest::Span<'_>) -> Span {
        let end = s.start() + content_len(s.as_str());
        Span::new(self.offsets.map(s.start()), self.offsets.map(end))
    }

    fn error(&self, code: Code, local: Span, msg: impl Into<String>) -> Diagnostic {
        let span = Span::new(self.offsets.map(local.start), self.offsets.map(local.end));
        Diagnostic::new(code, self.source, span, msg)
    }

    /// Rejects bracket nesting beyond [`MAX_NESTING`] before pest sees the
    /// text: pest recurses per bracket and would overflow the stack first.
    fn prescan(&self) -> Res<()> {
        let mut depth = 0usize;
        let mut in_str = false;
        let mut in_comment = false;
        let mut escaped = false;
        for (i, c) in self.text.char_indices() {
            if in_comment {
                in_comment = c != '\n';
            } else if in_str {
                in_str = escaped || c != '"';
                escaped = !escaped && c == '\\';
            } else {
                match c {
                    '#' => in_comment = true,
                    '"' => in_str = true,
                    '(' | '[' => {
                        depth += 1;
                        if depth > MAX_NESTING {
                            return Err(self
                                .error(
                                    Code::TooDeep,
                                    Span::new(i, i + 1),
                                    format!("brackets nest more than {MAX_NESTING} deep"),
                                )
                                .label("too deep")
                                .hint("split the condition into simpler parts"));
                        }
                    }
                    ')' | ']' => depth = depth.saturating_sub(1),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn syntax_error(&self, e: pest::error::Error<Rule>) -> Diagnostic {
        let mut pos = match e.location {
            InputLocation::Pos(p) => p,
            InputLocation::Span((s, _)) => s,
        };
        // Point at the next token, not at the whitespace before it.
        while self.text[pos.min(self.text.len())..].starts_with(char::is_whitespace) {
            pos += self.text[pos..].chars().next().map_or(1, char::len_utf8);
        }
        // Only whitespace and comments left: point just after the last token.
        let rest = self.text.get(pos..).unwrap_or("");
        let found = if content_len(rest) == 0 {
            pos = content_len(&self.text[..pos.min(self.text.len())]);
            None
        } else {
            found_at(self.text, pos)
        };
        let expected = match &e.variant {
            pest::error::ErrorVariant::ParsingError { positives, .. } => expected_list(positives),
            pest::error::ErrorVariant::CustomError { message } => message.clone(),
        };
        if found.as_deref() == Some("\"")
            && let Some((at, esc)) = bad_escape(&self.text[pos + 1..])
        {
            let at = pos + 1 + at;
            return self
                .error(
                    Code::Syntax,
                    Span::new(at, at + esc.len()),
                    format!("unknown escape `{esc}` in a string"),
                )
                .label("not an escape")
                .hint(ESCAPES);
        }
        let end = pos + found.as_ref().map_or(0, |f| f.len());
        let (msg, label) = match &found {
            Some(f) => (format!("unexpected `{f}`"), format!("expected {expected}")),
            None => (
                "unexpected end of input".to_string(),
                format!("expected {expected}"),
            ),
        };
        let d = self
            .error(Code::Syntax, Span::new(pos, end), msg)
            .label(label);
        d.maybe_hint(syntax_hint(self.text, pos, found.as_deref()))
    }

    fn rule(&mut self, pair: Pair<'_, Rule>, stem: &str) -> Res<super::ast::Rule> {
        let bare = pair.as_rule() == Rule::bare_rule;
        let whole = self.span(pair.as_span());
        let mut inner = pair.into_inner().peekable();
        let (name, name_span) = if bare {
            let (line, _) = line_col(self.text, pair_start(&mut inner));
            (
                format!("{stem}:{line}"),
                Span::new(whole.start, whole.start),
            )
        } else {
            let kw = inner.next();
            let s = inner.next();
            let _ = kw;
            match s {
                Some(s) => (self.string(&s), self.span(s.as_span())),
                None => return Err(self.error(Code::Syntax, whole, "rule without a name")),
            }
        };
        let mut rule = super::ast::Rule::named(name, name_span);
        rule.span = whole;
        let mut seen: Vec<(Rule, Span)> = Vec::new();
        for clause in inner {
            let which = clause.as_rule();
            let span = self.span(clause.as_span());
            if let Some((_, first)) = seen.iter().find(|(r, _)| *r == which) {
                let (line, _) = line_col(self.text, first.start);
                let kw = clause.as_str().split_whitespace().next().unwrap_or("");
                let hint = if which == Rule::when_clause {
                    "combine the conditions with `and`, or start a new rule with `rule \"name\"`"
                        .to_string()
                } else {
                    format!("the first `{kw}` is on line {line}; keep one")
                };
                self.diags.push(
                    self.error(
                        Code::DuplicateClause,
                        Span::new(span.start, span.start + kw.len()),
                        format!("rule \"{}\" has `{kw}` twice", rule.name),
                    )
                    .label("second one")
                    .hint(hint),
                );
                continue;
            }
            seen.push((which, span));
            let body = clause.into_inner().nth(1);
            let Some(body) = body else { continue };
            match which {
                Rule::on_clause => rule.on = Some(self.idents(body)),
                Rule::when_clause => rule.when = Some(self.expr(body, 0)?),
                Rule::then_clause => {
                    rule.then_span = Some(self.span(body.as_span()));
                    rule.then = self.actions(body)?;
                }
                Rule::limit_clause => rule.limit = Some(self.limit(body)?),
                Rule::holdout_clause => rule.holdout = Some(self.holdout(body)?),
                Rule::priority_clause => {
                    let s = self.span(body.as_span());
                    let v = body.as_str().parse::<i64>().map_err(|_| {
                        self.error(Code::BadLiteral, s, "priority is out of range")
                            .hint("use a number between -1000000 and 1000000")
                    })?;
                    rule.priority = Some((v, s));
                }
                Rule::group_clause => {
                    rule.group = Some((self.string(&body), self.span(body.as_span())))
                }
                Rule::budget_clause => rule.budget = Some(self.budget(body)?),
                _ => {}
            }
        }
        Ok(rule)
    }

    fn idents(&self, pair: Pair<'_, Rule>) -> Vec<Ident> {
        pair.into_inner().map(|p| self.ident(&p)).collect()
    }

    fn ident(&self, p: &Pair<'_, Rule>) -> Ident {
        Ident {
            name: p.as_str().to_string(),
            span: self.span(p.as_span()),
        }
    }

    fn string(&self, p: &Pair<'_, Rule>) -> String {
        let raw = p.clone().into_inner().next().map_or("", |i| i.as_str());
        unescape(raw)
    }

    fn actions(&mut self, pair: Pair<'_, Rule>) -> Res<Vec<Action>> {
        pair.into_inner().map(|a| self.action(a)).collect()
    }

    fn action(&mut self, pair: Pair<'_, Rule>) -> Res<Action> {
        let span = self.span(pair.as_span());
        let which = pair.as_rule();
        let parts: Vec<Pair<'_, Rule>> = pair.into_inner().collect();
        // Keyword pairs come first; the payload follows.
        let payload: Vec<Pair<'_, Rule>> = parts
            .into_iter()
            .filter(|p| !is_keyword(p.as_rule()))
            .collect();
        let via = |b: &Self, ps: &[Pair<'_, Rule>]| {
            ps.iter()
                .find(|p| p.as_rule() == Rule::via)
                .and_then(|v| v.clone().into_inner().nth(1))
                .map(|i| b.ident(&i))
        };
        let first = payload
            .first()
            .cloned()
            .ok_or_else(|| self.error(Code::Syntax, span, "incomplete action"))?;
        let kind = match which {
            Rule::send_coupon => {
                let coupon_span = self.span(first.as_span());
                let coupon = match first.as_rule() {
                    Rule::coupon_lit => self.coupon_lit(&first)?,
                    Rule::string => CouponRef::Template(self.string(&first)),
                    _ => CouponRef::Template(first.as_str().to_string()),
                };
                ActionKind::Coupon {
                    coupon,
                    coupon_span,
                    via: via(self, &payload),
                }
            }
            Rule::send_message => ActionKind::Message {
                template: if first.as_rule() == Rule::string {
                    self.string(&first)
                } else {
                    first.as_str().to_string()
                },
                via: via(self, &payload),
            },
            Rule::award_points | Rule::deduct_points => ActionKind::Points {
                deduct: which == Rule::deduct_points,
                amount: self.expr(first, 0)?,
            },
            Rule::set_action => {
                let value = payload
                    .get(1)
                    .cloned()
                    .ok_or_else(|| self.error(Code::Syntax, span, "`set` needs a value"))?;
                ActionKind::Set {
                    target: self.ident(&first),
                    value: self.expr(value, 0)?,
                }
            }
            Rule::tag_action | Rule::untag_action => ActionKind::Tag {
                tag: self.string(&first),
                untag: which == Rule::untag_action,
            },
            Rule::call_action => ActionKind::Call {
                call: self.plugin_call(first, 0)?,
            },
            _ => return Err(self.error(Code::Syntax, span, "unknown action")),
        };
        let to = match payload.iter().find(|p| p.as_rule() == Rule::to_member) {
            Some(t) => match t.clone().into_inner().nth(1) {
                Some(e) => Some(self.expr(e, 0)?),
                None => None,
            },
            None => None,
        };
        Ok(Action { kind, to, span })
    }

    fn coupon_lit(&self, p: &Pair<'_, Rule>) -> Res<CouponRef> {
        let s = self.span(p.as_span());
        let (a, b) = p.as_str().split_once('-').unwrap_or((p.as_str(), "0"));
        let threshold = self.decimal(a, s)?;
        let discount = self.decimal(b, s)?;
        if discount.is_zero() || (!threshold.is_zero() && discount >= threshold) {
            return Err(self
                .error(
                    Code::BadLiteral,
                    s,
                    format!(
                        "coupon `{}` saves {discount} on a spend of {threshold}",
                        p.as_str()
                    ),
                )
                .label("not a real threshold coupon")
                .hint("write spend-save with the saving below the spend, e.g. `30-6`"));
        }
        Ok(CouponRef::Literal {
            threshold,
            discount,
        })
    }

    fn limit(&self, p: Pair<'_, Rule>) -> Res<Limit> {
        let span = self.span(p.as_span());
        let mut count = 1u32;
        let mut per = None;
        for part in p.into_inner() {
            match part.as_rule() {
                Rule::int => {
                    let s = self.span(part.as_span());
                    count = part.as_str().parse().unwrap_or(0);
                    if count == 0 {
                        return Err(self
                            .error(Code::BadClause, s, "a limit must allow at least one firing")
                            .hint("to switch a rule off, delete it or comment it out with `#`"));
                    }
                }
                Rule::duration => per = Some(self.duration(&part)?),
                _ => {}
            }
        }
        if let Some(d) = per
            && d.secs <= 0
        {
            return Err(self.error(
                Code::BadClause,
                d.span,
                "a limit window must be longer than zero",
            ));
        }
        Ok(Limit { count, per, span })
    }

    fn holdout(&self, p: Pair<'_, Rule>) -> Res<Holdout> {
        let span = self.span(p.as_span());
        let percent = self.decimal(p.as_str().trim_end_matches('%'), span)?;
        if percent >= Decimal::from(100) {
            return Err(self
                .error(
                    Code::BadClause,
                    span,
                    format!("holdout {percent}% leaves nobody to treat"),
                )
                .hint("a holdout is a share below 100%, e.g. `holdout 10%`"));
        }
        Ok(Holdout { percent, span })
    }

    fn budget(&self, p: Pair<'_, Rule>) -> Res<Budget> {
        let span = self.span(p.as_span());
        let mut parts = p.into_inner();
        let amount_pair = parts.next();
        let amount = match &amount_pair {
            Some(a) => self.decimal(a.as_str(), self.span(a.as_span()))?,
            None => Decimal::ZERO,
        };
        let per = parts
            .find(|p| p.as_rule() == Rule::ident)
            .map(|i| self.ident(&i));
        if amount <= Decimal::ZERO {
            return Err(self.error(Code::BadClause, span, "a budget must be more than zero"));
        }
        if per.is_none() && amount.fract() != Decimal::ZERO {
            return Err(self
                .error(
                    Code::BadClause,
                    span,
                    "a budget without `per` counts firings, a whole number",
                )
                .hint("for a money budget, give a period: `budget 30000 per month`"));
        }
        Ok(Budget { amount, per, span })
    }

    fn decimal(&self, s: &str, span: Span) -> Res<Decimal> {
        Decimal::from_str(s).map_err(|_| {
            Diagnostic::new(
                Code::BadLiteral,
                self.source,
                span,
                format!("`{s}` is too large"),
            )
            .hint("numbers have at most 28 significant digits")
        })
    }

    fn duration(&self, p: &Pair<'_, Rule>) -> Res<Duration> {
        let span = self.span(p.as_span());
        let s = p.as_str();
        let (n, unit) = s.split_at(s.len() - 1);
        let unit_secs = match unit {
            "h" => 3_600,
            "d" => 86_400,
            _ => 604_800,
        };
        // Ten years is longer than any marketing window and keeps sums in range.
        match n.parse::<i64>() {
            Ok(n) if n * unit_secs <= 3_660 * 86_400 => Ok(Duration {
                secs: n * unit_secs,
                span,
            }),
            _ => Err(Diagnostic::new(
                Code::BadLiteral,
                self.source,
                span,
                format!("duration `{s}` is longer than ten years"),
            )
            .hint("windows and limits go up to 3660d")),
        }
    }

    // ------------------------------------------------------- expressions

    fn expr(&mut self, pair: Pair<'_, Rule>, nest: usize) -> Res<Expr> {
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

    fn expr_inner(&mut self, pair: Pair<'_, Rule>, nest: usize) -> Res<Expr> {
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

    fn args(&mut self, pair: Pair<'_, Rule>, nest: usize) -> Res<Vec<Expr>> {
        pair.into_inner()
            .map(|p| self.expr_inner(p, nest + 1))
            .collect()
    }

    fn plugin_call(&mut self, pair: Pair<'_, Rule>, nest: usize) -> Res<PluginCall> {
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
    fn chain(&mut self, pair: Pair<'_, Rule>, nest: usize) -> Res<Expr> {
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

    fn comparison(&mut self, pair: Pair<'_, Rule>, nest: usize) -> Res<Expr> {
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

    fn aggregate(&mut self, pair: Pair<'_, Rule>, nest: usize) -> Res<Expr> {
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
        let (Some(event), Some(window)) = (idents.next(), window) else {
            return Err(self.error(Code::Syntax, span, "incomplete aggregate"));
        };
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

    fn literal(&self, p: Pair<'_, Rule>) -> Res<Literal> {
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
                Literal::Decimal(d / Decimal::ONE_HUNDRED)
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

/// Length of `text` up to its last character that is neither whitespace
/// nor inside a `#` comment.
fn content_len(text: &str) -> usize {
    let (mut end, mut in_str, mut in_comment, mut escaped) = (0, false, false, false);
    for (i, c) in text.char_indices() {
        if in_comment {
            in_comment = c != '\n';
        } else if in_str {
            in_str = escaped || c != '"';
            escaped = !escaped && c == '\\';
            end = i + c.len_utf8();
        } else if c == '#' {
            in_comment = true;
        } else if !c.is_whitespace() {
            in_str = c == '"';
            end = i + c.len_utf8();
        }
    }
    end
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` text, if it is a real day.
pub fn parse_date(s: &str) -> Option<i32> {
    let d: jiff::civil::Date = s.parse().ok()?;
    let epoch = jiff::civil::date(1970, 1, 1);
    Some((d - epoch).get_days())
}

fn pair_start(it: &mut std::iter::Peekable<pest::iterators::Pairs<'_, Rule>>) -> usize {
    it.peek().map_or(0, |p| p.as_span().start())
}

fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                // `\u{4f60}`: the grammar allows 1 to 6 hex digits.
                Some('u') => {
                    let hex: String = chars.by_ref().skip(1).take_while(|c| *c != '}').collect();
                    let c = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                    out.push(c.unwrap_or(char::REPLACEMENT_CHARACTER));
                }
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

const ESCAPES: &str =
    "strings know the escapes \\\", \\\\, \\n, \\t and \\u{4f60} (any character by its hex code)";

/// The first escape the grammar does not know in a string's text (after
/// its opening quote): its offset and the escape as written.
fn bad_escape(rest: &str) -> Option<(usize, String)> {
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' | '\n' => return None,
            '\\' => {
                let next = chars.next().map(|(_, n)| n);
                let ok = match next {
                    Some('"' | '\\' | 'n' | 't') => true,
                    Some('u') => rest[i + 2..].starts_with('{'),
                    _ => false,
                };
                if !ok {
                    let esc: String = rest[i..].chars().take(2).collect();
                    return Some((i, esc));
                }
            }
            _ => {}
        }
    }
    None
}

/// A hint naming a character that looks like punctuation but is not the
/// ASCII the language uses (full-width forms from Chinese input methods,
/// curly quotes from word processors), with what to write instead.
fn unusual_char(c: char) -> Option<String> {
    if c.is_ascii() {
        return None;
    }
    let (name, ascii) = match c {
        '\u{FF0C}' => ("FULLWIDTH COMMA", ","),
        '\u{3001}' => ("IDEOGRAPHIC COMMA", ","),
        '\u{3002}' => ("IDEOGRAPHIC FULL STOP", "."),
        '\u{FF0E}' => ("FULLWIDTH FULL STOP", "."),
        '\u{FF08}' => ("FULLWIDTH LEFT PARENTHESIS", "("),
        '\u{FF09}' => ("FULLWIDTH RIGHT PARENTHESIS", ")"),
        '\u{FF1A}' => ("FULLWIDTH COLON", ":"),
        '\u{FF1B}' => ("FULLWIDTH SEMICOLON", ";"),
        '\u{FF1D}' => ("FULLWIDTH EQUALS SIGN", "="),
        '\u{FF1E}' => ("FULLWIDTH GREATER-THAN SIGN", ">"),
        '\u{FF1C}' => ("FULLWIDTH LESS-THAN SIGN", "<"),
        '\u{FF05}' => ("FULLWIDTH PERCENT SIGN", "%"),
        '\u{FF0B}' => ("FULLWIDTH PLUS SIGN", "+"),
        '\u{FF0D}' => ("FULLWIDTH HYPHEN-MINUS", "-"),
        '\u{FF0A}' => ("FULLWIDTH ASTERISK", "*"),
        '\u{FF0F}' => ("FULLWIDTH SOLIDUS", "/"),
        '\u{FF02}' => ("FULLWIDTH QUOTATION MARK", "\""),
        '\u{201C}' => ("LEFT DOUBLE QUOTATION MARK", "\""),
        '\u{201D}' => ("RIGHT DOUBLE QUOTATION MARK", "\""),
        '\u{2018}' => ("LEFT SINGLE QUOTATION MARK", "\""),
        '\u{2019}' => ("RIGHT SINGLE QUOTATION MARK", "\""),
        '\u{FEFF}' => ("ZERO WIDTH NO-BREAK SPACE (a byte-order mark)", " "),
        '\u{200B}' => ("ZERO WIDTH SPACE", " "),
        _ => {
            return Some(format!(
                "`{c}` (U+{:04X}) is not part of the rule language here; names may use letters of any script, but operators and punctuation are ASCII",
                c as u32
            ));
        }
    };
    Some(format!(
        "`{c}` is U+{:04X} {name} (an input method or word processor typed it); write `{ascii}` instead",
        c as u32
    ))
}

/// Depth of an expression tree, computed without recursion.
pub fn depth(e: &Expr) -> usize {
    depth_at_most(e, usize::MAX).unwrap_or(usize::MAX)
}

/// The depth if it is at most `limit`.
fn depth_at_most(e: &Expr, limit: usize) -> Option<usize> {
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
        ExprKind::Lit(_) | ExprKind::Path(_) => {}
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

/// The word or character at `pos`, for "unexpected `...`".
fn found_at(text: &str, pos: usize) -> Option<String> {
    let rest = text.get(pos..)?;
    let mut chars = rest.chars();
    let first = chars.next()?;
    if first.is_alphanumeric() || first == '_' {
        let word: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
            .take(40)
            .collect();
        Some(word)
    } else {
        Some(first.to_string())
    }
}

fn is_keyword(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::kw_send
            | Rule::kw_coupon
            | Rule::kw_message
            | Rule::kw_award
            | Rule::kw_deduct
            | Rule::kw_points
            | Rule::kw_set
            | Rule::kw_tag
            | Rule::kw_untag
            | Rule::kw_call
    )
}

fn friendly(rule: &Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::rule_block | Rule::kw_rule => "`rule \"name\"`",
        Rule::bare_rule | Rule::when_clause | Rule::kw_when => "`when`",
        Rule::then_clause | Rule::kw_then => "`then`",
        Rule::on_clause | Rule::kw_on => "`on`",
        Rule::limit_clause | Rule::kw_limit => "`limit`",
        Rule::holdout_clause | Rule::kw_holdout => "`holdout`",
        Rule::priority_clause | Rule::kw_priority => "`priority`",
        Rule::group_clause | Rule::kw_group => "`group`",
        Rule::budget_clause | Rule::kw_budget => "`budget`",
        Rule::expr
        | Rule::or_expr
        | Rule::and_expr
        | Rule::not_expr
        | Rule::cmp_expr
        | Rule::arith
        | Rule::term
        | Rule::unary
        | Rule::paren
        | Rule::list
        | Rule::path
        | Rule::aggregate
        | Rule::plugin_call
        | Rule::func_call
        | Rule::literal => "a value",
        Rule::cmp_op | Rule::cmp_tail => "a comparison",
        Rule::add_op | Rule::mul_op => "an operator",
        Rule::kw_and => "`and`",
        Rule::kw_or => "`or`",
        Rule::in_tail | Rule::kw_in => "`in`",
        Rule::null_tail | Rule::kw_is => "`is`",
        Rule::between_tail | Rule::kw_between => "`between`",
        Rule::action
        | Rule::action_list
        | Rule::send_coupon
        | Rule::send_message
        | Rule::award_points
        | Rule::deduct_points
        | Rule::set_action
        | Rule::tag_action
        | Rule::untag_action
        | Rule::call_action
        | Rule::kw_send
        | Rule::kw_award
        | Rule::kw_deduct
        | Rule::kw_set
        | Rule::kw_tag
        | Rule::kw_untag
        | Rule::kw_call => "an action",
        Rule::kw_coupon => "`coupon`",
        Rule::kw_message => "`message`",
        Rule::kw_points => "`points`",
        Rule::coupon_lit => "a coupon like `30-6`",
        Rule::string | Rule::str_inner => "a quoted string",
        Rule::ident | Rule::trigger_list => "a name",
        Rule::duration => "a duration like `30d`",
        Rule::int | Rule::signed_int | Rule::number | Rule::decimal => "a number",
        Rule::percent => "a percentage like `10%`",
        Rule::limit_spec | Rule::kw_once => "`once` or a number",
        Rule::kw_per => "`per`",
        Rule::via | Rule::kw_via => "`via`",
        Rule::kw_where => "`where`",
        Rule::kw_not => "`not`",
        Rule::kw_null => "`null`",
        Rule::date => "a date",
        Rule::boolean => "true or false",
        Rule::EOI => "end of input",
        _ => return None,
    })
}

fn expected_list(rules: &[Rule]) -> String {
    let mut names: Vec<&str> = rules.iter().filter_map(friendly).collect();
    names.dedup();
    let mut uniq: Vec<&str> = Vec::new();
    for n in names {
        if !uniq.contains(&n) {
            uniq.push(n);
        }
    }
    match uniq.len() {
        0 => "something else".to_string(),
        1 => uniq[0].to_string(),
        n => format!("{} or {}", uniq[..n - 1].join(", "), uniq[n - 1]),
    }
}

/// Hints for the mistakes people actually make.
fn syntax_hint(text: &str, pos: usize, found: Option<&str>) -> Option<String> {
    if let Some(hint) = found.and_then(|f| f.chars().next()).and_then(unusual_char) {
        return Some(hint);
    }
    let before = text.get(..pos).unwrap_or("").trim_end();
    let last_word = before
        .rsplit(|c: char| c.is_whitespace())
        .next()
        .unwrap_or("");
    let open = before
        .matches('(')
        .count()
        .saturating_sub(before.matches(')').count());
    if open > 0
        && matches!(
            found,
            None | Some(
                "then"
                    | "limit"
                    | "on"
                    | "holdout"
                    | "priority"
                    | "group"
                    | "budget"
                    | "rule"
                    | "when"
            )
        )
    {
        return Some("a `(` is not closed: add `)`".into());
    }
    let clause = before
        .rsplit([' ', '\n'])
        .take_while(|w| !matches!(*w, "when" | "and" | "or" | "not"))
        .any(|w| matches!(w, "<" | ">" | "<=" | ">=" | "==" | "!="));
    if clause && found.is_some_and(|f| f.starts_with(['<', '>', '=', '!'])) {
        return Some("comparisons do not chain: write `1 < points and points < 100`".into());
    }
    if matches!(last_word, "and" | "or" | "not")
        && let Some(w) = found
        && super::KEYWORDS.contains(&w)
    {
        return Some(format!("`{last_word}` needs a condition after it"));
    }
    if let Some(w) = found
        && let Some(n) = w.strip_suffix(['y', 'm'])
        && !n.is_empty()
        && n.chars().all(|c| c.is_ascii_digit())
    {
        let (unit, days) = if w.ends_with('y') {
            ("years", 365)
        } else {
            ("months", 30)
        };
        let n: i64 = n.parse().unwrap_or(1);
        return Some(format!(
            "durations are in days, hours or weeks (`d`, `h`, `w`); for {unit} write days: `{}d`",
            n.saturating_mul(days)
        ));
    }
    match found {
        Some("coupon" | "points" | "message") if last_word == "then" || last_word.ends_with(',') => {
            Some("actions start with a verb: `send coupon 30-6`, `award points 10`, `send message \"hi\" via sms`".into())
        }
        Some("=") => Some("compare with `==`; `=` only appears in `set ATTR = value`".into()),
        Some("&" | "|" | "!") => Some("write `and`, `or`, `not`".into()),
        Some("'") => Some("strings use double quotes: \"winback\"".into()),
        Some(w) if w.chars().next().is_some_and(|c| c.is_ascii_digit()) && last_word.chars().all(|c| c.is_ascii_digit()) => {
            Some("durations are written without a space: `30d`".into())
        }
        None if last_word == "then" || last_word == "when" => Some(format!("`{last_word}` needs something after it")),
        _ if last_word == "when" || last_word == "rule" => None,
        Some(w) if super::KEYWORDS.contains(&w) => Some(format!("`{w}` is a keyword and cannot be used as a name")),
        _ => None,
    }
}

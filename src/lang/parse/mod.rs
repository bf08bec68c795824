//! Text to syntax tree: the only user of pest. Owns the limits that keep
//! hostile input from exhausting the stack (bracket nesting, operator chains,
//! expression depth) and turns pest's errors into E11x diagnostics. It does
//! not know which names exist; that is the checker's job.

mod errors;
mod expr;

use super::ast::*;
use crate::base::diag::{Code, Diagnostic, SourceId, Span, line_col};
use errors::*;
pub use expr::{depth, for_each_child};
use pest::Parser;
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
            Rule::rule_block | Rule::bare_rule | Rule::segment_block => match b.rule(pair, stem) {
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
    Active(Active),
}

#[derive(Clone, Copy, Debug)]
pub enum FragmentKind {
    Expr,
    Actions,
    On,
    Limit,
    Holdout,
    Budget,
    Active,
    /// A variant's share (`45%`), given as a `Holdout` fragment.
    Share,
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
        FragmentKind::Holdout | FragmentKind::Share => Rule::yaml_holdout,
        FragmentKind::Budget => Rule::yaml_budget,
        FragmentKind::Active => Rule::yaml_active,
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
        FragmentKind::Share => {
            let span = b.span(inner.as_span());
            b.decimal(inner.as_str().trim_end_matches('%'), span)
                .map(|percent| Fragment::Holdout(Holdout { percent, span }))
        }
        FragmentKind::Budget => b.budget(inner).map(Fragment::Budget),
        FragmentKind::Active => b.active(inner).map(Fragment::Active),
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

    fn rule(&mut self, pair: Pair<'_, Rule>, stem: &str) -> Res<super::ast::Rule> {
        let which_item = pair.as_rule();
        let bare = which_item == Rule::bare_rule;
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
        rule.segment = which_item == Rule::segment_block;
        let mut seen: Vec<(Rule, Span)> = Vec::new();
        for clause in inner {
            let which = clause.as_rule();
            let span = self.span(clause.as_span());
            if which == Rule::variant_clause {
                rule.variants.push(self.variant(clause)?);
                continue;
            }
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
                Rule::active_clause => rule.active = Some(self.active(body)?),
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
        let text = pair.as_str();
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
            Rule::send_coupon if first.as_rule() == Rule::coupon_calc => {
                let mut sides = first.into_inner();
                let (Some(t), Some(d)) = (sides.next(), sides.next()) else {
                    return Err(self.error(Code::Syntax, span, "incomplete coupon"));
                };
                ActionKind::Voucher {
                    threshold: Some(self.expr(t, 0)?),
                    discount: self.expr(d, 0)?,
                    via: via(self, &payload),
                }
            }
            Rule::send_voucher => ActionKind::Voucher {
                threshold: None,
                discount: self.expr(first, 0)?,
                via: via(self, &payload),
            },
            Rule::wallet_action => ActionKind::Wallet {
                debit: text.trim_start().starts_with("debit"),
                amount: self.expr(first, 0)?,
            },
            Rule::reward_action => ActionKind::Reward {
                name: self.expr(first, 0)?,
            },
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

    /// `variant "A" 45% then ...`.
    fn variant(&mut self, p: Pair<'_, Rule>) -> Res<Variant> {
        let span = self.span(p.as_span());
        let mut name = None;
        let mut share = None;
        let mut then = None;
        for part in p.into_inner() {
            match part.as_rule() {
                Rule::string => name = Some((self.string(&part), self.span(part.as_span()))),
                Rule::percent => {
                    let s = self.span(part.as_span());
                    share = Some((self.decimal(part.as_str().trim_end_matches('%'), s)?, s));
                }
                Rule::then_clause => then = part.into_inner().nth(1),
                _ => {}
            }
        }
        let (Some((name, name_span)), Some((percent, percent_span)), Some(body)) =
            (name, share, then)
        else {
            return Err(self.error(Code::Syntax, span, "incomplete variant"));
        };
        Ok(Variant {
            name,
            name_span,
            percent,
            percent_span,
            then_span: self.span(body.as_span()),
            then: self.actions(body)?,
        })
    }

    /// `2026-02-01 to 2026-02-14`.
    fn active(&self, p: Pair<'_, Rule>) -> Res<Active> {
        let span = self.span(p.as_span());
        let mut days = Vec::new();
        for part in p.into_inner().filter(|d| d.as_rule() == Rule::date) {
            match self.literal(part)? {
                Literal::Date(d) => days.push(d),
                _ => return Err(self.error(Code::Syntax, span, "expected a date")),
            }
        }
        let [from, to] = days[..] else {
            return Err(self.error(Code::Syntax, span, "expected two dates"));
        };
        if to < from {
            return Err(self
                .error(Code::BadClause, span, "the campaign ends before it starts")
                .hint("write the first day first: `active 2026-02-01 to 2026-02-14`"));
        }
        Ok(Active { from, to, span })
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

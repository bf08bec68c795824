//! The tests a rule's condition is made of, as `nudge explain` shows
//! them: each comparison, `in`, `is null` or other leaf under `and`, `or`
//! and `not`, with its text and operands. Owns how a condition is cut into
//! tests; not how they are evaluated (`program`) or shown (`sim::explain`).

use super::check::{TExpr, TKind};
use super::program::{AnyCode, BoolCode, Cmp};

/// One test of a condition (a comparison, `in`, `is null`, a tag, a
/// boolean field or plugin), as `nudge explain` shows it: its source text,
/// its code, and its operands' texts and codes.
#[derive(Debug)]
pub struct Term {
    pub text: String,
    pub test: BoolCode,
    /// The comparison's operator, when the term is one.
    pub cmp: Option<Cmp>,
    pub operands: Vec<(String, AnyCode)>,
}

/// The tests a condition is made of (under `and`, `or` and `not`), each
/// with its code and its operands' made by `compile`'s makers.
pub(super) fn terms(
    cond: Option<&TExpr>,
    source: &str,
    bool_code: fn(&TExpr) -> BoolCode,
    any_code: fn(&TExpr) -> AnyCode,
) -> Vec<Term> {
    let text = |e: &TExpr| {
        source
            .get(e.span.start..e.span.end)
            .unwrap_or("?")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = Vec::new();
    let mut stack: Vec<&TExpr> = cond.into_iter().collect();
    while let Some(e) = stack.pop() {
        let (cmp, operands) = match &e.kind {
            TKind::And(a, b) | TKind::Or(a, b) if !written_as_one(e) => {
                stack.push(b);
                stack.push(a);
                continue;
            }
            TKind::Not(a) if !written_as_one(e) => {
                stack.push(a);
                continue;
            }
            _ => shape(e),
        };
        out.push(Term {
            text: text(e),
            test: bool_code(e),
            cmp,
            operands: operands
                .into_iter()
                .map(|o| (text(o), any_code(o)))
                .collect(),
        });
    }
    out
}

/// `is not null`, `not in` and `between` are checked into `not` and `and`
/// nodes that span the whole test as written: one test, not its parts.
fn written_as_one(e: &TExpr) -> bool {
    match &e.kind {
        TKind::And(a, _) | TKind::Or(a, _) | TKind::Not(a) => a.span == e.span,
        _ => false,
    }
}

/// A test's comparison (shown as `a > b`) and the operands whose values
/// explain it (for `between`, the value tested).
fn shape(e: &TExpr) -> (Option<Cmp>, Vec<&TExpr>) {
    match &e.kind {
        TKind::Cmp(op, a, b) => (Some(*op), vec![a, b]),
        TKind::In(a, _) | TKind::IsNull(a) => (None, vec![a]),
        TKind::Not(a) if written_as_one(e) => (None, shape(a).1),
        TKind::And(a, _) if written_as_one(e) => (None, shape(a).1.into_iter().take(1).collect()),
        _ => (None, vec![e]),
    }
}

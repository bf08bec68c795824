//! pest's errors as E11x diagnostics: what was expected in words, what
//! was found, and a hint for the usual mistakes (unusual characters,
//! unknown escapes, keywords as names).

use super::Rule;
use super::*;
use crate::base::diag::{Code, Diagnostic, Span};
use pest::error::InputLocation;

impl Builder<'_> {
    pub(super) fn syntax_error(&self, e: pest::error::Error<Rule>) -> Diagnostic {
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
}

/// The word or character at `pos`, for "unexpected `...`".
pub(super) fn found_at(text: &str, pos: usize) -> Option<String> {
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

pub(super) fn is_keyword(rule: Rule) -> bool {
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
            | Rule::kw_voucher
            | Rule::kw_credit
            | Rule::kw_debit
            | Rule::kw_wallet
            | Rule::kw_redeem
            | Rule::kw_reward
    )
}

pub(super) fn friendly(rule: &Rule) -> Option<&'static str> {
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
        Rule::active_clause | Rule::kw_active => "`active`",
        Rule::variant_clause | Rule::kw_variant => "`variant \"NAME\" 50% then ...`",
        Rule::segment_block | Rule::kw_segment => "`segment \"name\"`",
        Rule::kw_to => "`to`",
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
        | Rule::send_voucher
        | Rule::wallet_action
        | Rule::reward_action
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
        Rule::coupon_lit | Rule::coupon_calc => "a coupon like `30-6`",
        Rule::kw_wallet => "`wallet`",
        Rule::kw_reward => "`reward`",
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

pub(super) fn expected_list(rules: &[Rule]) -> String {
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
pub(super) fn syntax_hint(text: &str, pos: usize, found: Option<&str>) -> Option<String> {
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
        && crate::base::names::KEYWORDS.contains(&w)
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
    // `1 month`, `2 weeks`: a unit written out after the number.
    if let Some(w) = found
        && let Ok(n) = last_word.parse::<i64>()
    {
        let days = match w.trim_end_matches('s') {
            "year" => Some(format!("{}d", n.saturating_mul(365))),
            "month" => Some(format!("{}d", n.saturating_mul(30))),
            "week" => Some(format!("{n}w")),
            "day" => Some(format!("{n}d")),
            "hour" => Some(format!("{n}h")),
            _ => None,
        };
        if let Some(d) = days {
            return Some(format!(
                "a duration is a number and a unit letter (`d`, `h`, `w`): write `{d}`"
            ));
        }
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
        Some(w) if crate::base::names::KEYWORDS.contains(&w) => Some(format!("`{w}` is a keyword and cannot be used as a name")),
        _ => None,
    }
}

/// A hint naming a character that looks like punctuation but is not the
/// ASCII the language uses (full-width forms from Chinese input methods,
/// curly quotes from word processors), with what to write instead.
pub(super) fn unusual_char(c: char) -> Option<String> {
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

/// The first escape the grammar does not know in a string's text (after
/// its opening quote): its offset and the escape as written.
pub(super) fn bad_escape(rest: &str) -> Option<(usize, String)> {
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

pub(super) const ESCAPES: &str =
    "strings know the escapes \\\", \\\\, \\n, \\t and \\u{4f60} (any character by its hex code)";

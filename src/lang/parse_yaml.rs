//! YAML rule files: the same rules as keys, for marketers who prefer forms.
//!
//! ```yaml
//! - rule: win back late silver+
//!   on: tick
//!   when: days_since_last_purchase > cycle * 1.5 and tier >= silver
//!   then: [send coupon 30-6 via sms, tag "winback"]
//!   limit: once per 30d
//! - segment: lapsed vip
//!   when: days_since_last_purchase > 90 and tier >= gold
//! - rule: winback test
//!   when: in segment "lapsed vip"
//!   variants:
//!     - { variant: A, share: 45%, then: send coupon 30-6 }
//!     - { variant: B, share: 45%, then: send coupon 50-10 }
//!   holdout: 10%
//! ```
//!
//! Each value is parsed by the rule grammar (`parse::parse_fragment`) with
//! its spans mapped back into the YAML file. Produces the same syntax tree
//! as `.rules` files; knows nothing of names or types.

use super::ast::{Rule, RuleFile};
use super::parse::{Fragment, FragmentKind, Offsets, parse_fragment};
use crate::base::diag::{Code, Diagnostic, SourceId, Span, did_you_mean};
use crate::base::yaml::{self, MarkedScalarNode, Node, Positions};

const KEYS: &[&str] = &[
    "rule", "on", "when", "then", "variants", "limit", "holdout", "priority", "group", "budget",
    "active",
];

/// Parses a YAML rule file: a list of rules.
pub fn parse_yaml_rules(source: SourceId, text: &str) -> (RuleFile, Vec<Diagnostic>) {
    let mut file = RuleFile {
        source,
        rules: Vec::new(),
    };
    let node = match yaml::parse(text, yaml::Top::List) {
        Ok(n) => n,
        Err(e) => {
            let d = Diagnostic::new(
                Code::YamlSyntax,
                source,
                Span::char_at(text, e.offset),
                e.message,
            )
            .label("here")
            .maybe_hint(e.hint);
            return (file, vec![d]);
        }
    };
    let pos = Positions::new(text);
    let mut cx = Cx {
        source,
        text,
        pos: &pos,
        diags: Vec::new(),
        broken: false,
    };
    match &node {
        Node::Sequence(seq) => {
            for item in seq.iter() {
                if let Some(r) = cx.rule(item) {
                    file.rules.push(r);
                }
            }
        }
        other => cx.shape(
            other,
            "a YAML rule file is a list of rules",
            "start each rule with `- rule: NAME`",
        ),
    }
    (file, cx.diags)
}

struct Cx<'a> {
    source: SourceId,
    text: &'a str,
    pos: &'a Positions<'a>,
    diags: Vec<Diagnostic>,
    /// A value of the current rule did not parse: do not check the rest.
    broken: bool,
}

impl Cx<'_> {
    fn span(&self, node: &Node) -> Span {
        self.pos.span(node.span())
    }

    fn shape(&mut self, node: &Node, msg: &str, hint: &str) {
        let d = Diagnostic::new(Code::YamlShape, self.source, self.span(node), msg).hint(hint);
        self.diags.push(d);
    }

    fn scalar<'n>(&mut self, node: &'n Node, key: &str) -> Option<&'n MarkedScalarNode> {
        match node {
            Node::Scalar(s) => Some(s),
            _ => {
                self.shape(
                    node,
                    &format!("`{key}` must be a single value"),
                    "write it on one line after the key",
                );
                None
            }
        }
    }

    /// A scalar, or a list of scalars (for `on` and `then`).
    fn scalars<'n>(&mut self, node: &'n Node, key: &str) -> Vec<&'n MarkedScalarNode> {
        match node {
            Node::Scalar(s) => vec![s],
            Node::Sequence(seq) => seq.iter().filter_map(|n| self.scalar(n, key)).collect(),
            Node::Mapping(_) => {
                self.shape(
                    node,
                    &format!("`{key}` must be a value or a list of values"),
                    "write e.g. `then: [award points 10, tag \"vip\"]`",
                );
                Vec::new()
            }
        }
    }

    fn fragment(&mut self, s: &MarkedScalarNode, kind: FragmentKind) -> Option<Fragment> {
        let offsets = self.pos.scalar_offsets(s);
        match parse_fragment(kind, self.source, s.as_str(), Offsets::Table(&offsets)) {
            Ok(f) => Some(f),
            Err(ds) => {
                self.diags.extend(ds);
                self.broken = true;
                None
            }
        }
    }

    // Long because each key of a YAML rule is read in turn with its own error.
    fn rule(&mut self, item: &Node) -> Option<Rule> {
        let Node::Mapping(m) = item else {
            self.shape(
                item,
                "each rule is a mapping of keys",
                "write `- rule: NAME` and then `when:`, `then:`, ... indented below it",
            );
            return None;
        };
        let segment = m.get_node("segment");
        let Some(name_node) = m.get_node("rule").or(segment) else {
            self.shape(
                item,
                "this rule has no `rule:` name",
                "add `rule: NAME` as its first key (or `segment: NAME` for a segment)",
            );
            return None;
        };
        let name_scalar = self.scalar(name_node, "rule")?;
        let name_span = self.pos.span(name_scalar.span());
        let mut rule = Rule::named(name_scalar.as_str().to_string(), name_span);
        if segment.is_some() {
            return self.segment(m, rule);
        }
        if rule.name.trim().is_empty() {
            self.shape(
                name_node,
                "a rule name cannot be empty",
                "write `rule: NAME`",
            );
        }
        self.broken = false;
        for (key, value) in m.iter() {
            let k = key.as_str();
            match k {
                "rule" => {}
                "on" => {
                    let mut on = Vec::new();
                    for s in self.scalars(value, k) {
                        if let Some(Fragment::On(ids)) = self.fragment(s, FragmentKind::On) {
                            on.extend(ids);
                        }
                    }
                    rule.on = Some(on);
                }
                "when" => {
                    if let Some(s) = self.scalar(value, k)
                        && let Some(Fragment::Expr(e)) = self.fragment(s, FragmentKind::Expr)
                    {
                        rule.when = Some(e);
                    }
                }
                "then" => {
                    rule.then_span = Some(self.span(value));
                    for s in self.scalars(value, k) {
                        if let Some(Fragment::Actions(a)) = self.fragment(s, FragmentKind::Actions)
                        {
                            rule.then.extend(a);
                        }
                    }
                }
                "limit" => {
                    if let Some(s) = self.scalar(value, k)
                        && let Some(Fragment::Limit(l)) = self.fragment(s, FragmentKind::Limit)
                    {
                        rule.limit = Some(l);
                    }
                }
                "holdout" => {
                    if let Some(s) = self.scalar(value, k)
                        && let Some(Fragment::Holdout(h)) = self.fragment(s, FragmentKind::Holdout)
                    {
                        rule.holdout = Some(h);
                    }
                }
                "variants" => self.variants(value, &mut rule),
                "active" => {
                    if let Some(s) = self.scalar(value, k)
                        && let Some(Fragment::Active(a)) = self.fragment(s, FragmentKind::Active)
                    {
                        rule.active = Some(a);
                    }
                }
                "budget" => {
                    if let Some(s) = self.scalar(value, k)
                        && let Some(Fragment::Budget(b)) = self.fragment(s, FragmentKind::Budget)
                    {
                        rule.budget = Some(b);
                    }
                }
                "priority" => {
                    if let Some(s) = self.scalar(value, k) {
                        let span = self.pos.span(s.span());
                        match s.as_str().trim().parse::<i64>() {
                            Ok(p) => rule.priority = Some((p, span)),
                            Err(_) => self.shape(
                                value,
                                "`priority` must be a whole number",
                                "write e.g. `priority: 10`; higher runs first",
                            ),
                        }
                    }
                }
                "group" => {
                    if let Some(s) = self.scalar(value, k) {
                        rule.group = Some((s.as_str().to_string(), self.pos.span(s.span())));
                    }
                }
                other => {
                    let hint = did_you_mean(other, KEYS.iter().copied())
                        .unwrap_or_else(|| format!("keys are: {}", KEYS.join(", ")));
                    let span = self.pos.span(key.span());
                    self.diags.push(
                        Diagnostic::new(
                            Code::YamlShape,
                            self.source,
                            span,
                            format!("unknown key `{other}`"),
                        )
                        .hint(hint),
                    );
                }
            }
        }
        let _ = self.text;
        (!self.broken).then_some(rule)
    }

    /// A key this mapping does not have (E121), at the key.
    fn unknown_key(&mut self, key: &MarkedScalarNode, message: String, hint: &str) {
        let span = self.pos.span(key.span());
        let d = Diagnostic::new(Code::YamlShape, self.source, span, message).hint(hint);
        self.diags.push(d);
    }

    /// `- segment: NAME` with its `when:` and nothing else.
    fn segment(&mut self, m: &yaml::MarkedMappingNode, mut rule: Rule) -> Option<Rule> {
        rule.segment = true;
        self.broken = false;
        for (key, value) in m.iter() {
            match key.as_str() {
                "segment" => {}
                "when" => {
                    if let Some(s) = self.scalar(value, "when")
                        && let Some(Fragment::Expr(e)) = self.fragment(s, FragmentKind::Expr)
                    {
                        rule.when = Some(e);
                    }
                }
                other => self.unknown_key(
                    key,
                    format!("a segment has no `{other}`"),
                    "a segment is a name and a condition: `segment:` and `when:`",
                ),
            }
        }
        (!self.broken).then_some(rule)
    }

    /// `variants:` a list of `{variant: NAME, share: 45%, then: ...}`.
    fn variants(&mut self, value: &Node, rule: &mut Rule) {
        let Node::Sequence(seq) = value else {
            self.shape(
                value,
                "`variants` is a list",
                "write `- { variant: A, share: 50%, then: send coupon 30-6 }` for each",
            );
            return;
        };
        for item in seq.iter() {
            let Node::Mapping(v) = item else {
                self.shape(
                    item,
                    "each variant is a mapping",
                    "write `- { variant: A, share: 50%, then: send coupon 30-6 }`",
                );
                continue;
            };
            let (mut name, mut share, mut then) = (None, None, None);
            for (key, val) in v.iter() {
                match key.as_str() {
                    "variant" => name = self.scalar(val, "variant"),
                    "share" => {
                        if let Some(s) = self.scalar(val, "share")
                            && let Some(Fragment::Holdout(h)) =
                                self.fragment(s, FragmentKind::Share)
                        {
                            share = Some(h);
                        }
                    }
                    "then" => {
                        let mut actions = Vec::new();
                        for s in self.scalars(val, "then") {
                            if let Some(Fragment::Actions(a)) =
                                self.fragment(s, FragmentKind::Actions)
                            {
                                actions.extend(a);
                            }
                        }
                        then = Some((actions, self.span(val)));
                    }
                    other => self.unknown_key(
                        key,
                        format!("a variant has no `{other}`"),
                        "a variant has `variant`, `share` and `then`",
                    ),
                }
            }
            match (name, share, then) {
                (Some(n), Some(h), Some((actions, then_span))) => {
                    rule.variants.push(crate::lang::ast::Variant {
                        name: n.as_str().to_string(),
                        name_span: self.pos.span(n.span()),
                        percent: h.percent,
                        percent_span: h.span,
                        then: actions,
                        then_span,
                    })
                }
                _ if self.broken => {}
                _ => self.shape(
                    item,
                    "a variant needs `variant`, `share` and `then`",
                    "write `- { variant: A, share: 50%, then: send coupon 30-6 }`",
                ),
            }
        }
    }
}

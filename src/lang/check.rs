//! Names and types: syntax trees plus the schema in, typed rules out.
//!
//! Resolves every name (member fields, attributes, tiers, event fields,
//! coupons, channels, plugin functions) to a slot or an index, checks types
//! (`tier > 3` is an error, money is not mixed with plain numbers), and
//! collects every error in every file in one pass. It decides the member
//! slot layout the compiler and engine share. It evaluates nothing.

use super::ast::{self, AggFn, BinOp, ExprKind, Literal};
use super::program::{Cmp, Value};
use crate::diag::{Code, Diagnostic, SourceId, SourceMap, Span, did_you_mean};
use crate::schema::{FieldType, Schema};
use rust_decimal::Decimal;
use std::collections::HashMap;

/// The type of an expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ty {
    Bool,
    Int,
    Dec,
    Money,
    Str,
    Date,
    Duration,
    Tier,
    Tags,
    List(Box<Ty>),
    /// The `null` literal.
    Null,
    /// `member`, only as a plugin argument.
    Member,
    /// A plugin function's result: takes the type its use asks for.
    Any,
}

impl Ty {
    pub fn name(&self) -> String {
        match self {
            Ty::Bool => "true/false".into(),
            Ty::Int => "a number".into(),
            Ty::Dec => "a decimal".into(),
            Ty::Money => "money".into(),
            Ty::Str => "a string".into(),
            Ty::Date => "a date".into(),
            Ty::Duration => "a duration".into(),
            Ty::Tier => "a tier".into(),
            Ty::Tags => "the tag set".into(),
            Ty::List(t) => format!("a list of {}", t.name()),
            Ty::Null => "null".into(),
            Ty::Member => "the member".into(),
            Ty::Any => "a plugin value".into(),
        }
    }
    fn numeric(&self) -> bool {
        matches!(self, Ty::Int | Ty::Dec)
    }
    pub fn from_field(t: FieldType) -> Ty {
        match t {
            FieldType::Int => Ty::Int,
            FieldType::Decimal => Ty::Dec,
            FieldType::Money => Ty::Money,
            FieldType::String => Ty::Str,
            FieldType::Bool => Ty::Bool,
            FieldType::Date => Ty::Date,
            FieldType::Duration => Ty::Duration,
        }
    }
}

/// Member fields the engine keeps itself, in slot order. `writable`: rules
/// may `set` it.
pub const BUILTIN_FIELDS: &[(&str, BuiltinTy)] = &[
    ("days_since_last_purchase", BuiltinTy::Int),
    ("cycle", BuiltinTy::Dec),
    ("orders", BuiltinTy::Int),
    ("spend", BuiltinTy::Money),
    ("avg_order", BuiltinTy::Money),
    ("points", BuiltinTy::Int),
    ("tier", BuiltinTy::Tier),
    ("tags", BuiltinTy::Tags),
    ("member_days", BuiltinTy::Int),
    ("joined_at", BuiltinTy::Date),
    ("first_purchase_at", BuiltinTy::Date),
    ("last_purchase_at", BuiltinTy::Date),
    ("birthday", BuiltinTy::Date),
    ("days_to_birthday", BuiltinTy::Int),
    ("birthday_month", BuiltinTy::Int),
    ("coupons_open", BuiltinTy::Int),
    ("coupons_redeemed", BuiltinTy::Int),
];

/// Const-friendly mirror of the types built-in fields have.
#[derive(Clone, Copy, Debug)]
pub enum BuiltinTy {
    Int,
    Dec,
    Money,
    Tier,
    Tags,
    Date,
}

impl BuiltinTy {
    fn ty(self) -> Ty {
        match self {
            BuiltinTy::Int => Ty::Int,
            BuiltinTy::Dec => Ty::Dec,
            BuiltinTy::Money => Ty::Money,
            BuiltinTy::Tier => Ty::Tier,
            BuiltinTy::Tags => Ty::Tags,
            BuiltinTy::Date => Ty::Date,
        }
    }
}

/// The slot of each built-in field.
pub mod slot {
    pub const DAYS_SINCE_LAST_PURCHASE: u16 = 0;
    pub const CYCLE: u16 = 1;
    pub const ORDERS: u16 = 2;
    pub const SPEND: u16 = 3;
    pub const AVG_ORDER: u16 = 4;
    pub const POINTS: u16 = 5;
    pub const TIER: u16 = 6;
    pub const TAGS: u16 = 7;
    pub const MEMBER_DAYS: u16 = 8;
    pub const JOINED_AT: u16 = 9;
    pub const FIRST_PURCHASE_AT: u16 = 10;
    pub const LAST_PURCHASE_AT: u16 = 11;
    pub const BIRTHDAY: u16 = 12;
    pub const DAYS_TO_BIRTHDAY: u16 = 13;
    pub const BIRTHDAY_MONTH: u16 = 14;
    pub const COUPONS_OPEN: u16 = 15;
    pub const COUPONS_REDEEMED: u16 = 16;
}

const WRITABLE_BUILTINS: &[&str] = &["birthday"];

/// A typed, resolved expression.
#[derive(Clone, Debug)]
pub struct TExpr {
    pub ty: Ty,
    /// Made of literals only (so a plain number may stand for money).
    pub konst: bool,
    pub span: Span,
    pub kind: TKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    Floor,
    Ceil,
    Round,
    Abs,
    /// Of a date: the day of the month (1-31), the ISO weekday (1 = Monday)
    /// and the month (1-12).
    DayOfMonth,
    Weekday,
    Month,
}

#[derive(Clone, Debug)]
pub enum TKind {
    Lit(Value),
    Slot(u16),
    Event(u16),
    Today,
    Neg(Box<TExpr>),
    Not(Box<TExpr>),
    And(Box<TExpr>, Box<TExpr>),
    Or(Box<TExpr>, Box<TExpr>),
    Arith(Arith, Box<TExpr>, Box<TExpr>),
    Cmp(Cmp, Box<TExpr>, Box<TExpr>),
    HasTag(u32),
    In(Box<TExpr>, Vec<TExpr>),
    IsNull(Box<TExpr>),
    Func(Func, Box<TExpr>),
    Plugin {
        plugin: u16,
        function: String,
        args: Vec<TExpr>,
    },
    Member,
}

/// A windowed aggregate the engine keeps per member, in its own slot.
#[derive(Clone, Debug)]
pub struct AggSpec {
    pub func: AggFn,
    /// Index into `Schema::events`.
    pub event_type: usize,
    /// Event slot of the aggregated field (`None` for `count`).
    pub field: Option<u16>,
    /// Evaluated against the aggregated event only.
    pub filter: Option<TExpr>,
    pub window_days: u32,
    pub slot: u16,
    /// Canonical text, to share one slot between equal aggregates.
    pub key: String,
}

/// The member and event slot layout a rule set uses.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    /// Name and type of each member slot: built-ins, attributes, aggregates.
    pub fields: Vec<(String, Ty)>,
    pub aggregates: Vec<AggSpec>,
    /// `points_expiring(Nd)` slots: slot and window in days.
    pub expiring: Vec<(u16, u32)>,
    /// Event fields by slot (one slot per name across event types).
    pub event_fields: Vec<String>,
    /// Interned tags: bit i is `tags[i]`.
    pub tags: Vec<String>,
    /// Attribute slots with a default (`default:` in the config), read as
    /// that value until a rule sets them.
    pub defaults: Vec<(u16, Value)>,
}

impl Layout {
    pub fn attribute_slot(&self, i: usize) -> u16 {
        (BUILTIN_FIELDS.len() + i) as u16
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Triggers {
    /// Event types (indexes into `Schema::events`) whose every event fires it.
    pub events: Vec<usize>,
    /// Runs on the daily tick, on the rising edge.
    pub tick: bool,
    pub tier_up: bool,
    pub tier_down: bool,
    /// No `on`: every event and tick, on the rising edge.
    pub state: bool,
}

#[derive(Clone, Debug)]
pub enum CouponSpec {
    Template(usize),
    Literal {
        threshold: Decimal,
        discount: Decimal,
    },
}

#[derive(Clone, Debug)]
pub enum TAction {
    /// For another member: `award points 100 to event.referrer`.
    For {
        to: TExpr,
        action: Box<TAction>,
    },
    Coupon {
        coupon: CouponSpec,
        channel: Option<usize>,
    },
    Message {
        template: String,
        channel: usize,
    },
    Points {
        deduct: bool,
        amount: TExpr,
    },
    SetTier(TExpr),
    Set {
        slot: u16,
        value: TExpr,
    },
    Tag {
        tag: String,
        bit: u32,
        untag: bool,
    },
    Call {
        plugin: u16,
        function: String,
        args: Vec<TExpr>,
    },
}

#[derive(Clone, Debug)]
pub enum BudgetSpec {
    Firings(u64),
    Money { amount: Decimal, period: Period },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    Day,
    Week,
    Month,
    Year,
}

#[derive(Clone, Debug)]
pub struct CheckedRule {
    pub name: String,
    pub source: SourceId,
    pub span: Span,
    pub triggers: Triggers,
    pub cond: Option<TExpr>,
    pub actions: Vec<TAction>,
    /// Count per optional window in days.
    pub limit: Option<(u32, Option<u32>)>,
    /// Held-out share in parts per million.
    pub holdout_ppm: u32,
    pub priority: i64,
    pub group: Option<String>,
    pub budget: Option<BudgetSpec>,
}

/// Plugin functions rules may call: plugin name, then function name and arity.
#[derive(Clone, Debug, Default)]
pub struct PluginSigs {
    pub plugins: Vec<(String, Vec<(String, usize)>)>,
}

pub struct Checked {
    /// In evaluation order: priority (highest first), then load order.
    pub rules: Vec<CheckedRule>,
    pub layout: Layout,
}

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
        layout.fields.push((name.to_string(), t.ty()));
    }
    for a in &schema.attributes {
        if let Some(d) = &a.default {
            layout
                .defaults
                .push((layout.fields.len() as u16, d.clone()));
        }
        layout.fields.push((a.name.clone(), Ty::from_field(a.ty)));
    }
    let mut cx = Checker {
        schema,
        plugins,
        layout,
        diags: Vec::new(),
        source: SourceId(0),
        rule: None,
        filter_event: None,
        event_slots: HashMap::new(),
    };
    let mut rules = Vec::new();
    let mut names: HashMap<String, (SourceId, Span)> = HashMap::new();
    for file in files {
        cx.source = file.source;
        for r in &file.rules {
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
                    .hint(format!(
                        "the first is at {}:{line}:{col}; rule names must be unique across files",
                        sources.path(*src).display()
                    )),
                );
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
            layout: cx.layout,
        },
        cx.diags,
    )
}

struct RuleCx {
    triggers: Triggers,
    warned_event_on_tick: bool,
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
}

type R<T> = Result<T, ()>;

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
        });
        let cond = r.when.as_ref().and_then(|w| self.bool_expr(w).ok());
        if r.then.is_empty() {
            self.error(
                Code::MissingThen,
                r.name_span,
                format!("rule \"{}\" has no `then`", r.name),
                Some(
                    "say what it does: `then send coupon 30-6`, `then award points 10`, ...".into(),
                ),
            );
        }
        let actions: Vec<TAction> = r
            .then
            .iter()
            .filter_map(|a| self.action_for(a, &triggers).ok())
            .collect();
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
                            .chain(crate::schema::BUILTIN_TRIGGERS.iter().copied())
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

    /// An action, for another member when it says `to`.
    fn action_for(&mut self, a: &ast::Action, t: &Triggers) -> R<TAction> {
        let action = self.action(a, t);
        let Some(to) = &a.to else {
            return action;
        };
        let to = self.expr(to)?;
        let to = self.expect(to, &Ty::Str, "`to` takes a member id (a string)")?;
        Ok(TAction::For {
            to,
            action: Box::new(action?),
        })
    }

    fn action(&mut self, a: &ast::Action, _t: &Triggers) -> R<TAction> {
        use ast::ActionKind as K;
        match &a.kind {
            K::Coupon {
                coupon,
                coupon_span,
                via,
            } => {
                let coupon = match coupon {
                    ast::CouponRef::Literal {
                        threshold,
                        discount,
                    } => CouponSpec::Literal {
                        threshold: *threshold,
                        discount: *discount,
                    },
                    ast::CouponRef::Template(name) => match self.schema.coupon(name) {
                        Some((i, _)) => CouponSpec::Template(i),
                        None => {
                            let names: Vec<&str> = self
                                .schema
                                .coupons
                                .iter()
                                .map(|c| c.name.as_str())
                                .collect();
                            let hint = did_you_mean(name, names.iter().copied()).unwrap_or_else(|| {
                                if names.is_empty() {
                                    "declare templates under `coupons:` in the config, or write a threshold coupon like `30-6`".into()
                                } else {
                                    format!("coupons are: {}; or write a threshold coupon like `30-6`", names.join(", "))
                                }
                            });
                            self.error(
                                Code::UnknownCoupon,
                                *coupon_span,
                                format!("unknown coupon `{name}`"),
                                Some(hint),
                            );
                            if let Some(v) = via {
                                let _ = self.channel(v);
                            }
                            return Err(());
                        }
                    },
                };
                let channel = match via {
                    Some(v) => Some(self.channel(v)?),
                    None => None,
                };
                Ok(TAction::Coupon { coupon, channel })
            }
            K::Message { template, via } => match via {
                Some(v) => Ok(TAction::Message {
                    template: template.clone(),
                    channel: self.channel(v)?,
                }),
                None => {
                    self.error(
                        Code::UnknownChannel,
                        a.span,
                        "a message needs a channel",
                        Some(format!(
                            "add `via CHANNEL`; channels are: {}",
                            self.channel_names()
                        )),
                    );
                    Err(())
                }
            },
            K::Points { deduct, amount } => {
                let e = self.expr(amount)?;
                let e = self.expect(e, &Ty::Int, "points are whole numbers")?;
                Ok(TAction::Points {
                    deduct: *deduct,
                    amount: e,
                })
            }
            K::Set { target, value } => {
                let v = if target.name == "tier" {
                    self.tier_name(value)?
                } else {
                    self.expr(value)?
                };
                if target.name == "tier" {
                    let v = self.expect(v, &Ty::Tier, "`set tier` takes a tier name")?;
                    return Ok(TAction::SetTier(v));
                }
                if let Some(i) = self
                    .layout
                    .fields
                    .iter()
                    .position(|(n, _)| *n == target.name)
                {
                    let is_builtin = i < BUILTIN_FIELDS.len();
                    if is_builtin && !WRITABLE_BUILTINS.contains(&target.name.as_str()) {
                        let hint = match target.name.as_str() {
                            "points" => "use `award points N` or `deduct points N`".to_string(),
                            "tags" => "use `tag \"x\"` or `untag \"x\"`".to_string(),
                            _ => "nudge keeps it from the member's events; declare an attribute of your own in the config".to_string(),
                        };
                        self.error(
                            Code::ReadOnly,
                            target.span,
                            format!("`{}` is kept by nudge and cannot be set", target.name),
                            Some(hint),
                        );
                        return Err(());
                    }
                    let ty = self.layout.fields[i].1.clone();
                    let v =
                        self.expect(v, &ty, &format!("`{}` holds {}", target.name, ty.name()))?;
                    self.warn_null_arithmetic(&v);
                    return Ok(TAction::Set {
                        slot: i as u16,
                        value: v,
                    });
                }
                let hint = did_you_mean(
                    &target.name,
                    self.schema.attributes.iter().map(|a| a.name.as_str()),
                )
                .unwrap_or_else(|| "declare it under `attributes:` in the config".into());
                self.error(
                    Code::UnknownName,
                    target.span,
                    format!("unknown attribute `{}`", target.name),
                    Some(hint),
                );
                Err(())
            }
            K::Tag { tag, untag } => {
                if tag.trim().is_empty() {
                    self.error(Code::BadLiteral, a.span, "a tag cannot be empty", None);
                    return Err(());
                }
                Ok(TAction::Tag {
                    bit: self.intern_tag(tag),
                    tag: tag.clone(),
                    untag: *untag,
                })
            }
            K::Call { call } => {
                let (plugin, args) = self.plugin_call(call)?;
                Ok(TAction::Call {
                    plugin,
                    function: call.function.name.clone(),
                    args,
                })
            }
        }
    }

    fn channel_names(&self) -> String {
        let n: Vec<&str> = self
            .schema
            .channels
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        if n.is_empty() {
            "none declared".into()
        } else {
            n.join(", ")
        }
    }

    fn channel(&mut self, v: &ast::Ident) -> R<usize> {
        match self.schema.channel(&v.name) {
            Some((i, _)) => Ok(i),
            None => {
                let hint = did_you_mean(
                    &v.name,
                    self.schema.channels.iter().map(|c| c.name.as_str()),
                )
                .unwrap_or_else(|| format!("channels are: {}", self.channel_names()));
                self.error(
                    Code::UnknownChannel,
                    v.span,
                    format!("unknown channel `{}`", v.name),
                    Some(hint),
                );
                Err(())
            }
        }
    }

    /// `set stars = stars + 1` on an attribute without a default: it is
    /// null until set, so the sum stays null and the `set` never does
    /// anything. Warned once per `set`, naming the attribute and the fix.
    fn warn_null_arithmetic(&mut self, value: &TExpr) {
        let first_attr = BUILTIN_FIELDS.len();
        let n_attrs = self.schema.attributes.len();
        let mut stack = vec![(value, false)];
        while let Some((e, in_arith)) = stack.pop() {
            match &e.kind {
                TKind::Slot(s) if in_arith => {
                    let s = *s as usize;
                    let is_attr = (first_attr..first_attr + n_attrs).contains(&s);
                    let has_default = self.layout.defaults.iter().any(|(d, _)| *d as usize == s);
                    if is_attr && !has_default {
                        let attr = &self.schema.attributes[s - first_attr];
                        let (name, ty) = (attr.name.clone(), attr.ty);
                        let d = Diagnostic::new(
                            Code::NullArithmetic,
                            self.source,
                            e.span,
                            format!("`{name}` is null until a rule sets it, so this arithmetic stays null and the `set` does nothing"),
                        )
                        .hint(format!(
                            "give it a default in nudge.yaml: `{name}: {{ type: {}, default: {} }}`",
                            ty.name(),
                            if ty == crate::schema::FieldType::String { "\"\"" } else { "0" }
                        ));
                        self.err(d);
                        return;
                    }
                }
                TKind::Arith(_, a, b) => {
                    stack.push((a, true));
                    stack.push((b, true));
                }
                TKind::Neg(a) => stack.push((a, true)),
                TKind::Func(_, a) => stack.push((a, in_arith)),
                _ => {}
            }
        }
    }

    fn intern_tag(&mut self, tag: &str) -> u32 {
        match self.layout.tags.iter().position(|t| t == tag) {
            Some(i) => i as u32,
            None => {
                self.layout.tags.push(tag.to_string());
                (self.layout.tags.len() - 1) as u32
            }
        }
    }

    fn plugin_call(&mut self, call: &ast::PluginCall) -> R<(u16, Vec<TExpr>)> {
        let Some(pi) = self
            .plugins
            .plugins
            .iter()
            .position(|(n, _)| *n == call.plugin.name)
        else {
            let names: Vec<&str> = self
                .plugins
                .plugins
                .iter()
                .map(|(n, _)| n.as_str())
                .collect();
            let hint =
                did_you_mean(&call.plugin.name, names.iter().copied()).unwrap_or_else(|| {
                    if names.is_empty() {
                        format!(
                            "there are no plugins; a plugin `{0}` is the file `plugins/{0}.rhai`",
                            call.plugin.name
                        )
                    } else {
                        format!("plugins are: {}", names.join(", "))
                    }
                });
            self.error(
                Code::UnknownPlugin,
                call.plugin.span,
                format!("unknown plugin `{}`", call.plugin.name),
                Some(hint),
            );
            return Err(());
        };
        let fns = &self.plugins.plugins[pi].1;
        let arity = fns
            .iter()
            .filter(|(n, _)| *n == call.function.name)
            .map(|(_, a)| *a)
            .collect::<Vec<_>>();
        if arity.is_empty() {
            let hint = did_you_mean(&call.function.name, fns.iter().map(|(n, _)| n.as_str()))
                .unwrap_or_else(|| {
                    format!(
                        "`{}` has: {}",
                        call.plugin.name,
                        fns.iter()
                            .map(|(n, a)| format!("{n}/{a}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                });
            self.error(
                Code::UnknownPlugin,
                call.function.span,
                format!(
                    "plugin `{}` has no function `{}`",
                    call.plugin.name, call.function.name
                ),
                Some(hint),
            );
            return Err(());
        }
        if !arity.contains(&call.args.len()) {
            let span = call.plugin.span.to(call.function.span);
            self.error(
                Code::Arity,
                span,
                format!(
                    "`{}.{}` takes {} argument(s), not {}",
                    call.plugin.name,
                    call.function.name,
                    arity
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(" or "),
                    call.args.len()
                ),
                None,
            );
            return Err(());
        }
        let mut args = Vec::new();
        let mut bad = false;
        for a in &call.args {
            match self.expr(a) {
                Ok(e) => args.push(e),
                Err(()) => bad = true,
            }
        }
        if bad { Err(()) } else { Ok((pi as u16, args)) }
    }

    // ------------------------------------------------------ expressions

    fn bool_expr(&mut self, e: &ast::Expr) -> R<TExpr> {
        let t = self.expr(e)?;
        self.expect(t, &Ty::Bool, "a condition is true or false")
    }

    /// `e` as type `want`: equal types, a plugin value, or a plain number
    /// where money is wanted.
    fn expect(&mut self, mut e: TExpr, want: &Ty, why: &str) -> R<TExpr> {
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

    fn expr(&mut self, e: &ast::Expr) -> R<TExpr> {
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

    fn path(&mut self, parts: &[ast::Ident], span: Span) -> R<TExpr> {
        let mk = |ty: Ty, kind: TKind| TExpr {
            ty,
            konst: false,
            span,
            kind,
        };
        let first = &parts[0];
        if parts.len() == 1 {
            let name = first.name.as_str();
            if self.filter_event.is_some() {
                self.error(
                    Code::UnknownName,
                    span,
                    format!("`{name}` cannot be used in an aggregate's `where`"),
                    Some("the filter reads the counted event only: `event.FIELD`".into()),
                );
                return Err(());
            }
            if let Some(i) = self.layout.fields.iter().position(|(n, _)| n == name) {
                let ty = self.layout.fields[i].1.clone();
                return Ok(mk(ty, TKind::Slot(i as u16)));
            }
            if let Some(t) = self.schema.tier(name) {
                return Ok(TExpr {
                    ty: Ty::Tier,
                    konst: true,
                    span,
                    kind: TKind::Lit(Value::Tier(t)),
                });
            }
            if name == "today" {
                return Ok(mk(Ty::Date, TKind::Today));
            }
            if name == "member" {
                return Ok(mk(Ty::Member, TKind::Member));
            }
            if name == "event" {
                self.error(
                    Code::UnknownEventField,
                    span,
                    "`event` needs a field",
                    Some("write `event.FIELD`, e.g. `event.amount`".into()),
                );
                return Err(());
            }
            let cands: Vec<&str> = self
                .layout
                .fields
                .iter()
                .map(|(n, _)| n.as_str())
                .chain(self.schema.tiers.iter().map(|t| t.as_str()))
                .chain(["today"])
                .collect();
            // `category` for `event.category`: the most common slip.
            let event_field = self
                .schema
                .events
                .iter()
                .any(|e| e.fields.iter().any(|f| f.name == name));
            let hint = if event_field {
                format!("`{name}` is a field of the event: write `event.{name}`")
            } else {
                did_you_mean(name, cands.iter().copied()).unwrap_or_else(|| {
                    "fields are the built-ins (see docs/language.md), the config's `attributes` and tier names".to_string()
                })
            };
            self.error(
                Code::UnknownName,
                first.span,
                format!("unknown field `{name}`"),
                Some(hint),
            );
            return Err(());
        }
        if first.name == "event" && parts.len() == 2 {
            return self.event_field(&parts[1], span);
        }
        if self.schema.event(&first.name).is_some() {
            self.error(
                Code::UnknownName,
                span,
                format!(
                    "`{}.{}` is only meaningful inside an aggregate",
                    first.name, parts[1].name
                ),
                Some(format!(
                    "for the triggering event write `event.{}`; over a window, `sum({}.{}, 30d)`",
                    parts[1].name, first.name, parts[1].name
                )),
            );
            return Err(());
        }
        let hint = did_you_mean(
            &first.name,
            std::iter::once("event").chain(self.schema.events.iter().map(|e| e.name.as_str())),
        )
        .unwrap_or_else(|| "only `event.FIELD` has a dot".into());
        self.error(
            Code::UnknownName,
            span,
            format!(
                "unknown name `{}`",
                parts
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(".")
            ),
            Some(hint),
        );
        Err(())
    }

    fn event_slot(&mut self, name: &str) -> u16 {
        let n = self.event_slots.len() as u16;
        *self.event_slots.entry(name.to_string()).or_insert_with(|| {
            self.layout.event_fields.push(name.to_string());
            n
        })
    }

    fn event_field(&mut self, field: &ast::Ident, span: Span) -> R<TExpr> {
        let name = field.name.as_str();
        // Inside an aggregate filter: the aggregated event type.
        let types: Vec<usize> = if let Some(et) = self.filter_event {
            vec![et]
        } else {
            let Some(rcx) = &self.rule else {
                return Err(());
            };
            let t = rcx.triggers.clone();
            if t.state {
                (0..self.schema.events.len()).collect()
            } else {
                if t.events.is_empty() {
                    let on = if t.tick {
                        "tick"
                    } else if t.tier_up {
                        "tier_up"
                    } else {
                        "tier_down"
                    };
                    self.error(
                        Code::EventInTick,
                        span,
                        format!("this rule runs `on {on}`, which has no event to read `event.{name}` from"),
                        Some("run it on an event (`on purchase`) or use member fields and aggregates".into()),
                    );
                    return Err(());
                }
                t.events.clone()
            }
        };
        let state =
            self.filter_event.is_none() && self.rule.as_ref().is_some_and(|r| r.triggers.state);
        let mut found: Vec<(usize, FieldType)> = Vec::new();
        let mut missing: Vec<&str> = Vec::new();
        for &i in &types {
            let et = &self.schema.events[i];
            match et.field(name) {
                Some((_, f)) => found.push((i, f.ty)),
                None => missing.push(&et.name),
            }
        }
        if found.is_empty() {
            let all: Vec<&str> = types
                .iter()
                .flat_map(|&i| self.schema.events[i].fields.iter().map(|f| f.name.as_str()))
                .collect();
            let hint = did_you_mean(name, all.iter().copied()).unwrap_or_else(|| {
                if all.is_empty() {
                    "these events declare no fields".to_string()
                } else {
                    format!("fields here are: {}", dedup(all).join(", "))
                }
            });
            self.error(
                Code::UnknownEventField,
                field.span,
                format!("no event this rule runs on has a field `{name}`"),
                Some(hint),
            );
            return Err(());
        }
        if !missing.is_empty() && !state {
            self.error(
                Code::UnknownEventField,
                field.span,
                format!("`{name}` is not a field of `{}`", missing.join("`, `")),
                Some(format!(
                    "declare it for those events, or split the rule by event type (`on {}`)",
                    self.schema.events[found[0].0].name
                )),
            );
            return Err(());
        }
        let ty = found[0].1;
        if let Some((i, t)) = found.iter().find(|(_, t)| *t != ty) {
            self.error(
                Code::TypeMismatch,
                field.span,
                format!(
                    "`{name}` has a different type in `{}` than in `{}`",
                    self.schema.events[*i].name, self.schema.events[found[0].0].name
                ),
                Some(format!("declare it with one type ({:?} vs {:?})", ty, t)),
            );
            return Err(());
        }
        if state
            && let Some(r) = self.rule.as_mut()
            && !r.warned_event_on_tick
        {
            r.warned_event_on_tick = true;
            let d = Diagnostic::new(Code::EventOnTick, self.source, span, format!("`event.{name}` is null on the daily tick, and this rule has no `on`, so it also runs on ticks"))
                .hint("add `on EVENT` to run it only on events");
            self.err(d);
        }
        let slot = self.event_slot(name);
        Ok(TExpr {
            ty: Ty::from_field(ty),
            konst: false,
            span,
            kind: TKind::Event(slot),
        })
    }

    fn aggregate(&mut self, a: &ast::Aggregate, span: Span) -> R<TExpr> {
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
        let slot = match self.layout.aggregates.iter().find(|s| s.key == key) {
            Some(s) => s.slot,
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

    fn func(&mut self, name: &ast::Ident, args: &[ast::Expr], span: Span) -> R<TExpr> {
        if name.name == "points_expiring" {
            return self.points_expiring(args, span);
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
    fn points_expiring(&mut self, args: &[ast::Expr], span: Span) -> R<TExpr> {
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

    fn binary(&mut self, op: BinOp, a: &ast::Expr, b: &ast::Expr, span: Span) -> R<TExpr> {
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
    fn expr_or_tier(&mut self, e: &ast::Expr, other: &ast::Expr) -> R<TExpr> {
        let is_tier = |x: &ast::Expr| matches!(&x.kind, ExprKind::Path(p) if p.len() == 1 && p[0].name == "tier");
        if is_tier(other) {
            self.tier_name(e)
        } else {
            self.expr(e)
        }
    }

    /// `e` where a tier is wanted.
    fn tier_name(&mut self, e: &ast::Expr) -> R<TExpr> {
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

    fn arith(&mut self, aop: Arith, op: BinOp, mut l: TExpr, mut r: TExpr, span: Span) -> R<TExpr> {
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

    fn compare(&mut self, op: BinOp, mut l: TExpr, mut r: TExpr, span: Span) -> R<TExpr> {
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
        if l.ty == Ty::Any {
            l.ty = if r.ty == Ty::Any {
                Ty::Dec
            } else {
                r.ty.clone()
            };
        }
        if r.ty == Ty::Any {
            r.ty = l.ty.clone();
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
                (Int | Dec, Duration) | (Duration, Int | Dec) => Some("durations need a unit: `30d`".into()),
                (Date, Str) | (Str, Date) => {
                    let quoted = [&l, &r].into_iter().find_map(|e| match &e.kind {
                        TKind::Lit(Value::Str(t)) if crate::lang::parse::parse_date(t).is_some() => Some(t.to_string()),
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
        let konst = l.konst && r.konst;
        Ok(TExpr {
            ty: Bool,
            konst,
            span,
            kind: TKind::Cmp(cmp, Box::new(l), Box::new(r)),
        })
    }

    /// Warns about `tier > TOP` and `tier < BOTTOM`, which nobody can meet.
    fn tier_extreme(&mut self, cmp: Cmp, l: &TExpr, r: &TExpr, span: Span) {
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

    fn in_expr(&mut self, item: &ast::Expr, set: &ast::Expr, span: Span) -> R<TExpr> {
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

    /// Warns when a condition is made of literals and is not true.
    fn never_true(&mut self, c: &TExpr) {
        if c.konst && !matches!(c.kind, TKind::HasTag(_)) {
            let v = super::compile::const_bool(c);
            if v != Some(true) {
                self.err(
                    Diagnostic::new(
                        Code::NeverTrue,
                        self.source,
                        c.span,
                        "this condition is never true",
                    )
                    .label(format!(
                        "always {}",
                        v.map_or("unknown (null)".to_string(), |b| b.to_string())
                    ))
                    .hint("the rule will never fire; check the values"),
                );
            }
        }
    }
}

fn dedup(mut v: Vec<&str>) -> Vec<&str> {
    v.sort_unstable();
    v.dedup();
    v
}

/// A canonical text of an expression, to tell equal aggregate filters apart.
fn expr_key(e: &ast::Expr) -> String {
    format!("{:?}", strip_spans(e))
}

fn strip_spans(e: &ast::Expr) -> ast::Expr {
    let mut e = e.clone();
    fn walk(e: &mut ast::Expr) {
        e.span = Span::default();
        match &mut e.kind {
            ExprKind::Path(p) => p.iter_mut().for_each(|i| i.span = Span::default()),
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

//! The checked, typed tree: expressions with their types and resolved
//! slots, actions, triggers, the member and event layout, and the rules
//! as the compiler receives them.

use crate::base::diag::{SourceId, Span};
use crate::lang::ast::AggFn;
use crate::lang::program::{Cmp, Func, Value};
use crate::model::fields::{BUILTIN_FIELDS, BuiltinTy, FieldType};
use rust_decimal::Decimal;

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
    pub(super) fn numeric(&self) -> bool {
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

impl Ty {
    pub(super) fn builtin(b: BuiltinTy) -> Ty {
        match b {
            BuiltinTy::Int => Ty::Int,
            BuiltinTy::Dec => Ty::Dec,
            BuiltinTy::Money => Ty::Money,
            BuiltinTy::Tier => Ty::Tier,
            BuiltinTy::Tags => Ty::Tags,
            BuiltinTy::Date => Ty::Date,
        }
    }
}

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
    /// A test that stands for a clause or a name, shown by `explain` as one
    /// term with its own text: `in segment "name"` (the segment's condition,
    /// checked where it is defined, so its inner spans point into that
    /// file) and `active 2026-02-01 to 2026-02-14`.
    Named(Box<TExpr>),
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
    /// As a person writes it: `count(purchase where event.category == "coffee", 90d)`.
    pub text: String,
}

/// The member and event slot layout a rule set uses.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    /// Name and type of each member slot: built-ins, attributes, aggregates.
    pub fields: Vec<(String, Ty)>,
    pub aggregates: Vec<AggSpec>,
    /// `points_expiring(Nd)` slots: slot and window in days.
    pub expiring: Vec<(u16, u32)>,
    /// `expected_purchases(Nd)` and `predicted_clv(Nd)` slots: slot, what,
    /// window in days.
    pub predicted: Vec<(u16, Predicted, u32)>,
    /// Event fields by slot (one slot per name across event types).
    pub event_fields: Vec<String>,
    /// Interned tags: bit i is `tags[i]`.
    pub tags: Vec<String>,
    /// Attribute slots with a default (`default:` in the config), read as
    /// that value until a rule sets them.
    pub defaults: Vec<(u16, Value)>,
}

/// A prediction over a window (docs/prediction.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Predicted {
    Purchases,
    Clv,
}

impl Layout {
    /// Slots past the attributes: aggregates, `points_expiring`, predictions.
    pub fn computed(&self) -> usize {
        self.aggregates.len() + self.expiring.len() + self.predicted.len()
    }
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
    /// A coupon of computed values (threshold 0 for a voucher).
    Voucher {
        threshold: Option<TExpr>,
        discount: TExpr,
        channel: Option<usize>,
    },
    Wallet {
        debit: bool,
        amount: TExpr,
    },
    Reward {
        name: TExpr,
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
    /// An experiment's arms: name, share in parts per million, and the
    /// range of `actions` that are theirs. Empty: every action is the rule's.
    pub variants: Vec<(String, u32, std::ops::Range<usize>)>,
}

/// A named segment: `segment "lapsed vip" when ...`.
#[derive(Clone, Debug)]
pub struct CheckedSegment {
    pub name: String,
    pub source: SourceId,
    pub span: Span,
    pub cond: TExpr,
}

/// Plugin functions rules may call: plugin name, then function name and arity.
#[derive(Clone, Debug, Default)]
pub struct PluginSigs {
    pub plugins: Vec<(String, Vec<(String, usize)>)>,
    /// Plugins whose file does not compile (E130 says why): a call to one
    /// is not also an unknown plugin.
    pub broken: Vec<String>,
}

pub struct Checked {
    /// In evaluation order: priority (highest first), then load order.
    pub rules: Vec<CheckedRule>,
    /// In definition order.
    pub segments: Vec<CheckedSegment>,
    pub layout: Layout,
    /// Conditions made of literals only, to be warned about when they are
    /// not true (see `compile::never_true`).
    pub const_conds: Vec<(SourceId, TExpr)>,
}

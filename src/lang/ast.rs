//! The syntax tree of rule files, as written, with spans. Both rule forms
//! (`.rules` text and YAML) produce it; nothing here knows names or types.

use crate::base::diag::{SourceId, Span};
use rust_decimal::Decimal;

#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// One rule file.
#[derive(Clone, Debug)]
pub struct RuleFile {
    pub source: SourceId,
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    /// The name's span, or the rule's first keyword for bare rules.
    pub name_span: Span,
    pub on: Option<Vec<Ident>>,
    pub when: Option<Expr>,
    pub then: Vec<Action>,
    pub then_span: Option<Span>,
    pub limit: Option<Limit>,
    pub holdout: Option<Holdout>,
    pub priority: Option<(i64, Span)>,
    pub group: Option<(String, Span)>,
    pub budget: Option<Budget>,
    /// `variant "A" 45% then ...`: an experiment's arms, instead of `then`.
    pub variants: Vec<Variant>,
    /// `active 2026-02-01 to 2026-02-14`: the days it may fire on.
    pub active: Option<Active>,
    /// A named segment (`segment "name" when ...`), not a rule: only a
    /// name and a condition, used by rules and segment queries.
    pub segment: bool,
    /// The whole rule in its `.rules` file (its name's span in YAML).
    pub span: Span,
}

/// One arm of an experiment.
#[derive(Clone, Debug)]
pub struct Variant {
    pub name: String,
    pub name_span: Span,
    /// In percent of all members, exact.
    pub percent: Decimal,
    pub percent_span: Span,
    pub then: Vec<Action>,
    pub then_span: Span,
}

/// A campaign window: first and last day (days since 1970-01-01), both
/// included.
#[derive(Clone, Debug)]
pub struct Active {
    pub from: i32,
    pub to: i32,
    pub span: Span,
}

impl Rule {
    /// A rule with a name and no clauses yet.
    pub fn named(name: String, name_span: Span) -> Rule {
        Rule {
            name,
            name_span,
            on: None,
            when: None,
            then: Vec::new(),
            then_span: None,
            limit: None,
            holdout: None,
            priority: None,
            group: None,
            budget: None,
            variants: Vec::new(),
            active: None,
            segment: false,
            span: name_span,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Duration {
    /// Seconds.
    pub secs: i64,
    pub span: Span,
}

impl Duration {
    pub fn days(&self) -> i64 {
        self.secs / 86_400
    }
}

#[derive(Clone, Debug)]
pub struct Limit {
    /// How many firings per window (`once` is 1).
    pub count: u32,
    pub per: Option<Duration>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Holdout {
    /// In percent, exact (`2.5%` is 2.5).
    pub percent: Decimal,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Budget {
    pub amount: Decimal,
    /// `None`: a number of firings in all; `Some(period)`: coupon value per period.
    pub per: Option<Ident>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum CouponRef {
    /// `30-6`: spend 30, save 6.
    Literal {
        threshold: Decimal,
        discount: Decimal,
    },
    /// A template from the config.
    Template(String),
}

#[derive(Clone, Debug)]
pub struct Action {
    pub kind: ActionKind,
    /// `to EXPR`: the member (by id) the action is for, when not the rule's own.
    pub to: Option<Expr>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum ActionKind {
    Coupon {
        coupon: CouponRef,
        coupon_span: Span,
        via: Option<Ident>,
    },
    Message {
        template: String,
        via: Option<Ident>,
    },
    Points {
        deduct: bool,
        amount: Expr,
    },
    Set {
        target: Ident,
        value: Expr,
    },
    Tag {
        tag: String,
        untag: bool,
    },
    Call {
        call: PluginCall,
    },
    /// `send voucher EXPR` (no threshold) or `send coupon (EXPR)-(EXPR)`.
    Voucher {
        threshold: Option<Expr>,
        discount: Expr,
        via: Option<Ident>,
    },
    /// `credit wallet EXPR`, `debit wallet EXPR`.
    Wallet {
        debit: bool,
        amount: Expr,
    },
    /// `redeem reward EXPR`.
    Reward {
        name: Expr,
    },
}

#[derive(Clone, Debug)]
pub struct PluginCall {
    pub plugin: Ident,
    pub function: Ident,
    pub args: Vec<Expr>,
}

#[derive(Clone, Debug)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    /// Remainder of whole numbers (`member_days % 365 == 0`).
    Rem,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "or",
            BinOp::And => "and",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
        }
    }
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggFn {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    /// The mean gap in days between the distinct days of matching events,
    /// over all history (`cycle` for one kind of purchase).
    Cycle,
    /// Days since the last matching event, over all history.
    DaysSinceLast,
}

impl AggFn {
    /// Over all history (first and last day, distinct days), not a window.
    pub fn is_history(self) -> bool {
        matches!(self, AggFn::Cycle | AggFn::DaysSinceLast)
    }
    pub fn name(self) -> &'static str {
        match self {
            AggFn::Count => "count",
            AggFn::Sum => "sum",
            AggFn::Avg => "avg",
            AggFn::Min => "min",
            AggFn::Max => "max",
            AggFn::Cycle => "cycle",
            AggFn::DaysSinceLast => "days_since_last",
        }
    }
}

#[derive(Clone, Debug)]
pub enum Literal {
    Int(i64),
    Decimal(Decimal),
    /// `1%`, as written (in percent): the value is a hundredth of it.
    Percent(Decimal),
    Str(String),
    Bool(bool),
    Null,
    /// Days since 1970-01-01.
    Date(i32),
    Duration(i64),
}

#[derive(Clone, Debug)]
pub enum ExprKind {
    Lit(Literal),
    /// `cycle`, `gold`, `event.amount`.
    Path(Vec<Ident>),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    In {
        negated: bool,
        item: Box<Expr>,
        set: Box<Expr>,
    },
    Between {
        negated: bool,
        value: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
    },
    IsNull {
        negated: bool,
        value: Box<Expr>,
    },
    List(Vec<Expr>),
    Aggregate(Box<Aggregate>),
    Func {
        name: Ident,
        args: Vec<Expr>,
    },
    Plugin(PluginCall),
    /// `in segment "lapsed vip"`.
    InSegment(String),
}

#[derive(Clone, Debug)]
pub struct Aggregate {
    pub func: AggFn,
    pub event: Ident,
    pub field: Option<Ident>,
    pub filter: Option<Expr>,
    pub window: Duration,
}

//! The vocabulary of member and event data: the types a declared field may
//! have, and the fields and triggers every project has built in.

/// The type of a declared attribute or event field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    Int,
    Decimal,
    Money,
    String,
    Bool,
    Date,
    Duration,
}

impl FieldType {
    pub const NAMES: &'static [&'static str] = &[
        "int", "decimal", "money", "string", "bool", "date", "duration",
    ];
    /// `money`, or `money?` for an optional event field.
    pub fn parse_field(s: &str) -> Option<(FieldType, bool)> {
        let s = s.trim();
        match s.strip_suffix('?') {
            Some(t) => Some((FieldType::parse(t.trim())?, true)),
            None => Some((FieldType::parse(s)?, false)),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FieldType::Int => "int",
            FieldType::Decimal => "decimal",
            FieldType::Money => "money",
            FieldType::String => "string",
            FieldType::Bool => "bool",
            FieldType::Date => "date",
            FieldType::Duration => "duration",
        }
    }

    pub fn parse(s: &str) -> Option<FieldType> {
        Some(match s {
            "int" => FieldType::Int,
            "decimal" => FieldType::Decimal,
            "money" => FieldType::Money,
            "string" => FieldType::String,
            "bool" => FieldType::Bool,
            "date" => FieldType::Date,
            "duration" => FieldType::Duration,
            _ => return None,
        })
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
    ("wallet", BuiltinTy::Money),
    ("p_alive", BuiltinTy::Dec),
    ("churn_risk", BuiltinTy::Dec),
    ("expected_next_purchase", BuiltinTy::Int),
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
    pub const WALLET: u16 = 17;
    pub const P_ALIVE: u16 = 18;
    pub const CHURN_RISK: u16 = 19;
    pub const EXPECTED_NEXT_PURCHASE: u16 = 20;
}

/// Triggers that are not event types.
pub const BUILTIN_TRIGGERS: &[&str] = &["tick", "tier_up", "tier_down"];

/// What each built-in field means, in a line (editor hover; docs/language.md
/// says the same at length).
pub fn builtin_doc(name: &str) -> Option<&'static str> {
    Some(match name {
        "days_since_last_purchase" => {
            "Calendar days (in the config's time zone) from the last purchase's day to today; null before any purchase."
        }
        "cycle" => {
            "The mean gap in days between distinct purchase days: (last day - first day) / (days - 1); null before a second purchase day."
        }
        "orders" => "Purchases made (refunded ones taken back).",
        "spend" => "Money spent in all (refunds taken back).",
        "avg_order" => "Spend per order; null before a purchase.",
        "points" => "The points balance.",
        "tier" => "The member's tier, compared in the config's order (`tier >= silver`).",
        "tags" => "The member's tags: `\"vip\" in tags`.",
        "member_days" => {
            "Days since the member joined (`member_days % 365 == 0` on anniversaries)."
        }
        "joined_at" => "The day the member joined (their first event).",
        "first_purchase_at" => "The day of the first purchase; null before one.",
        "last_purchase_at" => "The day of the last purchase; null before one.",
        "birthday" => "The member's birthday; null until an event or `set birthday` gives it.",
        "days_to_birthday" => {
            "Days until the next birthday (0 on the day); null without a birthday."
        }
        "birthday_month" => "The month of the birthday (1-12); null without one.",
        "coupons_open" => "Coded coupons still valid and not redeemed.",
        "coupons_redeemed" => "Coded coupons redeemed (kept 90 days past expiry).",
        "wallet" => {
            "The stored-value balance (money); changed by `credit wallet` and `debit wallet`."
        }
        "p_alive" => {
            "The probability (0-1) that the member is still a customer, from the current BG/NBD fit (docs/prediction.md); null before a fit and without a purchase."
        }
        "churn_risk" => "1 - p_alive: the probability the member has lapsed; null like p_alive.",
        "expected_next_purchase" => {
            "Days from today to the expected next purchase day, from the current fit; null like p_alive."
        }
        _ => return None,
    })
}

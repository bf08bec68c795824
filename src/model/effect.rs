//! What a rule did (or would have done) for a member: the effect format
//! every sink receives.

use crate::base::time::day_string;
use crate::base::value::Value;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a rule did (or would have done) for a member. One per action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Effect {
    /// Idempotency key: the same rule, member, trigger and action give the same key.
    pub key: String,
    /// When it was produced (the event's time, or the tick's).
    pub at: String,
    pub member: String,
    pub rule: String,
    /// The rule set version that produced it.
    pub ruleset: String,
    /// `event:<id>`, `tick:<date>`, or `tier_up:`/`tier_down:` before either.
    pub trigger: String,
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub coupon: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub threshold: Option<serde_json::Number>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub discount: Option<serde_json::Number>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub valid_until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub points: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub from_tier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub attribute: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub value: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub plugin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub args: Option<Vec<serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub channel: Option<String>,
    /// A coupon's code, signed with the config's `coupon_secret`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub code: Option<String>,
    pub status: Status,
    /// Why an effect was capped: `budget` or `cap`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// When a `deferred` effect goes out (the end of the channel's quiet
    /// hours); a released effect keeps it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub deliver_at: Option<String>,
    /// For an effect a rule gave another member (`to`): the member whose
    /// rule it was.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub from: Option<String>,
    /// The experiment arm the member is in (`variant "A" 45% then ...`);
    /// none for a held-out firing, which is the experiment's control.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub variant: Option<String>,
    /// A wallet's change (credit positive, debit negative), in money.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub amount: Option<serde_json::Number>,
    /// The wallet's balance after the change.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub balance: Option<serde_json::Number>,
    /// A reward of the points mall (`rewards:` in the config).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reward: Option<String>,
    /// The cash a reward costs besides its points.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cash: Option<serde_json::Number>,
}

/// Every field an effect may have, as written (test cases check their
/// expected effects' keys against it).
pub const FIELDS: [&str; 31] = [
    "key",
    "at",
    "member",
    "rule",
    "ruleset",
    "trigger",
    "action",
    "coupon",
    "threshold",
    "discount",
    "valid_until",
    "points",
    "tier",
    "from_tier",
    "tag",
    "attribute",
    "value",
    "message",
    "plugin",
    "args",
    "channel",
    "code",
    "status",
    "reason",
    "deliver_at",
    "from",
    "variant",
    "amount",
    "balance",
    "reward",
    "cash",
];

/// Money and decimals as exact JSON numbers.
pub fn json_number(d: Decimal) -> serde_json::Number {
    serde_json::Number::from_str(&d.normalize().to_string())
        .unwrap_or_else(|_| serde_json::Number::from(0))
}

/// A stored value as JSON (dates as `YYYY-MM-DD`, tiers by name).
pub fn value_json(v: &Value, tiers: &[String]) -> serde_json::Value {
    match v {
        Value::Null | Value::Member => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::Int(i) => (*i).into(),
        Value::Dec(d) => serde_json::Value::Number(json_number(*d)),
        Value::Str(s) => s.to_string().into(),
        Value::Date(d) => day_string(*d).into(),
        Value::Duration(s) => format!("{}s", s).into(),
        Value::Tier(t) => tiers.get(*t as usize).cloned().unwrap_or_default().into(),
    }
}

/// What an effect does: a rule's action, or one the engine takes itself
/// (`merge`, `redeem`). Serialised in snake case (`"coupon"`), as the
/// effect format has always written it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Coupon,
    Points,
    Tier,
    Tag,
    Untag,
    Message,
    Set,
    /// A plugin call a sink carries out.
    Plugin,
    /// One ID merged another member into this one.
    Merge,
    /// A coupon was redeemed.
    Redeem,
    /// Stored value credited or debited.
    Wallet,
    /// A reward of the points mall, bought with points.
    Reward,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Coupon => "coupon",
            Action::Points => "points",
            Action::Tier => "tier",
            Action::Tag => "tag",
            Action::Untag => "untag",
            Action::Message => "message",
            Action::Set => "set",
            Action::Plugin => "plugin",
            Action::Merge => "merge",
            Action::Redeem => "redeem",
            Action::Wallet => "wallet",
            Action::Reward => "reward",
        }
    }

    /// Whether the member hears of it: a coupon, points or a message.
    pub fn contacts(self) -> bool {
        matches!(self, Action::Coupon | Action::Points | Action::Message)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What became of an effect. Serialised in snake case (`"held_out"`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// It went out (to the outbox, then every sink).
    #[default]
    Sent,
    /// The member is held out (the rule's holdout or the control group).
    HeldOut,
    /// A budget or a channel's frequency cap stopped it (see `reason`).
    Capped,
    /// The member has not consented to the channel.
    NoConsent,
    /// It waits for the end of the channel's quiet hours (`deliver_at`).
    Deferred,
    /// It could not be done (see `reason`): a wallet debit over the
    /// balance, a reward the member cannot have. Nothing changed.
    Refused,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Sent => "sent",
            Status::HeldOut => "held_out",
            Status::Capped => "capped",
            Status::NoConsent => "no_consent",
            Status::Deferred => "deferred",
            Status::Refused => "refused",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fields_name_every_field_an_effect_writes() {
        let full: serde_json::Map<String, serde_json::Value> = super::FIELDS
            .iter()
            .map(|f| {
                let v = match *f {
                    "action" => "coupon".into(),
                    "status" => "sent".into(),
                    "points" => 1.into(),
                    "threshold" | "discount" | "amount" | "balance" | "cash" => 1.into(),
                    "args" => serde_json::json!([]),
                    _ => "x".into(),
                };
                (f.to_string(), v)
            })
            .collect();
        let e: super::Effect =
            serde_json::from_value(serde_json::Value::Object(full)).expect("every field");
        let written = serde_json::to_value(&e).expect("json");
        let mut keys: Vec<&str> = written
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut fields = super::FIELDS.to_vec();
        keys.sort_unstable();
        fields.sort_unstable();
        assert_eq!(keys, fields);
    }
}

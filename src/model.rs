//! The data nudge moves: events in (parsed and validated against the
//! schema), member records kept in the store (and their compact encoding),
//! effects out. No evaluation happens here.

use crate::lang::program::Value;
use crate::schema::{FieldType, Schema};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Longest event id, member id or string field accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;
pub const MAX_STRING_BYTES: usize = 4096;

/// The largest magnitude a money or decimal field may have: 10^12 (a
/// trillion in any currency unit, rupiah and won included). Why a bound at
/// all: member state adds amounts up (spend, windowed sums, merges), and
/// rust_decimal tops out near 7.9 * 10^28; with every amount at most 10^12,
/// a member would need more than 10^16 purchases to overflow. An event past
/// the bound is refused at validation, naming the field, instead of
/// poisoning the member's next fold.
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(0xD4A5_1000, 0xE8, 0, false, 0);

/// A validated event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: String,
    /// Index into `Schema::events`.
    pub kind: usize,
    /// The member, as given; empty when the event names its member by `ids`
    /// only (the engine resolves it).
    pub member: String,
    /// Identifiers (kind, value) for One ID, in the config's kind order.
    pub ids: Vec<(String, String)>,
    pub at: jiff::Timestamp,
    /// The declared fields, in the schema's order (null when left out).
    pub fields: Vec<Value>,
    /// Hash of the event as received, to tell a repeat from a conflict.
    pub body_hash: u128,
}

/// Why an event was refused. Names the event and the field path.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub struct EventError {
    /// 1-based line in an NDJSON input, when there is one.
    pub line: Option<usize>,
    pub id: Option<String>,
    /// The field path (`amount`, `at`), empty for the whole event.
    pub path: String,
    pub message: String,
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = self.line {
            write!(f, "line {l}: ")?;
        }
        match &self.id {
            Some(id) => write!(f, "event \"{id}\"")?,
            None => write!(f, "event")?,
        }
        if !self.path.is_empty() {
            write!(f, ", field `{}`", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

fn err(id: Option<&str>, path: &str, message: impl Into<String>) -> EventError {
    EventError {
        line: None,
        id: id.map(str::to_string),
        path: path.to_string(),
        message: message.into(),
    }
}

/// An identifier (event id, member id, `ids` value): 1 to
/// `MAX_ID_BYTES` bytes, no control characters (they would garble logs,
/// file sinks and URLs).
fn id_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_BYTES && !s.chars().any(char::is_control)
}

/// The event times accepted: 1970-01-01 up to 2100-01-01 (UTC). Anything
/// outside is a unit or default-value mistake (milliseconds read as
/// seconds, a `0001-01-01` placeholder) that would put a member's history
/// decades away from every rule's window.
const EARLIEST_AT: i64 = 0;
const LATEST_AT: i64 = 4_102_444_800;

/// Parses and validates one event from JSON text.
pub fn parse_event(schema: &Schema, text: &str) -> Result<Event, EventError> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| err(None, "", format!("not valid JSON: {e}")))?;
    if let Some((_, path)) = duplicate_key(text.as_bytes()) {
        return Err(err(
            None,
            &path,
            "this key appears twice; which value is meant?",
        ));
    }
    event_from_json(schema, v)
}

/// Validates a JSON value as an event of the schema.
pub fn event_from_json(schema: &Schema, v: serde_json::Value) -> Result<Event, EventError> {
    let body_hash = xxhash_rust::xxh3::xxh3_128(v.to_string().as_bytes());
    let serde_json::Value::Object(map) = v else {
        return Err(err(None, "", "an event is a JSON object"));
    };
    let id = match map.get("id") {
        Some(serde_json::Value::String(s)) if id_ok(s) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(serde_json::Value::String(_)) => {
            return Err(err(
                None,
                "id",
                format!("must be 1 to {MAX_ID_BYTES} bytes, without control characters"),
            ));
        }
        Some(_) => return Err(err(None, "id", "must be a string")),
        None => return Err(err(None, "id", "missing: every event has an `id`")),
    };
    if id.starts_with("relay:") {
        return Err(err(
            Some(&id),
            "id",
            "ids starting with `relay:` are reserved for the engine's internal events",
        ));
    }
    let idr = Some(id.as_str());
    let kind_name = match map.get("type") {
        Some(serde_json::Value::String(s)) => s.as_str(),
        Some(_) => return Err(err(idr, "type", "must be a string")),
        None => return Err(err(idr, "type", "missing: every event has a `type`")),
    };
    let Some((kind, et)) = schema.event(kind_name) else {
        let names: Vec<&str> = schema.events.iter().map(|e| e.name.as_str()).collect();
        let hint = crate::diag::did_you_mean(kind_name, names.iter().copied())
            .unwrap_or_else(|| format!("types are: {}", names.join(", ")));
        return Err(err(
            idr,
            "type",
            format!("unknown event type `{kind_name}`; {hint}"),
        ));
    };
    let mut ids = event_ids(schema, idr, map.get("ids"))?;
    let member = match map.get("member") {
        Some(serde_json::Value::String(s)) if id_ok(s) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(serde_json::Value::String(_)) => {
            return Err(err(
                idr,
                "member",
                format!("must be 1 to {MAX_ID_BYTES} bytes, without control characters"),
            ));
        }
        Some(_) => return Err(err(idr, "member", "must be a string")),
        None if !ids.is_empty() => String::new(),
        None => {
            return Err(err(
                idr,
                "member",
                "missing: every event names its `member` (or its identifiers in `ids`)",
            ));
        }
    };
    // `phone:138` names the member with that identifier, as lookups do: a
    // member id of that shape would otherwise shadow the identifier (a new
    // member `phone:138` beside the one the phone is linked to).
    let member = match member.split_once(':') {
        Some((kind, value)) if schema.id_kinds.iter().any(|k| k == kind) => {
            match ids.iter().find(|(k, _)| k == kind) {
                Some((_, v)) if v != value => {
                    return Err(err(
                        idr,
                        "member",
                        format!("names `{kind}:{value}` but `ids.{kind}` is `{v}`"),
                    ));
                }
                Some(_) => {}
                None => ids.push((kind.to_string(), value.to_string())),
            }
            String::new()
        }
        _ => member,
    };
    let at = match map.get("at") {
        Some(serde_json::Value::String(s)) => jiff::Timestamp::from_str(s).map_err(|e| {
            err(
                idr,
                "at",
                format!("`{s}` is not an RFC 3339 time ({e}); write e.g. 2026-01-01T12:00:00Z"),
            )
        })?,
        Some(_) => return Err(err(idr, "at", "must be an RFC 3339 time string")),
        None => return Err(err(idr, "at", "missing: every event has a time `at`")),
    };
    if !(EARLIEST_AT..LATEST_AT).contains(&at.as_second()) {
        return Err(err(
            idr,
            "at",
            format!("{at} is out of range: event times are from 1970 up to 2100"),
        ));
    }
    for key in map.keys() {
        if !matches!(key.as_str(), "id" | "type" | "member" | "ids" | "at")
            && et.field(key).is_none()
        {
            let hint = crate::diag::did_you_mean(key, et.fields.iter().map(|f| f.name.as_str()))
                .unwrap_or_else(|| {
                    format!(
                        "`{}` declares: {}",
                        et.name,
                        et.fields
                            .iter()
                            .map(|f| f.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                });
            return Err(err(
                idr,
                key,
                format!("not a field of `{}`; {hint}", et.name),
            ));
        }
    }
    let mut fields = Vec::with_capacity(et.fields.len());
    for f in &et.fields {
        let v = match map.get(&f.name) {
            None | Some(serde_json::Value::Null) if f.optional => Value::Null,
            None => {
                return Err(err(
                    idr,
                    &f.name,
                    format!("missing: `{}` events need it", et.name),
                ));
            }
            Some(serde_json::Value::Null) => return Err(err(idr, &f.name, "must not be null")),
            Some(v) => field_value(f.ty, v).map_err(|m| err(idr, &f.name, m))?,
        };
        fields.push(v);
    }
    Ok(Event {
        id,
        kind,
        member,
        ids,
        at,
        fields,
        body_hash,
    })
}

/// `ids`: a map of identifier kind (declared in the config) to value.
fn event_ids(
    schema: &Schema,
    id: Option<&str>,
    v: Option<&serde_json::Value>,
) -> Result<Vec<(String, String)>, EventError> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let serde_json::Value::Object(map) = v else {
        return Err(err(
            id,
            "ids",
            "must be an object like {\"phone\": \"13800000000\"}",
        ));
    };
    for (kind, _) in map {
        if !schema.id_kinds.iter().any(|k| k == kind) {
            let hint = crate::diag::did_you_mean(kind, schema.id_kinds.iter().map(String::as_str))
                .unwrap_or_else(|| match schema.id_kinds.is_empty() {
                    true => "declare identifier kinds in the config: `ids: [phone, card]`".into(),
                    false => format!("kinds are: {}", schema.id_kinds.join(", ")),
                });
            return Err(err(
                id,
                &format!("ids.{kind}"),
                format!("unknown identifier kind; {hint}"),
            ));
        }
    }
    let mut out = Vec::new();
    for kind in &schema.id_kinds {
        let value = match map.get(kind) {
            None | Some(serde_json::Value::Null) => continue,
            Some(serde_json::Value::String(s)) if id_ok(s) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(_) => {
                return Err(err(
                    id,
                    &format!("ids.{kind}"),
                    format!(
                        "must be a string of 1 to {MAX_ID_BYTES} bytes, without control characters"
                    ),
                ));
            }
        };
        out.push((kind.clone(), value));
    }
    Ok(out)
}

/// A JSON value as a value of a declared type, or why it is not one.
pub fn field_value(ty: FieldType, v: &serde_json::Value) -> Result<Value, String> {
    use serde_json::Value as J;
    let found = || match v {
        J::Null => "null".to_string(),
        J::Bool(b) => b.to_string(),
        J::Number(n) => n.to_string(),
        J::String(s) => format!("\"{}\"", s.chars().take(40).collect::<String>()),
        J::Array(_) => "a list".to_string(),
        J::Object(_) => "an object".to_string(),
    };
    match (ty, v) {
        (FieldType::Money | FieldType::Decimal, J::Number(n)) => {
            let d = Decimal::from_str(&n.to_string())
                .or_else(|_| Decimal::from_scientific(&n.to_string()))
                .map_err(|_| format!("{n} is out of range"))?;
            if ty == FieldType::Money && d.is_sign_negative() {
                return Err(format!("money cannot be negative, found {n}"));
            }
            if d.abs() > MAX_AMOUNT {
                return Err(format!(
                    "{n} is out of range: amounts are at most 1000000000000 (10^12)"
                ));
            }
            Ok(Value::Dec(d))
        }
        (FieldType::Int, J::Number(n)) => n
            .as_i64()
            .map(Value::Int)
            .ok_or_else(|| format!("expected a whole number, found {n}")),
        (FieldType::String, J::String(s)) if s.len() <= MAX_STRING_BYTES => {
            Ok(Value::Str(s.as_str().into()))
        }
        (FieldType::String, J::String(_)) => Err(format!("longer than {MAX_STRING_BYTES} bytes")),
        (FieldType::Bool, J::Bool(b)) => Ok(Value::Bool(*b)),
        (FieldType::Date, J::String(s)) => crate::lang::parse::parse_date(s)
            .map(Value::Date)
            .ok_or_else(|| format!("`{s}` is not a date (YYYY-MM-DD)")),
        (FieldType::Duration, J::String(s)) => crate::schema::parse_duration(s)
            .map(Value::Duration)
            .ok_or_else(|| format!("`{s}` is not a duration like `30d`")),
        (t, _) => Err(format!("expected {}, found {}", type_name(t), found())),
    }
}

fn type_name(t: FieldType) -> &'static str {
    match t {
        FieldType::Int => "a whole number",
        FieldType::Decimal => "a number",
        FieldType::Money => "money (a number)",
        FieldType::String => "a string",
        FieldType::Bool => "true or false",
        FieldType::Date => "a date string (YYYY-MM-DD)",
        FieldType::Duration => "a duration string like \"30d\"",
    }
}

// ------------------------------------------------------------- members

/// A value as stored in a member record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Stored {
    Null,
    Bool(bool),
    Int(i64),
    Dec(#[serde(with = "dec")] Decimal),
    Str(String),
    Date(i32),
    Duration(i64),
    Tier(u8),
}

impl From<&Value> for Stored {
    fn from(v: &Value) -> Stored {
        match v {
            Value::Null | Value::Member => Stored::Null,
            Value::Bool(b) => Stored::Bool(*b),
            Value::Int(i) => Stored::Int(*i),
            Value::Dec(d) => Stored::Dec(*d),
            Value::Str(s) => Stored::Str(s.to_string()),
            Value::Date(d) => Stored::Date(*d),
            Value::Duration(d) => Stored::Duration(*d),
            Value::Tier(t) => Stored::Tier(*t),
        }
    }
}

impl From<&Stored> for Value {
    fn from(v: &Stored) -> Value {
        match v {
            Stored::Null => Value::Null,
            Stored::Bool(b) => Value::Bool(*b),
            Stored::Int(i) => Value::Int(*i),
            Stored::Dec(d) => Value::Dec(*d),
            Stored::Str(s) => Value::Str(s.as_str().into()),
            Stored::Date(d) => Value::Date(*d),
            Stored::Duration(d) => Value::Duration(*d),
            Stored::Tier(t) => Value::Tier(*t),
        }
    }
}

/// One day of an aggregate: what matching events that day added up to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub day: i32,
    pub count: u32,
    #[serde(with = "dec")]
    pub sum: Decimal,
    #[serde(with = "dec")]
    pub min: Decimal,
    #[serde(with = "dec")]
    pub max: Decimal,
}

/// A windowed aggregate's state: one bucket per day with events, only for
/// the days inside the window, so it never grows past the window's length.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AggState {
    /// Hash of the aggregate's canonical text.
    pub key: u64,
    pub buckets: Vec<Bucket>,
}

/// What a rule remembers about a member.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    /// Hash of the rule's name.
    pub rule: u64,
    /// The condition was true at the last evaluation (edge-triggered rules).
    pub armed: bool,
    /// Firings in all.
    pub fired: u32,
    /// Days of the most recent firings, newest last (as many as the limit needs).
    pub recent: Vec<i32>,
}

/// Everything nudge keeps about one member.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Day first seen (days since 1970-01-01, local).
    pub joined: i32,
    pub first_purchase: Option<i32>,
    pub last_purchase: Option<i32>,
    /// Distinct purchase days.
    pub purchase_days: u32,
    pub orders: u32,
    #[serde(with = "dec")]
    pub spend: Decimal,
    pub points: i64,
    pub tier: u8,
    pub tags: Vec<String>,
    pub birthday: Option<i32>,
    pub attributes: Vec<(String, Stored)>,
    pub aggregates: Vec<AggState>,
    pub rules: Vec<RuleState>,
    /// Recent contacts per channel (day), for frequency caps; only as far
    /// back as the channel's cap window.
    pub contacts: Vec<(String, i32)>,
    /// Consent per channel: granted (true) or withdrawn (false).
    pub consent: Vec<(String, bool)>,
    /// Tier changes: day and new tier, newest last (the last 32).
    pub tier_history: Vec<(i32, u8)>,
    /// Coupons issued with a code, until 90 days after they expire.
    pub coupons: Vec<IssuedCoupon>,
    /// Points by the day they were earned, oldest first, when points expire
    /// (`points.expire_after`); spent and expired points leave the oldest lots.
    pub point_lots: Vec<(i32, i64)>,
    /// Purchases that can still be refunded (`refund.within`), oldest first.
    pub purchases: Vec<PurchaseEntry>,
    /// One ID: the identifiers (kind, value) linked to the member.
    pub ids: Vec<(String, String)>,
    /// Members merged into this one (their ids now lead here).
    pub merged: Vec<String>,
    /// What the rules decided for the member lately, newest last (the
    /// last `HISTORY_LEN`), for `nudge explain`.
    pub history: Vec<Decision>,
}

/// A rule's decision for a member on a day: it fired (and how its effects
/// went), or it would have fired and something stopped it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Hash of the rule's name.
    pub rule: u64,
    pub day: i32,
    pub outcome: Outcome,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Fired; its effects went out.
    Sent,
    /// Fired; a contact waits for the end of quiet hours.
    Deferred,
    /// Fired for a held-out member (rule holdout or control group).
    HeldOut,
    /// Fired, but the rule's budget was spent.
    Budget,
    /// Fired, but a channel's frequency cap was reached.
    Cap,
    /// Fired, but the member has not consented to the channel.
    NoConsent,
    /// Would have fired; the rule's limit was reached.
    Limit,
    /// Would have fired; another rule of its group fired first.
    Group,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "fired",
            Outcome::Deferred => "fired, deferred by quiet hours",
            Outcome::HeldOut => "fired, held out",
            Outcome::Budget => "fired, capped by the budget",
            Outcome::Cap => "fired, capped by the channel's frequency cap",
            Outcome::NoConsent => "fired, no consent for the channel",
            Outcome::Limit => "stopped by its limit",
            Outcome::Group => "stopped: another rule of its group fired",
        }
    }
}

/// Decisions kept per member.
pub const HISTORY_LEN: usize = 32;

impl MemberRecord {
    /// Records a decision, keeping the newest `HISTORY_LEN`.
    pub fn decided(&mut self, rule: u64, day: i32, outcome: Outcome) {
        self.history.push(Decision { rule, day, outcome });
        let excess = self.history.len().saturating_sub(HISTORY_LEN);
        self.history.drain(..excess);
    }
}

/// What one purchase added to a member, so a refund can take it back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PurchaseEntry {
    /// Hash of the purchase event's id.
    pub event: u64,
    pub day: i32,
    #[serde(with = "dec")]
    pub amount: Decimal,
    /// How much of it was refunded so far.
    #[serde(with = "dec")]
    pub refunded: Decimal,
    /// Points the purchase's own rules awarded, less what refunds took back.
    pub points: i64,
    /// What it added to each windowed aggregate (by aggregate key).
    pub aggregates: Vec<AggShare>,
}

/// A purchase's part of one windowed aggregate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AggShare {
    pub key: u64,
    #[serde(with = "dec")]
    pub value: Decimal,
}

/// Purchases kept for refunds per member at most (the oldest go first).
pub const MAX_REFUNDABLE: usize = 256;

/// A coupon the member holds (or held).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IssuedCoupon {
    pub code: String,
    /// Hash of the issuing rule's name.
    pub rule: u64,
    /// Last day it can be redeemed.
    pub valid_until: i32,
    /// Day it was redeemed.
    pub redeemed: Option<i32>,
}

/// Days an expired or redeemed coupon stays in the record (for response rates).
pub const COUPON_RETENTION_DAYS: i32 = 90;

/// Format version of encoded member records (the first byte).
/// 2: decimals as scale and mantissa, refunds, One ID and decision
/// history. A folder written by format 1 is refused with this message; its
/// events can be ingested again.
pub const RECORD_VERSION: u8 = 2;

impl MemberRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![RECORD_VERSION];
        // Serializing plain data into a Vec cannot fail.
        if let Ok(body) = postcard::to_allocvec(self) {
            out.extend_from_slice(&body);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<MemberRecord, String> {
        match bytes.split_first() {
            Some((&RECORD_VERSION, body)) => {
                postcard::from_bytes(body).map_err(|e| format!("corrupt member record: {e}"))
            }
            Some((v, _)) => Err(format!(
                "member record of format {v}, this nudge reads {RECORD_VERSION}"
            )),
            None => Err("empty member record".into()),
        }
    }

    pub fn attribute(&self, name: &str) -> Option<&Stored> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    pub fn set_attribute(&mut self, name: &str, v: Stored) {
        match self.attributes.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = v,
            None => self.attributes.push((name.to_string(), v)),
        }
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// Decimals in member records: scale and mantissa as varints (exact, and
/// decoded without parsing text: records are read on every tick).
mod dec {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        (d.scale() as u8, d.mantissa()).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        let (scale, mantissa) = <(u8, i128)>::deserialize(d)?;
        Decimal::try_from_i128_with_scale(mantissa, scale as u32).map_err(serde::de::Error::custom)
    }
}

// -------------------------------------------------------------- effects

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
    /// `coupon`, `points`, `tier`, `tag`, `untag`, `message`, `set`, `plugin`.
    pub action: String,
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
    /// `sent`, `held_out`, `capped`, `no_consent` or `deferred`.
    pub status: String,
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
}

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

/// `YYYY-MM-DD` of a day number.
pub fn day_string(day: i32) -> String {
    let epoch = jiff::civil::date(1970, 1, 1);
    epoch
        .checked_add(jiff::Span::new().days(day as i64))
        .map(|d| d.to_string())
        .unwrap_or_default()
}

/// The first key that appears twice in one JSON object of `text`: the
/// index of the event (when `text` is an array) and the key's path.
/// serde_json keeps the last value of a repeated key, so
/// `{"amount":10,"amount":1000}` would be taken as 1000 without a word;
/// input with one is refused instead. `None` also for text that is not
/// JSON (the parser reports that).
pub fn duplicate_key(text: &[u8]) -> Option<(Option<usize>, String)> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(text);
    let e = DupCheck {
        path: String::new(),
        top: true,
    }
    .deserialize(&mut de)
    .err()?;
    let found = e.to_string();
    let rest = found.strip_prefix(DUP)?;
    let rest = rest.split(" at line").next().unwrap_or(rest);
    Some(match rest.split_once('\u{0}') {
        Some((i, path)) => (i.parse().ok(), path.to_string()),
        None => (None, rest.to_string()),
    })
}

const DUP: &str = "duplicate key: ";

/// Walks a JSON value, failing at the first repeated key.
struct DupCheck {
    path: String,
    /// The top level: an array's items are events, named by index.
    top: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for DupCheck {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for DupCheck {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        loop {
            let path = if self.top {
                format!("{i}\u{0}")
            } else {
                format!("{}[{i}]", self.path)
            };
            if seq
                .next_element_seed(DupCheck { path, top: false })?
                .is_none()
            {
                return Ok(());
            }
            i += 1;
        }
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut keys = std::collections::HashSet::new();
        while let Some(k) = map.next_key::<String>()? {
            let path = match self.path.as_str() {
                "" => k.clone(),
                p if p.ends_with('\u{0}') => format!("{p}{k}"),
                p => format!("{p}.{k}"),
            };
            if !keys.insert(k) {
                return Err(serde::de::Error::custom(format!("{DUP}{path}")));
            }
            map.next_value_seed(DupCheck { path, top: false })?;
        }
        Ok(())
    }
}

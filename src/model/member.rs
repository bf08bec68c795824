//! Everything nudge keeps about one member, and its compact encoding.

use crate::base::value::Value;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

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

/// A member's tag or an attribute's name. Held inline up to 24 bytes
/// (every name a marketer writes): the daily tick looks up each tag and
/// attribute of every member, and a heap string per name made that a
/// cache miss per name (most of a 20-rule evaluation's time in
/// `benches/eval.rs`: 119 ns of 238 per member) and an allocation per name
/// when a record is decoded. Stored and printed as a plain string.
pub type Name = compact_str::CompactString;

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
    pub tags: Vec<Name>,
    pub birthday: Option<i32>,
    pub attributes: Vec<(Name, Stored)>,
    /// Packed after the record's other fields (`super::encoding`).
    #[serde(serialize_with = "empty")]
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
    /// (`points.expire_after`); spent and expired points leave the oldest
    /// lots. Packed after the record's other fields (`super::encoding`).
    #[serde(serialize_with = "empty")]
    pub point_lots: Vec<(i32, i64)>,
    /// Purchases that can still be refunded (`refund.within`), oldest
    /// first. Packed after the record's other fields (`super::encoding`).
    #[serde(serialize_with = "empty")]
    pub purchases: Vec<PurchaseEntry>,
    /// One ID: the identifiers (kind, value) linked to the member.
    pub ids: Vec<(String, String)>,
    /// Members merged into this one (their ids now lead here).
    pub merged: Vec<String>,
    /// What the rules decided for the member lately, newest last (the
    /// last `HISTORY_LEN`), for `nudge explain`.
    pub history: Vec<Decision>,
    /// Stored value (`credit wallet`, `debit wallet`), in money. Last, so
    /// that a record of format 2 is this one without it (see `decode`).
    #[serde(with = "dec")]
    pub wallet: Decimal,
    /// Spend on the first purchase day, so that repeat purchases' mean
    /// value (what Gamma-Gamma reads) leaves it out. `None` for a record
    /// from before it was kept.
    #[serde(with = "dec_opt")]
    pub first_day_spend: Option<Decimal>,
    /// Recent purchase days, ascending: every purchase day from the first
    /// one listed on, as far back as the dedup window reaches from the last
    /// purchase, so that a purchase arriving late can tell whether its day
    /// is a new purchase day. Empty in a record from before format 4.
    pub recent_days: Vec<i32>,
    /// The events applied to the member within the dedup window, so that
    /// a redelivery is found in the record the event reads anyway (one
    /// read and one write per event). Packed after the record (format 6).
    #[serde(skip)]
    pub seen: Vec<SeenEvent>,
    /// UTC days whose ids did not fit in `seen` (it holds at most
    /// `SEEN_IN_RECORD`) and went to markers of their own in the store.
    #[serde(skip)]
    pub seen_spilled: Vec<i32>,
}

/// The most event ids a record keeps (`MemberRecord::seen`); a member with
/// more events within the dedup window (a shared "guest" id at the tills)
/// has the rest kept as markers of their own, so that neither its record
/// nor the search of it grows with its events: 256 ids are 5 KB, searched
/// in well under a microsecond.
pub const SEEN_IN_RECORD: usize = 256;

/// An event applied to a member, kept for the dedup window. Plain numbers
/// (`Copy`), so that a member with thousands of events in the window costs
/// a copy of them per event, not an allocation per id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeenEvent {
    /// The UTC day of the event's time (the window is by UTC day).
    pub day: i32,
    /// The event id's hash ([`SeenEvent::id_hash`]). Two ids of one member
    /// and day with the same 64-bit hash would be taken for one: about one
    /// chance in 10^10 for a member with 50,000 events in the window.
    pub id: u64,
    /// The body's hash, its low 64 bits: a redelivery with another body
    /// is refused as a conflict.
    pub hash: u64,
}

impl SeenEvent {
    pub fn id_hash(id: &str) -> u64 {
        xxhash_rust::xxh3::xxh3_64(id.as_bytes())
    }
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

impl MemberRecord {
    pub fn attribute(&self, name: &str) -> Option<&Stored> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    pub fn set_attribute(&mut self, name: &str, v: Stored) {
        match self.attributes.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = v,
            None => self.attributes.push((Name::from(name), v)),
        }
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// Decimals in member records: scale and mantissa as varints (exact, and
/// decoded without parsing text: records are read on every tick).
pub(super) mod dec_opt {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
        d.map(|d| (d.scale() as u8, d.mantissa())).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
        match <Option<(u8, i128)>>::deserialize(d)? {
            None => Ok(None),
            Some((scale, mantissa)) => Decimal::try_from_i128_with_scale(mantissa, scale as u32)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

pub(super) mod dec {
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

/// Serializes a list as empty: for the fields packed after the record
/// (`super::encoding`).
pub(super) fn empty<T, S: serde::Serializer>(_: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(std::iter::empty::<u8>())
}

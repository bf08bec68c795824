//! The config file (`nudge.yaml`) and the schema it declares.
//!
//! Two types, as in Vector: `ConfigFile` is the file as written (serde,
//! unknown keys rejected, values kept as spanned text), and `Schema` is the
//! validated runtime form the checker and engine use. `load` turns one into
//! the other, collecting every error with its line and column.

use crate::diag::{Code, Diagnostic, SourceId, Span, did_you_mean};
use crate::yaml::{self, Positions, Spanned};
use rust_decimal::Decimal;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;

type S = Spanned<String>;

/// An attribute: `stars: int`, or `stars: { type: int, default: 0 }`.
/// Plain strings: positions do not survive serde's untagged buffering, so
/// errors about them point at the attribute's name.
#[derive(Deserialize)]
#[serde(untagged)]
enum AttrFile {
    Type(String),
    Full(AttrFull),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttrFull {
    #[serde(rename = "type")]
    ty: String,
    default: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    timezone: Option<S>,
    tiers: Option<Vec<S>>,
    purchase: Option<PurchaseFile>,
    #[serde(default)]
    attributes: HashMap<S, AttrFile>,
    #[serde(default)]
    events: HashMap<S, Option<HashMap<S, S>>>,
    #[serde(default)]
    coupons: HashMap<S, CouponFile>,
    #[serde(default)]
    channels: HashMap<S, Option<ChannelFile>>,
    points: Option<PointsFile>,
    schedule: Option<ScheduleFile>,
    paths: Option<PathsFile>,
    http: Option<HttpFile>,
    #[serde(default)]
    sinks: Vec<SinkFile>,
    plugin_limits: Option<PluginLimitsFile>,
    control_group: Option<S>,
    consent: Option<ConsentFile>,
    coupon_secret: Option<S>,
    redeem: Option<RedeemFile>,
    refund: Option<RefundFile>,
    #[serde(default)]
    ids: Vec<S>,
    attribution_window: Option<S>,
    storage: Option<StorageFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StorageFile {
    cache_mb: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundFile {
    event: Option<S>,
    purchase: Option<S>,
    amount: Option<S>,
    within: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedeemFile {
    event: Option<S>,
    field: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginLimitsFile {
    max_operations: Option<S>,
    max_call_depth: Option<S>,
    max_expr_depth: Option<S>,
    max_string_bytes: Option<S>,
    max_array: Option<S>,
    max_map: Option<S>,
    max_variables: Option<S>,
    max_functions: Option<S>,
    deadline_ms: Option<S>,
    max_intents: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurchaseFile {
    event: Option<S>,
    amount: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CouponFile {
    threshold: Option<S>,
    discount: S,
    valid: Option<S>,
    channel: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelFile {
    cap: Option<S>,
    quiet_hours: Option<S>,
    consent: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentFile {
    grant: Option<S>,
    withdraw: Option<S>,
    field: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PointsFile {
    expire_after: Option<S>,
    remind_before: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleFile {
    daily_at: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PathsFile {
    rules: Option<S>,
    plugins: Option<S>,
    data: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    listen: Option<S>,
    token: Option<S>,
    header_timeout_ms: Option<S>,
    request_timeout_ms: Option<S>,
    max_connections: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SinkFile {
    kind: S,
    path: Option<S>,
    url: Option<S>,
    plugin: Option<S>,
}

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
    fn parse_field(s: &str) -> Option<(FieldType, bool)> {
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

    fn parse(s: &str) -> Option<FieldType> {
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

#[derive(Clone, Debug)]
pub struct Field {
    pub name: String,
    pub ty: FieldType,
    /// Written `type?`: events may leave it out (it is then null).
    pub optional: bool,
    /// An attribute's value until a rule sets it (`default: 0`); without
    /// one it is null, and arithmetic on it stays null.
    pub default: Option<crate::lang::program::Value>,
}

#[derive(Clone, Debug)]
pub struct EventType {
    pub name: String,
    pub fields: Vec<Field>,
}

impl EventType {
    pub fn field(&self, name: &str) -> Option<(usize, &Field)> {
        self.fields.iter().enumerate().find(|(_, f)| f.name == name)
    }
}

#[derive(Clone, Debug)]
pub struct CouponTemplate {
    pub name: String,
    pub threshold: Decimal,
    pub discount: Decimal,
    pub valid_days: i64,
    pub channel: Option<String>,
}

/// At most `count` contacts per member per `per_secs` on a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap {
    pub count: u32,
    pub per_secs: i64,
}

#[derive(Clone, Debug)]
pub struct Channel {
    pub name: String,
    pub cap: Option<Cap>,
    /// Minutes after local midnight: from, to (may wrap past midnight).
    pub quiet_hours: Option<(u16, u16)>,
    /// Members must have consented before they are contacted (`opt_in`);
    /// otherwise only a withdrawal stops contact (`opt_out`, the default).
    pub opt_in: bool,
}

/// Which events grant and withdraw consent to a channel, and the field
/// naming the channel.
#[derive(Clone, Debug, Default)]
pub struct ConsentEvents {
    pub grant: Option<usize>,
    pub withdraw: Option<usize>,
    pub field: String,
}

#[derive(Clone, Debug, Default)]
pub struct PointsPolicy {
    pub expire_after_days: Option<i64>,
    pub remind_before_days: Option<i64>,
}

#[derive(Clone, Debug)]
pub enum Sink {
    File { path: PathBuf },
    Webhook { url: String },
    Plugin { plugin: String },
}

#[derive(Clone, Debug)]
pub struct Paths {
    pub rules: PathBuf,
    pub plugins: PathBuf,
    pub data: PathBuf,
}

/// What the config declares, validated.
#[derive(Clone, Debug)]
pub struct Schema {
    pub timezone_name: String,
    pub timezone: jiff::tz::TimeZone,
    /// In order, lowest first.
    pub tiers: Vec<String>,
    pub purchase_event: String,
    pub purchase_amount: String,
    pub attributes: Vec<Field>,
    pub events: Vec<EventType>,
    pub coupons: Vec<CouponTemplate>,
    pub channels: Vec<Channel>,
    pub points: PointsPolicy,
    /// Minutes after local midnight.
    pub daily_at: u16,
    pub paths: Paths,
    pub listen: String,
    pub token: Option<String>,
    pub http_limits: HttpLimits,
    /// sled's page cache, in bytes (`storage.cache_mb`).
    pub cache_bytes: u64,
    pub sinks: Vec<Sink>,
    pub plugin_limits: crate::plugins::Limits,
    /// Members held out of every rule, in parts per million.
    pub control_group_ppm: u32,
    pub consent: ConsentEvents,
    /// Signs coupon codes; without it coupons carry no code.
    pub coupon_secret: Option<String>,
    /// The event type that redeems a coupon, and its field with the code.
    pub redeem: Option<(usize, usize)>,
    pub refund: Option<RefundPolicy>,
    /// Kinds of identifiers events may carry in `ids` (One ID).
    pub id_kinds: Vec<String>,
    /// Days after a firing in which a purchase counts as its conversion.
    pub attribution_days: i64,
}

/// Refund events: which type, its field naming the purchase (the purchase
/// event's id), its optional amount field (absent: the whole rest), and how
/// long purchases can be refunded.
#[derive(Clone, Debug)]
pub struct RefundPolicy {
    pub event: usize,
    pub purchase_field: usize,
    pub amount_field: Option<usize>,
    pub within_days: i32,
}

/// Triggers that are not event types.
pub const BUILTIN_TRIGGERS: &[&str] = &["tick", "tier_up", "tier_down"];

/// What a client may hold of the HTTP server: the defaults keep a
/// slow-loris client (headers or body a byte at a time) from holding
/// connections, and so file descriptors, for ever.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpLimits {
    /// All of a request's headers must arrive within this.
    pub header_timeout: std::time::Duration,
    /// Reading the body and answering must finish within this (408 if not).
    pub request_timeout: std::time::Duration,
    /// Connections open at once; more wait to be accepted.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: std::time::Duration::from_secs(10),
            request_timeout: std::time::Duration::from_secs(30),
            max_connections: 1024,
        }
    }
}

impl Schema {
    pub fn tier(&self, name: &str) -> Option<u8> {
        self.tiers.iter().position(|t| t == name).map(|i| i as u8)
    }
    pub fn event(&self, name: &str) -> Option<(usize, &EventType)> {
        self.events.iter().enumerate().find(|(_, e)| e.name == name)
    }
    pub fn attribute(&self, name: &str) -> Option<(usize, &Field)> {
        self.attributes
            .iter()
            .enumerate()
            .find(|(_, a)| a.name == name)
    }
    pub fn coupon(&self, name: &str) -> Option<(usize, &CouponTemplate)> {
        self.coupons
            .iter()
            .enumerate()
            .find(|(_, c)| c.name == name)
    }
    pub fn channel(&self, name: &str) -> Option<(usize, &Channel)> {
        self.channels
            .iter()
            .enumerate()
            .find(|(_, c)| c.name == name)
    }
    pub fn tiers_list(&self) -> String {
        self.tiers.join(", ")
    }
}

/// Validates the config text. `base` is the folder relative paths are
/// resolved against (the config's folder).
pub fn load(
    source: SourceId,
    text: &str,
    base: &std::path::Path,
) -> Result<Schema, Vec<Diagnostic>> {
    let node = yaml::parse(text, yaml::Top::Mapping).map_err(|e| {
        vec![
            Diagnostic::new(
                Code::ConfigSyntax,
                source,
                Span::new(e.offset, e.offset + 1),
                e.message,
            )
            .label("here")
            .hint("the config is YAML: `key: value`, indented with spaces"),
        ]
    })?;
    if node.as_mapping().is_none() {
        return Err(vec![Diagnostic::new(
            Code::ConfigShape,
            source,
            Span::new(0, 1),
            "the config must be a mapping of keys",
        )]);
    }
    let file: ConfigFile = yaml::from_node(&node, text).map_err(|e| {
        vec![
            Diagnostic::new(
                Code::ConfigShape,
                source,
                Span::new(e.offset, e.offset + 1),
                e.message,
            )
            .label("here"),
        ]
    })?;
    let mut v = Validator {
        source,
        pos: Positions::new(text),
        diags: Vec::new(),
    };
    let schema = v.schema(file, base);
    if v.diags.is_empty() {
        Ok(schema)
    } else {
        Err(v.diags)
    }
}

struct Validator<'a> {
    source: SourceId,
    pos: Positions<'a>,
    diags: Vec<Diagnostic>,
}

fn sorted<K, V>(m: HashMap<Spanned<K>, V>) -> Vec<(Spanned<K>, V)> {
    let mut v: Vec<_> = m.into_iter().collect();
    v.sort_by_key(|(k, _)| k.span().start().map_or(0, |m| m.character()));
    v
}

impl Validator<'_> {
    fn err(&mut self, at: &S, msg: impl Into<String>, hint: Option<String>) {
        let span = self.pos.span(at.span());
        self.diags
            .push(Diagnostic::new(Code::ConfigValue, self.source, span, msg).maybe_hint(hint));
    }

    fn name(&mut self, n: &S, what: &str) -> bool {
        // As the grammar's `ident`: letters of any script, ASCII digits, `_`.
        let ok = n
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
            && n.chars()
                .all(|c| c.is_alphabetic() || c.is_ascii_digit() || c == '_')
            && !crate::lang::KEYWORDS.contains(&n.as_str());
        if !ok {
            self.err(
                n,
                format!("`{}` cannot be a {what} name", n.as_str()),
                Some(
                    "names are letters, digits and `_`, start with a letter, and are not keywords"
                        .into(),
                ),
            );
        }
        ok
    }

    /// An attribute's `default:` as a value of its type.
    fn default_value(&mut self, ty: FieldType, d: &S) -> Option<crate::lang::program::Value> {
        use crate::lang::program::Value;
        let text = d.as_str().trim();
        let v = match ty {
            FieldType::Int => text.parse().ok().map(Value::Int),
            FieldType::Decimal | FieldType::Money => rust_decimal::Decimal::from_str_exact(text)
                .ok()
                .map(Value::Dec),
            FieldType::String => Some(Value::Str(text.into())),
            FieldType::Bool => match text {
                "true" => Some(Value::Bool(true)),
                "false" => Some(Value::Bool(false)),
                _ => None,
            },
            FieldType::Date => crate::lang::parse::parse_date(text).map(Value::Date),
            FieldType::Duration => None,
        };
        if v.is_none() {
            self.err(
                d,
                format!("`{text}` is not a value of type {}", ty.name()),
                Some("write a value of the attribute's type: `default: 0`, `default: \"none\"`, `default: 2026-01-01`; durations take no default".into()),
            );
        }
        v
    }

    /// A tier named like a built-in field or `today`, `member`, `event`
    /// would load and then be unusable: in a rule the name means the field.
    fn not_reserved(&mut self, n: &S, what: &str) -> bool {
        let name = n.as_str();
        let builtin = crate::lang::check::BUILTIN_FIELDS
            .iter()
            .any(|(b, _)| *b == name);
        if !builtin && !["today", "member", "event"].contains(&name) {
            return true;
        }
        self.err(
            n,
            format!("`{name}` cannot be a {what} name: in rules it means the built-in `{name}`"),
            Some(format!("pick another name, e.g. `{what}_{name}`")),
        );
        false
    }

    /// `refund:`, or a declared `refund` event type with a string field
    /// `purchase` by default.
    fn refund(&mut self, f: Option<&RefundFile>, events: &[EventType]) -> Option<RefundPolicy> {
        let event = f.and_then(|r| r.event.as_ref());
        let name = event.map_or("refund", |e| e.as_str());
        let Some(kind) = events.iter().position(|e| e.name == name) else {
            if let Some(e) = event {
                self.err(
                    e,
                    format!("unknown event type `{name}`"),
                    Some("declare it under `events:`".into()),
                );
            } else if f.is_some() {
                self.diags.push(
                    Diagnostic::new(
                        Code::ConfigValue,
                        self.source,
                        Span::new(0, 0),
                        "`refund:` needs a `refund` event type (or `refund.event`)",
                    )
                    .hint(
                        "declare e.g. `events: { refund: { purchase: string, amount: money? } }`",
                    ),
                );
            }
            return None;
        };
        let et = &events[kind];
        let purchase = f.and_then(|r| r.purchase.as_ref());
        let pname = purchase.map_or("purchase", |p| p.as_str());
        let purchase_field = match et.field(pname) {
            Some((i, fl)) if fl.ty == FieldType::String => Some(i),
            _ => {
                let msg = format!(
                    "the refund event `{name}` needs a string field `{pname}` with the refunded purchase's event id"
                );
                self.err_at(purchase, msg);
                None
            }
        };
        let amount = f.and_then(|r| r.amount.as_ref());
        let aname = amount.map_or("amount", |a| a.as_str());
        let amount_field = match et.field(aname) {
            Some((i, fl)) if fl.ty == FieldType::Money => Some(i),
            Some(_) => {
                let msg = format!("the refund's `{aname}` field must be of type money");
                self.err_at(amount, msg);
                None
            }
            None => {
                if let Some(a) = amount {
                    self.err(a, format!("`{name}` has no field `{aname}`"), None);
                }
                None
            }
        };
        let within_days = match f.and_then(|r| r.within.as_ref()) {
            Some(w) => self.duration_days(w)? as i32,
            None => 90,
        };
        Some(RefundPolicy {
            event: kind,
            purchase_field: purchase_field?,
            amount_field,
            within_days,
        })
    }

    /// An error at the key's value when the file has it, else about the
    /// file as a whole (a default that does not fit).
    fn err_at(&mut self, at: Option<&S>, msg: String) {
        match at {
            Some(a) => self.err(a, msg, None),
            None => self.diags.push(Diagnostic::new(
                Code::ConfigValue,
                self.source,
                Span::new(0, 0),
                msg,
            )),
        }
    }

    fn duration_days(&mut self, s: &S) -> Option<i64> {
        match parse_duration(s) {
            Some(secs) if secs % 86_400 == 0 && secs > 0 => Some(secs / 86_400),
            _ => {
                self.err(
                    s,
                    format!("`{}` is not a duration in days", s.as_str()),
                    Some("write e.g. `30d` or `2w`".into()),
                );
                None
            }
        }
    }

    fn money(&mut self, s: &S) -> Option<Decimal> {
        match Decimal::from_str(s.trim()) {
            Ok(d) if d >= Decimal::ZERO => Some(d),
            _ => {
                self.err(
                    s,
                    format!("`{}` is not an amount of money", s.as_str()),
                    Some("write a plain number, e.g. `30` or `9.90`".into()),
                );
                None
            }
        }
    }

    fn schema(&mut self, f: ConfigFile, base: &std::path::Path) -> Schema {
        let timezone_name = f
            .timezone
            .as_ref()
            .map_or("UTC".to_string(), |t| t.to_string());
        let timezone = match jiff::tz::TimeZone::get(&timezone_name) {
            Ok(tz) => tz,
            Err(_) => {
                if let Some(t) = &f.timezone {
                    self.err(
                        t,
                        format!("unknown time zone `{}`", t.as_str()),
                        Some("use an IANA name such as `Asia/Shanghai` or `Europe/Berlin`".into()),
                    );
                }
                jiff::tz::TimeZone::UTC
            }
        };

        let mut tiers = Vec::new();
        match &f.tiers {
            None => self.diags.push(
                Diagnostic::new(
                    Code::ConfigShape,
                    self.source,
                    Span::new(0, 0),
                    "the config has no `tiers`",
                )
                .hint("list the tiers lowest first, e.g. `tiers: [bronze, silver, gold, diamond]`"),
            ),
            Some(ts) if ts.is_empty() => self.diags.push(
                Diagnostic::new(
                    Code::ConfigValue,
                    self.source,
                    Span::new(0, 0),
                    "`tiers` is empty; every member has a tier",
                )
                .hint("list the tiers lowest first, e.g. `tiers: [bronze, silver, gold, diamond]`"),
            ),
            Some(ts) => {
                if ts.len() > 64 {
                    self.err(&ts[64], "more than 64 tiers", None);
                }
                for t in ts {
                    if self.name(t, "tier") && self.not_reserved(t, "tier") {
                        if tiers.iter().any(|x| x == t.as_str()) {
                            self.err(t, format!("tier `{}` is listed twice", t.as_str()), None);
                        }
                        tiers.push(t.to_string());
                    }
                }
            }
        }

        let mut attributes: Vec<Field> = Vec::new();
        for (name, attr) in sorted(f.attributes) {
            let at = |text: String| Spanned::new(*name.span(), text);
            let (ty, default) = match attr {
                AttrFile::Type(ty) => (at(ty), None),
                AttrFile::Full(full) => (at(full.ty), full.default.map(at)),
            };
            if !self.name(&name, "attribute") {
                continue;
            }
            if crate::lang::check::BUILTIN_FIELDS
                .iter()
                .any(|(b, _)| *b == name.as_str())
            {
                self.err(
                    &name,
                    format!("`{}` is a built-in member field", name.as_str()),
                    Some("pick another name; nudge keeps this one itself".into()),
                );
                continue;
            }
            match FieldType::parse(ty.trim()) {
                Some(t) => {
                    let default = default.and_then(|d| self.default_value(t, &d));
                    attributes.push(Field {
                        name: name.to_string(),
                        ty: t,
                        optional: true,
                        default,
                    })
                }
                None => self.err(
                    &ty,
                    format!("unknown type `{}`", ty.as_str()),
                    Some(format!("types are: {}", FieldType::NAMES.join(", "))),
                ),
            }
        }

        let mut events: Vec<EventType> = Vec::new();
        for (name, fields) in sorted(f.events) {
            if !self.name(&name, "event type") {
                continue;
            }
            if BUILTIN_TRIGGERS.contains(&name.as_str()) {
                self.err(
                    &name,
                    format!(
                        "`{}` is a built-in trigger, not an event type",
                        name.as_str()
                    ),
                    None,
                );
                continue;
            }
            let mut et = EventType {
                name: name.to_string(),
                fields: Vec::new(),
            };
            for (fname, ty) in sorted(fields.unwrap_or_default()) {
                if !self.name(&fname, "field") {
                    continue;
                }
                if ["id", "type", "member", "ids", "at"].contains(&fname.as_str()) {
                    self.err(
                        &fname,
                        format!("`{}` is part of every event", fname.as_str()),
                        Some("every event has `id`, `type`, `member` (or `ids`) and `at`".into()),
                    );
                    continue;
                }
                match FieldType::parse_field(&ty) {
                    Some((t, optional)) => et.fields.push(Field {
                        default: None,
                        name: fname.to_string(),
                        ty: t,
                        optional,
                    }),
                    None => self.err(
                        &ty,
                        format!("unknown type `{}`", ty.as_str()),
                        Some(format!(
                            "types are: {} (`?` after the type: optional)",
                            FieldType::NAMES.join(", ")
                        )),
                    ),
                }
            }
            events.push(et);
        }

        let (purchase_event, purchase_amount) = match &f.purchase {
            Some(p) => (
                p.event
                    .as_ref()
                    .map_or("purchase".into(), |s| s.to_string()),
                p.amount.as_ref().map_or("amount".into(), |s| s.to_string()),
            ),
            None => ("purchase".into(), "amount".into()),
        };
        match events.iter().find(|e| e.name == purchase_event) {
            None => {
                let d = Diagnostic::new(
                    Code::ConfigValue,
                    self.source,
                    f.purchase.as_ref().and_then(|p| p.event.as_ref()).map_or(Span::new(0, 0), |s| self.pos.span(s.span())),
                    format!("the purchase event `{purchase_event}` is not declared under `events`"),
                )
                .hint(format!("declare it: `events: {{ {purchase_event}: {{ {purchase_amount}: money }} }}`"));
                self.diags.push(d);
            }
            Some(e) => match e.fields.iter().find(|x| x.name == purchase_amount) {
                Some(fl) if fl.ty == FieldType::Money && !fl.optional => {}
                _ => self.diags.push(
                    Diagnostic::new(Code::ConfigValue, self.source, Span::new(0, 0), format!("the purchase event `{purchase_event}` needs a required field `{purchase_amount}` of type money"))
                        .hint(format!("declare it under `events: {{ {purchase_event}: {{ {purchase_amount}: money }} }}`")),
                ),
            },
        }

        let mut channels: Vec<Channel> = Vec::new();
        for (name, ch) in sorted(f.channels) {
            if !self.name(&name, "channel") {
                continue;
            }
            let mut c = Channel {
                name: name.to_string(),
                cap: None,
                quiet_hours: None,
                opt_in: false,
            };
            if let Some(ch) = ch {
                if let Some(cap) = &ch.cap {
                    c.cap = parse_cap(cap);
                    if c.cap.is_none() {
                        self.err(
                            cap,
                            format!("`{}` is not a frequency cap", cap.as_str()),
                            Some("write `N per DURATION`, e.g. `2 per 7d`".into()),
                        );
                    }
                }
                if let Some(m) = &ch.consent {
                    match m.as_str() {
                        "opt_in" => c.opt_in = true,
                        "opt_out" => {}
                        other => self.err(m, format!("`{other}` is not a consent mode"), Some("write `opt_in` (contact only after consent) or `opt_out` (until withdrawn)".into())),
                    }
                }
                if let Some(q) = &ch.quiet_hours {
                    c.quiet_hours = parse_quiet_hours(q);
                    if c.quiet_hours.is_none() {
                        self.err(
                            q,
                            format!("`{}` is not a time range", q.as_str()),
                            Some("write `HH:MM-HH:MM` in local time, e.g. `21:00-09:00`".into()),
                        );
                    }
                }
            }
            channels.push(c);
        }

        let mut coupons = Vec::new();
        for (name, c) in sorted(f.coupons) {
            if !self.name(&name, "coupon") {
                continue;
            }
            let threshold = match &c.threshold {
                Some(t) => self.money(t),
                None => Some(Decimal::ZERO),
            };
            let discount = self.money(&c.discount);
            let valid_days = match &c.valid {
                Some(v) => self.duration_days(v),
                None => Some(30),
            };
            if let Some(ch) = &c.channel
                && !channels.iter().any(|x| x.name == ch.as_str())
            {
                let hint = did_you_mean(ch, channels.iter().map(|x| x.name.as_str()))
                    .unwrap_or_else(|| {
                        format!(
                            "channels are: {}",
                            channels
                                .iter()
                                .map(|x| x.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    });
                self.err(ch, format!("unknown channel `{}`", ch.as_str()), Some(hint));
            }
            if let (Some(t), Some(d)) = (threshold, discount) {
                if d.is_zero() || (!t.is_zero() && d >= t) {
                    self.err(
                        &c.discount,
                        format!("coupon `{}` saves {d} on a spend of {t}", name.as_str()),
                        Some("the discount must be above zero and below the threshold".into()),
                    );
                }
                if let Some(v) = valid_days {
                    coupons.push(CouponTemplate {
                        name: name.to_string(),
                        threshold: t,
                        discount: d,
                        valid_days: v,
                        channel: c.channel.as_ref().map(|s| s.to_string()),
                    });
                }
            }
        }

        let mut points = PointsPolicy::default();
        if let Some(p) = &f.points {
            points.expire_after_days = p.expire_after.as_ref().and_then(|s| self.duration_days(s));
            points.remind_before_days =
                p.remind_before.as_ref().and_then(|s| self.duration_days(s));
        }

        let daily_at = match f.schedule.as_ref().and_then(|s| s.daily_at.as_ref()) {
            Some(s) => parse_hhmm(s).unwrap_or_else(|| {
                self.err(
                    s,
                    format!("`{}` is not a time of day", s.as_str()),
                    Some("write `HH:MM`, e.g. `09:00`".into()),
                );
                540
            }),
            None => 540,
        };

        let path = |p: Option<&S>, default: &str| base.join(p.map_or(default, |s| s.as_str()));
        let paths = Paths {
            rules: path(f.paths.as_ref().and_then(|p| p.rules.as_ref()), "rules"),
            plugins: path(f.paths.as_ref().and_then(|p| p.plugins.as_ref()), "plugins"),
            data: path(f.paths.as_ref().and_then(|p| p.data.as_ref()), "data"),
        };

        let listen = match f.http.as_ref().and_then(|h| h.listen.as_ref()) {
            Some(l) => {
                if l.parse::<std::net::SocketAddr>().is_err() {
                    self.err(
                        l,
                        format!("`{}` is not an address to listen on", l.as_str()),
                        Some("write `HOST:PORT`, e.g. `127.0.0.1:8080`".into()),
                    );
                }
                l.to_string()
            }
            None => "127.0.0.1:8080".into(),
        };
        let token = f.http.as_ref().and_then(|h| h.token.as_ref());
        if let Some(t) = token
            && t.trim().is_empty()
        {
            self.err(
                t,
                "an empty `http.token` would turn authentication off",
                Some("set a long random string, or leave `token` out to answer only loopback names without one".into()),
            );
        }
        let token = token.map(|t| t.to_string());

        let http_limits = self.http_limits(f.http.as_ref());
        let cache_bytes = f
            .storage
            .as_ref()
            .and_then(|st| self.positive(&st.cache_mb))
            .map_or(crate::store::DEFAULT_CACHE_BYTES, |mb| {
                mb.saturating_mul(1 << 20)
            });

        let mut sinks = Vec::new();
        for s in &f.sinks {
            let need = |v: &mut Self, field: &Option<S>, what: &str| -> Option<String> {
                match field {
                    Some(x) => Some(x.to_string()),
                    None => {
                        v.err(
                            &s.kind,
                            format!("a `{}` sink needs `{what}`", s.kind.as_str()),
                            None,
                        );
                        None
                    }
                }
            };
            match s.kind.as_str() {
                "file" => {
                    if let Some(p) = need(self, &s.path, "path") {
                        sinks.push(Sink::File { path: base.join(p) });
                    }
                }
                "webhook" => {
                    if let Some(u) = need(self, &s.url, "url") {
                        if u.starts_with("https://") {
                            self.err(
                                s.url.as_ref().unwrap_or(&s.kind),
                                format!("`{u}`: https webhooks need TLS, which this build of nudge leaves out"),
                                Some("use an http:// URL (a relay on this machine or in your network)".into()),
                            );
                        } else if !u.starts_with("http://") {
                            self.err(
                                s.url.as_ref().unwrap_or(&s.kind),
                                format!("`{u}` is not an http(s) URL"),
                                None,
                            );
                        }
                        sinks.push(Sink::Webhook { url: u });
                    }
                }
                "plugin" => {
                    if let Some(p) = need(self, &s.plugin, "plugin") {
                        sinks.push(Sink::Plugin { plugin: p });
                    }
                }
                other => self.err(
                    &s.kind,
                    format!("unknown sink kind `{other}`"),
                    Some("sink kinds are: file, webhook, plugin".into()),
                ),
            }
        }

        let plugin_limits = self.plugin_limits(f.plugin_limits.as_ref());
        let control_group_ppm = match &f.control_group {
            Some(c) => match c
                .trim()
                .strip_suffix('%')
                .and_then(|p| Decimal::from_str(p.trim()).ok())
            {
                Some(p) if p >= Decimal::ZERO && p < Decimal::from(100) => {
                    (p * Decimal::from(10_000)).trunc().try_into().unwrap_or(0)
                }
                _ => {
                    self.err(
                        c,
                        format!("`{}` is not a share below 100%", c.as_str()),
                        Some("write e.g. `control_group: 5%`".into()),
                    );
                    0
                }
            },
            None => 0,
        };
        let consent = {
            let c = f.consent.as_ref();
            let event = |v: &mut Self, key: Option<&S>, default: &str| -> Option<usize> {
                match key {
                    Some(k) => {
                        let found = events.iter().position(|e| e.name == k.as_str());
                        if found.is_none() {
                            v.err(
                                k,
                                format!("unknown event type `{}`", k.as_str()),
                                Some("declare it under `events:`".into()),
                            );
                        }
                        found
                    }
                    None => events.iter().position(|e| e.name == default),
                }
            };
            let grant = event(self, c.and_then(|c| c.grant.as_ref()), "consent");
            let withdraw = event(self, c.and_then(|c| c.withdraw.as_ref()), "unsubscribe");
            let field = c
                .and_then(|c| c.field.as_ref())
                .map_or("channel".to_string(), |f| f.to_string());
            for (i, key) in [(grant, "grant"), (withdraw, "withdraw")] {
                if let Some(i) = i
                    && events[i]
                        .field(&field)
                        .is_none_or(|(_, fl)| fl.ty != FieldType::String)
                {
                    self.diags.push(Diagnostic::new(Code::ConfigValue, self.source, Span::new(0, 0), format!("the consent {key} event `{}` needs a string field `{field}` naming the channel", events[i].name)));
                }
            }
            ConsentEvents {
                grant,
                withdraw,
                field,
            }
        };
        let coupon_secret = f.coupon_secret.as_ref().map(|s| s.to_string());
        let redeem = {
            let r = f.redeem.as_ref();
            let event = r.and_then(|r| r.event.as_ref());
            let name = event.map_or("redeem", |e| e.as_str());
            let field = r
                .and_then(|r| r.field.as_ref())
                .map_or("coupon", |x| x.as_str());
            match events.iter().position(|e| e.name == name) {
                Some(i) => match events[i].field(field) {
                    Some((fi, fl)) if fl.ty == FieldType::String => Some((i, fi)),
                    _ => {
                        self.diags.push(Diagnostic::new(Code::ConfigValue, self.source, Span::new(0, 0), format!("the redeem event `{name}` needs a string field `{field}` with the coupon code")));
                        None
                    }
                },
                None => {
                    if let Some(e) = event {
                        self.err(
                            e,
                            format!("unknown event type `{name}`"),
                            Some("declare it under `events:`".into()),
                        );
                    }
                    None
                }
            }
        };
        let refund = self.refund(f.refund.as_ref(), &events);
        let mut id_kinds: Vec<String> = Vec::new();
        for k in &f.ids {
            if k.as_str() == "member" {
                self.err(
                    k,
                    "`member` is not an identifier kind: events name members directly",
                    None,
                );
            } else if id_kinds.iter().any(|x| x == k.as_str()) {
                self.err(
                    k,
                    format!("identifier kind `{}` is listed twice", k.as_str()),
                    None,
                );
            } else if self.name(k, "kind") {
                id_kinds.push(k.to_string());
            }
        }
        let attribution_days = match &f.attribution_window {
            Some(w) => self.duration_days(w).unwrap_or(30),
            None => 30,
        };
        Schema {
            attribution_days,
            id_kinds,
            refund,
            plugin_limits,
            control_group_ppm,
            consent,
            coupon_secret,
            redeem,
            timezone_name,
            timezone,
            tiers,
            purchase_event,
            purchase_amount,
            attributes,
            events,
            coupons,
            channels,
            points,
            daily_at,
            paths,
            listen,
            token,
            http_limits,
            cache_bytes,
            sinks,
        }
    }
}

impl Validator<'_> {
    fn positive(&mut self, v: &Option<S>) -> Option<u64> {
        let s = v.as_ref()?;
        match s.trim().parse::<u64>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                self.err(
                    s,
                    format!("`{}` is not a positive whole number", s.as_str()),
                    None,
                );
                None
            }
        }
    }

    fn http_limits(&mut self, f: Option<&HttpFile>) -> HttpLimits {
        let mut l = HttpLimits::default();
        let Some(f) = f else { return l };
        let ms = std::time::Duration::from_millis;
        if let Some(n) = self.positive(&f.header_timeout_ms) {
            l.header_timeout = ms(n);
        }
        if let Some(n) = self.positive(&f.request_timeout_ms) {
            l.request_timeout = ms(n);
        }
        if let Some(n) = self.positive(&f.max_connections) {
            l.max_connections = n as usize;
        }
        l
    }

    fn plugin_limits(&mut self, f: Option<&PluginLimitsFile>) -> crate::plugins::Limits {
        let mut l = crate::plugins::Limits::default();
        let Some(f) = f else { return l };
        let mut num = |v: &Option<S>, slot: &mut u64| {
            if let Some(n) = self.positive(v) {
                *slot = n;
            }
        };
        let mut ops = l.max_operations;
        num(&f.max_operations, &mut ops);
        let mut deadline = l.deadline.as_millis() as u64;
        num(&f.deadline_ms, &mut deadline);
        let mut sizes = [
            l.max_call_depth,
            l.max_expr_depth,
            l.max_string_bytes,
            l.max_array,
            l.max_map,
            l.max_variables,
            l.max_functions,
            l.max_intents,
        ]
        .map(|x| x as u64);
        let fields = [
            &f.max_call_depth,
            &f.max_expr_depth,
            &f.max_string_bytes,
            &f.max_array,
            &f.max_map,
            &f.max_variables,
            &f.max_functions,
            &f.max_intents,
        ];
        for (slot, field) in sizes.iter_mut().zip(fields) {
            num(field, slot);
        }
        let [call, expr, string, array, map, vars, fns, intents] = sizes.map(|x| x as usize);
        l.max_operations = ops;
        l.deadline = std::time::Duration::from_millis(deadline);
        (
            l.max_call_depth,
            l.max_expr_depth,
            l.max_string_bytes,
            l.max_array,
        ) = (call, expr, string, array);
        (l.max_map, l.max_variables, l.max_functions, l.max_intents) = (map, vars, fns, intents);
        l
    }
}

/// `30d`, `12h`, `2w` in seconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let n: i64 = s[..s.len() - 1].parse().ok()?;
    let mult = match unit {
        'h' => 3_600,
        'd' => 86_400,
        'w' => 604_800,
        _ => return None,
    };
    n.checked_mul(mult).filter(|v| *v > 0)
}

fn parse_cap(s: &str) -> Option<Cap> {
    let (n, per) = s.split_once(" per ")?;
    Some(Cap {
        count: n.trim().parse().ok().filter(|n| *n > 0)?,
        per_secs: parse_duration(per)?,
    })
}

fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && m.to_string().len() <= 2).then_some(h * 60 + m)
}

fn parse_quiet_hours(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-')?;
    let (a, b) = (parse_hhmm(a)?, parse_hhmm(b)?);
    (a != b).then_some((a, b))
}

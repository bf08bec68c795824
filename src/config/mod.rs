//! The config file (`nudge.yaml`) and the schema it declares.
//!
//! Two types, as in Vector: `ConfigFile` is the file as written (serde,
//! unknown keys rejected, values kept as spanned text), and `Schema` is the
//! validated runtime form the checker and engine use. `load` turns one into
//! the other, collecting every error with its line and column.

pub use crate::model::fields::FieldType;

mod file;
mod validate;

/// The most partitions a data folder may have (`storage.partitions`):
/// each is a sled database with its own files, cache share and writer
/// thread, and more than a big machine's cores gain nothing.
pub const MAX_PARTITIONS: usize = 256;

use crate::base::diag::{Code, Diagnostic, SourceId, Span};
use crate::base::yaml::{self, Positions};
use file::ConfigFile;
use rust_decimal::Decimal;
use std::path::PathBuf;
use std::time::Duration;
use validate::Validator;

#[derive(Clone, Debug)]
pub struct Field {
    pub name: String,
    pub ty: FieldType,
    /// Written `type?`: events may leave it out (it is then null).
    pub optional: bool,
    /// An attribute's value until a rule sets it (`default: 0`); without
    /// one it is null, and arithmetic on it stays null.
    pub default: Option<crate::base::value::Value>,
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

/// A reward of the points mall (`rewards:`).
#[derive(Clone, Debug)]
pub struct Reward {
    pub name: String,
    pub points: i64,
    /// Cash the member pays besides the points (at the till; nudge
    /// records it on the effect).
    pub cash: Option<Decimal>,
    /// How many there are in all, across members; `None`: no limit.
    pub stock: Option<u64>,
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
    File {
        path: PathBuf,
    },
    Webhook {
        url: String,
    },
    Plugin {
        plugin: String,
    },
    /// Cluster mode's effects stream (`nudge.effects.<partition>`): set by
    /// `nudge run --cluster`, never written in the config.
    Stream,
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
    /// The points mall's catalogue, by name.
    pub rewards: Vec<Reward>,
    pub channels: Vec<Channel>,
    pub points: PointsPolicy,
    /// Minutes after local midnight.
    pub daily_at: u16,
    pub paths: Paths,
    pub listen: String,
    pub token: Option<String>,
    pub http_limits: HttpLimits,
    /// sled's page cache, in bytes (`storage.cache_mb`).
    pub cache_bytes: Option<u64>,
    /// Partitions of a data folder this config makes (`storage.partitions`);
    /// a folder that exists keeps the number it was made with.
    pub partitions: usize,
    /// Days of event time within which a redelivered event id is a
    /// duplicate (`storage.dedup_window`); older events are refused.
    pub dedup_window_days: i32,
    /// Days of event time the outbox keeps entries when no sink takes them
    /// (`storage.outbox_retention`).
    pub outbox_retention_days: i32,
    /// Days between fits of the repurchase models at the daily tick, when
    /// rules read predictions (`prediction.refit`).
    pub refit_days: i32,
    /// Where the engine's outbox goes: the config's sinks, or in cluster
    /// mode the effects stream alone ([`Sink::Stream`]).
    pub sinks: Vec<Sink>,
    /// Cluster mode: the config's sinks, delivered from the effects stream
    /// by one node each. Empty on a single node.
    pub stream_sinks: Vec<Sink>,
    /// Where each `kind: plugin` sink names its plugin in the config, for
    /// the load to check against the plugins it finds.
    pub plugin_sink_places: Vec<(String, crate::base::diag::SourceId, crate::base::diag::Span)>,
    pub plugin_limits: PluginLimits,
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

/// What one plugin call may use. The config's `plugin_limits` overrides these.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginLimits {
    /// rhai operations per call (a loop iteration, a function call, ...).
    pub max_operations: u64,
    /// Nested function calls.
    pub max_call_depth: usize,
    /// Nested expressions, at compile time and in functions.
    pub max_expr_depth: usize,
    /// Bytes in one string.
    pub max_string_bytes: usize,
    /// Items in one array.
    pub max_array: usize,
    /// Entries in one map.
    pub max_map: usize,
    /// Variables in scope.
    pub max_variables: usize,
    /// Functions in one plugin.
    pub max_functions: usize,
    /// Wall-clock time per call.
    pub deadline: Duration,
    /// Effect intents one custom action may return.
    pub max_intents: usize,
}

impl Default for PluginLimits {
    fn default() -> PluginLimits {
        PluginLimits {
            max_operations: 1_000_000,
            max_call_depth: 32,
            max_expr_depth: 64,
            max_string_bytes: 64 * 1024,
            max_array: 10_000,
            max_map: 10_000,
            max_variables: 256,
            max_functions: 256,
            deadline: Duration::from_millis(50),
            max_intents: 100,
        }
    }
}

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
    pub fn reward(&self, name: &str) -> Option<&Reward> {
        self.rewards.iter().find(|r| r.name == name)
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
    let node =
        yaml::parse(text, yaml::Top::Mapping).map_err(|e| {
            vec![
                Diagnostic::new(
                    Code::ConfigSyntax,
                    source,
                    Span::char_at(text, e.offset),
                    e.message,
                )
                .label("here")
                .hint(e.hint.unwrap_or_else(|| {
                    "the config is YAML: `key: value`, indented with spaces".into()
                })),
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
            Diagnostic::new(Code::ConfigShape, source, e.span(text), e.message)
                .label("here")
                .maybe_hint(e.hint),
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

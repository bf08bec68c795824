//! The config file as written: serde types with every value kept as
//! spanned text (for errors with line and column) and unknown keys
//! refused. `validate` turns them into the runtime `Schema`.

use crate::base::yaml::Spanned;
use serde::Deserialize;
use std::collections::HashMap;

pub(crate) type S = Spanned<String>;

/// An attribute: `stars: int`, or `stars: { type: int, default: 0 }`.
/// Plain strings: positions do not survive serde's untagged buffering, so
/// errors about them point at the attribute's name.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum AttrFile {
    Type(String),
    Full(AttrFull),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AttrFull {
    #[serde(rename = "type")]
    pub(crate) ty: String,
    pub(crate) default: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    pub(crate) timezone: Option<S>,
    pub(crate) tiers: Option<Spanned<Vec<S>>>,
    pub(crate) purchase: Option<PurchaseFile>,
    #[serde(default)]
    pub(crate) attributes: HashMap<S, AttrFile>,
    #[serde(default)]
    pub(crate) events: HashMap<S, Option<HashMap<S, S>>>,
    #[serde(default)]
    pub(crate) coupons: HashMap<S, CouponFile>,
    #[serde(default)]
    pub(crate) rewards: HashMap<S, RewardFile>,
    #[serde(default)]
    pub(crate) channels: HashMap<S, Option<ChannelFile>>,
    pub(crate) points: Option<PointsFile>,
    pub(crate) schedule: Option<ScheduleFile>,
    pub(crate) paths: Option<PathsFile>,
    pub(crate) http: Option<HttpFile>,
    #[serde(default)]
    pub(crate) sinks: Vec<SinkFile>,
    pub(crate) plugin_limits: Option<PluginLimitsFile>,
    pub(crate) control_group: Option<S>,
    pub(crate) consent: Option<ConsentFile>,
    pub(crate) coupon_secret: Option<S>,
    pub(crate) redeem: Option<RedeemFile>,
    pub(crate) refund: Option<RefundFile>,
    #[serde(default)]
    pub(crate) ids: Vec<S>,
    pub(crate) attribution_window: Option<S>,
    pub(crate) storage: Option<StorageFile>,
    pub(crate) prediction: Option<PredictionFile>,
}

/// `prediction:`: how often the repurchase models are fitted again.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PredictionFile {
    pub(crate) refit: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StorageFile {
    pub(crate) cache_mb: Option<S>,
    pub(crate) dedup_window: Option<S>,
    pub(crate) outbox_retention: Option<S>,
    pub(crate) partitions: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefundFile {
    pub(crate) event: Option<S>,
    pub(crate) purchase: Option<S>,
    pub(crate) amount: Option<S>,
    pub(crate) within: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedeemFile {
    pub(crate) event: Option<S>,
    pub(crate) field: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PluginLimitsFile {
    pub(crate) max_operations: Option<S>,
    pub(crate) max_call_depth: Option<S>,
    pub(crate) max_expr_depth: Option<S>,
    pub(crate) max_string_bytes: Option<S>,
    pub(crate) max_array: Option<S>,
    pub(crate) max_map: Option<S>,
    pub(crate) max_variables: Option<S>,
    pub(crate) max_functions: Option<S>,
    pub(crate) deadline_ms: Option<S>,
    pub(crate) max_intents: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurchaseFile {
    pub(crate) event: Option<S>,
    pub(crate) amount: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CouponFile {
    pub(crate) threshold: Option<S>,
    pub(crate) discount: S,
    pub(crate) valid: Option<S>,
    pub(crate) channel: Option<S>,
}

/// A reward of the points mall: its price in points, optional cash on
/// top, optional stock.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RewardFile {
    pub(crate) points: S,
    pub(crate) cash: Option<S>,
    pub(crate) stock: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChannelFile {
    pub(crate) cap: Option<S>,
    pub(crate) quiet_hours: Option<S>,
    pub(crate) consent: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConsentFile {
    pub(crate) grant: Option<S>,
    pub(crate) withdraw: Option<S>,
    pub(crate) field: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PointsFile {
    pub(crate) expire_after: Option<S>,
    pub(crate) remind_before: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScheduleFile {
    pub(crate) daily_at: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PathsFile {
    pub(crate) rules: Option<S>,
    pub(crate) plugins: Option<S>,
    pub(crate) data: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpFile {
    pub(crate) listen: Option<S>,
    pub(crate) token: Option<S>,
    pub(crate) header_timeout_ms: Option<S>,
    pub(crate) request_timeout_ms: Option<S>,
    pub(crate) max_connections: Option<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SinkFile {
    pub(crate) kind: S,
    pub(crate) path: Option<S>,
    pub(crate) url: Option<S>,
    pub(crate) plugin: Option<S>,
}

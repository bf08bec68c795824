//! Names the rule language reserves: no attribute, tier or event field may
//! take one.

/// Words that cannot be names (fields, attributes, tiers, events, ...).
pub const KEYWORDS: &[&str] = &[
    "rule", "when", "then", "on", "limit", "holdout", "priority", "group", "budget", "and", "or",
    "not", "in", "between", "is", "null", "true", "false", "once", "per", "via", "where", "send",
    "award", "deduct", "set", "tag", "untag", "call", "to",
];

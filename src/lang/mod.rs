//! The rule language: text (or YAML) to a checked, compiled [`RuleSet`].
//!
//! Stages, each with one entry function: `parse::parse_file` and
//! `yaml::parse_yaml_rules` (syntax trees with spans), `check::check` (names
//! and types, every error collected), `compile::compile` (evaluable code).
//! Reading files and wiring the stages together is `crate::load`'s job.

pub mod ast;
pub mod check;
pub mod compile;
pub mod parse;
pub mod print;
pub mod program;
pub mod yaml;

pub use compile::{CompiledRule, RuleSet};

/// Words that cannot be names (fields, attributes, tiers, events, ...).
pub const KEYWORDS: &[&str] = &[
    "rule", "when", "then", "on", "limit", "holdout", "priority", "group", "budget", "and", "or",
    "not", "in", "between", "is", "null", "true", "false", "once", "per", "via", "where", "send",
    "award", "deduct", "set", "tag", "untag", "call", "to",
];

//! The rule language: text (or YAML) to a checked, compiled [`RuleSet`].
//!
//! Stages, each with one entry function: `parse::parse_file` and
//! `parse_yaml::parse_yaml_rules` (syntax trees with spans), `check::check` (names
//! and types, every error collected), `compile::compile` (evaluable code).
//! Reading files and wiring the stages together is `crate::project::load`'s job.

pub mod ast;
pub mod check;
pub mod compile;
pub mod conditions;
pub mod parse;
pub mod parse_yaml;
pub mod print;
pub mod program;
pub mod terms;
pub mod timing;

pub use compile::{CompiledRule, RuleSet};

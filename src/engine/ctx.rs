//! What firing works with and produces: the context of a run (`Ctx`), the
//! trigger, the output (effects, relays), and how the engine makes and
//! keys an effect (the key is what makes delivery idempotent).

use super::Plan;
use crate::base::value::Value;
use crate::config::Schema;
use crate::lang::RuleSet;
use crate::model::Effect;
use crate::model::{Action, Status};
use crate::plugins::Plugins;

pub struct Ctx<'a> {
    pub schema: &'a Schema,
    pub rules: &'a RuleSet,
    pub plan: &'a Plan,
    pub host: Option<&'a Plugins>,
    pub budgets: &'a std::cell::RefCell<super::budget::Budgets>,
    pub store: &'a dyn crate::store::Store,
}

/// One trigger: which rules, on which day, at what instant, with which event.
pub struct Trigger<'a> {
    /// `event:<id>` or `tick:<date>`.
    pub name: &'a str,
    pub rules: &'a [u32],
    /// The member slots those rules read (`None`: all).
    pub need: Option<&'a [bool]>,
    pub today: i32,
    pub at: jiff::Timestamp,
    /// The event's fields by event slot; empty on ticks.
    pub event: &'a [Value],
}

/// What firing produces: effects on the member, and effects for other
/// members (`to`), to be relayed to them as internal events.
#[derive(Default)]
pub struct Out {
    pub effects: Vec<Effect>,
    pub relays: Vec<Effect>,
    /// Set when a run changed the member's record (a firing, a rule's
    /// edge state): a tick writes only members it changed.
    pub changed: bool,
    /// A store error met while firing (reading a budget): the batch must
    /// not commit (`Engine::commit` refuses it), so nothing is half done.
    pub failed: Option<crate::store::StoreError>,
}

/// The idempotency key: the same rule, member, trigger and action always
/// give the same key, whatever the rule set version.
pub fn effect_key(rule: &str, member: &str, trigger: &str, action: usize) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in [
        rule.as_bytes(),
        member.as_bytes(),
        trigger.as_bytes(),
        &action.to_le_bytes(),
    ] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    format!("{:032x}", h.digest128())
}

/// An effect the engine makes itself, not a rule's action (expiry, refund,
/// redemption, merge): `sent`, under `rule`, with the given key.
pub fn engine_effect(
    cx: &Ctx<'_>,
    rule: &str,
    member: &str,
    trigger: &str,
    at: jiff::Timestamp,
    action: Action,
    key: String,
) -> Effect {
    let mut e = blank(action);
    e.key = key;
    e.at = at.to_string();
    e.member = member.to_string();
    e.rule = rule.to_string();
    e.ruleset = cx.rules.version.clone();
    e.trigger = trigger.to_string();
    e
}

pub fn blank(action: Action) -> Effect {
    Effect {
        key: String::new(),
        at: String::new(),
        member: String::new(),
        rule: String::new(),
        ruleset: String::new(),
        trigger: String::new(),
        action,
        coupon: None,
        threshold: None,
        discount: None,
        valid_until: None,
        points: None,
        tier: None,
        from_tier: None,
        tag: None,
        attribute: None,
        value: None,
        message: None,
        plugin: None,
        args: None,
        channel: None,
        code: None,
        status: Status::Sent,
        reason: None,
        deliver_at: None,
        from: None,
        variant: None,
        amount: None,
        balance: None,
        reward: None,
        cash: None,
    }
}

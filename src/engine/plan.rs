//! What the engine precomputes from a schema and a rule set (`Plan`), and
//! the `Evaluator` that runs conditions the way firing does, without state.

use super::view::View;
use crate::base::value::Value;
use crate::config::Schema;
use crate::lang::RuleSet;
use crate::model::{Event, MemberRecord};
use std::collections::HashMap;

/// What the engine precomputes from a schema and a rule set.
pub struct Plan {
    pub purchase_kind: Option<usize>,
    /// Field index of the amount in the purchase event.
    pub purchase_amount: usize,
    /// Days before the last purchase that a record keeps its purchase days
    /// for: the dedup window, plus a day either way for local days against
    /// the window's UTC days. No accepted event is older.
    pub recent_days: i32,
    /// Key of each aggregate (by `layout.aggregates` index).
    pub agg_keys: Vec<u64>,
    /// Key of each rule (by rule index).
    pub rule_keys: Vec<u64>,
    pub n_builtin: usize,
    pub plugin_names: Vec<String>,
    /// Per event type: the field index behind each event slot.
    event_maps: Vec<Vec<Option<usize>>>,
    /// The member slots each trigger's rules read (`None`: all of them).
    pub need_event: Vec<Need>,
    pub need_tick: Need,
    pub need_tier_up: Need,
    pub need_tier_down: Need,
    /// Tag name to its bit in the rule set's tag list. Every tag of every
    /// member evaluated is looked up here: foldhash hashes a short string
    /// in a few instructions, where a streaming hasher (xxh3's) spent a
    /// seventh of a 20-rule tick's time.
    pub tag_bits: HashMap<String, u32, foldhash::fast::FixedState>,
    /// The repurchase models' fit the prediction fields read (`nudge fit`).
    pub fit: Option<std::sync::Arc<crate::predict::Fit>>,
}

/// The slots the rules `list` read, together.
fn need(rules: &RuleSet, list: &[u32]) -> Need {
    let mut mask = vec![false; rules.layout.fields.len()];
    for &i in list {
        for &s in rules.rules[i as usize].reads.as_deref()? {
            if let Some(m) = mask.get_mut(s as usize) {
                *m = true;
            }
        }
    }
    Some(mask)
}

/// Evaluates rule conditions against member records, exactly as firing
/// does (the member view of the day, then each compiled condition), but
/// without firing, state or storage: for benchmarks and what-if tools.
pub struct Evaluator {
    plan: Plan,
    view: View,
    expire: Option<i32>,
}

/// Which member slots an evaluation must compute: `None` for all.
pub type Need = Option<Vec<bool>>;

impl Plan {
    pub fn new(schema: &Schema, rules: &RuleSet) -> Plan {
        let purchase_kind = schema.event(&schema.purchase_event).map(|(i, _)| i);
        let purchase_amount = purchase_kind
            .and_then(|k| schema.events[k].field(&schema.purchase_amount))
            .map_or(0, |(i, _)| i);
        Plan {
            tag_bits: rules
                .layout
                .tags
                .iter()
                .enumerate()
                .map(|(i, t)| (t.clone(), i as u32))
                .collect(),
            need_event: rules.on_event.iter().map(|l| need(rules, l)).collect(),
            need_tick: need(rules, &rules.on_tick),
            need_tier_up: need(rules, &rules.on_tier_up),
            need_tier_down: need(rules, &rules.on_tier_down),
            purchase_kind,
            purchase_amount,
            agg_keys: rules
                .layout
                .aggregates
                .iter()
                .map(|a| xxhash_rust::xxh3::xxh3_64(a.key.as_bytes()))
                .collect(),
            rule_keys: rules
                .rules
                .iter()
                .map(|r| xxhash_rust::xxh3::xxh3_64(r.name.as_bytes()))
                .collect(),
            n_builtin: crate::lang::check::BUILTIN_FIELDS.len(),
            fit: None,
            recent_days: schema.dedup_window_days.saturating_add(2),
            plugin_names: rules.plugins.clone(),
            event_maps: schema
                .events
                .iter()
                .map(|et| {
                    rules
                        .layout
                        .event_fields
                        .iter()
                        .map(|name| et.field(name).map(|(i, _)| i))
                        .collect()
                })
                .collect(),
        }
    }

    /// The event's fields laid out by event slot.
    pub fn event_slots(&self, ev: &Event) -> Vec<Value> {
        self.event_maps[ev.kind]
            .iter()
            .map(|f| {
                f.and_then(|i| ev.fields.get(i).cloned())
                    .unwrap_or(Value::Null)
            })
            .collect()
    }
}

impl Evaluator {
    pub fn new(schema: &Schema, rules: &RuleSet) -> Evaluator {
        Evaluator {
            plan: Plan::new(schema, rules),
            view: View::default(),
            expire: schema.points.expire_after_days.map(|d| d as i32),
        }
    }

    /// Evaluates the prediction fields with `fit`.
    pub fn with_fit(mut self, fit: crate::predict::Fit) -> Evaluator {
        self.plan.fit = Some(std::sync::Arc::new(fit));
        self
    }

    /// Calls `matched` with the index of every tick rule whose condition is
    /// true for `rec` on `today` (every rule is evaluated).
    pub fn tick_matches(
        &mut self,
        rules: &RuleSet,
        rec: &MemberRecord,
        today: i32,
        mut matched: impl FnMut(u32),
    ) {
        self.view.fill(
            rec,
            &rules.layout,
            &self.plan,
            self.plan.need_tick.as_deref(),
            today,
            self.expire,
        );
        let mut scratch = std::mem::take(&mut self.view.scratch);
        let env = self.view.tick_env(today);
        let name = |i: u32| rules.rules[i as usize].name.as_str();
        rules
            .tick_conditions
            .matches(&env, name, &mut scratch, &mut matched);
        self.view.scratch = scratch;
    }
}

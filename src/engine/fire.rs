//! Running the rules of one trigger for one member: evaluation order,
//! rising edges, limits, groups, holdout, the actions' state changes (seen
//! by the rules after), effects, and the `tier_up`/`tier_down` triggers a
//! tier change raises.

use super::act::{act_all, issue_coupon};
use super::contact::{defer, held_out, in_control_group, reach};
use super::ctx::{Ctx, Out, Trigger, effect_key};
use super::view::View;
use crate::lang::compile::{Action, CompiledRule, Variant};
use crate::lang::program::{Env, PluginHost};
use crate::model::{Effect, MemberRecord, Outcome, RuleState, Status};

/// Tier changes raise triggers, which may change the tier again; this many
/// rounds at most, so two rules cannot bounce a member between tiers forever.
const MAX_TIER_ROUNDS: usize = 4;

/// Runs `trigger` and the tier triggers it raises; appends effects.
pub fn run(
    cx: &Ctx<'_>,
    rec: &mut MemberRecord,
    member: &str,
    trigger: Trigger<'_>,
    view: &mut View,
    out: &mut Out,
) {
    let at = trigger.at.to_string();
    let mut changes = Vec::new();
    run_one(cx, rec, member, &trigger, &at, view, out, &mut changes);
    for round in 0..MAX_TIER_ROUNDS {
        if changes.is_empty() {
            break;
        }
        let mut next = Vec::new();
        for (i, up) in std::mem::take(&mut changes).into_iter().enumerate() {
            let kind = if up { "tier_up" } else { "tier_down" };
            let name = if round == 0 && i == 0 {
                format!("{kind}:{}", trigger.name)
            } else {
                format!("{kind}#{}.{}:{}", round + 1, i + 1, trigger.name)
            };
            let (rules, need) = if up {
                (&cx.rules.on_tier_up, &cx.plan.need_tier_up)
            } else {
                (&cx.rules.on_tier_down, &cx.plan.need_tier_down)
            };
            let t = Trigger {
                name: &name,
                rules,
                need: need.as_deref(),
                today: trigger.today,
                at: trigger.at,
                event: trigger.event,
            };
            run_one(cx, rec, member, &t, &at, view, out, &mut next);
        }
        changes = next;
    }
}

/// Whether running the tick's rules (`t`, whose rules are the rule set's
/// `on_tick`) would change nothing: every rule is edge-triggered (tick
/// rules are) and each condition is as it was at the last evaluation
/// (true and armed, or false and not armed), so none fires and no edge
/// state moves. Most members on most days; checking is much cheaper than
/// running, and it evaluates the conditions laid out for the tick.
pub fn idle(cx: &Ctx<'_>, rec: &MemberRecord, t: &Trigger<'_>, view: &mut View) -> bool {
    debug_assert_eq!(t.rules, &cx.rules.on_tick[..]);
    fill(cx, rec, t, view);
    let mut idle = true;
    let name = |ri: u32| cx.rules.rules[ri as usize].name.as_str();
    let mut scratch = std::mem::take(&mut view.scratch);
    cx.rules
        .tick_conditions
        .eval(&env(cx, view, t, ""), name, &mut scratch, |ri, is_true| {
            let rule = &cx.rules.rules[ri as usize];
            let key = cx.plan.rule_keys[ri as usize];
            let armed = rec.rules.iter().any(|r| r.rule == key && r.armed);
            idle = rule.edge_triggered() && is_true == armed;
            idle
        });
    view.scratch = scratch;
    idle
}

/// The member view of the trigger's day, for its rules.
fn fill(cx: &Ctx<'_>, rec: &MemberRecord, t: &Trigger<'_>, view: &mut View) {
    view.fill(
        rec,
        &cx.rules.layout,
        cx.plan,
        t.need,
        t.today,
        cx.schema.points.expire_after_days.map(|d| d as i32),
    );
}

/// What a rule's condition and actions read: the view, the event, the day.
fn env<'e>(cx: &'e Ctx<'_>, view: &'e View, t: &'e Trigger<'_>, rule: &'e str) -> Env<'e> {
    Env {
        member: &view.member,
        tags: &view.tags,
        tag_names: &view.tag_names,
        event: t.event,
        today: t.today,
        host: cx.host.map(|h| h as &dyn PluginHost),
        rule,
    }
}

// The rules of one trigger for one member share the record, its view and
// the batch's output; bundling them in a struct would only rename them.
// Long because the firing algorithm of one trigger in the order the docs give it (edge, limit, group, holdout, actions, state); read top to bottom it is the spec.
#[allow(clippy::too_many_arguments)]
fn run_one(
    cx: &Ctx<'_>,
    rec: &mut MemberRecord,
    member: &str,
    t: &Trigger<'_>,
    at: &str,
    view: &mut View,
    out: &mut Out,
    tier_changes: &mut Vec<bool>,
) {
    let mut groups_fired: Vec<u32> = Vec::new();
    let mut dirty = true;
    for &ri in t.rules {
        let rule = &cx.rules.rules[ri as usize];
        let key = cx.plan.rule_keys[ri as usize];
        if dirty {
            fill(cx, rec, t, view);
            dirty = false;
        }
        let env = env(cx, view, t, &rule.name);
        let is_true = rule.matches(&env) == Some(true);
        // A rule of custom actions only fires if they return intents; its
        // firing count before, to take back when they return none.
        // An experiment runs the member's arm (a held-out member's too, to
        // record what it would have had); the rest run every action.
        let arm = if is_true {
            variant_of(rule, member)
        } else {
            None
        };
        let (actions, offset) = match arm {
            Some(v) => (&rule.actions[v.actions.clone()], v.actions.start),
            None => (&rule.actions[..], 0),
        };
        let has_call = is_true && actions.iter().any(|a| matches!(a, Action::Call(_)));
        let only_calls = has_call && actions.iter().all(|a| matches!(a, Action::Call(_)));
        // The rule's state before this trigger, for a firing its custom
        // actions take back.
        let prior = has_call.then(|| rec.rules.iter().find(|r| r.rule == key).cloned());
        let mut st = RuleStateSlot::get(rec, key);
        let fire = if rule.edge_triggered() {
            let rising = is_true && !st.state.armed;
            st.state.armed = is_true;
            rising
        } else {
            is_true
        };
        let wants = fire;
        let mut fire = wants && within_limit(rule, &st.state, t.today);
        let mut stopped = (wants && !fire).then_some(Outcome::Limit);
        if fire && let Some(g) = rule.group {
            fire = !groups_fired.contains(&g);
            groups_fired.push(g);
            if !fire {
                stopped = Some(Outcome::Group);
            }
        }
        if fire {
            record_firing(rule, &mut st.state, t.today);
            // Armed again: the next evaluation fires if the condition
            // still holds (the next 1,000 points, the next voucher).
            if rule.rearm {
                st.state.armed = false;
            }
            out.changed = true;
        }
        out.changed |= st.put(rec, rule);
        if let Some(why) = stopped {
            rec.decided(key, t.today, why);
            out.changed = true;
        }
        if !fire {
            continue;
        }
        let first_effect = out.effects.len();
        let relays_before = out.relays.len();
        let held_out = held_out(rule, member) || in_control_group(cx.schema, member);
        let spent = has_call.then(|| cx.budgets.borrow().mark());
        // Held-out firings spend no budget; a spent budget caps the firing.
        // A store error reading the budget fails the batch (see `Out`); it
        // is not taken as a spent budget.
        let within_budget = held_out
            || match cx
                .budgets
                .borrow_mut()
                .try_spend(rule, actions, cx.schema, t.today, cx.store)
            {
                Ok(room) => room,
                Err(e) => {
                    out.failed.get_or_insert(e);
                    false
                }
            };
        let (status, reason) = match (held_out, within_budget) {
            (true, _) => (Status::HeldOut, None),
            (false, false) => (Status::Capped, Some("budget")),
            (false, true) => (Status::Sent, None),
        };
        let apply = status == Status::Sent;
        // A plugin action that fails undoes the whole rule: the event is
        // applied without this rule's effects, firing, budget or stock.
        let undo = has_call.then(|| {
            let lens = (out.effects.len(), out.relays.len(), tier_changes.len());
            (rec.clone(), lens)
        });
        let mut failed = false;
        for (ai, action) in actions.iter().enumerate() {
            let ai = offset + ai;
            let changes = match act_all(cx, rec, action, &env, t.today, apply) {
                Ok(c) => c,
                Err(_) => {
                    if let Some((saved, (n_effects, n_relays, n_tiers))) = undo.clone() {
                        *rec = saved;
                        restore_rule_state(rec, key, prior.clone().flatten());
                        if let Some(spent) = spent.clone() {
                            cx.budgets.borrow_mut().undo(spent);
                        }
                        out.effects.truncate(n_effects);
                        out.relays.truncate(n_relays);
                        tier_changes.truncate(n_tiers);
                    }
                    dirty = true;
                    failed = true;
                    break;
                }
            };
            for (sub, change) in changes.into_iter().enumerate() {
                if let Some(up) = change.tier_change {
                    tier_changes.push(up);
                }
                dirty |= change.changed_state;
                let mut e = change.effect;
                e.key = effect_key(&rule.name, member, t.name, ai << 16 | sub);
                e.at = at.to_string();
                e.member = member.to_string();
                e.rule = rule.name.clone();
                e.ruleset = cx.rules.version.clone();
                e.trigger = t.name.to_string();
                // What the action itself refused stays refused when the
                // firing went out; a held-out or capped one says so instead.
                if !(e.status == Status::Refused && status == Status::Sent) {
                    e.status = status;
                    e.reason = reason.map(str::to_string);
                }
                e.variant = arm
                    .filter(|_| status != Status::HeldOut)
                    .map(|v| v.name.to_string());
                if let Some(target) = change.to {
                    // For another member: relayed when it applies, else recorded.
                    e.from = Some(e.member.clone());
                    e.member = target;
                    if apply {
                        out.relays.push(e);
                    } else {
                        out.effects.push(e);
                    }
                    continue;
                }
                if apply {
                    reach(cx.schema, rec, &mut e, t.today);
                    defer(cx.schema, &mut e, t.at);
                }
                issue_coupon(cx.schema, rec, &mut e, key, t.today);
                out.effects.push(e);
            }
        }
        // A store error taking a reward's stock fails the batch, as a
        // budget's does.
        if let Some(e) = cx.budgets.borrow_mut().failed.take() {
            out.failed.get_or_insert(e);
        }
        if let Some(before) = prior.filter(|_| only_calls)
            && !failed
            && out.effects.len() == first_effect
            && out.relays.len() == relays_before
        {
            // Custom actions that returned nothing: not a firing, so no
            // limit is used up and no decision recorded.
            let (fired, recent) = before.map_or((0, Vec::new()), |r| (r.fired, r.recent));
            if let Some(r) = rec.rules.iter_mut().find(|r| r.rule == key) {
                r.fired = fired;
                r.recent = recent;
            }
            let limited = rule.limit.is_some();
            rec.rules
                .retain(|r| r.rule != key || r.armed || (limited && r.fired > 0));
            continue;
        }
        if !failed {
            let outcome = outcome(status, &out.effects[first_effect.min(out.effects.len())..]);
            rec.decided(key, t.today, outcome);
        }
    }
}

/// Puts a rule's state back as it was before a firing its custom actions
/// undid (`None`: the member had none), so the next trigger tries again.
fn restore_rule_state(rec: &mut MemberRecord, key: u64, before: Option<RuleState>) {
    let at = rec.rules.iter().position(|r| r.rule == key);
    match (at, before) {
        (Some(p), Some(b)) => rec.rules[p] = b,
        (Some(p), None) => {
            rec.rules.remove(p);
        }
        (None, Some(b)) => rec.rules.push(b),
        (None, None) => {}
    }
}

/// The experiment arm of `member` in `rule`: a stable hash of (rule,
/// member), apart from the holdout's, picking among the arms by their
/// shares. With a 10% holdout and arms of 45% each, half the members the
/// holdout leaves are in each arm; changing the holdout moves nobody
/// between arms.
pub fn variant_of<'r>(rule: &'r CompiledRule, member: &str) -> Option<&'r Variant> {
    let total: u64 = rule.variants.iter().map(|v| u64::from(v.ppm)).sum();
    if total == 0 {
        return None;
    }
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(b"variant\0");
    h.update(rule.name.as_bytes());
    h.update(&[0]);
    h.update(member.as_bytes());
    // A point in [0, 1) scaled to the arms' total: the arms divide it in
    // proportion, so a holdout that changes (and with it the arms'
    // total) moves nobody between arms.
    let mut point = (h.digest() % 1_000_000) * total / 1_000_000;
    for v in rule.variants.iter() {
        if point < u64::from(v.ppm) {
            return Some(v);
        }
        point -= u64::from(v.ppm);
    }
    rule.variants.last()
}

/// How a firing went: its status, or what stopped its contacts.
fn outcome(status: Status, effects: &[Effect]) -> Outcome {
    match status {
        Status::HeldOut => return Outcome::HeldOut,
        Status::Capped => return Outcome::Budget,
        _ => {}
    }
    let has = |s: Status| effects.iter().any(|e| e.status == s);
    if has(Status::NoConsent) {
        Outcome::NoConsent
    } else if has(Status::Capped) {
        Outcome::Cap
    } else if has(Status::Deferred) {
        Outcome::Deferred
    } else {
        Outcome::Sent
    }
}

/// A rule's state for one member, taken out of the record and put back
/// only when it holds something: most rules never need one, and a member's
/// record should not grow with the number of rules.
struct RuleStateSlot {
    at: Option<usize>,
    state: RuleState,
}

impl RuleStateSlot {
    /// The state; its list of firing days is moved out (no copy) and put
    /// back by `put`.
    fn get(rec: &mut MemberRecord, key: u64) -> RuleStateSlot {
        match rec.rules.iter().position(|r| r.rule == key) {
            Some(p) => {
                let r = &mut rec.rules[p];
                RuleStateSlot {
                    at: Some(p),
                    state: RuleState {
                        rule: r.rule,
                        armed: r.armed,
                        fired: r.fired,
                        recent: std::mem::take(&mut r.recent),
                    },
                }
            }
            None => RuleStateSlot {
                at: None,
                state: RuleState {
                    rule: key,
                    armed: false,
                    fired: 0,
                    recent: Vec::new(),
                },
            },
        }
    }

    /// Puts the state back; says whether the record changed.
    fn put(self, rec: &mut MemberRecord, rule: &CompiledRule) -> bool {
        // Firings matter only to limits; the edge flag only while set.
        let keep = self.state.armed || (rule.limit.is_some() && self.state.fired > 0);
        match (self.at, keep) {
            (Some(p), true) => {
                // `recent` changes only with `fired`.
                let old = &rec.rules[p];
                let changed = old.armed != self.state.armed || old.fired != self.state.fired;
                rec.rules[p] = self.state;
                changed
            }
            (Some(p), false) => {
                rec.rules.swap_remove(p);
                true
            }
            (None, true) => {
                rec.rules.push(self.state);
                true
            }
            (None, false) => false,
        }
    }
}

/// Whether the rule's limit lets it fire again for this member on `today`.
pub fn within_limit(rule: &CompiledRule, st: &RuleState, today: i32) -> bool {
    match rule.limit {
        None => true,
        Some((count, None)) => st.fired < count,
        Some((count, Some(days))) => {
            (st.recent
                .iter()
                .filter(|&&d| d > today - days as i32)
                .count() as u32)
                < count
        }
    }
}

fn record_firing(rule: &CompiledRule, st: &mut RuleState, today: i32) {
    st.fired = st.fired.saturating_add(1);
    if let Some((count, Some(_))) = rule.limit {
        st.recent.push(today);
        let excess = st.recent.len().saturating_sub(count as usize);
        st.recent.drain(..excess);
    }
}

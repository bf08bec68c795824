//! Running the rules of one trigger for one member: evaluation order,
//! rising edges, limits, groups, holdout, the actions' state changes (seen
//! by the rules after), effects, and the `tier_up`/`tier_down` triggers a
//! tier change raises.

use super::Plan;
use super::view::View;
use crate::lang::RuleSet;
use crate::lang::check::CouponSpec;
use crate::lang::compile::{Action, CompiledRule};
use crate::lang::program::{Env, IntCode, PluginHost, Value};
use crate::model::{
    Effect, MemberRecord, Outcome, RuleState, Stored, day_string, json_number, value_json,
};
use crate::plugins::{Intent, PluginError, Plugins};
use crate::schema::Schema;

/// Tier changes raise triggers, which may change the tier again; this many
/// rounds at most, so two rules cannot bounce a member between tiers forever.
const MAX_TIER_ROUNDS: usize = 4;

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
}

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

/// Whether running `t`'s rules would change nothing: every rule is
/// edge-triggered (tick rules are) and each condition is as it was at the
/// last evaluation (true and armed, or false and not armed), so none fires
/// and no edge state moves. Most members on most days; checking is much
/// cheaper than running.
pub fn idle(cx: &Ctx<'_>, rec: &MemberRecord, t: &Trigger<'_>, view: &mut View) -> bool {
    fill(cx, rec, t, view);
    t.rules.iter().all(|&ri| {
        let rule = &cx.rules.rules[ri as usize];
        let key = cx.plan.rule_keys[ri as usize];
        let armed = rec.rules.iter().any(|r| r.rule == key && r.armed);
        let is_true = rule.matches(&env(cx, view, t, &rule.name)) == Some(true);
        rule.edge_triggered() && is_true == armed
    })
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
        let only_calls = is_true && rule.actions.iter().all(|a| matches!(a, Action::Call(_)));
        let prior = only_calls.then(|| {
            rec.rules
                .iter()
                .find(|r| r.rule == key)
                .map_or((0, Vec::new()), |r| (r.fired, r.recent.clone()))
        });
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
        // Held-out firings spend no budget; a spent budget caps the firing.
        let within_budget = held_out
            || cx
                .budgets
                .borrow_mut()
                .try_spend(rule, cx.schema, t.today, cx.store)
                .unwrap_or(false);
        let (status, reason) = match (held_out, within_budget) {
            (true, _) => ("held_out", None),
            (false, false) => ("capped", Some("budget")),
            (false, true) => ("sent", None),
        };
        let apply = status == "sent";
        // A plugin action that fails undoes the whole rule: the event is
        // applied without this rule's effects.
        let undo = rule
            .actions
            .iter()
            .any(|a| matches!(a, Action::Call(_)))
            .then(|| {
                let lens = (out.effects.len(), out.relays.len(), tier_changes.len());
                (rec.clone(), lens)
            });
        let mut failed = false;
        for (ai, action) in rule.actions.iter().enumerate() {
            let changes = match act_all(cx, rec, action, &env, t.today, apply) {
                Ok(c) => c,
                Err(_) => {
                    if let Some((saved, (n_effects, n_relays, n_tiers))) = undo.clone() {
                        *rec = saved;
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
                e.status = status.to_string();
                e.reason = reason.map(str::to_string);
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
        if let Some((fired, recent)) = prior
            && !failed
            && out.effects.len() == first_effect
            && out.relays.len() == relays_before
        {
            // Custom actions that returned nothing: not a firing, so no
            // limit is used up and no decision recorded.
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

/// How a firing went: its status, or what stopped its contacts.
fn outcome(status: &str, effects: &[Effect]) -> Outcome {
    match status {
        "held_out" => return Outcome::HeldOut,
        "capped" => return Outcome::Budget,
        _ => {}
    }
    let has = |s: &str| effects.iter().any(|e| e.status == s);
    if has("no_consent") {
        Outcome::NoConsent
    } else if has("capped") {
        Outcome::Cap
    } else if has("deferred") {
        Outcome::Deferred
    } else {
        Outcome::Sent
    }
}

/// Signs a coupon effect's code (with the config's secret) and, when it goes
/// out, keeps the coupon in the member's record for redemption.
fn issue_coupon(schema: &Schema, rec: &mut MemberRecord, e: &mut Effect, rule: u64, today: i32) {
    if e.action != "coupon" {
        return;
    }
    let Some(secret) = &schema.coupon_secret else {
        return;
    };
    let code = coupon_code(secret, &e.key);
    if e.status == "sent" || e.status == "deferred" {
        let valid_until = e
            .valid_until
            .as_deref()
            .and_then(crate::lang::parse::parse_date)
            .unwrap_or(today + 30);
        rec.coupons.push(crate::model::IssuedCoupon {
            code: code.clone(),
            rule,
            valid_until,
            redeemed: None,
        });
    }
    e.code = Some(code);
}

/// Applies an effect relayed from another member's rule to its recipient
/// (`rec`): points to the balance; coupons and messages through consent,
/// caps and quiet hours. Relays run no rules of the recipient's.
pub fn apply_relay(cx: &Ctx<'_>, rec: &mut MemberRecord, e: &mut Effect, today: i32) {
    let at = e.at.parse().unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    match e.action.as_str() {
        "points" => {
            let n = e.points.unwrap_or(0);
            rec.points = rec.points.saturating_add(n);
            if cx.schema.points.expire_after_days.is_some() && n > 0 {
                rec.point_lots.push((today, n));
            }
        }
        _ => {
            reach(cx.schema, rec, e, today);
            defer(cx.schema, e, at);
            let rule = xxhash_rust::xxh3::xxh3_64(e.rule.as_bytes());
            issue_coupon(cx.schema, rec, e, rule, today);
        }
    }
}

/// The changes of one action: a plugin call may ask for several.
fn act_all(
    cx: &Ctx<'_>,
    rec: &mut MemberRecord,
    action: &Action,
    env: &Env<'_>,
    today: i32,
    apply: bool,
) -> Result<Vec<Change>, PluginError> {
    let Action::Call(call) = action else {
        return Ok(act(cx, rec, action, env, today, apply)
            .into_iter()
            .collect());
    };
    let plugin_name = cx
        .plan
        .plugin_names
        .get(call.plugin as usize)
        .cloned()
        .unwrap_or_default();
    let fail = |message: String| PluginError {
        plugin: plugin_name.clone(),
        function: call.function.to_string(),
        rule: Some(env.rule.to_string()),
        message,
    };
    let Some(host) = cx.host else {
        return Err(fail("no plugin host is loaded".into()));
    };
    let intents = host.intents(
        call.plugin as usize,
        &call.function,
        &call.args(env),
        env,
        env.rule,
    )?;
    let mut out = Vec::new();
    for intent in intents {
        let action = match intent {
            Intent::Payload(value) => {
                let mut e = blank("plugin");
                e.plugin = Some(format!("{plugin_name}.{}", call.function));
                e.value = Some(value);
                out.push(Change {
                    effect: e,
                    to: None,
                    changed_state: false,
                    tier_change: None,
                });
                continue;
            }
            Intent::Points(n) => Action::Points {
                deduct: n < 0,
                amount: IntCode::Const(n.abs()),
            },
            Intent::Tag(tag) => Action::Tag {
                tag: tag.into(),
                bit: 0,
                untag: false,
            },
            Intent::Untag(tag) => Action::Tag {
                tag: tag.into(),
                bit: 0,
                untag: true,
            },
            Intent::Message { message, channel } => {
                let ch = cx.schema.channel(&channel).map(|(i, _)| i).ok_or_else(|| {
                    host.report(fail(format!(
                        "unknown channel `{channel}` in a message intent"
                    )))
                })?;
                Action::Message {
                    template: message.into(),
                    channel: ch,
                }
            }
            Intent::Coupon { coupon, channel } => {
                let spec = match cx.schema.coupon(&coupon) {
                    Some((i, _)) => CouponSpec::Template(i),
                    None => literal_coupon(&coupon).ok_or_else(|| {
                        host.report(fail(format!(
                            "unknown coupon `{coupon}`: not a template and not like `30-6`"
                        )))
                    })?,
                };
                let ch = match channel {
                    Some(c) => Some(cx.schema.channel(&c).map(|(i, _)| i).ok_or_else(|| {
                        host.report(fail(format!("unknown channel `{c}` in a coupon intent")))
                    })?),
                    None => None,
                };
                Action::Coupon {
                    coupon: spec,
                    channel: ch,
                }
            }
        };
        out.extend(act(cx, rec, &action, env, today, apply));
    }
    Ok(out)
}

/// `30-6` as a threshold coupon.
fn literal_coupon(s: &str) -> Option<CouponSpec> {
    let (a, b) = s.split_once('-')?;
    let threshold: rust_decimal::Decimal = a.trim().parse().ok()?;
    let discount: rust_decimal::Decimal = b.trim().parse().ok()?;
    (discount > rust_decimal::Decimal::ZERO && (threshold.is_zero() || discount < threshold))
        .then_some(CouponSpec::Literal {
            threshold,
            discount,
        })
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

/// Expires the member's point lots that are `points.expire_after` old by
/// `today`, oldest first; the effect (rule `points expiry`) says how many.
pub fn expire_points(
    cx: &Ctx<'_>,
    rec: &mut MemberRecord,
    member: &str,
    trigger: &str,
    at: jiff::Timestamp,
    today: i32,
) -> Option<Effect> {
    let after = cx.schema.points.expire_after_days? as i32;
    let expired: i64 = rec
        .point_lots
        .iter()
        .filter(|(d, _)| d + after <= today)
        .map(|(_, n)| n)
        .sum();
    rec.point_lots.retain(|(d, _)| d + after > today);
    let taken = expired.min(rec.points.max(0));
    if taken == 0 {
        return None;
    }
    rec.points -= taken;
    Some(points_effect(cx, EXPIRY_RULE, member, trigger, at, -taken))
}

/// A points change the engine made itself (expiry, refund), under `rule`.
pub fn points_effect(
    cx: &Ctx<'_>,
    rule: &str,
    member: &str,
    trigger: &str,
    at: jiff::Timestamp,
    points: i64,
) -> Effect {
    let key = effect_key(rule, member, trigger, 0);
    let mut e = engine_effect(cx, rule, member, trigger, at, "points", key);
    e.points = Some(points);
    e
}

/// An effect the engine makes itself, not a rule's action (expiry, refund,
/// redemption, merge): `sent`, under `rule`, with the given key.
pub fn engine_effect(
    cx: &Ctx<'_>,
    rule: &str,
    member: &str,
    trigger: &str,
    at: jiff::Timestamp,
    action: &str,
    key: String,
) -> Effect {
    let mut e = blank(action);
    e.key = key;
    e.at = at.to_string();
    e.member = member.to_string();
    e.rule = rule.to_string();
    e.ruleset = cx.rules.version.clone();
    e.trigger = trigger.to_string();
    e.status = "sent".to_string();
    e
}

/// The rule name refund effects carry.
pub const REFUND_RULE: &str = "refund";

/// The rule name expiry effects carry.
pub const EXPIRY_RULE: &str = "points expiry";

/// Takes `n` points from the oldest lots first.
pub fn take_from_lots(lots: &mut Vec<(i32, i64)>, mut n: i64) {
    while n > 0 && !lots.is_empty() {
        let take = lots[0].1.min(n);
        lots[0].1 -= take;
        n -= take;
        if lots[0].1 == 0 {
            lots.remove(0);
        }
    }
}

/// In the config's global control group: no marketing effect at all.
pub fn in_control_group(schema: &Schema, member: &str) -> bool {
    schema.control_group_ppm > 0
        && control_hash(member) % 1_000_000 < schema.control_group_ppm as u64
}

/// A stable hash of the member for the control group (no allocation: it
/// runs for every firing).
fn control_hash(member: &str) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(b"control\0");
    h.update(member.as_bytes());
    h.digest()
}

/// Consent and frequency caps for an effect on a channel: `no_consent` if
/// the member has not consented (opt-in channels) or has withdrawn;
/// `capped` if the channel's cap is reached; otherwise the contact counts.
fn reach(schema: &Schema, rec: &mut MemberRecord, e: &mut Effect, today: i32) {
    let Some(name) = e.channel.clone() else {
        return;
    };
    let Some((_, ch)) = schema.channel(&name) else {
        return;
    };
    let consent = rec
        .consent
        .iter()
        .find(|(c, _)| *c == name)
        .map(|(_, g)| *g);
    if consent == Some(false) || (ch.opt_in && consent != Some(true)) {
        e.status = "no_consent".into();
        return;
    }
    if let Some(cap) = ch.cap {
        let window_days = (cap.per_secs / 86_400).max(1) as i32;
        rec.contacts
            .retain(|(c, d)| *c != name || *d > today - window_days);
        let recent = rec.contacts.iter().filter(|(c, _)| *c == name).count();
        if recent >= cap.count as usize {
            e.status = "capped".into();
            e.reason = Some("cap".into());
            return;
        }
        rec.contacts.push((name, today));
    }
}

/// Quiet hours: a contact that would go out while its channel is quiet is
/// `deferred` to the end of the quiet hours (the engine releases it then).
fn defer(schema: &Schema, e: &mut Effect, at: jiff::Timestamp) {
    if e.status != "sent" {
        return;
    }
    let Some((_, ch)) = e.channel.as_deref().and_then(|c| schema.channel(c)) else {
        return;
    };
    if let Some(until) = ch
        .quiet_hours
        .and_then(|q| super::clock::quiet_until(schema, q, at))
    {
        e.status = "deferred".into();
        e.deliver_at = Some(until.to_string());
    }
}

/// A coupon code: the effect key signed with the config's secret
/// (HMAC-SHA256), 12 characters of Crockford base32. The same effect (a
/// re-issue) gives the same code; without the secret, codes cannot be
/// made up.
pub fn coupon_code(secret: &str, key: &str) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(key.as_bytes());
    let bytes = mac.finalize().into_bytes();
    let mut bits = u64::from_be_bytes(bytes[..8].try_into().unwrap_or([0; 8]));
    (0..12)
        .map(|_| {
            let c = ALPHABET[(bits & 31) as usize] as char;
            bits >>= 5;
            c
        })
        .collect()
}

/// Held out by a stable hash of (rule, member): the same member is held out
/// of the same rule every time, whatever else changes.
pub fn held_out(rule: &CompiledRule, member: &str) -> bool {
    if rule.holdout_ppm == 0 {
        return false;
    }
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(rule.name.as_bytes());
    h.update(&[0]);
    h.update(member.as_bytes());
    (h.digest() % 1_000_000) < rule.holdout_ppm as u64
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

struct Change {
    effect: Effect,
    /// For another member (by id).
    to: Option<String>,
    changed_state: bool,
    /// `Some(true)` for a tier up, `Some(false)` for down.
    tier_change: Option<bool>,
}

fn blank(action: &str) -> Effect {
    Effect {
        key: String::new(),
        at: String::new(),
        member: String::new(),
        rule: String::new(),
        ruleset: String::new(),
        trigger: String::new(),
        action: action.to_string(),
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
        status: String::new(),
        reason: None,
        deliver_at: None,
        from: None,
    }
}

/// The effect of one action, applying its state change when `apply`.
/// `None` when it would change nothing (a tag already there, zero points).
fn act(
    cx: &Ctx<'_>,
    rec: &mut MemberRecord,
    action: &Action,
    env: &Env<'_>,
    today: i32,
    apply: bool,
) -> Option<Change> {
    let schema = cx.schema;
    let mut changed_state = false;
    let mut tier_change = None;
    let effect = match action {
        Action::Coupon { coupon, channel } => {
            let mut e = blank("coupon");
            match coupon {
                CouponSpec::Template(i) => {
                    let c = &schema.coupons[*i];
                    e.coupon = Some(c.name.clone());
                    e.threshold = Some(json_number(c.threshold));
                    e.discount = Some(json_number(c.discount));
                    e.valid_until = Some(day_string(today + c.valid_days as i32));
                    e.channel = channel
                        .map(|ch| schema.channels[ch].name.clone())
                        .or_else(|| c.channel.clone());
                }
                CouponSpec::Literal {
                    threshold,
                    discount,
                } => {
                    e.coupon = Some(format!(
                        "{}-{}",
                        threshold.normalize(),
                        discount.normalize()
                    ));
                    e.threshold = Some(json_number(*threshold));
                    e.discount = Some(json_number(*discount));
                    e.channel = channel.map(|ch| schema.channels[ch].name.clone());
                }
            }
            e
        }
        Action::Message { template, channel } => {
            let mut e = blank("message");
            e.message = Some(template.to_string());
            e.channel = Some(schema.channels[*channel].name.clone());
            e
        }
        Action::Points { deduct, amount } => {
            let n = amount.eval(env)?;
            let delta = if *deduct {
                -(n.min(rec.points.max(0)))
            } else {
                n
            };
            if n <= 0 || delta == 0 {
                return None;
            }
            if apply {
                rec.points = rec.points.saturating_add(delta);
                if schema.points.expire_after_days.is_some() {
                    if delta > 0 {
                        rec.point_lots.push((today, delta));
                    } else {
                        take_from_lots(&mut rec.point_lots, -delta);
                    }
                }
                changed_state = true;
            }
            let mut e = blank("points");
            e.points = Some(delta);
            e
        }
        Action::SetTier(code) => {
            let t = code.eval(env)?.clamp(0, schema.tiers.len() as i64 - 1) as u8;
            if t == rec.tier {
                return None;
            }
            let mut e = blank("tier");
            e.tier = schema.tiers.get(t as usize).cloned();
            e.from_tier = schema.tiers.get(rec.tier as usize).cloned();
            if apply {
                tier_change = Some(t > rec.tier);
                rec.tier = t;
                rec.tier_history.push((today, t));
                let excess = rec.tier_history.len().saturating_sub(32);
                rec.tier_history.drain(..excess);
                changed_state = true;
            }
            e
        }
        Action::Set { slot, value } => {
            let v = value.value(env);
            let name = &cx.rules.layout.fields[*slot as usize].0;
            // An action that changes nothing gives no effect: a null value
            // (a sum over a field nobody set) or the value it already has.
            // Read from the record: the view holds only the slots rules read.
            let now = if *slot == crate::lang::check::slot::BIRTHDAY {
                rec.birthday.map_or(Value::Null, Value::Date)
            } else {
                match rec.attribute(name) {
                    Some(stored) => stored.into(),
                    None => (cx.rules.layout.defaults.iter())
                        .find(|(s, _)| s == slot)
                        .map_or(Value::Null, |(_, d)| d.clone()),
                }
            };
            if v == Value::Null || v == now {
                return None;
            }
            if apply {
                if *slot == crate::lang::check::slot::BIRTHDAY {
                    rec.birthday = match v {
                        Value::Date(d) => Some(d),
                        _ => None,
                    };
                } else {
                    rec.set_attribute(name, Stored::from(&v));
                }
                changed_state = true;
            }
            let mut e = blank("set");
            e.attribute = Some(name.clone());
            e.value = Some(value_json(&v, &schema.tiers));
            e
        }
        Action::Tag { tag, untag, .. } => {
            let has = rec.has_tag(tag);
            if has != *untag {
                return None;
            }
            if apply {
                if *untag {
                    rec.tags.retain(|t| **t != **tag);
                } else {
                    rec.tags.push(tag.to_string());
                }
                changed_state = true;
            }
            let mut e = blank(if *untag { "untag" } else { "tag" });
            e.tag = Some(tag.to_string());
            e
        }
        // For another member: the effect without changing this member.
        Action::For { to, action } => {
            let target = to.eval(env)?;
            if target.is_empty() || target.len() > crate::model::MAX_ID_BYTES {
                return None;
            }
            let mut change = act(cx, rec, action, env, today, false)?;
            change.to = Some(target.into_owned());
            return Some(change);
        }
        // Plugin calls go through `act_all`.
        Action::Call(_) => return None,
    };
    Some(Change {
        effect,
        to: None,
        changed_state,
        tier_change,
    })
}

//! A firing rule's actions: each becomes an effect and a change to the
//! member's record (seen by the rules after it), coupons are issued,
//! rewards for another member are relayed.

use super::contact::{coupon_code, defer, reach};
use super::ctx::{Ctx, blank};
use super::points::take_from_lots;
use crate::base::time::day_string;
use crate::config::Schema;
use crate::lang::check::CouponSpec;
use crate::lang::compile::Action;
use crate::lang::program::{Env, IntCode, Value};
use crate::model::{self, Status};
use crate::model::{Effect, MemberRecord, Stored, json_number, value_json};
use crate::plugins::{Intent, PluginError};

/// The changes of one action: a plugin call may ask for several.
pub(super) fn act_all(
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
                let mut e = blank(model::Action::Plugin);
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
pub(super) fn literal_coupon(s: &str) -> Option<CouponSpec> {
    let (a, b) = s.split_once('-')?;
    let threshold: rust_decimal::Decimal = a.trim().parse().ok()?;
    let discount: rust_decimal::Decimal = b.trim().parse().ok()?;
    (discount > rust_decimal::Decimal::ZERO && (threshold.is_zero() || discount < threshold))
        .then_some(CouponSpec::Literal {
            threshold,
            discount,
        })
}

/// Signs a coupon effect's code (with the config's secret) and, when it goes
/// out, keeps the coupon in the member's record for redemption.
pub(super) fn issue_coupon(
    schema: &Schema,
    rec: &mut MemberRecord,
    e: &mut Effect,
    rule: u64,
    today: i32,
) {
    if e.action != model::Action::Coupon {
        return;
    }
    let Some(secret) = &schema.coupon_secret else {
        return;
    };
    let code = coupon_code(secret, &e.key);
    if e.status == Status::Sent || e.status == Status::Deferred {
        let valid_until = e
            .valid_until
            .as_deref()
            .and_then(crate::base::time::parse_date)
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
    match e.action {
        model::Action::Wallet => super::rewards::credit_relayed(rec, e),
        model::Action::Points => {
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

pub(super) struct Change {
    pub(super) effect: Effect,
    /// For another member (by id).
    pub(super) to: Option<String>,
    pub(super) changed_state: bool,
    /// `Some(true)` for a tier up, `Some(false)` for down.
    pub(super) tier_change: Option<bool>,
}

/// The effect of one action, applying its state change when `apply`.
/// `None` when it would change nothing (a tag already there, zero points).
// Long because one match over the action kinds, each arm a short state change.
pub(super) fn act(
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
            let mut e = blank(model::Action::Coupon);
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
            let mut e = blank(model::Action::Message);
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
            let mut e = blank(model::Action::Points);
            e.points = Some(delta);
            e
        }
        Action::SetTier(code) => {
            let t = code.eval(env)?.clamp(0, schema.tiers.len() as i64 - 1) as u8;
            if t == rec.tier {
                return None;
            }
            let mut e = blank(model::Action::Tier);
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
            let mut e = blank(model::Action::Set);
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
                    rec.tags.push(crate::model::Name::from(&**tag));
                }
                changed_state = true;
            }
            let mut e = blank(if *untag {
                model::Action::Untag
            } else {
                model::Action::Tag
            });
            e.tag = Some(tag.to_string());
            e
        }
        // For another member: the effect without changing this member.
        Action::For { to, action } => {
            let target = to.eval(env)?;
            if target.is_empty() || target.len() > crate::model::event::MAX_ID_BYTES {
                return None;
            }
            let mut change = act(cx, rec, action, env, today, false)?;
            change.to = Some(target.into_owned());
            return Some(change);
        }
        // Plugin calls go through `act_all`.
        Action::Call(_) => return None,
        Action::Voucher {
            threshold,
            discount,
            channel,
        } => super::rewards::voucher(cx, threshold.as_ref(), discount, *channel, env)?,
        Action::Wallet { debit, amount } => {
            let (e, changed) = super::rewards::wallet(rec, *debit, amount, env, apply)?;
            changed_state = changed;
            e
        }
        Action::Reward(name) => match super::rewards::reward(cx, rec, name, env, apply)? {
            Ok((e, changed)) => {
                changed_state = changed;
                e
            }
            Err(err) => {
                cx.budgets.borrow_mut().failed.get_or_insert(err);
                return None;
            }
        },
    };
    Some(Change {
        effect,
        to: None,
        changed_state,
        tier_change,
    })
}

//! Rewards of computed value: vouchers and coupons whose values rules
//! compute, the stored-value wallet, and the points mall (rewards bought
//! with points, from a stock shared by every member). Each gives one
//! effect; a debit or a reward the member cannot have gives a `refused`
//! effect with the reason, and changes nothing.

use super::ctx::{Ctx, blank};
use crate::lang::program::{DecCode, Env, StrCode};
use crate::model::{self, Effect, MemberRecord, Status, json_number};
use crate::store::StoreError;
use rust_decimal::{Decimal, RoundingStrategy};

/// Money as effects carry it: cents, halves away from zero.
fn cents(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// A coupon of computed values (no threshold: a voucher). `None` when it
/// is worth nothing (0 or less, or null).
pub(super) fn voucher(
    cx: &Ctx<'_>,
    threshold: Option<&DecCode>,
    discount: &DecCode,
    channel: Option<usize>,
    env: &Env<'_>,
) -> Option<Effect> {
    let discount = cents(discount.eval(env)?);
    let threshold = match threshold {
        Some(t) => cents(t.eval(env)?).max(Decimal::ZERO),
        None => Decimal::ZERO,
    };
    if discount <= Decimal::ZERO {
        return None;
    }
    let mut e = blank(model::Action::Coupon);
    e.coupon = Some(format!(
        "{}-{}",
        threshold.normalize(),
        discount.normalize()
    ));
    e.threshold = Some(json_number(threshold));
    e.discount = Some(json_number(discount));
    e.channel = channel.map(|ch| cx.schema.channels[ch].name.clone());
    Some(e)
}

/// `credit wallet` / `debit wallet`: the effect, and whether the record
/// changed. A debit over the balance is refused. `None` for 0 or less.
pub(super) fn wallet(
    rec: &mut MemberRecord,
    debit: bool,
    amount: &DecCode,
    env: &Env<'_>,
    apply: bool,
) -> Option<(Effect, bool)> {
    let amount = cents(amount.eval(env)?);
    if amount <= Decimal::ZERO {
        return None;
    }
    let mut e = blank(model::Action::Wallet);
    let delta = if debit { -amount } else { amount };
    e.amount = Some(json_number(delta));
    if debit && rec.wallet < amount {
        e.status = Status::Refused;
        e.reason = Some("insufficient_balance".into());
        e.balance = Some(json_number(rec.wallet));
        return Some((e, false));
    }
    let after = rec.wallet.checked_add(delta)?.normalize();
    e.balance = Some(json_number(after));
    if apply {
        rec.wallet = after;
    }
    Some((e, apply))
}

/// A wallet credit relayed to its recipient (`credit wallet N to ...`).
pub(super) fn credit_relayed(rec: &mut MemberRecord, e: &mut Effect) {
    let amount = e
        .amount
        .as_ref()
        .and_then(|n| n.to_string().parse::<Decimal>().ok())
        .unwrap_or_default();
    if let Some(after) = rec.wallet.checked_add(amount).map(|d| d.normalize()) {
        rec.wallet = after;
        e.balance = Some(json_number(after));
    }
}

/// Why a member cannot have a reward.
fn refuse(mut e: Effect, why: &str) -> Option<Result<(Effect, bool), StoreError>> {
    e.status = Status::Refused;
    e.reason = Some(why.into());
    Some(Ok((e, false)))
}

/// `redeem reward NAME`: the reward for its points (taken from the
/// balance, oldest lots first when points expire) and one of its stock.
pub(super) fn reward(
    cx: &Ctx<'_>,
    rec: &mut MemberRecord,
    name: &StrCode,
    env: &Env<'_>,
    apply: bool,
) -> Option<Result<(Effect, bool), StoreError>> {
    let name = name.eval(env)?;
    let mut e = blank(model::Action::Reward);
    e.reward = Some(name.to_string());
    let Some(r) = cx.schema.reward(&name) else {
        return refuse(e, "unknown_reward");
    };
    e.points = Some(-r.points);
    e.cash = r.cash.map(json_number);
    if rec.points < r.points {
        return refuse(e, "insufficient_points");
    }
    if !apply {
        return Some(Ok((e, false)));
    }
    if let Some(stock) = r.stock {
        match cx.budgets.borrow_mut().take_stock(&r.name, stock, cx.store) {
            Ok(true) => {}
            Ok(false) => return refuse(e, "out_of_stock"),
            Err(err) => return Some(Err(err)),
        }
    }
    rec.points -= r.points;
    if cx.schema.points.expire_after_days.is_some() {
        super::points::take_from_lots(&mut rec.point_lots, r.points);
    }
    Some(Ok((e, true)))
}

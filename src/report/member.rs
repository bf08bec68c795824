//! A member's stored state as JSON (`nudge member`, `GET /v1/members/ID`).

use crate::config::Schema;
use crate::engine::identity;
use crate::lang::RuleSet;

/// A member's stored state as JSON, with the repurchase predictions of
/// `fit` on `today` (`predictions`, null without a fit or a purchase).
pub fn member_json(
    id: &str,
    rec: &crate::model::MemberRecord,
    schema: &Schema,
    rules: &RuleSet,
    fit: Option<&crate::predict::Fit>,
    today: i32,
) -> serde_json::Value {
    use crate::base::time::day_string;
    let day = |d: Option<i32>| d.map(day_string);
    let rule_name = |k: u64| {
        rules
            .rules
            .iter()
            .find(|r| xxhash_rust::xxh3::xxh3_64(r.name.as_bytes()) == k)
            .map_or(format!("{k:016x}"), |r| r.name.clone())
    };
    let attrs: serde_json::Map<String, serde_json::Value> = rec
        .attributes
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                crate::model::value_json(&v.into(), &schema.tiers),
            )
        })
        .collect();
    let rule_states: Vec<serde_json::Value> = rec
        .rules
        .iter()
        .map(|r| serde_json::json!({"rule": rule_name(r.rule), "armed": r.armed, "fired": r.fired, "recent": r.recent.iter().map(|d| day_string(*d)).collect::<Vec<_>>()}))
        .collect();
    serde_json::json!({
        "member": id,
        "tier": schema.tiers.get(rec.tier as usize),
        "points": rec.points,
        "wallet": crate::model::json_number(rec.wallet),
        "orders": rec.orders,
        "spend": crate::model::json_number(rec.spend),
        "joined_at": day_string(rec.joined),
        "first_purchase_at": day(rec.first_purchase),
        "last_purchase_at": day(rec.last_purchase),
        "purchase_days": rec.purchase_days,
        "tags": rec.tags,
        "birthday": day(rec.birthday),
        "attributes": attrs,
        "ids": rec.ids.iter().map(|(k, v)| identity::id_key(k, v)).collect::<Vec<_>>(),
        "merged": rec.merged,
        "rules": rule_states,
        "predictions": fit.map_or(serde_json::Value::Null, |f| predictions_json(f, rec, today)),
    })
}

/// The prediction fields rules read, for one member.
fn predictions_json(
    fit: &crate::predict::Fit,
    rec: &crate::model::MemberRecord,
    today: i32,
) -> serde_json::Value {
    use crate::engine::predict::{expected_purchases, predicted_clv, predictions};
    let Some((_, p)) = predictions(fit, rec, today) else {
        return serde_json::Value::Null;
    };
    let round = |x: f64, dp: i32| (x * 10f64.powi(dp)).round() / 10f64.powi(dp);
    serde_json::json!({
        "p_alive": round(p.p_alive, 6),
        "expected_purchases_90d": expected_purchases(fit, rec, today, 90).map(|x| round(x, 6)),
        "expected_next_purchase": p.expected_next_purchase.map(|d| d as i64),
        "predicted_clv_365d": predicted_clv(fit, rec, today, 365).map(|x| round(x, 2)),
        "churn_risk": round(p.churn_risk, 6),
    })
}

//! `nudge explain` and `GET /v1/members/{id}/explain`: why a rule did or
//! did not fire for a member. Two parts: the rules evaluated now against
//! the member's state (each test of each condition with its values), and
//! the member's recent decisions per rule (fired, or stopped by a limit,
//! group, holdout, budget, cap, consent or quiet hours), which the engine
//! keeps in the member's record (bounded). Owns the explanation as data;
//! the binary renders it as text, the HTTP API as JSON.

use crate::base::time::day_string;
use crate::config::Schema;
use crate::engine::Plan;
use crate::engine::view::View;
use crate::lang::RuleSet;
use crate::lang::program::{Cmp, Env, PluginHost, Value};
use crate::model::{MemberRecord, value_json};
use crate::plugins::Plugins;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("no rule `{name}`{hint}")]
    UnknownRule { name: String, hint: String },
}

#[derive(Debug, Serialize)]
pub struct Explanation {
    pub member: String,
    /// The day the rules were evaluated for.
    pub day: String,
    pub rules: Vec<RuleExplanation>,
    /// The prediction fields and what they come from, with a fit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predictions: Option<PredictionInputs>,
}

/// A member's predictions on the day, with the history and parameters
/// they come from (docs/prediction.md).
#[derive(Debug, Serialize)]
pub struct PredictionInputs {
    /// Repeat purchase days, days from the first to the last purchase, and
    /// from the first to the day ("T").
    pub x: f64,
    pub t_x: f64,
    #[serde(rename = "T")]
    pub t: f64,
    pub bgnbd: crate::predict::BgNbd,
    pub fitted_on: String,
    pub p_alive: f64,
    pub churn_risk: f64,
    pub expected_purchases_90d: f64,
    pub expected_next_purchase: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct RuleExplanation {
    pub rule: String,
    /// The condition now: true, false or null (unknown: does not fire).
    pub result: Option<bool>,
    pub tests: Vec<Test>,
    /// Why it fires or not now, in a sentence.
    pub now: String,
    /// Recent decisions, oldest first: (day, what happened).
    pub history: Vec<(String, String)>,
}

#[derive(Debug, Serialize)]
pub struct Test {
    /// The test as written.
    pub text: String,
    /// Its values: `bronze >= silver`, or `cycle = null`.
    pub values: String,
    pub result: Option<bool>,
}

/// Explains the rules (or only `only`) for `member` as of `day`. Event
/// fields read by event rules are null here: the evaluation is of the
/// member's state, as a daily tick sees it.
// Long because the explanation follows the firing algorithm step by step, as `run_one` does.
#[allow(clippy::too_many_arguments)] // What one explanation reads: the project, the member, the day, the fit.
pub fn explain(
    schema: &Schema,
    rules: &RuleSet,
    plugins: Option<&Plugins>,
    member: &str,
    rec: &MemberRecord,
    day: i32,
    only: Option<&str>,
    fit: Option<&crate::predict::Fit>,
) -> Result<Explanation, ExplainError> {
    if let Some(name) = only
        && rules.rule(name).is_none()
    {
        let hint =
            crate::base::diag::did_you_mean(name, rules.rules.iter().map(|r| r.name.as_str()))
                .map_or(String::new(), |h| format!("; {h}"));
        return Err(ExplainError::UnknownRule {
            name: name.to_string(),
            hint,
        });
    }
    let mut plan = Plan::new(schema, rules);
    plan.fit = fit.cloned().map(std::sync::Arc::new);
    let mut view = View::default();
    let expire = schema.points.expire_after_days.map(|d| d as i32);
    view.fill(rec, &rules.layout, &plan, None, day, expire);
    let env = Env {
        member: &view.member,
        tags: &view.tags,
        tag_names: &view.tag_names,
        event: &[],
        today: day,
        host: plugins.map(|h| h as &dyn PluginHost),
        rule: "",
    };
    let show = |v: Value| match value_json(&v, &schema.tiers) {
        serde_json::Value::Null => "null".to_string(),
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    };
    let mut out = Vec::new();
    for (i, rule) in rules.rules.iter().enumerate() {
        if only.is_some_and(|n| n != rule.name) {
            continue;
        }
        let env = Env {
            rule: &rule.name,
            ..env
        };
        let tests = rule
            .terms
            .iter()
            .map(|t| {
                let values: Vec<String> = t
                    .operands
                    .iter()
                    .map(|(_, code)| show(code.value(&env)))
                    .collect();
                let values = match (t.cmp, values.as_slice()) {
                    (Some(op), [a, b]) => format!("{a} {} {b}", symbol(op)),
                    _ => t
                        .operands
                        .iter()
                        .zip(&values)
                        .map(|((text, _), v)| format!("{text} = {v}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                };
                Test {
                    text: t.text.clone(),
                    values,
                    result: t.test.eval(&env),
                }
            })
            .collect();
        let result = rule.matches(&env);
        let key = plan.rule_keys[i];
        let state = rec.rules.iter().find(|s| s.rule == key);
        let limited = state.is_some_and(|s| !crate::engine::fire::within_limit(rule, s, day));
        let now = match result {
            Some(true) if limited => format!(
                "true, but its limit is reached ({} firing{} so far): it does not fire",
                state.map_or(0, |s| s.fired),
                if state.is_some_and(|s| s.fired == 1) {
                    ""
                } else {
                    "s"
                }
            ),
            Some(true) if rule.edge_triggered() && state.is_some_and(|s| s.armed) => {
                "true, but it fired when it became true: it fires again after it turns false"
                    .to_string()
            }
            Some(true) => "true: it fires on its next trigger".to_string(),
            Some(false) => "false: it does not fire (see the tests that are false)".to_string(),
            None => "unknown (a value is null): it does not fire".to_string(),
        };
        let now = if rule.variants.is_empty() {
            now
        } else if crate::engine::contact::held_out(rule, member) {
            format!("{now} (an experiment: the member is held out)")
        } else {
            let arm = crate::engine::fire::variant_of(rule, member).map_or("", |v| &v.name);
            format!("{now} (an experiment: the member is in variant {arm})")
        };
        let now = match voucher_worth_nothing(rule, &env) {
            Some(worth) if result == Some(true) => {
                format!("{now}; but its voucher comes to {worth}: nothing is sent")
            }
            _ => now,
        };
        let history = rec
            .history
            .iter()
            .filter(|d| d.rule == key)
            .map(|d| (day_string(d.day), d.outcome.as_str().to_string()))
            .collect();
        out.push(RuleExplanation {
            rule: rule.name.clone(),
            result,
            tests,
            now,
            history,
        });
    }
    let predictions = fit.and_then(|f| {
        let (h, p) = crate::engine::predict::predictions(f, rec, day)?;
        Some(PredictionInputs {
            x: h.x,
            t_x: h.t_x,
            t: h.t,
            bgnbd: f.bgnbd,
            fitted_on: f.fitted_on.clone(),
            p_alive: p.p_alive,
            churn_risk: p.churn_risk,
            expected_purchases_90d: f.bgnbd.expected(&h, 90.0),
            expected_next_purchase: p.expected_next_purchase.map(|d| d as i64),
        })
    });
    Ok(Explanation {
        member: member.to_string(),
        day: day_string(day),
        rules: out,
        predictions,
    })
}

/// The value of a `send voucher` of `rule` that comes to 0 or less (or
/// null) for the member now: such a firing sends nothing.
/// Event rules are left out: their event's fields are null here.
fn voucher_worth_nothing(rule: &crate::lang::CompiledRule, env: &Env<'_>) -> Option<String> {
    if !rule.triggers.events.is_empty() {
        return None;
    }
    rule.actions.iter().find_map(|a| match a {
        crate::lang::compile::Action::Voucher { discount, .. } => match discount.eval(env) {
            None => Some("null".to_string()),
            Some(d) if d.round_dp(2) <= rust_decimal::Decimal::ZERO => {
                Some(d.round_dp(2).to_string())
            }
            Some(_) => None,
        },
        _ => None,
    })
}

fn symbol(op: Cmp) -> &'static str {
    match op {
        Cmp::Eq => "==",
        Cmp::Ne => "!=",
        Cmp::Lt => "<",
        Cmp::Le => "<=",
        Cmp::Gt => ">",
        Cmp::Ge => ">=",
    }
}

//! What replays tell a marketer: the difference between two rule sets run
//! over the same history (`compare`), and the uplift of rules with a holdout
//! (`uplift`: treated against held-out members over an attribution window).
//! Works on effects and events only; replaying is `replay`'s, rendering the
//! binary's.

use crate::model::{Action, Status};
use crate::model::{Effect, Event};
use rust_decimal::Decimal;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;

/// One rule's difference between run A and run B.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RuleDiff {
    pub effects_a: usize,
    pub effects_b: usize,
    /// Effects (by key and status) only B has.
    pub added: usize,
    /// Effects only A has.
    pub removed: usize,
    /// Members with an added or removed effect.
    pub members: usize,
    /// Discount value of the coupons that went out.
    pub cost_a: Decimal,
    pub cost_b: Decimal,
}

/// Two runs over the same history, compared.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Comparison {
    pub rules: BTreeMap<String, RuleDiff>,
    /// Contacts that went out per channel: (A, B).
    pub channels: BTreeMap<String, (usize, usize)>,
    pub cost_a: Decimal,
    pub cost_b: Decimal,
    pub coupons_a: usize,
    pub coupons_b: usize,
    /// Members whose outcome changed, with what changed (up to `SAMPLE`).
    pub sample: Vec<(String, Vec<String>)>,
    /// Members whose outcome changed, in all.
    pub members_changed: usize,
}

/// Members shown as examples of a changed outcome.
pub const SAMPLE: usize = 5;

impl Comparison {
    /// B's coupon cost against A's, in percent (`None` when A spent nothing).
    pub fn cost_change_percent(&self) -> Option<Decimal> {
        (!self.cost_a.is_zero())
            .then(|| (self.cost_b - self.cost_a) * Decimal::from(100) / self.cost_a)
    }
}

/// What went out: `sent` effects (a deferred effect counts when released).
fn out(e: &Effect) -> bool {
    e.status == Status::Sent && e.action != Action::Redeem
}

fn discount(e: &Effect) -> Decimal {
    e.discount
        .as_ref()
        .and_then(|d| Decimal::from_str(&d.to_string()).ok())
        .unwrap_or_default()
}

/// Compares the effects of run A with those of run B. Effects are matched
/// by key (the same rule, member, trigger and action give the same key in
/// both) and status; a `deferred` record is left out (its release counts).
pub fn compare(a: &[Effect], b: &[Effect]) -> Comparison {
    let mut c = Comparison::default();
    let index = |effects: &[Effect]| -> HashMap<(String, Status), usize> {
        let mut m = HashMap::new();
        for (i, e) in effects.iter().enumerate() {
            if e.status != Status::Deferred && e.action != Action::Redeem {
                m.insert((e.key.clone(), e.status), i);
            }
        }
        m
    };
    let (ia, ib) = (index(a), index(b));
    let mut changed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut rule_members: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (side, effects, other) in [(0, a, &ib), (1, b, &ia)] {
        for e in effects {
            if e.status == Status::Deferred || e.action == Action::Redeem {
                continue;
            }
            let r = c.rules.entry(e.rule.clone()).or_default();
            let went_out = out(e);
            if side == 0 {
                r.effects_a += 1;
            } else {
                r.effects_b += 1;
            }
            if went_out && e.action == Action::Coupon {
                let d = discount(e);
                if side == 0 {
                    r.cost_a += d;
                    c.cost_a += d;
                    c.coupons_a += 1;
                } else {
                    r.cost_b += d;
                    c.cost_b += d;
                    c.coupons_b += 1;
                }
            }
            if went_out && let Some(ch) = &e.channel {
                let n = c.channels.entry(ch.clone()).or_default();
                if side == 0 {
                    n.0 += 1;
                } else {
                    n.1 += 1;
                }
            }
            if other.contains_key(&(e.key.clone(), e.status)) {
                continue;
            }
            if side == 0 {
                r.removed += 1;
            } else {
                r.added += 1;
            }
            rule_members
                .entry(e.rule.clone())
                .or_default()
                .insert(e.member.clone());
            changed.entry(e.member.clone()).or_default().push(format!(
                "{} {} {} {}{} ({})",
                if side == 0 { "-" } else { "+" },
                e.rule,
                e.action,
                e.coupon.as_deref().or(e.tag.as_deref()).unwrap_or(""),
                if e.status == Status::Sent {
                    String::new()
                } else {
                    format!(" {}", e.status)
                },
                e.trigger
            ));
        }
    }
    for (rule, members) in rule_members {
        if let Some(r) = c.rules.get_mut(&rule) {
            r.members = members.len();
        }
    }
    c.members_changed = changed.len();
    c.sample = changed.into_iter().take(SAMPLE).collect();
    c
}

/// One rule's treated and held-out members over the attribution window.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Uplift {
    pub rule: String,
    pub treated: Group,
    pub held_out: Group,
    /// Treated minus held-out conversion, with its 95% confidence interval.
    pub conversion_diff: Estimate,
    /// Treated minus held-out revenue per member, with its 95% interval.
    pub revenue_diff: Estimate,
    /// An experiment's arms (`variant "A" 45% then ...`), by name, each
    /// against the holdout; empty for a rule without variants.
    pub arms: Vec<Arm>,
    /// Each later arm against the first (`B` vs `A`).
    pub between: Vec<Between>,
}

/// One arm of an experiment against the holdout.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Arm {
    pub variant: String,
    pub group: Group,
    pub conversion_diff: Estimate,
    pub revenue_diff: Estimate,
}

/// Arm `variant` minus arm `base`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Between {
    pub variant: String,
    pub base: String,
    pub conversion_diff: Estimate,
    pub revenue_diff: Estimate,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Group {
    pub members: usize,
    /// Members with a purchase within the window after their first firing.
    pub converted: usize,
    /// Purchases' amounts within the window, in all.
    pub revenue: Decimal,
    /// Sum of squared per-member revenue, for the variance.
    revenue_sq: f64,
    /// Coupons of the rule redeemed within the window.
    pub redeemed: usize,
}

impl Group {
    fn add(&mut self, converted: bool, revenue: Decimal, redeemed: bool) {
        self.members += 1;
        self.converted += usize::from(converted);
        self.revenue += revenue;
        let r: f64 = revenue.try_into().unwrap_or(0.0);
        self.revenue_sq += r * r;
        self.redeemed += usize::from(redeemed);
    }
    pub fn conversion(&self) -> f64 {
        ratio(self.converted as f64, self.members)
    }
    pub fn revenue_per_member(&self) -> f64 {
        ratio(self.revenue.try_into().unwrap_or(0.0), self.members)
    }
    fn revenue_variance(&self) -> f64 {
        if self.members < 2 {
            return 0.0;
        }
        let n = self.members as f64;
        let mean = self.revenue_per_member();
        ((self.revenue_sq - n * mean * mean) / (n - 1.0)).max(0.0)
    }
}

fn ratio(x: f64, n: usize) -> f64 {
    if n == 0 { 0.0 } else { x / n as f64 }
}

/// A difference and its 95% confidence interval (normal approximation).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// z for a two-sided 95% interval.
const Z95: f64 = 1.959964;

impl Estimate {
    fn new(value: f64, se: f64) -> Estimate {
        Estimate {
            value,
            low: value - Z95 * se,
            high: value + Z95 * se,
        }
    }
}

/// Each experiment's arms in the order its rule writes them, for `uplift`.
pub fn arm_order(rules: &crate::lang::RuleSet) -> BTreeMap<String, Vec<String>> {
    rules
        .rules
        .iter()
        .filter(|r| !r.variants.is_empty())
        .map(|r| {
            let names = r.variants.iter().map(|v| v.name.to_string()).collect();
            (r.name.clone(), names)
        })
        .collect()
}

/// A purchase, as uplift needs it.
#[derive(Clone, Debug)]
pub struct Purchase {
    pub member: String,
    pub at: jiff::Timestamp,
    pub amount: Decimal,
}

/// The purchases among `events` (the config's purchase event and amount).
pub fn purchases(schema: &crate::config::Schema, events: &[Event]) -> Vec<Purchase> {
    let Some((kind, et)) = schema.event(&schema.purchase_event) else {
        return Vec::new();
    };
    let field = et.field(&schema.purchase_amount).map(|(i, _)| i);
    events
        .iter()
        .filter(|e| e.kind == kind && !e.member.is_empty())
        .map(|e| Purchase {
            member: e.member.clone(),
            at: e.at,
            amount: match field.and_then(|f| e.fields.get(f)) {
                Some(crate::base::value::Value::Dec(d)) => *d,
                _ => Decimal::ZERO,
            },
        })
        .collect()
}

/// For each rule with held-out firings or variants: each member counts
/// once, from the rule's first firing for them (treated: `sent`, in its
/// variant if any; held out: `held_out`), and converts with a purchase
/// within `window_days` after it (the purchase of the triggering event
/// itself does not count: it is after nothing). Revenue is the window's
/// purchases per member; redemptions are the rule's coupons redeemed
/// within the window.
///
/// `arms_order` gives each experiment's arms in the order its rule writes them
/// (`arm_order`); arms are reported in that order, each later one against
/// the first. Arms it does not name (a rule since removed) follow by name.
pub fn uplift(
    effects: &[Effect],
    purchases: &[Purchase],
    window_days: i64,
    arms_order: &BTreeMap<String, Vec<String>>,
) -> Vec<Uplift> {
    let window = jiff::SignedDuration::from_hours(24 * window_days);
    // Per rule: member -> (first firing, treated?, variant).
    type First<'e> = (jiff::Timestamp, bool, Option<&'e str>);
    let mut first: BTreeMap<&str, BTreeMap<&str, First<'_>>> = BTreeMap::new();
    let mut measured = BTreeSet::new();
    for e in effects {
        let treated = match e.status {
            Status::Sent if e.action != Action::Redeem && e.from.is_none() => true,
            Status::HeldOut => false,
            _ => continue,
        };
        if !treated || e.variant.is_some() {
            measured.insert(e.rule.as_str());
        }
        let Ok(at) = e.at.parse::<jiff::Timestamp>() else {
            continue;
        };
        first
            .entry(&e.rule)
            .or_default()
            .entry(&e.member)
            .or_insert((at, treated, e.variant.as_deref()));
    }
    let mut by_member: HashMap<&str, Vec<&Purchase>> = HashMap::new();
    for p in purchases {
        by_member.entry(&p.member).or_default().push(p);
    }
    let mut redeems: HashMap<(&str, &str), Vec<jiff::Timestamp>> = HashMap::new();
    for e in effects.iter().filter(|e| e.action == Action::Redeem) {
        if let Ok(at) = e.at.parse() {
            redeems.entry((&e.rule, &e.member)).or_default().push(at);
        }
    }
    let mut out = Vec::new();
    for rule in measured {
        let mut u = Uplift {
            rule: rule.to_string(),
            ..Uplift::default()
        };
        let mut found_arms: BTreeMap<&str, Group> = BTreeMap::new();
        for (member, (t0, treated, variant)) in first.get(rule).into_iter().flatten() {
            let end = *t0 + window;
            let in_window = |at: jiff::Timestamp| at > *t0 && at <= end;
            let bought: Vec<&&Purchase> = by_member
                .get(member)
                .into_iter()
                .flatten()
                .filter(|p| in_window(p.at))
                .collect();
            let revenue: Decimal = bought.iter().map(|p| p.amount).sum();
            let redeemed = redeems
                .get(&(rule, *member))
                .is_some_and(|ts| ts.iter().any(|t| in_window(*t)));
            let mut groups = vec![if *treated {
                &mut u.treated
            } else {
                &mut u.held_out
            }];
            if let (true, Some(v)) = (treated, variant) {
                groups.push(found_arms.entry(v).or_default());
            }
            for g in groups {
                g.add(!bought.is_empty(), revenue, redeemed);
            }
        }
        (u.conversion_diff, u.revenue_diff) = diff(&u.treated, &u.held_out);
        compare_arms(&mut u, found_arms, arms_order.get(rule));
        out.push(u);
    }
    out
}

/// Each arm against the holdout, in the order the rule writes them, and
/// each later arm against the first.
fn compare_arms(u: &mut Uplift, found: BTreeMap<&str, Group>, written: Option<&Vec<String>>) {
    let place = |v: &str| written.and_then(|w| w.iter().position(|x| x == v));
    let mut found: Vec<(&str, Group)> = found.into_iter().collect();
    found.sort_by_key(|(v, _)| (place(v).unwrap_or(usize::MAX), v.to_string()));
    u.arms = found
        .into_iter()
        .map(|(v, g)| {
            let (conversion_diff, revenue_diff) = diff(&g, &u.held_out);
            Arm {
                variant: v.to_string(),
                group: g,
                conversion_diff,
                revenue_diff,
            }
        })
        .collect();
    if let Some((base, rest)) = u.arms.split_first() {
        u.between = rest
            .iter()
            .map(|a| {
                let (conversion_diff, revenue_diff) = diff(&a.group, &base.group);
                Between {
                    variant: a.variant.clone(),
                    base: base.variant.clone(),
                    conversion_diff,
                    revenue_diff,
                }
            })
            .collect();
    }
}

/// `a` minus `b`: conversion and revenue per member, each with its 95%
/// confidence interval (normal approximation, unequal variances).
fn diff(a: &Group, b: &Group) -> (Estimate, Estimate) {
    let (pa, pb) = (a.conversion(), b.conversion());
    let se = (ratio(pa * (1.0 - pa), a.members) + ratio(pb * (1.0 - pb), b.members)).sqrt();
    let conversion = Estimate::new(pa - pb, se);
    let se =
        (ratio(a.revenue_variance(), a.members) + ratio(b.revenue_variance(), b.members)).sqrt();
    let revenue = Estimate::new(a.revenue_per_member() - b.revenue_per_member(), se);
    (conversion, revenue)
}

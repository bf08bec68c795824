//! The replay report: one self-contained HTML file (no scripts, no
//! network) with charts drawn here as inline SVG: effects per week per
//! rule, coupon cost over time, treated against held-out conversion, and
//! members by tier over time, then the tables the terminal prints. Owns
//! only presentation; the numbers come from `replay` and `backtest`.

use crate::config::Schema;
use crate::model::Effect;
use crate::model::summary::Summary;
use crate::model::{Action, Status};
use crate::sim::backtest::{Comparison, Estimate, Group, Purchase, Uplift};
use rust_decimal::Decimal;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;
use std::str::FromStr;

pub struct ReportInput<'a> {
    pub schema: &'a Schema,
    pub effects: &'a [Effect],
    pub purchases: &'a [Purchase],
    pub summary: &'a Summary,
    pub uplift: &'a [Uplift],
    pub comparison: Option<&'a Comparison>,
    /// The repurchase model on the weeks it did not see (`--holdout-from`).
    pub holdout: Option<&'a crate::sim::holdout::HoldoutCheck>,
    pub title: &'a str,
}

/// Colours of the series, in order (colour-blind safe, Okabe-Ito).
const PALETTE: &[&str] = &[
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
];
const W: f64 = 760.0;
const H: f64 = 260.0;
/// Plot margins: left (axis labels), right, top, bottom (x labels).
const ML: f64 = 56.0;
const MR: f64 = 150.0;
const MT: f64 = 16.0;
const MB: f64 = 40.0;

pub fn report(r: &ReportInput<'_>) -> String {
    let weeks = Weeks::new(r.effects, r.purchases);
    let mut body = String::new();
    let _ = write!(body, "<h1>{}</h1>", esc(r.title));
    body.push_str(&totals(r.summary));
    body.push_str(&section(
        "Effects per week, by rule",
        "Effects that went out (sent), per ISO week of the replayed history.",
        &line_chart(&weeks.labels, &effects_per_week(r.effects, &weeks), false),
    ));
    body.push_str(&section(
        "Coupon cost over time",
        "Discount value of the coupons sent, summed from the start.",
        &line_chart(&weeks.labels, &coupon_cost(r.effects, &weeks), true),
    ));
    if !r.uplift.is_empty() {
        body.push_str(&section(
            "Treated against held-out members",
            &format!(
                "Share of members who bought within {} days of the rule's first firing for them; whiskers: 95% confidence interval of each share.",
                r.schema.attribution_days
            ),
            &conversion_chart(r.uplift),
        ));
        body.push_str(&uplift_table(r.uplift));
    }
    if let Some(h) = r.holdout {
        body.push_str(&holdout_section(h));
    }
    body.push_str(&section(
        "Members by tier over time",
        "Members seen so far (from their first purchase) by tier, from the tier effects sent.",
        &line_chart(&weeks.labels, &tiers(r, &weeks), false),
    ));
    body.push_str(&summary_table(r.summary));
    if let Some(c) = r.comparison {
        body.push_str(&comparison_table(c));
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>{CSS}</style></head><body>{body}</body></html>\n",
        esc(r.title)
    )
}

const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;max-width:960px;margin:2em auto;color:#222}\
h1{font-size:22px}h2{font-size:17px;margin-top:2em}p.note{color:#555;margin:.2em 0 .6em}\
table{border-collapse:collapse;margin:.8em 0}td,th{border-bottom:1px solid #ddd;padding:3px 10px;text-align:right}\
td:first-child,th:first-child{text-align:left}svg{display:block}.big{font-size:18px;margin-right:2em}";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn section(title: &str, note: &str, chart: &str) -> String {
    format!(
        "<h2>{}</h2><p class=\"note\">{}</p>{chart}",
        esc(title),
        esc(note)
    )
}

fn totals(s: &Summary) -> String {
    format!(
        "<p><span class=\"big\">{} members reached</span><span class=\"big\">{} coupons worth {}</span><span class=\"big\">{} points awarded</span></p>",
        s.members_reached.unwrap_or(0),
        s.coupons,
        s.coupon_value.normalize(),
        s.points_awarded
    )
}

/// The ISO weeks the history spans, as chart columns.
struct Weeks {
    first: jiff::civil::Date,
    labels: Vec<String>,
}

impl Weeks {
    fn new(effects: &[Effect], purchases: &[Purchase]) -> Weeks {
        let days = effects
            .iter()
            .filter_map(|e| e.at.parse::<jiff::Timestamp>().ok())
            .chain(purchases.iter().map(|p| p.at))
            .map(|t| t.to_zoned_datetime(jiff::tz::TimeZone::UTC).date());
        let (mut lo, mut hi) = (None::<jiff::civil::Date>, None::<jiff::civil::Date>);
        for d in days {
            lo = Some(lo.map_or(d, |l| l.min(d)));
            hi = Some(hi.map_or(d, |h| h.max(d)));
        }
        let (Some(lo), Some(hi)) = (lo, hi) else {
            return Weeks {
                first: jiff::civil::date(1970, 1, 1),
                labels: Vec::new(),
            };
        };
        let first = monday(lo);
        let n = ((hi - first).get_days() / 7 + 1).max(1) as usize;
        let labels = (0..n)
            .map(|i| {
                first
                    .checked_add(jiff::Span::new().days(7 * i as i64))
                    .map(|d| d.to_string())
                    .unwrap_or_default()
            })
            .collect();
        Weeks { first, labels }
    }

    fn index(&self, at: &str) -> Option<usize> {
        let t: jiff::Timestamp = at.parse().ok()?;
        self.index_of(t)
    }

    fn index_of(&self, t: jiff::Timestamp) -> Option<usize> {
        let d = t.to_zoned_datetime(jiff::tz::TimeZone::UTC).date();
        let i = (d - self.first).get_days() / 7;
        (i >= 0 && (i as usize) < self.labels.len()).then_some(i as usize)
    }
}

fn monday(d: jiff::civil::Date) -> jiff::civil::Date {
    let back = d.weekday().to_monday_zero_offset() as i64;
    d.checked_sub(jiff::Span::new().days(back)).unwrap_or(d)
}

type Series = Vec<(String, Vec<f64>)>;

fn effects_per_week(effects: &[Effect], w: &Weeks) -> Series {
    let mut by_rule: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for e in effects.iter().filter(|e| e.status == Status::Sent) {
        if let Some(i) = w.index(&e.at) {
            by_rule
                .entry(&e.rule)
                .or_insert_with(|| vec![0.0; w.labels.len()])[i] += 1.0;
        }
    }
    by_rule
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

fn coupon_cost(effects: &[Effect], w: &Weeks) -> Series {
    let mut v = vec![0.0; w.labels.len()];
    for e in effects
        .iter()
        .filter(|e| e.status == Status::Sent && e.action == Action::Coupon)
    {
        if let Some(i) = w.index(&e.at) {
            v[i] += e
                .discount
                .as_ref()
                .and_then(|d| Decimal::from_str(&d.to_string()).ok())
                .and_then(|d| f64::try_from(d).ok())
                .unwrap_or(0.0);
        }
    }
    let mut total = 0.0;
    for x in v.iter_mut() {
        total += *x;
        *x = total;
    }
    vec![("coupon cost".to_string(), v)]
}

/// Members by tier at the end of each week: members count from their first
/// purchase (in the first tier), and move with the tier effects sent.
fn tiers(r: &ReportInput<'_>, w: &Weeks) -> Series {
    let n = w.labels.len();
    let tiers = &r.schema.tiers;
    let mut delta = vec![vec![0.0f64; n]; tiers.len()];
    let mut seen = BTreeSet::new();
    for p in r.purchases {
        if seen.insert(p.member.as_str())
            && let Some(i) = w.index_of(p.at)
        {
            delta[0][i] += 1.0;
        }
    }
    let index: HashMap<&str, usize> = tiers
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    for e in r
        .effects
        .iter()
        .filter(|e| e.status == Status::Sent && e.action == Action::Tier)
    {
        let (Some(to), Some(from), Some(i)) = (
            e.tier.as_deref().and_then(|t| index.get(t)),
            e.from_tier.as_deref().and_then(|t| index.get(t)),
            w.index(&e.at),
        ) else {
            continue;
        };
        delta[*to][i] += 1.0;
        delta[*from][i] -= 1.0;
    }
    tiers
        .iter()
        .zip(delta)
        .map(|(t, d)| {
            let mut total = 0.0;
            let v = d
                .into_iter()
                .map(|x| {
                    total += x;
                    total
                })
                .collect();
            (t.clone(), v)
        })
        .collect()
}

/// Lines over weeks with a legend on the right; `money` labels the axis
/// without decimals either way.
fn line_chart(labels: &[String], series: &Series, _money: bool) -> String {
    let n = labels.len();
    if n == 0 || series.is_empty() {
        return "<p class=\"note\">Nothing to show.</p>".into();
    }
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1.0);
    let top = 4.0 * nice(max / 4.0);
    let (pw, ph) = (W - ML - MR, H - MT - MB);
    let x = |i: usize| {
        ML + if n == 1 {
            pw / 2.0
        } else {
            pw * i as f64 / (n - 1) as f64
        }
    };
    let y = |v: f64| MT + ph - ph * v / top;
    let mut s = svg_open();
    axes(&mut s, top, y);
    // About eight date labels along the bottom.
    let step = n.div_ceil(8).max(1);
    for i in (0..n).step_by(step) {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
            x(i),
            H - MB + 16.0,
            esc(&labels[i])
        );
    }
    for (k, (name, v)) in series.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        let points: Vec<String> = v
            .iter()
            .enumerate()
            .map(|(i, val)| format!("{:.1},{:.1}", x(i), y(*val)))
            .collect();
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.6\" points=\"{}\"><title>{}</title></polyline>",
            points.join(" "),
            esc(name)
        );
        legend(&mut s, k, name, colour);
    }
    s.push_str("</svg>");
    s
}

/// Conversion of treated and held-out members per rule, with 95% whiskers.
fn conversion_chart(us: &[Uplift]) -> String {
    let (pw, ph) = (W - ML - MR, H - MT - MB);
    let y = |v: f64| MT + ph - ph * v;
    let mut s = svg_open();
    axes(&mut s, 1.0, y);
    let slot = pw / us.len().max(1) as f64;
    for (k, u) in us.iter().enumerate() {
        for (j, (g, name, colour)) in [
            (&u.treated, "treated", PALETTE[0]),
            (&u.held_out, "held out", PALETTE[1]),
        ]
        .into_iter()
        .enumerate()
        {
            let p = g.conversion();
            let se = if g.members > 0 {
                (p * (1.0 - p) / g.members as f64).sqrt()
            } else {
                0.0
            };
            let bw = slot * 0.3;
            let x0 = ML + slot * k as f64 + slot * 0.15 + j as f64 * bw;
            let _ = write!(
                s,
                "<rect x=\"{x0:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" fill=\"{colour}\"><title>{} {}: {:.1}% of {}</title></rect>",
                y(p),
                MT + ph - y(p),
                esc(&u.rule),
                name,
                p * 100.0,
                g.members
            );
            let cx = x0 + bw / 2.0;
            let (lo, hi) = ((p - 1.96 * se).max(0.0), (p + 1.96 * se).min(1.0));
            let _ = write!(
                s,
                "<line x1=\"{cx:.1}\" x2=\"{cx:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#333\"/>",
                y(lo),
                y(hi)
            );
        }
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
            ML + slot * (k as f64 + 0.5),
            H - MB + 16.0,
            esc(&u.rule)
        );
    }
    legend(&mut s, 0, "treated", PALETTE[0]);
    legend(&mut s, 1, "held out", PALETTE[1]);
    s.push_str("</svg>");
    s
}

fn svg_open() -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\">"
    )
}

/// The y axis with five gridlines up to `top`.
fn axes(s: &mut String, top: f64, y: impl Fn(f64) -> f64) {
    for i in 0..=4 {
        let v = top * i as f64 / 4.0;
        let label = if top <= 1.0 {
            format!("{:.0}%", v * 100.0)
        } else {
            format!("{v:.0}")
        };
        let _ = write!(
            s,
            "<line x1=\"{ML}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#e5e5e5\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{label}</text>",
            W - MR,
            y(v),
            y(v),
            ML - 6.0,
            y(v) + 3.0
        );
    }
}

fn legend(s: &mut String, k: usize, name: &str, colour: &str) {
    let ly = MT + 14.0 * k as f64;
    let _ = write!(
        s,
        "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{colour}\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{}</text>",
        W - MR + 12.0,
        ly,
        W - MR + 26.0,
        ly + 9.0,
        esc(name)
    );
}

/// A round axis maximum at or above `v` (1, 2 or 5 times a power of ten).
fn nice(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(v)
}

fn summary_table(s: &Summary) -> String {
    let statuses = crate::model::summary::STATUSES;
    let mut t = String::from("<h2>Effects by rule and status</h2><table><tr><th>rule</th>");
    for st in statuses {
        let _ = write!(t, "<th>{st}</th>");
    }
    t.push_str("<th>response</th></tr>");
    for (rule, counts) in &s.by_rule {
        let _ = write!(t, "<tr><td>{}</td>", esc(rule));
        for st in statuses {
            let _ = write!(t, "<td>{}</td>", counts.get(st).copied().unwrap_or(0));
        }
        let rate = s
            .response_rate(rule)
            .map_or("-".to_string(), |r| format!("{:.1}%", r * 100.0));
        let _ = write!(t, "<td>{rate}</td></tr>");
    }
    t.push_str("</table>");
    t
}

/// BG/NBD's expected repeat purchase days per week after its calibration
/// period against the actual ones.
fn holdout_section(h: &crate::sim::holdout::HoldoutCheck) -> String {
    let labels: Vec<String> = h
        .weeks
        .iter()
        .map(|(d, _, _)| crate::base::time::day_string(*d))
        .collect();
    let series: Series = vec![
        (
            "predicted".to_string(),
            h.weeks.iter().map(|(_, p, _)| *p).collect(),
        ),
        (
            "actual".to_string(),
            h.weeks.iter().map(|(_, _, a)| *a as f64).collect(),
        ),
    ];
    let (p, a): (f64, usize) = h
        .weeks
        .iter()
        .fold((0.0, 0), |(p, a), w| (p + w.1, a + w.2));
    section(
        "Repurchase model on the holdout period",
        &format!(
            "BG/NBD fitted on the {} members' purchases before {} (r {:.3}, alpha {:.2} days, a {:.3}, b {:.3}); purchase days per week after it, predicted against actual: {:.0} against {a} in all.",
            h.members,
            crate::base::time::day_string(h.from),
            h.fit.r,
            h.fit.alpha,
            h.fit.a,
            h.fit.b,
            p
        ),
        &line_chart(&labels, &series, false),
    )
}

fn uplift_table(us: &[Uplift]) -> String {
    let mut t = String::from(
        "<table><tr><th>rule</th><th>treated</th><th>held out</th><th>conversion</th><th>held-out conversion</th><th>difference (95% CI)</th><th>revenue per member difference (95% CI)</th><th>redeemed</th></tr>",
    );
    for u in us {
        let row = |t: &mut String, name: &str, g: &Group, c: &Estimate, r: &Estimate| {
            let _ = write!(
                t,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}%</td><td>{:.1}%</td><td>{:+.1} pts ({:+.1} to {:+.1})</td><td>{:+.2} ({:+.2} to {:+.2})</td><td>{}</td></tr>",
                esc(name),
                g.members,
                u.held_out.members,
                g.conversion() * 100.0,
                u.held_out.conversion() * 100.0,
                c.value * 100.0,
                c.low * 100.0,
                c.high * 100.0,
                r.value,
                r.low,
                r.high,
                g.redeemed
            );
        };
        row(
            &mut t,
            &u.rule,
            &u.treated,
            &u.conversion_diff,
            &u.revenue_diff,
        );
        for a in &u.arms {
            let name = format!("{}: variant {}", u.rule, a.variant);
            row(&mut t, &name, &a.group, &a.conversion_diff, &a.revenue_diff);
        }
    }
    t.push_str("</table>");
    for u in us.iter().filter(|u| !u.between.is_empty()) {
        let _ = write!(
            t,
            "<h3>{}: variants against variant {}</h3><table><tr><th>variant</th><th>conversion difference (95% CI)</th><th>revenue per member difference (95% CI)</th></tr>",
            esc(&u.rule),
            esc(&u.between[0].base)
        );
        for b in &u.between {
            let _ = write!(
                t,
                "<tr><td>{}</td><td>{:+.1} pts ({:+.1} to {:+.1})</td><td>{:+.2} ({:+.2} to {:+.2})</td></tr>",
                esc(&b.variant),
                b.conversion_diff.value * 100.0,
                b.conversion_diff.low * 100.0,
                b.conversion_diff.high * 100.0,
                b.revenue_diff.value,
                b.revenue_diff.low,
                b.revenue_diff.high
            );
        }
        t.push_str("</table>");
    }
    t
}

fn comparison_table(c: &Comparison) -> String {
    let mut t = String::from(
        "<h2>Compared with the other rule set</h2><table><tr><th>rule</th><th>effects A</th><th>effects B</th><th>added</th><th>removed</th><th>members</th><th>cost A</th><th>cost B</th></tr>",
    );
    for (rule, d) in &c.rules {
        let _ = write!(
            t,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(rule),
            d.effects_a,
            d.effects_b,
            d.added,
            d.removed,
            d.members,
            d.cost_a.normalize(),
            d.cost_b.normalize()
        );
    }
    t.push_str("</table>");
    let _ = write!(
        t,
        "<p>Coupons {} → {}; coupon cost {} → {}; {} members' outcome changed.</p>",
        c.coupons_a,
        c.coupons_b,
        c.cost_a.normalize(),
        c.cost_b.normalize(),
        c.members_changed
    );
    t
}

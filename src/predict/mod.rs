//! Buy-till-you-die models of repeat purchasing, fitted by maximum
//! likelihood: BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers
//! the easy way") for how often a member buys and whether they still do,
//! and Gamma-Gamma (Fader & Hardie 2013) for what they spend. Time is in
//! days. Pure arithmetic on per-member summaries; knows nothing of the
//! store or of rules (the engine feeds it and keeps the fit).

mod math;

use math::{hyp2f1, ln_gamma, log_sum_exp, nelder_mead};
use serde::{Deserialize, Serialize};

/// What BG/NBD reads of a member: repeat purchase days `x`, the day of
/// the last one after the first (`t_x`), and the days since the first
/// (`t`, "T" in the paper).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct History {
    pub x: f64,
    pub t_x: f64,
    pub t: f64,
}

/// BG/NBD's parameters: purchase rates are Gamma(r, alpha) across members
/// (alpha in days), dropout probabilities Beta(a, b).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BgNbd {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
}

/// Gamma-Gamma's parameters: a member's spend per purchase is Gamma(p, nu)
/// with nu ~ Gamma(q, v) across members.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GammaGamma {
    pub p: f64,
    pub q: f64,
    pub v: f64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FitError {
    #[error("no member has a purchase to fit on")]
    NoMembers,
    #[error("no member has bought on two days: there is no repeat purchasing to fit")]
    NoRepeatBuyers,
    #[error("the fit did not converge (log-likelihood {0})")]
    NotConverged(f64),
}

/// Members with the same history, counted once: the fit's cost grows with
/// distinct histories, not members.
pub type Weighted<T> = Vec<(T, f64)>;

impl BgNbd {
    /// Log-likelihood of one member's history (the paper's equation 6).
    pub fn ll(&self, h: &History) -> f64 {
        let BgNbd { r, alpha, a, b } = *self;
        let x = h.x;
        let a1 = ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln();
        let a2 = ln_gamma(a + b) + ln_gamma(b + x) - ln_gamma(b) - ln_gamma(a + b + x);
        let a3 = -(r + x) * (alpha + h.t).ln();
        if x > 0.0 {
            let a4 = a.ln() - (b + x - 1.0).ln() - (r + x) * (alpha + h.t_x).ln();
            a1 + a2 + log_sum_exp(a3, a4)
        } else {
            a1 + a2 + a3
        }
    }

    /// The chance the member has not dropped out (the paper's equation 11).
    pub fn p_alive(&self, h: &History) -> f64 {
        if h.x <= 0.0 {
            return 1.0;
        }
        1.0 / (1.0 + self.dropout_odds(h))
    }

    /// `a / (b + x - 1) * ((alpha + T) / (alpha + t_x))^(r + x)`, in logs.
    fn dropout_odds(&self, h: &History) -> f64 {
        let BgNbd { r, alpha, a, b } = *self;
        ((a / (b + h.x - 1.0)).ln() + (r + h.x) * ((alpha + h.t).ln() - (alpha + h.t_x).ln())).exp()
    }

    /// Expected purchases in the next `days` (the paper's equation 10).
    pub fn expected(&self, h: &History, days: f64) -> f64 {
        let BgNbd { r, alpha, a, b } = *self;
        let x = h.x;
        if days <= 0.0 {
            return 0.0;
        }
        let z = days / (alpha + h.t + days);
        let power = ((alpha + h.t) / (alpha + h.t + days)).powf(r + x);
        let head = (a + b + x - 1.0) / (a - 1.0);
        let body = 1.0 - power * hyp2f1(r + x, b + x, a + b + x - 1.0, z);
        let odds = if x > 0.0 { self.dropout_odds(h) } else { 0.0 };
        head * body / (1.0 + odds)
    }

    /// Days from now until the expected purchases reach one: the expected
    /// next purchase day. `None` when they never do within ten years.
    pub fn days_to_next(&self, h: &History) -> Option<f64> {
        const HORIZON: f64 = 3650.0;
        if self.expected(h, HORIZON) < 1.0 {
            return None;
        }
        // Expected purchases grow with the window: bisect on whole days.
        let (mut lo, mut hi) = (0.0, HORIZON);
        while hi - lo > 0.5 {
            let mid = ((lo + hi) / 2.0_f64).floor().max(lo + 0.5);
            if self.expected(h, mid) >= 1.0 {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Some(hi.ceil())
    }
}

impl GammaGamma {
    /// Log-likelihood of a repeat buyer's `x` purchases of mean value `m`
    /// (Fader & Hardie 2013, equation 5 without the terms in the data only).
    pub fn ll(&self, x: f64, m: f64) -> f64 {
        let GammaGamma { p, q, v } = *self;
        ln_gamma(p * x + q) - ln_gamma(p * x) - ln_gamma(q)
            + q * v.ln()
            + (p * x - 1.0) * m.ln()
            + (p * x) * x.ln()
            - (p * x + q) * (x * m + v).ln()
    }

    /// Expected spend per purchase of a member with `x` repeat purchases of
    /// mean value `m` (0 and anything: the population's mean).
    pub fn expected_spend(&self, x: f64, m: f64) -> f64 {
        let GammaGamma { p, q, v } = *self;
        if x <= 0.0 {
            return p * v / (q - 1.0);
        }
        p * (v + x * m) / (p * x + q - 1.0)
    }
}

/// Histories in whole days (`x`, `t_x`, `T`), equal ones once with their
/// count, in a fixed order: the same sums, so the same fit, every run.
pub fn group(mut days: Vec<(u32, u32, u32)>) -> Weighted<History> {
    days.sort_unstable();
    let mut out: Weighted<History> = Vec::new();
    for (x, t_x, t) in days {
        let h = History {
            x: f64::from(x),
            t_x: f64::from(t_x),
            t: f64::from(t),
        };
        match out.last_mut() {
            Some((last, w)) if *last == h => *w += 1.0,
            _ => out.push((h, 1.0)),
        }
    }
    out
}

/// Members a first, rough fit reads before the fit on everyone starts
/// from its estimates: the search on everyone then takes a few hundred
/// steps instead of thousands.
const ROUGH: usize = 100_000;

/// How small the simplex gets: to the last digits on small data, and
/// within 0.001% of each parameter when polishing on many members (a
/// step of the search costs a pass over them).
fn tolerance(rows: usize) -> f64 {
    if rows > ROUGH { 1e-5 } else { 1e-8 }
}

/// About `n` members drawn from weighted rows by systematic sampling:
/// every k-th member of the rows' members in order, so each row keeps its
/// share (taking every k-th *row* would not: rows hold many members or one).
fn thin<T: Copy>(rows: &Weighted<T>, n: usize) -> Weighted<T> {
    let total: f64 = rows.iter().map(|(_, w)| w).sum();
    let k = (total / n.max(1) as f64).max(1.0);
    let (mut next, mut seen) = (k / 2.0, 0.0);
    let mut out = Vec::new();
    for (row, w) in rows {
        seen += w;
        let mut picked = 0.0;
        while next < seen {
            picked += 1.0;
            next += k;
        }
        if picked > 0.0 {
            out.push((*row, picked));
        }
    }
    out
}

/// Fits BG/NBD to members' histories (whole days). Returns the parameters
/// and the log-likelihood at them.
pub fn fit_bgnbd(histories: &Weighted<History>) -> Result<(BgNbd, f64), FitError> {
    if histories.is_empty() {
        return Err(FitError::NoMembers);
    }
    if !histories.iter().any(|(h, _)| h.x > 0.0) {
        return Err(FitError::NoRepeatBuyers);
    }
    let weight: f64 = histories.iter().map(|(_, w)| w).sum();
    let mean_t = histories.iter().map(|(h, w)| h.t * w).sum::<f64>() / weight;
    let mut start = vec![0.0, mean_t.max(1.0).ln(), 0.0, 0.0];
    let mut step = 0.5;
    if histories.len() > ROUGH {
        let rough = BgNbdData::new(&thin(histories, ROUGH));
        start = nelder_mead(&|p| -rough.ll(&from_logs(p)), &start, step, 1e-6).0;
        step = 0.02;
    }
    let data = BgNbdData::new(histories);
    let tol = tolerance(histories.len());
    let (best, value) = nelder_mead(&|p| -data.ll(&from_logs(p)), &start, step, tol);
    // A log-likelihood is at most 0 for these densities on whole days, and
    // parameters run off to the ends of the floats only when the data
    // cannot pin them (a handful of members): no fit beats a wrong one.
    if !value.is_finite() || value < 0.0 || !sane(&best) {
        return Err(FitError::NotConverged(-value));
    }
    Ok((from_logs(&best), -value))
}

/// Parameters (as logarithms) between 1e-12 and 1e12: beyond, the search
/// ran off to the ends of the floats instead of finding a maximum. (Very
/// regular buyers do send `r` and `alpha` far up together, legitimately:
/// their ratio, the purchase rate, stays put.)
fn sane(logs: &[f64]) -> bool {
    let bound = 1e12f64.ln();
    logs.iter().all(|l| l.is_finite() && l.abs() <= bound)
}

fn from_logs(p: &[f64]) -> BgNbd {
    BgNbd {
        r: p[0].exp(),
        alpha: p[1].exp(),
        a: p[2].exp(),
        b: p[3].exp(),
    }
}

/// Histories laid out for the log-likelihood's terms: those of `x` alone
/// and of `T` or `t_x` alone are computed once per distinct value, so a
/// history costs one `exp` and one `ln`.
struct BgNbdData {
    /// (x, t_x, T, weight), whole days.
    rows: Vec<(usize, usize, usize, f64)>,
    max_x: usize,
    max_t: usize,
}

impl BgNbdData {
    fn new(histories: &Weighted<History>) -> BgNbdData {
        let rows: Vec<(usize, usize, usize, f64)> = histories
            .iter()
            .map(|(h, w)| (h.x as usize, h.t_x as usize, h.t as usize, *w))
            .collect();
        let max_x = rows.iter().map(|r| r.0).max().unwrap_or(0);
        let max_t = rows.iter().map(|r| r.2.max(r.1)).max().unwrap_or(0);
        BgNbdData { rows, max_x, max_t }
    }

    /// The log-likelihood of every history at `m` (equal to the sum of
    /// `BgNbd::ll`).
    fn ll(&self, m: &BgNbd) -> f64 {
        let BgNbd { r, alpha, a, b } = *m;
        let (lg_r, lg_b, lg_ab) = (ln_gamma(r), ln_gamma(b), ln_gamma(a + b));
        let per_x: Vec<(f64, f64)> = (0..=self.max_x)
            .map(|x| {
                let x = x as f64;
                let a1 = ln_gamma(r + x) - lg_r + r * alpha.ln();
                let a2 = lg_ab + ln_gamma(b + x) - lg_b - ln_gamma(a + b + x);
                let k4 = if x > 0.0 {
                    a.ln() - (b + x - 1.0).ln()
                } else {
                    f64::NEG_INFINITY
                };
                (a1 + a2, k4)
            })
            .collect();
        let ln_at: Vec<f64> = (0..=self.max_t).map(|t| (alpha + t as f64).ln()).collect();
        sum_rows(&self.rows, &|&(x, t_x, t, w)| {
            let (head, k4) = per_x[x];
            let rx = r + x as f64;
            let a3 = -rx * ln_at[t];
            let ll = if x > 0 {
                head + log_sum_exp(a3, k4 - rx * ln_at[t_x])
            } else {
                head + a3
            };
            w * ll
        })
    }
}

/// Rows a sum takes on one thread; more go over every core (a fit's step
/// on a million members is a million logarithms).
const ROWS_PER_THREAD: usize = 100_000;

/// The sum of `term` over `rows`, in chunks on every core for many rows.
/// Each chunk is summed in order and the chunks' sums are added in order,
/// so the result is the same every run.
fn sum_rows<T: Sync>(rows: &[T], term: &(dyn Fn(&T) -> f64 + Sync)) -> f64 {
    // Few rows first: asking for the cores reads cgroup files, and a fit
    // sums thousands of times.
    if rows.len() < ROWS_PER_THREAD {
        return rows.iter().map(term).sum();
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 {
        return rows.iter().map(term).sum();
    }
    let chunk = rows.len().div_ceil(threads);
    std::thread::scope(|s| {
        let parts: Vec<_> = rows
            .chunks(chunk)
            .map(|c| s.spawn(move || c.iter().map(term).sum::<f64>()))
            .collect();
        parts
            .into_iter()
            .map(|p| p.join().unwrap_or(f64::NAN))
            .sum()
    })
}

/// Fits Gamma-Gamma to repeat buyers: (repeat purchases, mean value).
pub fn fit_gamma_gamma(buyers: &Weighted<(f64, f64)>) -> Result<(GammaGamma, f64), FitError> {
    let buyers: Weighted<(f64, f64)> = buyers
        .iter()
        .copied()
        .filter(|((x, m), _)| *x > 0.0 && *m > 0.0)
        .collect();
    if buyers.is_empty() {
        return Err(FitError::NoRepeatBuyers);
    }
    let mean = buyers.iter().map(|((_, m), w)| m * w).sum::<f64>()
        / buyers.iter().map(|(_, w)| w).sum::<f64>();
    let mut start = vec![0.0, 1.0, mean.max(1e-6).ln()];
    let mut step = 0.5;
    if buyers.len() > ROUGH {
        let rough = GammaGammaData::new(&thin(&buyers, ROUGH));
        start = nelder_mead(&|p| -rough.ll(p), &start, step, 1e-6).0;
        step = 0.02;
    }
    let data = GammaGammaData::new(&buyers);
    let tol = tolerance(buyers.len());
    let (best, value) = nelder_mead(&|p| -data.ll(p), &start, step, tol);
    if !value.is_finite() || !sane(&best) {
        return Err(FitError::NotConverged(-value));
    }
    Ok((
        GammaGamma {
            p: best[0].exp(),
            q: best[1].exp(),
            v: best[2].exp(),
        },
        -value,
    ))
}

/// Repeat buyers laid out for Gamma-Gamma's log-likelihood: the terms of
/// `x` alone once per distinct `x`, `ln m` once per buyer.
struct GammaGammaData {
    /// (x, m, ln m, weight).
    rows: Vec<(usize, f64, f64, f64)>,
    max_x: usize,
}

impl GammaGammaData {
    fn new(buyers: &Weighted<(f64, f64)>) -> GammaGammaData {
        let rows: Vec<(usize, f64, f64, f64)> = buyers
            .iter()
            .map(|((x, m), w)| (*x as usize, *m, m.ln(), *w))
            .collect();
        let max_x = rows.iter().map(|r| r.0).max().unwrap_or(0);
        GammaGammaData { rows, max_x }
    }

    /// The log-likelihood at the parameters' logs `p` (equal to the sum
    /// of `GammaGamma::ll`).
    fn ll(&self, p: &[f64]) -> f64 {
        let (pp, q, v) = (p[0].exp(), p[1].exp(), p[2].exp());
        let (lg_q, ln_v) = (ln_gamma(q), v.ln());
        let per_x: Vec<f64> = (0..=self.max_x)
            .map(|x| {
                let x = x as f64;
                if x == 0.0 {
                    return 0.0;
                }
                ln_gamma(pp * x + q) - ln_gamma(pp * x) - lg_q + q * ln_v + pp * x * x.ln()
            })
            .collect();
        sum_rows(&self.rows, &|&(x, m, ln_m, w)| {
            let px = pp * x as f64;
            w * (per_x[x] + (px - 1.0) * ln_m - (px + q) * (x as f64 * m + v).ln())
        })
    }
}

/// A fit as the store keeps it (`nudge fit`, `nudge model`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    pub bgnbd: BgNbd,
    /// Log-likelihood at the estimates, time in days.
    pub bgnbd_ll: f64,
    /// `None` when no member had repeat purchases with a known value.
    pub gamma_gamma: Option<GammaGamma>,
    pub gamma_gamma_ll: Option<f64>,
    /// The day histories were counted to (`T`), `YYYY-MM-DD`.
    pub fitted_on: String,
    /// Members with a purchase by that day: the fit reads them all.
    pub members: u64,
    /// Repeat buyers Gamma-Gamma was fitted on.
    pub repeat_buyers: u64,
}

impl Fit {
    /// Expected spend per purchase (the population's mean without a
    /// Gamma-Gamma fit or a value for the member).
    pub fn spend(&self, repeat: Option<(f64, f64)>) -> Option<f64> {
        let gg = self.gamma_gamma?;
        Some(match repeat {
            Some((x, m)) if x > 0.0 && m > 0.0 => gg.expected_spend(x, m),
            _ => gg.expected_spend(0.0, 0.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The laid-out log-likelihoods the fits search are the sums of the
    /// per-member formulas (the cached terms change nothing).
    #[test]
    fn cached_log_likelihoods_equal_the_per_member_sums() {
        let histories = group(vec![
            (0, 0, 30),
            (2, 40, 90),
            (2, 40, 90),
            (7, 200, 260),
            (1, 5, 5),
        ]);
        let m = BgNbd {
            r: 0.3,
            alpha: 25.0,
            a: 0.8,
            b: 2.4,
        };
        let direct: f64 = histories.iter().map(|(h, w)| w * m.ll(h)).sum();
        let cached = BgNbdData::new(&histories).ll(&m);
        assert!(
            (direct - cached).abs() < 1e-9 * direct.abs(),
            "{direct} {cached}"
        );
        let buyers = vec![((1.0, 20.0), 1.0), ((3.0, 12.5), 2.0), ((6.0, 40.0), 1.0)];
        let g = GammaGamma {
            p: 6.0,
            q: 3.5,
            v: 15.0,
        };
        let direct: f64 = buyers.iter().map(|((x, v), w)| w * g.ll(*x, *v)).sum();
        let cached = GammaGammaData::new(&buyers).ll(&[g.p.ln(), g.q.ln(), g.v.ln()]);
        assert!(
            (direct - cached).abs() < 1e-9 * direct.abs(),
            "{direct} {cached}"
        );
        // Equal histories are counted once, with their weight.
        assert_eq!(histories.len(), 4);
        assert_eq!(histories.iter().map(|(_, w)| w).sum::<f64>(), 5.0);
    }
}

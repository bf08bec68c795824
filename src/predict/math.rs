//! The special functions and the optimiser the models need: ln Γ
//! (Lanczos), the Gaussian hypergeometric function ₂F₁ (its series), and
//! Nelder-Mead's simplex search with restarts.

/// ln Γ(x) for x > 0 (Lanczos, g = 7, nine coefficients: about 15
/// correct digits, which maximum likelihood needs: the log-likelihood is
/// a sum of thousands of these).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 - x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).abs().ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = C[0];
    for (i, c) in C.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// ln(e^a + e^b) without overflow.
pub fn log_sum_exp(a: f64, b: f64) -> f64 {
    let m = a.max(b);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + ((a - m).exp() + (b - m).exp()).ln()
}

/// ₂F₁(a, b; c; z) for 0 <= z < 1, by its series. BG/NBD's z is
/// t / (alpha + T + t): below 1, and the series converges for it; the
/// term limit only stops a z within a hair of 1.
pub fn hyp2f1(a: f64, b: f64, c: f64, z: f64) -> f64 {
    const MAX_TERMS: usize = 100_000;
    let (mut term, mut sum) = (1.0, 1.0);
    for j in 0..MAX_TERMS {
        let j = j as f64;
        term *= (a + j) * (b + j) / ((c + j) * (j + 1.0)) * z;
        sum += term;
        if term.abs() < 1e-15 * sum.abs() {
            break;
        }
    }
    sum
}

/// Minimises `f` from `start` by Nelder-Mead, restarted from its best
/// point until a restart no longer improves it (the simplex can stall on
/// a ridge short of the optimum). Returns the point and its value.
/// `step` is the first simplex's size around `start` (in the parameters'
/// units; 0.5 explores, 0.02 polishes a known neighbourhood); the search
/// stops when the simplex is smaller than `size` (1e-8: to the last
/// digits; 1e-5: a polish, 0.001% of a parameter whose log is searched).
pub fn nelder_mead(
    f: &dyn Fn(&[f64]) -> f64,
    start: &[f64],
    step: f64,
    size: f64,
) -> (Vec<f64>, f64) {
    const RESTARTS: usize = 8;
    let mut best = start.to_vec();
    let mut value = f(&best);
    for round in 0..RESTARTS {
        let step = if round == 0 { step } else { step.min(0.1) };
        let (p, v) = simplex(f, &best, step, size);
        let gain = value - v;
        if v <= value {
            (best, value) = (p, v);
        }
        // NaN gains stop too: `partial_cmp` is not `Greater` for them.
        if gain.partial_cmp(&(1e-9 * (1.0 + value.abs()))) != Some(std::cmp::Ordering::Greater) {
            break;
        }
    }
    (best, value)
}

/// One Nelder-Mead search (reflection 1, expansion 2, contraction and
/// shrink 1/2), from a simplex of steps of `step` around `start`.
fn simplex(f: &dyn Fn(&[f64]) -> f64, start: &[f64], step: f64, size_tol: f64) -> (Vec<f64>, f64) {
    const MAX_ITER: usize = 20_000;
    let n = start.len();
    let mut pts: Vec<Vec<f64>> = (0..=n)
        .map(|i| {
            let mut p = start.to_vec();
            if i > 0 {
                p[i - 1] += step;
            }
            p
        })
        .collect();
    let mut vals: Vec<f64> = pts.iter().map(|p| finite(f(p))).collect();
    for _ in 0..MAX_ITER {
        let mut order: Vec<usize> = (0..=n).collect();
        order.sort_by(|&i, &j| vals[i].total_cmp(&vals[j]));
        pts = order.iter().map(|&i| pts[i].clone()).collect();
        vals = order.iter().map(|&i| vals[i]).collect();
        let spread = vals[n] - vals[0];
        let size = pts[1..]
            .iter()
            .map(|p| {
                p.iter()
                    .zip(&pts[0])
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max)
            })
            .fold(0.0, f64::max);
        // Small data: both the value and the simplex settle. A polish on
        // many members (a `size_tol` of 1e-6 or more): either is enough,
        // since a flat valley can keep a simplex wide long after the
        // value has stopped moving.
        let settled = spread <= 1e-11 * (1.0 + vals[0].abs());
        let small = size < size_tol;
        if (settled && small) || (size_tol >= 1e-6 && (settled || small)) {
            break;
        }
        let centroid: Vec<f64> = (0..n)
            .map(|k| pts[..n].iter().map(|p| p[k]).sum::<f64>() / n as f64)
            .collect();
        let along = |t: f64| -> Vec<f64> {
            centroid
                .iter()
                .zip(&pts[n])
                .map(|(c, w)| c + t * (c - w))
                .collect()
        };
        let reflected = along(1.0);
        let fr = finite(f(&reflected));
        if fr < vals[0] {
            let expanded = along(2.0);
            let fe = finite(f(&expanded));
            (pts[n], vals[n]) = if fe < fr {
                (expanded, fe)
            } else {
                (reflected, fr)
            };
        } else if fr < vals[n - 1] {
            (pts[n], vals[n]) = (reflected, fr);
        } else {
            let contracted = if fr < vals[n] {
                along(0.5)
            } else {
                along(-0.5)
            };
            let fc = finite(f(&contracted));
            if fc < vals[n].min(fr) {
                (pts[n], vals[n]) = (contracted, fc);
            } else {
                for i in 1..=n {
                    pts[i] = pts[i]
                        .iter()
                        .zip(&pts[0])
                        .map(|(p, b)| b + 0.5 * (p - b))
                        .collect();
                    vals[i] = finite(f(&pts[i]));
                }
            }
        }
    }
    let best = (0..=n)
        .min_by(|&i, &j| vals[i].total_cmp(&vals[j]))
        .unwrap_or(0);
    (pts[best].clone(), vals[best])
}

/// NaN (a parameter that overflowed) as the worst value there is.
fn finite(v: f64) -> f64 {
    if v.is_nan() { f64::INFINITY } else { v }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_matches_factorials_and_half_integers() {
        assert!((ln_gamma(1.0)).abs() < 1e-14);
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-13);
        let sqrt_pi = std::f64::consts::PI.sqrt();
        assert!((ln_gamma(0.5) - sqrt_pi.ln()).abs() < 1e-13);
        assert!((ln_gamma(101.0) - 363.739_375_555_563_5).abs() < 1e-9);
    }

    #[test]
    fn hyp2f1_matches_closed_forms() {
        // 2F1(1, 1; 2; z) = -ln(1 - z) / z.
        let z: f64 = 0.9;
        assert!((hyp2f1(1.0, 1.0, 2.0, z) + (1.0 - z).ln() / z).abs() < 1e-10);
        // 2F1(a, b; b; z) = (1 - z)^-a.
        assert!((hyp2f1(2.5, 3.0, 3.0, 0.5) - 0.5f64.powf(-2.5)).abs() < 1e-10);
    }

    #[test]
    fn nelder_mead_finds_a_minimum() {
        let rosen = |p: &[f64]| (1.0 - p[0]).powi(2) + 100.0 * (p[1] - p[0] * p[0]).powi(2);
        let (best, v) = nelder_mead(&rosen, &[-1.2, 1.0], 0.5, 1e-8);
        assert!(v < 1e-10, "{v}");
        assert!((best[0] - 1.0).abs() < 1e-4 && (best[1] - 1.0).abs() < 1e-4);
    }
}

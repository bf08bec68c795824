//! Repurchase prediction benchmark. 1,000,000 members whose purchase days
//! are drawn from BG/NBD itself with known parameters (r 0.25, alpha 30
//! days, a 0.8, b 2.5; a year of history) are stored in sled; then:
//! - the fit as `nudge fit` and the daily tick run it (every member):
//!   seconds, and the estimates beside the truth they were drawn from;
//! - a tick rule reading `p_alive` against the same rule reading `spend`,
//!   evaluated for every member through the engine's evaluator: the extra
//!   nanoseconds per evaluation a prediction costs.
//!
//! Run: `cargo bench --bench predict` (`NUDGE_BENCH_MEMBERS` for fewer).
//! Targets: a fit of 1,000,000 members under 10 s; `p_alive` no more than
//! 200 ns slower per evaluation.

// A benchmark prints its figures.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use nudge::engine::plan::Evaluator;
use nudge::model::MemberRecord;
use nudge::store::{SledStore, Store, WriteSet};
use std::time::Instant;

const TODAY: i32 = 20_000;
const YEAR: f64 = 365.0;

/// xorshift64*: a fixed stream of uniforms in (0, 1).
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        (x as f64 + 0.5) / (1u64 << 53) as f64
    }
    /// Gamma(shape, 1) by Marsaglia and Tsang (shape < 1 boosted).
    fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            return self.gamma(shape + 1.0) * self.uniform().powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let (u1, u2) = (self.uniform(), self.uniform());
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            let v = (1.0 + c * z).powi(3);
            if v > 0.0 && self.uniform().ln() < 0.5 * z * z + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }
    fn beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.gamma(a);
        x / (x + self.gamma(b))
    }
}

/// One member's purchase days over the year before `TODAY`, from BG/NBD.
fn member(rng: &mut Rng) -> MemberRecord {
    let rate = rng.gamma(0.25) / 30.0;
    let drop = rng.beta(0.8, 2.5);
    let first = TODAY - (rng.uniform() * YEAR) as i32 - 1;
    let (mut day, mut last, mut days) = (f64::from(first), first, 1u32);
    loop {
        day += -rng.uniform().ln() / rate.max(1e-9);
        if day >= f64::from(TODAY) {
            break;
        }
        if day as i32 > last {
            last = day as i32;
            days += 1;
        }
        if rng.uniform() < drop {
            break;
        }
    }
    let spend = rust_decimal::Decimal::from(20 * days);
    MemberRecord {
        joined: first,
        first_purchase: Some(first),
        last_purchase: Some(last),
        purchase_days: days,
        orders: days,
        spend,
        first_day_spend: Some(rust_decimal::Decimal::from(20)),
        ..MemberRecord::default()
    }
}

fn main() {
    let n = common::env_size("NUDGE_BENCH_MEMBERS", 1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SledStore::open(&dir.path().join("data")).expect("store");
    let mut rng = Rng(0x5EED_2026);
    let records: Vec<MemberRecord> = (0..n).map(|_| member(&mut rng)).collect();
    for (c, chunk) in records.chunks(10_000).enumerate() {
        let members = chunk
            .iter()
            .enumerate()
            .map(|(i, r)| (common::member_id(c * 10_000 + i), r.encode()))
            .collect();
        store
            .commit(WriteSet {
                members,
                ..WriteSet::default()
            })
            .expect("load");
    }
    let start = Instant::now();
    let full = nudge::engine::predict::fit(&store, TODAY).expect("fit");
    let seconds = start.elapsed().as_secs_f64();
    let f = full.bgnbd;
    println!(
        "{{\"bench\":\"predict\",\"what\":\"fit\",\"members\":{n},\"seconds\":{seconds:.2},\"r\":{:.4},\"alpha\":{:.3},\"a\":{:.4},\"b\":{:.4},\"truth\":\"r 0.25, alpha 30, a 0.8, b 2.5\"}}",
        f.r, f.alpha, f.a, f.b
    );
    // The extra cost of reading a prediction, per evaluation.
    let per_eval = |rule: &str| {
        let (schema, rules) = load(rule);
        let mut ev = Evaluator::new(&schema, &rules).with_fit(full.clone());
        let mut matched = 0u64;
        let start = Instant::now();
        for r in &records {
            ev.tick_matches(&rules, r, TODAY, |_| matched += 1);
        }
        (start.elapsed().as_nanos() as f64 / n as f64, matched)
    };
    let (plain, _) = per_eval("rule \"x\" on tick when spend > 100 then tag \"x\"");
    let (predicted, alive) = per_eval("rule \"x\" on tick when p_alive > 0.5 then tag \"x\"");
    println!(
        "{{\"bench\":\"predict\",\"what\":\"eval\",\"members\":{n},\"spend_ns\":{plain:.1},\"p_alive_ns\":{predicted:.1},\"extra_ns\":{:.1},\"alive\":{alive}}}",
        predicted - plain
    );
}

fn load(rule: &str) -> (nudge::config::Schema, nudge::lang::RuleSet) {
    let l = nudge::project::load::load_texts(
        "timezone: UTC\ntiers: [bronze]\nevents:\n  purchase:\n    amount: money\n",
        &[("r.rules", rule)],
    );
    assert_eq!(l.errors(), 0, "{:?}", l.diagnostics);
    (l.schema.expect("schema"), l.rules.expect("rules"))
}

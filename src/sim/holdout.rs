//! The repurchase model checked on history it did not see: BG/NBD fitted
//! on purchases before a day (the calibration period), then its expected
//! repeat purchase days per week after that day against the actual ones
//! (the holdout period), as Fader, Hardie & Lee check it on CDNOW. For
//! `nudge replay --holdout-from`; the report draws it.

use super::backtest::Purchase;
use crate::config::Schema;
use crate::predict::{BgNbd, FitError, History, fit_bgnbd, group};
use std::collections::{BTreeMap, BTreeSet};

/// Predicted against actual repeat purchase days, per week of the holdout.
#[derive(Debug, Clone)]
pub struct HoldoutCheck {
    /// The first day of the holdout (the fit saw the days before it).
    pub from: i32,
    pub fit: BgNbd,
    /// Members with a purchase in the calibration period.
    pub members: usize,
    /// Per week: its first day, predicted and actual purchase days.
    pub weeks: Vec<(i32, f64, usize)>,
}

/// Fits on the purchases before `from` and compares weeks from `from`
/// through `until` (whole weeks).
pub fn holdout_check(
    schema: &Schema,
    purchases: &[Purchase],
    from: i32,
    until: i32,
) -> Result<HoldoutCheck, FitError> {
    let mut days: BTreeMap<&str, BTreeSet<i32>> = BTreeMap::new();
    for p in purchases {
        let day = crate::engine::clock::local_day(schema, p.at);
        days.entry(&p.member).or_default().insert(day);
    }
    // Calibration histories, counted to the day before the holdout.
    let end = from - 1;
    let mut cal: Vec<(&str, History)> = Vec::new();
    for (member, ds) in &days {
        let before: Vec<i32> = ds.range(..from).copied().collect();
        let (Some(first), Some(last)) = (before.first(), before.last()) else {
            continue;
        };
        cal.push((
            member,
            History {
                x: (before.len() - 1) as f64,
                t_x: f64::from(last - first),
                t: f64::from(end - first),
            },
        ));
    }
    let histories = group(
        cal.iter()
            .map(|(_, h)| (h.x as u32, h.t_x as u32, h.t as u32))
            .collect(),
    );
    let (fit, _) = fit_bgnbd(&histories)?;
    let mut weeks = Vec::new();
    let mut start = from;
    while start + 6 <= until {
        let (t0, t1) = (f64::from(start - from), f64::from(start + 7 - from));
        let predicted: f64 = cal
            .iter()
            .map(|(_, h)| fit.expected(h, t1) - fit.expected(h, t0))
            .sum();
        let actual = cal
            .iter()
            .map(|(m, _)| days[m].range(start..start + 7).count())
            .sum();
        weeks.push((start, predicted, actual));
        start += 7;
    }
    Ok(HoldoutCheck {
        from,
        fit,
        members: cal.len(),
        weeks,
    })
}

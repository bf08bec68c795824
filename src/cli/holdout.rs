//! `nudge replay --holdout-from`: the repurchase model checked on history
//! it did not see (`nudge::sim::holdout`), printed for people.

/// `--holdout-from`: the repurchase model fitted before the day, its
/// weekly predictions after it against the actual purchase days.
pub fn holdout(
    from: Option<i32>,
    schema: &nudge::config::Schema,
    purchases: &[nudge::sim::backtest::Purchase],
    until: Option<i32>,
) -> Result<Option<nudge::sim::holdout::HoldoutCheck>, String> {
    let Some(from) = from else {
        return Ok(None);
    };
    let last = purchases
        .iter()
        .map(|p| nudge::engine::clock::local_day(schema, p.at))
        .max()
        .unwrap_or(from);
    let h = nudge::sim::holdout::holdout_check(schema, purchases, from, until.unwrap_or(last))
        .map_err(|e| format!("--holdout-from: {e}"))?;
    let (p, a): (f64, usize) = h
        .weeks
        .iter()
        .fold((0.0, 0), |(p, a), w| (p + w.1, a + w.2));
    println!(
        "holdout check: BG/NBD fitted on {} members' purchases before {}; {} weeks after: predicted {:.0} purchase days, actual {a}",
        h.members,
        nudge::base::time::day_string(from),
        h.weeks.len(),
        p
    );
    Ok(Some(h))
}

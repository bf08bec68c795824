//! Calendar days (days since 1970-01-01) and durations (seconds), written
//! as the rule language and the config write them.

/// Days since 1970-01-01 of a `YYYY-MM-DD` text, if it is a real day.
pub fn parse_date(s: &str) -> Option<i32> {
    let d: jiff::civil::Date = s.parse().ok()?;
    let epoch = jiff::civil::date(1970, 1, 1);
    Some((d - epoch).get_days())
}

/// `30d`, `12h`, `2w` in seconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let n: i64 = s[..s.len() - 1].parse().ok()?;
    let mult = match unit {
        'h' => 3_600,
        'd' => 86_400,
        'w' => 604_800,
        _ => return None,
    };
    n.checked_mul(mult).filter(|v| *v > 0)
}

/// The UTC day (days since 1970-01-01) of an instant: the bucket event
/// ids are deduplicated in (the same everywhere, whatever the time zone).
pub fn utc_day(at: jiff::Timestamp) -> i32 {
    at.as_second().div_euclid(86_400) as i32
}

/// `YYYY-MM-DD` of a day number.
pub fn day_string(day: i32) -> String {
    let epoch = jiff::civil::date(1970, 1, 1);
    epoch
        .checked_add(jiff::Span::new().days(day as i64))
        .map(|d| d.to_string())
        .unwrap_or_default()
}

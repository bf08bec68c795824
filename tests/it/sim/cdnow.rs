//! The CDNOW sample replayed through the real binary, checked against an
//! independent computation from the raw file: tiers from lifetime spend
//! (silver at 100, gold at 500), and the project's example rule, which
//! sends a 30-6 coupon on the first daily tick a silver-or-better member is
//! later than 1.5 times their repurchase cycle, re-armed by a purchase.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

struct Purchase {
    row: usize,
    member: String,
    day: i64,
    cents: i64,
}

/// Days since 1970-01-01 of YYYYMMDD (civil-from-days, proleptic Gregorian).
fn day_of(yyyymmdd: &str) -> i64 {
    let y: i64 = yyyymmdd[0..4].parse().expect("year");
    let m: i64 = yyyymmdd[4..6].parse().expect("month");
    let d: i64 = yyyymmdd[6..8].parse().expect("day");
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn raw() -> Vec<Purchase> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("examples/cdnow/CDNOW_sample.txt"))
        .expect("raw file");
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let c: Vec<&str> = l.split_whitespace().collect();
            let (whole, frac) = c.get(4)?.split_once('.').unwrap_or((c[4], "0"));
            let cents = whole.parse::<i64>().ok()? * 100
                + format!("{frac:0<2}")[..2].parse::<i64>().ok()?;
            Some(Purchase {
                row: i + 1,
                member: c[1].to_string(),
                day: day_of(c[2]),
                cents,
            })
        })
        .collect()
}

/// Coupons per member, by simulating the rules with exact integer arithmetic.
fn expected_coupons(purchases: &[Purchase]) -> BTreeMap<String, Vec<i64>> {
    let first_day = purchases.iter().map(|p| p.day).min().expect("rows");
    let last_day = purchases.iter().map(|p| p.day).max().expect("rows");
    let mut by_member: BTreeMap<&str, Vec<&Purchase>> = BTreeMap::new();
    for p in purchases {
        by_member.entry(&p.member).or_default().push(p);
    }
    let mut out = BTreeMap::new();
    for (member, ps) in by_member {
        let (mut tier, mut spend, mut first, mut last, mut days) =
            (0, 0i64, None::<i64>, None::<i64>, 0i64);
        let mut armed = false;
        let mut coupons = Vec::new();
        let mut next = 0;
        for day in first_day..=last_day {
            // The 09:00 tick, before the day's purchases (at noon).
            if let (Some(f), Some(l)) = (first, last) {
                // days_since > cycle * 1.5  <=>  2 (day - l) (days - 1) > 3 (l - f)
                let late = days >= 2 && 2 * (day - l) * (days - 1) > 3 * (l - f);
                let now = late && tier >= 1;
                if now && !armed {
                    coupons.push(day);
                }
                armed = now;
            }
            while next < ps.len() && ps[next].day == day {
                spend += ps[next].cents;
                match last {
                    Some(l) if day > l => {
                        last = Some(day);
                        days += 1;
                    }
                    Some(_) => {}
                    None => {
                        first = Some(day);
                        last = Some(day);
                        days = 1;
                    }
                }
                if tier == 0 && spend >= 10_000 {
                    tier = 1;
                }
                if tier == 1 && spend >= 50_000 {
                    tier = 2;
                }
                // At a purchase the example rule is false (0 days late): it re-arms.
                armed = false;
                next += 1;
            }
        }
        out.insert(member.to_string(), coupons);
    }
    out
}

#[test]
fn shipped_events_are_the_raw_file_converted() {
    let shipped = std::fs::read_to_string(Path::new(ROOT).join("examples/cdnow/events.ndjson"))
        .expect("events");
    let lines: Vec<&str> = shipped.lines().collect();
    let purchases = raw();
    assert_eq!(lines.len(), purchases.len());
    assert_eq!(purchases.len(), 6919);
    for (line, p) in lines.iter().zip(&purchases) {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        assert_eq!(v["id"], format!("cdnow-{}", p.row));
        assert_eq!(v["member"], p.member.as_str());
        let amount = v["amount"].to_string();
        let (w, f) = amount.split_once('.').unwrap_or((&amount, "0"));
        assert_eq!(
            w.parse::<i64>().expect("int") * 100
                + format!("{f:0<2}")[..2].parse::<i64>().expect("cents"),
            p.cents,
            "{line}"
        );
    }
}

#[test]
fn replay_gives_the_independently_computed_coupons() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("effects.ndjson");
    let out = Command::new(env!("CARGO_BIN_EXE_nudge"))
        .current_dir(Path::new(ROOT).join("examples/cdnow"))
        .args(["replay", "--events", "events.ndjson", "--out"])
        .arg(&out_path)
        .output()
        .expect("run nudge");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let expected = expected_coupons(&raw());
    let total: usize = expected.values().map(Vec::len).sum();
    assert!(
        total > 100,
        "the sample should produce many coupons, got {total}"
    );

    let effects = std::fs::read_to_string(&out_path).expect("effects");
    let mut actual: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for line in effects.lines() {
        let e: serde_json::Value = serde_json::from_str(line).expect("json");
        if e["action"] == "coupon" && e["rule"] == "winback:2" {
            assert_eq!(e["coupon"], "30-6");
            let date = e["trigger"]
                .as_str()
                .and_then(|t| t.strip_prefix("tick:"))
                .expect("tick trigger");
            actual
                .entry(e["member"].as_str().expect("member").to_string())
                .or_default()
                .push(day_of(&date.replace('-', "")));
        }
    }
    let expected: BTreeMap<String, Vec<i64>> = expected
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect();
    assert_eq!(actual, expected);
    assert_eq!(sent_of(&stdout, "winback:2"), total as i64, "{stdout}");
    assert!(stdout.contains("events: 6919 applied"), "{stdout}");
}

/// Runs `nudge replay` in examples/cdnow with extra arguments.
fn replay(args: &[&str]) -> (String, String, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_nudge"))
        .current_dir(Path::new(ROOT).join("examples/cdnow"))
        .args(["replay", "--events", "events.ndjson"])
        .args(args)
        .output()
        .expect("run nudge");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

/// Coupons of one rule in a replay summary table.
fn sent_of(summary: &str, rule: &str) -> i64 {
    summary
        .lines()
        .find(|l| l.starts_with(rule))
        .and_then(|l| l[rule.len()..].split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no row for {rule} in\n{summary}"))
}

#[test]
fn compare_reports_the_difference_two_separate_replays_give() {
    let (a, err, code) = replay(&[]);
    assert_eq!(code, 0, "{err}");
    let (b, err, code) = replay(&["--rules", "rules_cycle2"]);
    assert_eq!(code, 0, "{err}");
    let (na, nb) = (sent_of(&a, "winback:2"), sent_of(&b, "winback:2"));
    assert!(nb < na, "cycle*2 is later than cycle*1.5: {na} vs {nb}");
    let (c, err, code) = replay(&["--compare", "rules_cycle2"]);
    assert_eq!(code, 0, "{err}");
    let row = c
        .lines()
        .skip_while(|l| !l.starts_with("compare:"))
        .find(|l| l.starts_with("winback:2"))
        .expect("compare row");
    let cols: Vec<i64> = row
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    assert_eq!(&cols[..2], &[na, nb], "{row}");
    let coupons_a = sent_of(&a, "winback:2") + sent_of(&a, "wake zombies");
    let coupons_b = sent_of(&b, "winback:2") + sent_of(&b, "wake zombies");
    let want = format!(
        "coupons: {coupons_a} -> {coupons_b} ({:+})",
        coupons_b - coupons_a
    );
    assert!(c.contains(&want), "want `{want}` in\n{c}");
    // As a CI gate: B costs less, so a cost limit passes; the other way
    // round the cost rises by about 11%.
    let (_, _, code) = replay(&["--compare", "rules_cycle2", "--fail-if-cost-increase", "0%"]);
    assert_eq!(code, 0);
    let (_, err, code) = replay(&[
        "--rules",
        "rules_cycle2",
        "--compare",
        "rules",
        "--fail-if-cost-increase",
        "10%",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("coupon cost rose by 11.1% (limit 10%)"),
        "{err}"
    );
    let (_, _, code) = replay(&[
        "--rules",
        "rules_cycle2",
        "--compare",
        "rules",
        "--fail-if-cost-increase",
        "12%",
    ]);
    assert_eq!(code, 0);
}

#[test]
fn replays_are_byte_for_byte_deterministic_and_the_report_is_self_contained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |n: usize| {
        let out = dir.path().join(format!("effects{n}.ndjson"));
        let report = dir.path().join(format!("report{n}.html"));
        let (stdout, err, code) = replay(&[
            "--out",
            out.to_str().expect("path"),
            "--report",
            report.to_str().expect("path"),
        ]);
        assert_eq!(code, 0, "{err}");
        (
            stdout,
            std::fs::read(out).expect("effects"),
            std::fs::read_to_string(report).expect("report"),
        )
    };
    let (s1, e1, r1) = run(1);
    let (s2, e2, r2) = run(2);
    assert!(e1 == e2, "effects differ between two replays");
    assert_eq!(s1, s2);
    assert_eq!(r1, r2);
    // The uplift of the zombie offer (20% holdout) is printed and charted.
    assert!(s1.contains("uplift of wake zombies"), "{s1}");
    // One file, no network: no scripts, no external references.
    assert!(r1.starts_with("<!doctype html>"));
    for banned in ["<script", "http://", "https://", "src=", "<link"] {
        let hits: Vec<_> = r1.match_indices(banned).collect();
        // The SVG namespace is the only URL allowed.
        let allowed = r1.matches("xmlns=\"http://www.w3.org/2000/svg\"").count();
        if banned == "http://" {
            assert_eq!(hits.len(), allowed, "{banned}");
        } else {
            assert!(hits.is_empty(), "{banned}");
        }
    }
    for title in [
        "Effects per week, by rule",
        "Coupon cost over time",
        "Treated against held-out members",
        "Members by tier over time",
    ] {
        assert!(r1.contains(title), "{title}");
    }
    assert_eq!(r1.matches("<svg").count(), 4);
    assert_eq!(r1.matches("<svg").count(), r1.matches("</svg>").count());
    // Each chart draws something: lines or bars.
    assert!(r1.matches("<polyline").count() >= 4);
    assert!(r1.matches("<rect").count() >= 2);
}

#[test]
fn explain_says_why_a_cdnow_member_never_got_the_winback_coupon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("path");
    let (_, err, code) = replay(&["--data", data]);
    assert_eq!(code, 0, "{err}");
    // 0002 spent 75.11 in two orders: never silver, so never late "silver or better".
    let out = Command::new(env!("CARGO_BIN_EXE_nudge"))
        .current_dir(Path::new(ROOT).join("examples/cdnow"))
        .args(["explain", "0002", "--rule", "winback:2", "--data", data])
        .output()
        .expect("run nudge");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("evaluated for 1998-06-30 (the last daily tick)"),
        "{text}"
    );
    assert!(text.contains("rule \"winback:2\": false"), "{text}");
    assert!(text.contains("tier >= silver"), "{text}");
    assert!(text.contains("bronze >= silver  ->  false"), "{text}");
    assert!(text.contains("never fired"), "{text}");
    // A day the folder has passed is refused: the record is of 1998-06-30.
    let out = Command::new(env!("CARGO_BIN_EXE_nudge"))
        .current_dir(Path::new(ROOT).join("examples/cdnow"))
        .args(["explain", "0017", "--at", "1997-03-08", "--data", data])
        .output()
        .expect("run nudge");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("as of 1998-06-30 (its last event or daily tick): 1997-03-08 is before that"),
        "{err}"
    );
    // A second replay into the same folder is refused.
    let (_, err, code) = replay(&["--data", data]);
    assert_eq!(code, 2);
    assert!(err.contains("already holds members"), "{err}");
}

//! Repurchase prediction checked on the CDNOW sample against the
//! literature (Fader, Hardie & Lee 2005; Fader & Hardie 2013) and against
//! an independent implementation (`lifetimes`, per member:
//! tests/predict/cdnow_lifetimes.csv, made by scripts/lifetimes_reference.py).

use nudge::store::{SledStore, Store};
use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn nudge(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_nudge"))
        .current_dir(ROOT)
        .args(args)
        .output()
        .expect("run nudge");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn close(got: f64, want: f64, rel: f64, what: &str) {
    assert!(
        ((got - want) / want).abs() <= rel,
        "{what}: {got} against {want} (more than {}% apart)",
        rel * 100.0
    );
}

/// The calibration period of the literature: purchases to 1997-09-30.
fn calibrated(dir: &Path) -> serde_json::Value {
    let data = dir.join("data");
    let data = data.to_str().expect("path");
    nudge(&[
        "replay",
        "--config",
        "examples/cdnow/nudge.yaml",
        "--events",
        "examples/cdnow/events.ndjson",
        "--data",
        data,
        "--until",
        "1997-09-30",
    ]);
    let fit = nudge(&[
        "--config",
        "examples/cdnow/nudge.yaml",
        "--data",
        data,
        "fit",
        "--at",
        "1997-09-30",
    ]);
    assert_eq!(
        nudge(&[
            "--config",
            "examples/cdnow/nudge.yaml",
            "--data",
            data,
            "model"
        ]),
        fit,
        "`nudge model` shows the fit kept"
    );
    serde_json::from_str(&fit).expect("fit json")
}

#[test]
fn the_cdnow_fit_reproduces_the_published_estimates_and_lifetimes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fit = calibrated(dir.path());
    let f = |path: &[&str]| {
        path.iter()
            .fold(&fit, |v, k| &v[*k])
            .as_f64()
            .unwrap_or(f64::NAN)
    };
    // Published (alpha 4.414 weeks = 30.90 days), within 0.5%.
    close(f(&["bgnbd", "r"]), 0.243, 0.005, "r");
    close(f(&["bgnbd", "alpha"]), 4.414 * 7.0, 0.005, "alpha");
    close(f(&["bgnbd", "a"]), 0.793, 0.005, "a");
    close(f(&["bgnbd", "b"]), 2.426, 0.005, "b");
    close(f(&["gamma_gamma", "p"]), 6.25, 0.005, "p");
    close(f(&["gamma_gamma", "q"]), 3.74, 0.005, "q");
    close(f(&["gamma_gamma", "v"]), 15.44, 0.005, "gamma");
    assert_eq!(fit["repeat_buyers"], 946);
    assert_eq!(fit["members"], 2357);
    // The log-likelihood in weeks: each repeat purchase day's density is
    // 7 times larger in days, so LL(weeks) = LL(days) + (repeat days) ln 7.
    let text = std::fs::read_to_string(Path::new(ROOT).join("tests/predict/cdnow_lifetimes.csv"))
        .expect("reference");
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("member,"))
        .map(|l| l.split(',').collect())
        .collect();
    let repeat_days: f64 = rows.iter().map(|r| r[1].parse::<f64>().expect("x")).sum();
    close(
        f(&["bgnbd_ll"]) + repeat_days * 7f64.ln(),
        -9582.4,
        0.005,
        "log-likelihood in weeks",
    );
    // lifetimes' own fit of the same histories, to 5 digits.
    let header = text.lines().nth(1).expect("bgnbd line");
    for (name, value) in header
        .trim_start_matches("# bgnbd ")
        .split(' ')
        .filter_map(|kv| kv.split_once('='))
    {
        close(
            f(&["bgnbd", name]),
            value.parse().expect("number"),
            1e-4,
            name,
        );
    }
    // Per member: the same history, p_alive and expected purchases in 90
    // days within 0.001.
    let store = SledStore::open(&dir.path().join("data")).expect("store");
    let kept = nudge::engine::predict::load(&store)
        .expect("read")
        .expect("a fit");
    let day = nudge::base::time::parse_date("1997-09-30").expect("day");
    assert_eq!(rows.len(), 2357);
    for r in &rows {
        let rec = store.member(r[0]).expect("read").expect("member");
        let h = nudge::engine::predict::history(&rec, day).expect("history");
        assert_eq!(
            (h.x, h.t_x, h.t),
            (
                r[1].parse().expect("x"),
                r[2].parse().expect("t_x"),
                r[3].parse().expect("T")
            ),
            "member {}",
            r[0]
        );
        let alive = kept.bgnbd.p_alive(&h);
        let e90 = kept.bgnbd.expected(&h, 90.0);
        let (want_alive, want_e90): (f64, f64) =
            (r[4].parse().expect("p"), r[5].parse().expect("e"));
        assert!(
            (alive - want_alive).abs() < 0.001,
            "member {}: p_alive {alive} vs {want_alive}",
            r[0]
        );
        assert!(
            (e90 - want_e90).abs() < 0.001,
            "member {}: E90 {e90} vs {want_e90}",
            r[0]
        );
    }
    // The literature's customer 00004 (here 0001): x = 2, t_x = 213, T = 272.
    let rec = store.member("0001").expect("read").expect("member");
    let h = nudge::engine::predict::history(&rec, day).expect("history");
    assert!((kept.bgnbd.p_alive(&h) - 0.7266).abs() < 0.0001);
}

/// `nudge replay --holdout-from`: the model fitted before 1997-10-01, its
/// weekly predictions for the 39 weeks after against the actual purchase
/// days, printed and charted in the report.
#[test]
fn the_holdout_check_compares_predicted_and_actual_weeks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("r.html");
    let out = nudge(&[
        "replay",
        "--config",
        "examples/cdnow/nudge.yaml",
        "--events",
        "examples/cdnow/events.ndjson",
        "--holdout-from",
        "1997-10-01",
        "--report",
        report.to_str().expect("path"),
    ]);
    // lifetimes' own sum of conditional expectations over the same 273 days
    // (tests/predict/cdnow_lifetimes.csv, scripts/lifetimes_reference.py).
    let reference = std::fs::read_to_string("tests/predict/cdnow_lifetimes.csv").expect("csv");
    let line = reference
        .lines()
        .find(|l| l.starts_with("# holdout "))
        .expect("holdout line");
    let field = |k: &str| {
        line.split(' ')
            .find_map(|kv| kv.strip_prefix(k))
            .expect("field")
            .to_string()
    };
    let predicted: f64 = field("predicted=").parse().expect("number");
    let want = format!(
        "holdout check: BG/NBD fitted on 2357 members' purchases before 1997-10-01; 39 weeks after: predicted {} purchase days, actual {}",
        predicted.round(),
        field("actual_days=")
    );
    assert_eq!(
        want,
        "holdout check: BG/NBD fitted on 2357 members' purchases before 1997-10-01; 39 weeks after: predicted 1653 purchase days, actual 1882"
    );
    assert!(out.contains(&want), "{out}");
    let html = std::fs::read_to_string(&report).expect("report");
    assert!(html.contains("Repurchase model on the holdout period"));
    assert!(html.contains("(r 0.243, alpha 30.90 days, a 0.793, b 2.426)"));
}

/// An export lists the predictions, the windowed ones too, with the values
/// `lifetimes` gives for the same member.
#[test]
fn an_export_lists_windowed_predictions() {
    let dir = tempfile::tempdir().expect("tempdir");
    calibrated(dir.path());
    let data = dir.path().join("data");
    let file = dir.path().join("out.ndjson");
    for query in ["orders >= 1", "member_days >= 0"] {
        nudge(&[
            "--config",
            "examples/cdnow/nudge.yaml",
            "--data",
            data.to_str().expect("path"),
            "segment",
            query,
            "--at",
            "1997-09-30",
            "--fields",
            "member,p_alive,expected_purchases(90d),predicted_clv(365d)",
            "--export",
            file.to_str().expect("path"),
        ]);
        let text = std::fs::read_to_string(&file).expect("export");
        let first: serde_json::Value =
            serde_json::from_str(text.lines().next().expect("a row")).expect("json");
        assert_eq!(first["member"], "0001", "{query}");
        let p = first["p_alive"].as_f64().expect("p_alive");
        assert!((p - 0.7266).abs() < 0.0001, "{first}");
        // lifetimes: tests/predict/cdnow_lifetimes.csv, member 0001.
        let csv = std::fs::read_to_string("tests/predict/cdnow_lifetimes.csv").expect("csv");
        let row = csv.lines().find(|l| l.starts_with("0001,")).expect("0001");
        let want: f64 = row
            .rsplit(',')
            .next()
            .expect("e90")
            .parse()
            .expect("number");
        let got = first["expected_purchases(90d)"].as_f64().expect("e90");
        assert!((got - want).abs() < 0.001, "{got} against {want}");
        assert!(
            first["predicted_clv(365d)"].as_f64().expect("clv") > 0.0,
            "{first}"
        );
    }
}

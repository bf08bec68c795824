//! `nudge segment` through the real binary: counts, exports (NDJSON and
//! CSV, fields in the order asked), named segments, `--at`, and bad
//! queries named at their place with nothing written, days before the last
//! event refused, and a closed stdout.

use super::commands::nudge;

const CONFIG: &str = "timezone: UTC\ntiers: [bronze, silver, gold]\nattributes:\n  city: string\nevents:\n  purchase:\n    amount: money\n    city: string?\n";

const RULES: &str = r#"
segment "big spenders"
  when spend >= 100

segment "lapsed big spenders"
  when in segment "big spenders" and days_since_last_purchase > 30

rule "gold" on purchase when spend >= 200 then set tier gold, tag "vip"
rule "city" on purchase when event.city is not null then set city = event.city
rule "regulars" on purchase when count(purchase, 90d) >= 2 then tag "regular"
"#;

/// Five members: `a` spent 250 (gold, vip), `b` 120 twice in Berlin,
/// `c` 20, `d` 100 on one day, `e` 5.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(d.join("nudge.yaml"), CONFIG).expect("config");
    std::fs::create_dir(d.join("rules")).expect("rules");
    std::fs::write(d.join("rules/r.rules"), RULES).expect("rules");
    let ev = |id: &str, m: &str, day: &str, amount: u32, city: &str| {
        let city = if city.is_empty() {
            String::new()
        } else {
            format!(r#","city":"{city}""#)
        };
        format!(
            r#"{{"id":"{id}","type":"purchase","member":"{m}","at":"2026-{day}T12:00:00Z","amount":{amount}{city}}}"#
        )
    };
    let events = [
        ev("1", "a", "01-05", 250, ""),
        ev("2", "b", "01-10", 60, "Berlin"),
        ev("3", "b", "03-01", 60, ""),
        ev("4", "c", "03-01", 20, ""),
        ev("5", "d", "02-01", 100, ""),
        ev("6", "e", "03-02", 5, "Paris"),
    ]
    .join("\n");
    let (_, err, code) = nudge(d, &["ingest", "-"], Some(&events));
    assert_eq!(code, 0, "{err}");
    dir
}

#[test]
fn counts_and_exports_follow_the_condition_on_the_day() {
    let dir = project();
    let d = dir.path();
    let count = |q: &str, at: &str| nudge(d, &["segment", q, "--count", "--at", at], None);
    assert_eq!(
        count("spend >= 100", "2026-03-10").0,
        "{\"count\":3,\"members\":5}\n"
    );
    assert_eq!(
        count("tier >= gold and \"vip\" in tags", "2026-03-10").0,
        "{\"count\":1,\"members\":5}\n"
    );
    // Named segments, by name, and a day count that moves with `--at`.
    assert_eq!(
        count("lapsed big spenders", "2026-03-10").0,
        "{\"count\":2,\"members\":5}\n"
    );
    assert_eq!(
        count("lapsed big spenders", "2026-04-15").0,
        "{\"count\":3,\"members\":5}\n"
    );
    // A windowed aggregate a rule keeps.
    assert_eq!(
        count("count(purchase, 90d) >= 2", "2026-03-10").0,
        "{\"count\":1,\"members\":5}\n"
    );
    let (out, err, code) = nudge(
        d,
        &[
            "segment",
            "in segment \"big spenders\" or city == \"Paris\"",
            "--at",
            "2026-03-10",
            "--fields",
            "member,tier,spend,city,tags,last_purchase_at",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        concat!(
            r#"{"member":"a","tier":"gold","spend":250,"city":null,"tags":["vip"],"last_purchase_at":"2026-01-05"}"#,
            "\n",
            r#"{"member":"b","tier":"bronze","spend":120,"city":"Berlin","tags":["regular"],"last_purchase_at":"2026-03-01"}"#,
            "\n",
            r#"{"member":"d","tier":"bronze","spend":100,"city":null,"tags":[],"last_purchase_at":"2026-02-01"}"#,
            "\n",
            r#"{"member":"e","tier":"bronze","spend":5,"city":"Paris","tags":[],"last_purchase_at":"2026-03-02"}"#,
            "\n",
        )
    );
}

#[test]
fn a_csv_export_goes_to_its_file_whole() {
    let dir = project();
    let d = dir.path();
    let (out, err, code) = nudge(
        d,
        &[
            "segment",
            "spend >= 100",
            "--export",
            "vip.csv",
            "--format",
            "csv",
            "--fields",
            "member,tier,tags",
            "--at",
            "2026-03-10",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "{\"count\":3,\"export\":\"vip.csv\",\"members\":5}\n");
    let csv = std::fs::read_to_string(d.join("vip.csv")).expect("export");
    assert_eq!(
        csv,
        "member,tier,tags\na,gold,vip\nb,bronze,regular\nd,bronze,\n"
    );
    assert!(!d.join("vip.csv.partial").exists());
}

#[test]
fn bad_queries_are_named_at_their_place_and_write_nothing() {
    let dir = project();
    let d = dir.path();
    let run = |q: &str| nudge(d, &["segment", q, "--export", "x.ndjson"], None);
    let (_, err, code) = run("tier >= gld");
    assert_eq!(code, 1);
    assert!(err.contains("E202") && err.contains("segment:1:9"), "{err}");
    assert!(err.contains("did you mean `gold`?"), "{err}");
    let (_, err, code) = run("in segment \"big spender\"");
    assert_eq!(code, 1);
    assert!(
        err.contains("E209") && err.contains("big spenders"),
        "{err}"
    );
    let (_, err, code) = run("event.amount > 3");
    assert_eq!(code, 1);
    assert!(err.contains("E211"), "{err}");
    let (_, err, code) = run("spend >");
    assert_eq!(code, 1);
    assert!(err.contains("E110"), "{err}");
    let (_, err, code) = nudge(
        d,
        &["segment", "spend > 1", "--fields", "member,colour"],
        None,
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("unknown field `colour`") && err.contains("predicted_clv(Nd)"),
        "{err}"
    );
    assert!(!d.join("x.ndjson").exists());
}

/// A named segment exported with a windowed prediction: the prediction is
/// computed with it (null here: the folder has no fit yet), and a field
/// that is not a prediction or a field is refused by name.
#[test]
fn a_named_segment_exports_windowed_predictions() {
    let dir = project();
    let d = dir.path();
    let (out, err, code) = nudge(
        d,
        &[
            "segment",
            "big spenders",
            "--export",
            "big.ndjson",
            "--fields",
            "member,expected_purchases(90d)",
            "--at",
            "2026-03-10",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}: {out}");
    let rows = std::fs::read_to_string(d.join("big.ndjson")).expect("export");
    assert!(
        rows.starts_with("{\"member\":\"a\",\"expected_purchases(90d)\":null}\n"),
        "{rows}"
    );
    let (_, err, code) = nudge(
        d,
        &["segment", "big spenders", "--fields", "member,floor(spend)"],
        None,
    );
    assert_ne!(code, 0);
    assert!(err.contains("floor(spend)"), "{err}");
}

/// Records hold the present: a day before the folder's last event is
/// refused, not answered from windows that have dropped their old days.
#[test]
fn a_day_before_the_last_event_is_refused() {
    let dir = project();
    let at = |day: &str| {
        nudge(
            dir.path(),
            &["segment", "spend >= 100", "--count", "--at", day],
            None,
        )
    };
    let (out, err, code) = at("2026-02-01");
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("this folder's members are as of 2026-03-02 (its last event or daily tick): 2026-02-01 is before that"),
        "{err}"
    );
    let (_, err, code) = at("2026-13-01");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--at takes a calendar day, YYYY-MM-DD (like 2026-02-14), not `2026-13-01`"),
        "{err}"
    );
    // The day before the last event's UTC day may be a member's local day.
    let (out, err, code) = at("2026-03-01");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "{\"count\":3,\"members\":5}\n");
}

/// A reader that stops early (`nudge member a | head -c 10`) ends the
/// command quietly, by SIGPIPE as it ends `cat`; it panicked with a
/// backtrace.
#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let dir = project();
    for args in [&["member", "a"][..], &["segment", "true", "--count"]] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_nudge"))
            .args(args)
            .current_dir(dir.path())
            .stdout(writer)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{args:?}: {err}");
    }
}

/// An empty CSV export still has its header row; fields may be written
/// with spaces after the commas; `--count` with `--export` is refused,
/// not half done.
#[test]
fn an_empty_csv_export_has_its_header() {
    let dir = project();
    let (out, err, code) = nudge(
        dir.path(),
        &[
            "segment",
            "spend > 100000",
            "--format",
            "csv",
            "--fields",
            "member, tier",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "member,tier\n");
    let (_, err, code) = nudge(
        dir.path(),
        &["segment", "true", "--count", "--export", "x.ndjson"],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
    assert!(!dir.path().join("x.ndjson").exists());
}

/// A segment that calls a plugin is refused by name when it is counted or
/// exported: segments run without plugins, and it counted 0 without a
/// word (a helper's trial).
#[test]
fn a_segment_calling_a_plugin_is_refused_not_counted_as_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(d.join("nudge.yaml"), CONFIG).expect("config");
    std::fs::create_dir(d.join("rules")).expect("rules");
    std::fs::create_dir(d.join("plugins")).expect("plugins");
    std::fs::write(
        d.join("plugins/probe.rhai"),
        "fn big(member) { member.spend > 10 }",
    )
    .expect("plugin");
    std::fs::write(
        d.join("rules/r.rules"),
        "segment \"probed\"\n  when probe.big(member)\n\nrule \"big\" on purchase when probe.big(member) then tag \"big\"\n",
    )
    .expect("rules");
    let event =
        r#"{"id":"1","type":"purchase","member":"a","at":"2026-01-05T12:00:00Z","amount":50}"#;
    let (_, err, code) = nudge(d, &["ingest", "-"], Some(event));
    assert_eq!(code, 0, "{err}");
    let (out, err, code) = nudge(d, &["segment", "probed", "--count"], None);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("segment \"probed\" calls the plugin function `probe.big`, and segments are counted and exported without plugins"),
        "{err}"
    );
    // A query using it is refused by its check, the segment and the plugin
    // named (it said "the query" calls `big`, a helper's trial).
    let (out, err, code) = nudge(d, &["segment", "in segment \"probed\"", "--count"], None);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("E228"), "{err}");
    assert!(
        err.contains(
            "in segment \"probed\" calls the plugin function `probe.big`, and a segment query cannot call"
        ),
        "{err}"
    );
    assert!(err.contains("when probe.big(...) then tag"), "{err}");
    // A query that calls it is refused by the check, not as a plugin that
    // does not exist (the file is there).
    let (out, err, code) = nudge(d, &["segment", "probe.big(member)", "--count"], None);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("E228"), "{err}");
    assert!(
        err.contains("a segment query cannot call the plugin function `probe.big`"),
        "{err}"
    );
    assert!(!err.contains("there are no plugins"), "{err}");
    // The tag a rule gives with the same plugin is what to segment on.
    let (out, err, code) = nudge(d, &["segment", "\"big\" in tags", "--count"], None);
    assert_eq!(
        (code, out.as_str()),
        (0, "{\"count\":1,\"members\":1}\n"),
        "{err}"
    );
}

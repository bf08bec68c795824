//! The engine commands through the real binary: `nudge test` on the shipped
//! cases, `nudge ingest` (bad lines, redelivery, the file sink), `nudge
//! member`, and the lock between two processes on one data folder.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub(super) fn nudge(dir: &Path, args: &[&str], stdin: Option<&str>) -> (String, String, i32) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nudge"))
        .current_dir(dir)
        .args(args)
        .arg("--color=never")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nudge");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("wait");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

/// A project folder: config, one rule file, data and effects inside it.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("nudge.yaml"),
        "timezone: UTC\ntiers: [bronze, silver]\nevents:\n  purchase:\n    amount: money\n    category: string?\nsinks:\n  - kind: file\n    path: out/effects.ndjson\n",
    )
    .expect("config");
    std::fs::create_dir(dir.path().join("rules")).expect("rules");
    std::fs::write(
        dir.path().join("rules/points.rules"),
        "rule \"pts\" on purchase then award points floor(event.amount)\n",
    )
    .expect("rules");
    dir
}

const EVENTS: &str = concat!(
    r#"{"id":"e1","type":"purchase","member":"m1","at":"2026-01-01T12:00:00Z","amount":10.5}"#,
    "\n",
    r#"{"id":"e2","type":"purchase","member":"m1","at":"2026-01-02T12:00:00Z","amount":"ten"}"#,
    "\n",
    r#"{"id":"e3","type":"purchase","member":"m1","at":"2026-01-03T12:00:00Z","amount":3,"colour":"red"}"#,
    "\n",
    "not json at all\n",
    "\n",
    r#"{"id":"e4","type":"purchase","member":"m2","at":"2026-01-04T12:00:00Z","amount":7}"#,
    "\n",
);

#[test]
fn the_shipped_rule_test_cases_pass() {
    let (out, err, code) = nudge(Path::new(ROOT), &["test"], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(" passed, 0 failed"), "{out}");
    // A case for every rule file in rules/.
    for f in std::fs::read_dir(Path::new(ROOT).join("rules")).expect("rules") {
        let name = f.expect("entry").file_name().to_string_lossy().into_owned();
        let cases = std::fs::read_dir(Path::new(ROOT).join("tests/cases")).expect("cases");
        let covered = cases.flatten().any(|c| {
            std::fs::read_to_string(c.path())
                .unwrap_or_default()
                .contains(&format!("rules/{name}"))
        });
        assert!(covered, "no test case loads rules/{name}");
    }
}

#[test]
fn a_failing_case_shows_a_diff() {
    let dir = project();
    std::fs::write(
        dir.path().join("case.yaml"),
        "rules: rules/points.rules\nevents:\n  - { id: a, type: purchase, member: m, at: \"2026-01-01T12:00:00Z\", amount: 4 }\nexpect:\n  - { rule: pts, points: 5 }\n",
    )
    .expect("case");
    let (out, _, code) = nudge(dir.path(), &["test", "case.yaml"], None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("- {rule: pts, points: 5}"), "{out}");
    assert!(
        out.contains("+ {rule: pts, member: m, trigger: event:a, action: points, points: 4"),
        "{out}"
    );
    assert!(out.contains("0 passed, 1 failed"), "{out}");
}

#[test]
fn an_expected_effect_with_a_key_no_effect_has_fails_the_case_there() {
    let dir = project();
    std::fs::write(
        dir.path().join("case.yaml"),
        "rules: rules/points.rules\nevents:\n  - { id: a, type: purchase, member: m, at: \"2026-01-01T12:00:00Z\", amount: 4 }\nexpect:\n  - { rule: pts, pionts: 4 }\n",
    )
    .expect("case");
    let (out, _, code) = nudge(dir.path(), &["test", "case.yaml"], None);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "case.yaml:5:18: an expected effect has no field `pionts`; did you mean `points`?"
        ),
        "{out}"
    );
}

#[test]
fn ingest_skips_bad_lines_by_number_and_writes_each_effect_once() {
    let dir = project();
    let (out, err, code) = nudge(dir.path(), &["ingest", "-"], Some(EVENTS));
    assert_eq!(code, 1, "bad lines make the input have errors:\n{out}{err}");
    assert!(
        err.contains(
            "line 2: event \"e2\", field `amount`: expected money (a number), found \"ten\""
        ),
        "{err}"
    );
    assert!(
        err.contains("line 3: event \"e3\", field `colour`: not a field of `purchase`"),
        "{err}"
    );
    assert!(err.contains("line 4: event: not valid JSON"), "{err}");
    assert!(
        out.contains("events: 6 lines, 2 applied, 0 duplicates, 3 invalid"),
        "{out}"
    );
    assert!(out.contains("members in the store: 2"), "{out}");
    let effects = std::fs::read_to_string(dir.path().join("out/effects.ndjson")).expect("effects");
    assert_eq!(effects.lines().count(), 2);

    // Nothing of a bad line was applied: m1 has only e1's points.
    let (out, _, code) = nudge(dir.path(), &["member", "m1"], None);
    assert_eq!(code, 0);
    let m: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (m["points"].as_i64(), m["orders"].as_i64()),
        (Some(10), Some(1))
    );
    assert_eq!(m["tier"], "bronze");

    // Redelivering the same input changes nothing and writes nothing twice.
    let (out, _, _) = nudge(dir.path(), &["ingest", "-"], Some(EVENTS));
    assert!(out.contains("0 applied, 2 duplicates"), "{out}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/effects.ndjson")).expect("effects"),
        effects
    );
}

#[test]
fn ingest_can_stop_at_the_first_bad_line() {
    let dir = project();
    let (out, err, code) = nudge(
        dir.path(),
        &["ingest", "-", "--stop-on-error"],
        Some(EVENTS),
    );
    assert_eq!(code, 1);
    assert!(err.contains("line 2:"), "{err}");
    assert!(
        out.contains("1 applied") && out.contains("stopped at the first bad line"),
        "{out}"
    );
    let (_, err, code) = nudge(dir.path(), &["member", "m2"], None);
    assert_eq!(code, 1, "m2 comes after the bad line: {err}");
}

#[test]
fn a_second_process_gets_a_locked_error() {
    let dir = project();
    // The first process holds the folder while it waits on stdin.
    let mut first = Command::new(env!("CARGO_BIN_EXE_nudge"))
        .current_dir(dir.path())
        .args(["ingest", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stdin = first.stdin.take().expect("stdin");
    stdin
        .write_all(format!("{}\n", EVENTS.lines().next().expect("line")).as_bytes())
        .expect("write");
    stdin.flush().expect("flush");
    // Give it time to open the store.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut locked = false;
    while std::time::Instant::now() < deadline {
        let (_, err, code) = nudge(dir.path(), &["member", "m1"], None);
        if code == 2 && err.contains("locked") {
            assert!(err.contains("in use by another nudge process"), "{err}");
            locked = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop(stdin);
    let status = first.wait().expect("wait");
    assert!(locked, "the second process never saw the lock");
    assert!(status.success());
    let (_, _, code) = nudge(dir.path(), &["member", "m1"], None);
    assert_eq!(code, 0, "the lock is released when the first process ends");
}

#[test]
fn replay_writes_effects_and_a_summary() {
    let dir = project();
    std::fs::write(dir.path().join("events.ndjson"), EVENTS).expect("events");
    let (out, err, code) = nudge(
        dir.path(),
        &["replay", "--events", "events.ndjson", "--out", "fx.ndjson"],
        None,
    );
    assert_eq!(code, 1, "bad lines are reported:\n{out}{err}");
    assert!(
        err.contains("line 2:") && err.contains("(skipped)"),
        "{err}"
    );
    assert!(out.contains("events: 2 applied"), "{out}");
    assert!(out.contains("pts"), "{out}");
    assert!(out.contains("points awarded: 17"), "{out}");
    let fx = std::fs::read_to_string(dir.path().join("fx.ndjson")).expect("fx");
    assert_eq!(fx.lines().count(), 2);
    assert!(
        !dir.path().join("data").exists(),
        "replay uses a temporary store"
    );
}

#[test]
fn import_turns_the_cdnow_export_into_the_shipped_events() {
    let root = Path::new(ROOT);
    let out = tempfile::tempdir().expect("tempdir");
    let target = out.path().join("events.ndjson");
    let (_, err, code) = nudge(
        root,
        &[
            "import",
            "--config",
            "examples/cdnow/nudge.yaml",
            "--mapping",
            "examples/cdnow/mapping.yaml",
            "examples/cdnow/CDNOW_sample.txt",
            "--out",
            target.to_str().expect("path"),
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("6919 rows, 6919 events, 0 left out"), "{err}");
    let made = std::fs::read(&target).expect("read");
    let shipped = std::fs::read(root.join("examples/cdnow/events.ndjson")).expect("shipped");
    assert!(
        made == shipped,
        "the import differs from examples/cdnow/events.ndjson"
    );
}

#[test]
fn import_reads_csv_with_headers_and_reports_bad_rows_and_bad_mappings() {
    let dir = project();
    let p = dir.path();
    std::fs::write(
        p.join("map.yaml"),
        "format: csv\nheader: true\ntype: purchase\nid: order\nmember: customer\nat: date\nat_format: \"%d/%m/%Y %H:%M\"\nfields: { amount: total, category: dept }\n",
    )
    .expect("mapping");
    let csv = "order,customer,date,total,dept\n\
               o1,c1,05/03/2026 14:30,12.50,\"tea\"\n\
               o2,c2,31/02/2026 10:00,5,tea\n\
               o3,c3,06/03/2026 09:00,ten,tea\n\
               o4,c1,07/03/2026 09:00,3\n";
    let (out, err, code) = nudge(p, &["import", "--mapping", "map.yaml", "-"], Some(csv));
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        out,
        "{\"id\":\"o1\",\"type\":\"purchase\",\"member\":\"c1\",\"at\":\"2026-03-05T14:30:00Z\",\"amount\":12.50,\"category\":\"tea\"}\n"
    );
    assert!(
        err.contains("line 3") && err.contains("field `at`"),
        "{err}"
    );
    assert!(
        err.contains("line 4") && err.contains("field `amount`"),
        "{err}"
    );
    assert!(
        err.contains("line 5") && err.contains("no column `dept`"),
        "{err}"
    );
    assert!(err.contains("4 rows, 1 events, 3 left out"), "{err}");
    // A mapping that names a field the config lacks: file, line and column.
    std::fs::write(
        p.join("bad.yaml"),
        "type: purchase\nid: 1\nmember: 2\nat: 3\nfields:\n  price: 4\n",
    )
    .expect("bad");
    let (_, err, code) = nudge(p, &["import", "--mapping", "bad.yaml", "-"], Some(""));
    assert_eq!(code, 1);
    assert!(
        err.contains("bad.yaml:6:3: `price` is not a field of `purchase`"),
        "{err}"
    );
}

/// Amounts past the money range (10^12) are refused with the line and the
/// field; before, the second purchase overflowed the member's spend and
/// `ingest` and `replay` panicked (and the daemon's writer with them).
#[test]
fn amounts_past_the_money_range_are_refused_not_folded() {
    let dir = project();
    let d = dir.path();
    let big = "79228162514264337593543950335";
    let events = format!(
        "{}\n{}\n{}\n",
        format_args!(
            r#"{{"id":"p1","type":"purchase","member":"m1","at":"2026-01-01T12:00:00Z","amount":{big}}}"#
        ),
        r#"{"id":"p2","type":"purchase","member":"m1","at":"2026-01-02T12:00:00Z","amount":999999999999}"#,
        r#"{"id":"p3","type":"purchase","member":"m1","at":"2026-01-03T12:00:00Z","amount":999999999999}"#,
    );
    std::fs::write(d.join("big.ndjson"), &events).expect("events");
    for args in [
        &["ingest", "big.ndjson"][..],
        &["replay", "--events", "big.ndjson"][..],
    ] {
        let (out, err, code) = nudge(d, args, None);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        // Both skip the bad line, say so, and exit 1.
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(out.contains("1 invalid"), "{args:?}: {out}");
        assert!(
            err.contains("line 1") && err.contains("amount") && err.contains("10^12"),
            "{args:?}: {err}"
        );
    }
    let (out, _, code) = nudge(d, &["member", "m1"], None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"spend\":1999999999998"), "{out}");
}

/// Peak resident memory of a finished `nudge ingest` of `n` purchases, one
/// new member each (KiB, from the kernel's rusage of the child).
fn ingest_peak_kib(n: usize) -> i64 {
    let dir = project();
    let d = dir.path();
    // A small page cache, so the figure is nudge's own memory, not sled's.
    let mut config = std::fs::read_to_string(d.join("nudge.yaml")).expect("config");
    config.push_str("storage:\n  cache_mb: 8\n");
    std::fs::write(d.join("nudge.yaml"), config).expect("config");
    let mut f = std::io::BufWriter::new(std::fs::File::create(d.join("in.ndjson")).expect("file"));
    for i in 0..n {
        writeln!(
            f,
            r#"{{"id":"e{i}","type":"purchase","member":"m{i}","at":"2026-01-01T12:00:00Z","amount":12.5}}"#
        )
        .expect("write");
    }
    drop(f);
    let out_path = d.join("stdout.txt");
    // wait4 gives this child's own peak (tests run side by side); it reaps
    // the child, so std's wait is not called.
    #[allow(clippy::zombie_processes)] // reason: reaped by wait4 below
    let child = Command::new(env!("CARGO_BIN_EXE_nudge"))
        .current_dir(d)
        .args(["ingest", "in.ndjson"])
        .stdout(std::fs::File::create(&out_path).expect("stdout"))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let (mut status, mut usage): (i32, libc::rusage) = (0, unsafe { std::mem::zeroed() });
    // SAFETY: waits for our own child; both out-pointers are ours.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    let out = std::fs::read_to_string(&out_path).expect("stdout");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{out}"
    );
    assert!(out.contains(&format!("{n} applied")), "{out}");
    assert!(out.contains(&format!("points {n}")), "{out}");
    usage.ru_maxrss
}

/// Import runs in flat memory: counts, not lists of effects and members
/// (10,000,000 events once grew to 7.5 GB, about 750 bytes an event). Five
/// times the events may not take half as much memory again; what remains
/// is sled's own (its page table and buffers settle as the tree grows:
/// measured 51 MiB at 60,000 members, 69 MiB at 400,000), while keeping
/// the effects would add ~150 MiB here. The README has release figures at
/// 200,000 and 2,000,000 events (not flat yet at that scale: see there).
#[test]
fn ingest_memory_stays_flat_with_the_file_size() {
    let small = ingest_peak_kib(50_000);
    let large = ingest_peak_kib(250_000);
    assert!(
        (large as f64) < small as f64 * 1.5,
        "peak RSS {small} KiB for 50,000 events, {large} KiB for 250,000"
    );
}

/// `nudge test --plugins DIR` loads the plugins from DIR (it was ignored,
/// and cases calling a plugin failed with E207 unless it sat in the
/// config's folder).
#[test]
fn test_cases_take_plugins_from_the_plugins_flag() {
    let dir = project();
    let d = dir.path();
    std::fs::write(
        d.join("rules/vip.rules"),
        "rule \"vip\" on purchase when crm.is_vip(member) then tag \"vip\"\n",
    )
    .expect("rule");
    std::fs::create_dir(d.join("cases")).expect("cases");
    std::fs::write(
        d.join("cases/vip.yaml"),
        "name: vip\nrules: ../rules/vip.rules\nevents:\n  - { id: 1, type: purchase, member: m, at: \"2026-03-01T04:00:00Z\", amount: 6000 }\nexpect:\n  - { rule: vip, member: m, action: tag, tag: vip }\n",
    )
    .expect("case");
    let (out, _, code) = nudge(d, &["test", "cases"], None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unknown plugin `crm`"), "{out}");
    let plugins = format!("{ROOT}/plugins");
    let (out, err, code) = nudge(d, &["test", "cases", "--plugins", &plugins], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 passed, 0 failed"), "{out}");
}

/// A newcomer's first commands: `nudge init` writes a project that checks,
/// tests and is formatted; a second init overwrites nothing; outside a
/// project `nudge check DIR` uses the built-in defaults and says so.
#[test]
fn init_writes_a_project_and_the_built_in_defaults_serve_outside_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (out, err, code) = nudge(d, &["init", "shop"], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("wrote shop/nudge.yaml"), "{out}");
    let shop = d.join("shop");
    for args in [&["check"][..], &["test"], &["fmt", "--check"]] {
        let (out, err, code) = nudge(&shop, args, None);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
    }
    let (_, err, code) = nudge(d, &["init", "shop"], None);
    assert_eq!(code, 2);
    assert!(err.contains("exists already"), "{err}");

    // No nudge.yaml here: the built-in defaults, said in one line.
    std::fs::create_dir(d.join("mine")).expect("dir");
    std::fs::write(
        d.join("mine/r.rules"),
        "when tier >= silver and event.category == \"tea\" then tag \"tea\"\n",
    )
    .expect("rule");
    let (out, err, code) = nudge(d, &["check", "mine"], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("built-in defaults"), "{err}");
    assert!(out.contains("ok: 1 rule checked"), "{out}");
}

/// `nudge member` needs the config and the store, not the rules: it once
/// failed with E100 when the rules folder was gone.
#[test]
fn member_works_without_a_rules_folder() {
    let dir = project();
    let d = dir.path();
    let (_, err, code) = nudge(d, &["ingest", "-"], Some(EVENTS));
    assert_eq!(code, 1, "{err}");
    std::fs::remove_dir_all(d.join("rules")).expect("rm rules");
    let (out, err, code) = nudge(d, &["member", "m1"], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"member\":\"m1\""), "{out}");
}

/// Members keep their tier by position: a tier list edited so that members
/// would be re-mapped (a tier inserted first, removed, reordered) is
/// refused, saying what it would do; a tier added at the top is fine.
#[test]
fn a_tier_list_that_would_remap_members_is_refused() {
    let dir = project();
    let d = dir.path();
    let (_, err, _) = nudge(d, &["ingest", "-"], Some(EVENTS));
    assert!(!err.contains("tier list"), "{err}");
    let config = std::fs::read_to_string(d.join("nudge.yaml")).expect("config");
    let write = |tiers: &str| {
        std::fs::write(
            d.join("nudge.yaml"),
            config.replace("tiers: [bronze, silver]", tiers),
        )
        .expect("config")
    };
    let more =
        r#"{"id":"e9","type":"purchase","member":"m1","at":"2026-01-09T12:00:00Z","amount":1}"#;
    write("tiers: [basic, bronze, silver]");
    let (out, err, code) = nudge(d, &["ingest", "-"], Some(more));
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("members in `bronze` would read as `basic`"),
        "{err}"
    );
    // `nudge member` does not show the tier through the new list either.
    let (out, err, code) = nudge(d, &["member", "m1"], None);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("the tier list changed"), "{err}");
    write("tiers: [bronze, silver, gold]");
    let (out, err, code) = nudge(d, &["ingest", "-"], Some(more));
    assert_eq!(code, 0, "{out}{err}");
    write("tiers: [bronze, silver]");
    let (_, err, code) = nudge(d, &["ingest", "-"], Some(more));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("members in `gold` would have no tier"),
        "{err}"
    );
}

/// Refunds that cannot apply are refused with why, and nothing of them is
/// stored (so they can be sent again): another member's purchase, one not
/// received yet (it was accepted and silently lost), one dated before its
/// purchase, and one later than `refund.within` (it took spend back 334
/// days on).
#[test]
fn refunds_that_cannot_apply_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(
        d.join("nudge.yaml"),
        "timezone: UTC\ntiers: [bronze]\nevents:\n  purchase:\n    amount: money\n  refund:\n    purchase: string\nrefund:\n  within: 30d\n",
    )
    .expect("config");
    std::fs::create_dir(d.join("rules")).expect("rules");
    std::fs::write(
        d.join("rules/p.rules"),
        "rule \"pts\" on purchase then award points floor(event.amount)\n",
    )
    .expect("rule");
    let refund = |id: &str, member: &str, day: &str, purchase: &str| {
        format!(
            r#"{{"id":"{id}","type":"refund","member":"{member}","at":"2026-{day}T12:00:00Z","purchase":"{purchase}"}}"#
        )
    };
    let purchase = |id: &str, member: &str, day: &str| {
        format!(
            r#"{{"id":"{id}","type":"purchase","member":"{member}","at":"2026-{day}T12:00:00Z","amount":40}}"#
        )
    };
    let input = [
        refund("early", "a", "01-01", "pa"), // before its purchase arrives
        purchase("pa", "a", "01-05"),
        purchase("pb", "b", "01-05"),
        refund("other", "a", "01-06", "pb"),  // b's purchase
        refund("before", "a", "01-04", "pa"), // dated before the purchase
        refund("late", "a", "03-01", "pa"),   // 55 days on, within 30d
    ]
    .join("\n");
    let (out, err, code) = nudge(d, &["ingest", "-"], Some(&input));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("2 applied, 0 duplicates, 0 invalid, 4 rejected"),
        "{out}"
    );
    assert!(
        err.contains("refund \"early\": purchase \"pa\" is not known for member \"a\""),
        "{err}"
    );
    assert!(
        err.contains("refund \"other\": purchase \"pb\" is not known for member \"a\""),
        "{err}"
    );
    assert!(err.contains("refund \"before\": dated 2026-01-04"), "{err}");
    assert!(err.contains("refund \"late\": 55 days after"), "{err}");
    let (out, _, _) = nudge(d, &["member", "a"], None);
    assert!(
        out.contains("\"spend\":40"),
        "nothing was taken back: {out}"
    );
    // No member was made by a refused refund; sent again once it can
    // apply (its id was not used up), it goes through.
    assert!(out.contains("\"member\":\"a\""), "{out}");
    let (out, _, _) = nudge(d, &["member", "nobody"], None);
    assert!(!out.contains("nobody"), "{out}");
    let (out, err, code) = nudge(
        d,
        &["ingest", "-"],
        Some(&refund("early", "a", "01-06", "pa")),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("members in the store: 2"), "{out}");
    let (out, _, _) = nudge(d, &["member", "a"], None);
    assert!(out.contains("\"spend\":0"), "{out}");
}

/// An event older than the dedup window is refused with a line saying why
/// and what to do, and nothing of it is stored; history in time order loads.
#[test]
fn events_older_than_the_dedup_window_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(
        d.join("nudge.yaml"),
        "timezone: UTC\ntiers: [bronze]\nevents:\n  purchase:\n    amount: money\nstorage:\n  dedup_window: 7d\n",
    )
    .expect("config");
    std::fs::create_dir(d.join("rules")).expect("rules");
    std::fs::write(
        d.join("rules/p.rules"),
        "rule \"pts\" on purchase then award points 1\n",
    )
    .expect("rule");
    let purchase = |id: &str, member: &str, day: &str| {
        format!(
            r#"{{"id":"{id}","type":"purchase","member":"{member}","at":"2026-{day}T12:00:00Z","amount":40}}"#
        )
    };
    // A year of history in time order: all of it goes in.
    let history: Vec<String> = (1..=12)
        .map(|m| purchase(&format!("h{m}"), "a", &format!("{m:02}-01")))
        .collect();
    let (out, err, code) = nudge(d, &["ingest", "-"], Some(&history.join("\n")));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("12 applied, 0 duplicates, 0 invalid, 0 rejected"),
        "{out}"
    );
    let input = [
        purchase("h12", "a", "12-01"), // a redelivery: a duplicate
        purchase("new", "b", "11-20"), // 11 days before the newest
        purchase("h1", "a", "01-01"),  // long past: refused, not a duplicate
    ]
    .join("\n");
    let (out, err, code) = nudge(d, &["ingest", "-"], Some(&input));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("0 applied, 1 duplicates, 0 invalid, 2 rejected"),
        "{out}"
    );
    assert!(
        err.contains("line 2: event \"new\" at 2026-11-20T12:00:00Z is older than the dedup window, which starts at 2026-11-24 (UTC; 7 days before the newest event seen, 2026-12-01)"),
        "{err}"
    );
    assert!(err.contains("raise `storage.dedup_window`"), "{err}");
    assert!(err.contains("note: no sink is configured"), "{err}");
    let (out, _, _) = nudge(d, &["member", "b"], None);
    assert!(!out.contains("\"member\":\"b\""), "{out}");
    let (out, _, _) = nudge(d, &["member", "a"], None);
    assert!(out.contains("\"points\":12"), "{out}");
}

/// Ingesting history releases what quiet hours held once the history has
/// passed their end (as replay does); they were held until the next daemon
/// start and then sent, a year late.
#[test]
fn ingest_releases_what_quiet_hours_held() {
    let dir = project();
    let d = dir.path();
    let mut config = std::fs::read_to_string(d.join("nudge.yaml")).expect("config");
    config.push_str("channels:\n  sms: { quiet_hours: \"21:00-09:00\" }\n");
    std::fs::write(d.join("nudge.yaml"), config).expect("config");
    std::fs::write(
        d.join("rules/thanks.rules"),
        "rule \"thanks\" on purchase then send message \"thanks\" via sms\n",
    )
    .expect("rule");
    let input = [
        r#"{"id":"late","type":"purchase","member":"m","at":"2025-03-01T23:00:00Z","amount":1}"#,
        r#"{"id":"next","type":"purchase","member":"m","at":"2025-03-02T12:00:00Z","amount":1}"#,
    ]
    .join("\n");
    let (out, err, code) = nudge(d, &["ingest", "-"], Some(&input));
    assert_eq!(code, 0, "{out}{err}");
    let effects = std::fs::read_to_string(d.join("out/effects.ndjson")).expect("effects");
    let released: Vec<&str> = effects
        .lines()
        .filter(|l| l.contains("\"trigger\":\"event:late\"") && l.contains("\"message\""))
        .collect();
    assert!(
        released.iter().any(
            |l| l.contains("\"status\":\"sent\"") && l.contains("\"at\":\"2025-03-02T09:00:00")
        ),
        "{effects}"
    );
}

/// Two data folders on one config share its file sink path: the second
/// refuses to cut the first's effects (it cut them to its own length)
/// before it applies anything, and says what to do; `nudge member` names
/// rule states by rule, as HTTP does.
#[test]
fn a_file_sink_of_another_data_folder_is_not_cut() {
    let dir = project();
    let d = dir.path();
    std::fs::write(
        d.join("rules/big.rules"),
        "rule \"big\" when spend > 10 then tag \"big\"\n",
    )
    .expect("rule");
    let event = |id: &str| {
        format!(
            r#"{{"id":"{id}","type":"purchase","member":"a","at":"2026-01-01T12:00:00Z","amount":40}}"#
        )
    };
    let (out, err, code) = nudge(d, &["ingest", "-", "--data", "one"], Some(&event("e1")));
    assert_eq!(code, 0, "{out}{err}");
    let sink = d.join("out/effects.ndjson");
    let first = std::fs::read_to_string(&sink).expect("sink");
    assert_eq!(first.lines().count(), 2, "{first}");
    // The same events give the same bytes: content alone cannot tell.
    for ev in ["e1", "e2"] {
        let (out, err, code) = nudge(d, &["ingest", "-", "--data", "two"], Some(&event(ev)));
        assert_ne!(code, 0, "{out}{err}");
        assert!(err.contains("belongs to another data folder"), "{err}");
        assert!(err.contains("No event of the input was applied"), "{err}");
        assert!(
            !d.join("two").exists(),
            "no data folder is left made for nothing"
        );
        let (_, err, code) = nudge(d, &["member", "a", "--data", "two"], None);
        assert_ne!(code, 0, "member a is not in folder two: {err}");
    }
    assert_eq!(std::fs::read_to_string(&sink).expect("sink"), first);
    // The owner goes on writing.
    let (out, err, code) = nudge(d, &["ingest", "-", "--data", "one"], Some(&event("e3")));
    assert_eq!(code, 0, "{out}{err}");
    assert!(std::fs::read_to_string(&sink).expect("sink").len() > first.len());
    let (out, err, code) = nudge(d, &["member", "a", "--data", "one"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"rule\":\"big\""), "{out}");
    // Broken rules: the state still shows, and stderr says why rule
    // states have no names.
    std::fs::write(d.join("rules/big.rules"), "rule \"big\" when then\n").expect("rule");
    let (out, err, code) = nudge(d, &["member", "a", "--data", "one"], None);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("\"rule\":\"big\""), "{out}");
    assert!(err.contains("note: the rules do not load"), "{err}");
}

/// A sink taken out of the config keeps what it has not delivered (with a
/// warning), late events' effects too, and gets it all when it comes back;
/// a sink that never delivered anything (a webhook, which `ingest` does
/// not call) is known too.
#[test]
fn a_sink_left_out_of_the_config_keeps_its_pending_effects() {
    let dir = project();
    let d = dir.path();
    let config = |sinks: &str| {
        let c = format!(
            "timezone: UTC\ntiers: [bronze, silver]\nevents:\n  purchase:\n    amount: money\nsinks:\n{sinks}"
        );
        std::fs::write(d.join("nudge.yaml"), c).expect("config");
    };
    let (a, b) = (
        "  - kind: file\n    path: out/a.ndjson\n",
        "  - kind: file\n    path: out/b.ndjson\n",
    );
    let hook = "  - kind: webhook\n    url: http://user:secret@127.0.0.1:9/hook\n";
    let ingest = |events: &[(&str, &str)]| {
        let lines: Vec<String> = events
            .iter()
            .map(|(id, date)| format!(r#"{{"id":"{id}","type":"purchase","member":"m","at":"{date}T12:00:00Z","amount":5}}"#))
            .collect();
        let (out, err, code) = nudge(d, &["ingest", "-"], Some(&lines.join("\n")));
        assert_eq!(code, 0, "{out}{err}");
        err
    };
    config(&format!("{a}{b}{hook}"));
    ingest(&[("e1", "2026-01-01")]);
    config(a);
    // b has delivered everything so far; the webhook nothing. A late
    // event, older than the outbox retention (7 days) before the newest,
    // while b is out.
    let err = ingest(&[("e2", "2026-01-05"), ("late", "2025-12-20")]);
    assert!(
        err.contains("warning: the sink webhook:http://127.0.0.1:9/hook is not in the config but has 1 effect it has not delivered"),
        "{err}"
    );
    assert!(
        !err.contains("b.ndjson") && !err.contains("secret"),
        "{err}"
    );
    config(&format!("{a}{b}"));
    let err = ingest(&[("e3", "2026-01-06")]);
    assert!(
        err.contains("webhook:http://127.0.0.1:9/hook is not in the config but has 3 effects")
            && err.contains("kept until 2026-01-08"),
        "{err}"
    );
    let read = |f: &str| std::fs::read_to_string(d.join("out").join(f)).expect("sink");
    for f in ["a.ndjson", "b.ndjson"] {
        let text = read(f);
        for e in ["event:e1", "event:e2", "event:late", "event:e3"] {
            assert_eq!(text.matches(e).count(), 1, "{f} has {e} once: {text}");
        }
    }
    // Left out past the retention (in event time), the webhook is
    // forgotten, and its effects go.
    ingest(&[("e4", "2026-01-20")]);
    let err = ingest(&[("e5", "2026-01-21")]);
    assert!(
        err.contains("webhook:http://127.0.0.1:9/hook was left out of the config for longer than `storage.outbox_retention`: it is forgotten, and the 5 effects it had not delivered are gone"),
        "{err}"
    );
    let err = ingest(&[("e6", "2026-01-22")]);
    assert!(!err.contains("webhook"), "{err}");
}

//! Hostile and broken input to `nudge check`: every case ends in a
//! diagnostic with a stable code and a clean exit, never a panic, hang or
//! stack overflow.

use std::path::Path;
use std::process::Command;

struct Run {
    out: String,
    code: i32,
}

fn check(dir: &Path, extra: &[&str]) -> Run {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(env!("CARGO_BIN_EXE_nudge"))
        .args([
            "check",
            "--color=never",
            "--config",
            &format!("{root}/tests/lang/nudge.yaml"),
            "--plugins",
        ])
        .arg(dir.join("plugins"))
        .arg("--rules")
        .arg(dir.join("rules"))
        .args(extra)
        .output()
        .expect("run nudge");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &*String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains("panicked"), "nudge panicked:\n{text}");
    Run {
        out: text,
        code: out.status.code().unwrap_or(-1),
    }
}

/// A temp folder with `rules/` holding `files`.
fn setup(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("rules")).expect("rules dir");
    for (name, body) in files {
        std::fs::write(dir.path().join("rules").join(name), body).expect("write");
    }
    dir
}

fn assert_code(r: &Run, code: &str, exit: i32) {
    assert!(r.out.contains(code), "expected {code} in:\n{}", r.out);
    assert_eq!(r.code, exit, "exit code for {code}:\n{}", r.out);
}

#[test]
fn hundred_thousand_nested_parentheses() {
    let text = format!(
        "when {}tier >= silver{} then tag \"x\"\n",
        "(".repeat(100_000),
        ")".repeat(100_000)
    );
    let dir = setup(&[("deep.rules", text.as_bytes())]);
    assert_code(&check(dir.path(), &[]), "E111", 1);
}

#[test]
fn long_operator_chains_and_prefix_runs() {
    let chain = format!(
        "when {} then tag \"x\"\n",
        vec!["points > 1"; 50_000].join(" or ")
    );
    let nots = format!("when {}true then tag \"x\"\n", "not ".repeat(50_000));
    let negs = format!("when {}points > 0 then tag \"x\"\n", "- ".repeat(50_000));
    for (i, text) in [chain, nots, negs].iter().enumerate() {
        let dir = setup(&[("long.rules", text.as_bytes())]);
        let r = check(dir.path(), &[]);
        assert!(r.out.contains("E112"), "case {i}: {}", r.out);
        assert_code(&r, "E112", 1);
    }
}

#[test]
fn ten_megabyte_rule_file() {
    let line = "when tier >= silver then tag \"x\"\n";
    let text = line.repeat(10 * 1024 * 1024 / line.len() + 1);
    let dir = setup(&[("huge.rules", text.as_bytes())]);
    let r = check(dir.path(), &[]);
    assert_code(&r, "E102", 1);
    assert!(
        r.out.contains("larger than the limit of 1 MiB"),
        "{}",
        r.out
    );
}

#[test]
fn invalid_utf8_points_at_the_byte() {
    let dir = setup(&[(
        "latin1.rules",
        b"when tier >= silver then tag \"caf\xe9\"\n",
    )]);
    let r = check(dir.path(), &[]);
    assert_code(&r, "E101", 1);
    assert!(r.out.contains("latin1.rules:1:"), "{}", r.out);
}

#[test]
fn binary_garbage_is_a_diagnostic() {
    // A deterministic pseudo-random blob, as a stray binary in the folder would be.
    let mut x: u32 = 0x9E37_79B9;
    let blob: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect();
    let printable: Vec<u8> = blob.iter().map(|b| b % 95 + 32).collect();
    let dir = setup(&[
        ("blob.rules", &blob),
        ("noise.rules", &printable),
        ("noise.yaml", &printable),
    ]);
    let r = check(dir.path(), &[]);
    assert_eq!(r.code, 1, "{}", r.out);
    assert!(
        r.out.contains("E101") && r.out.contains("E110"),
        "{}",
        r.out
    );
}

#[test]
fn empty_and_comment_only_files_load() {
    let dir = setup(&[
        ("empty.rules", b""),
        ("empty.yaml", b""),
        ("comments.rules", b"# nothing yet\n"),
    ]);
    let r = check(dir.path(), &[]);
    assert_eq!(r.code, 0, "{}", r.out);
    assert!(r.out.contains("ok: 0 rules checked"), "{}", r.out);
}

#[test]
fn a_rule_file_that_is_a_folder() {
    let dir = setup(&[("good.rules", b"when tier >= silver then tag \"x\"\n")]);
    std::fs::create_dir(dir.path().join("rules/folder.rules")).expect("mkdir");
    let r = check(dir.path(), &[]);
    assert_code(&r, "E100", 1);
    assert!(
        r.out.contains("folder.rules is a folder, not a file"),
        "{}",
        r.out
    );
}

#[test]
fn an_unreadable_rule_file() {
    let dir = setup(&[]);
    std::os::unix::fs::symlink(
        dir.path().join("missing"),
        dir.path().join("rules/dangling.rules"),
    )
    .expect("symlink");
    let r = check(dir.path(), &[]);
    assert_code(&r, "E100", 1);
    assert!(r.out.contains("dangling.rules"), "{}", r.out);
}

#[test]
fn missing_config_or_rules_folder_is_an_io_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = check(dir.path(), &[]);
    assert_code(&r, "E100", 2);
    let out = Command::new(env!("CARGO_BIN_EXE_nudge"))
        .args(["check", "--config"])
        .arg(dir.path().join("nope.yaml"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("E100"));
}

#[test]
fn an_empty_rules_folder_warns() {
    let dir = setup(&[]);
    let r = check(dir.path(), &[]);
    assert_code(&r, "W403", 0);
}

#[test]
fn a_plugin_that_does_not_compile() {
    let dir = setup(&[("ok.rules", b"when tier >= silver then tag \"x\"\n")]);
    std::fs::create_dir(dir.path().join("plugins")).expect("mkdir");
    std::fs::write(dir.path().join("plugins/broken.rhai"), "fn oops( {\n").expect("write");
    let r = check(dir.path(), &[]);
    assert_code(&r, "E130", 1);
    assert!(r.out.contains("broken.rhai:1:"), "{}", r.out);
}

#[test]
fn json_output_has_positions_for_editors() {
    let dir = setup(&[("bad.rules", b"when tier > 3 then tag \"x\"\n")]);
    let r = check(dir.path(), &["--format", "json"]);
    assert_eq!(r.code, 1);
    let v: serde_json::Value = serde_json::from_str(r.out.trim()).expect("json");
    let d = &v["diagnostics"][0];
    assert_eq!(d["code"], "E210");
    assert_eq!(d["severity"], "error");
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(1), Some(6))
    );
    assert!(
        d["hint"]
            .as_str()
            .is_some_and(|h| h.contains("tier >= silver"))
    );
    assert_eq!(v["errors"], 1);
}

#[test]
fn duplicate_rule_names_across_files() {
    let dir = setup(&[
        (
            "a.rules",
            b"rule \"welcome\"\n  on signup\n  then award points 10\n",
        ),
        (
            "b.yaml",
            b"- rule: welcome\n  on: signup\n  then: award points 20\n",
        ),
    ]);
    let r = check(dir.path(), &[]);
    assert_code(&r, "E220", 1);
    assert!(
        r.out.contains("b.yaml:1:9") && r.out.contains("a.rules:1:6"),
        "{}",
        r.out
    );
}

/// Special files in the rules folder: a FIFO once blocked the load (and a
/// running daemon's reloads) for ever, a link to /dev/zero read without
/// end, and a link to a system file echoed its lines in diagnostics. Only
/// regular files inside the folder are read, with a hard cap.
#[test]
fn fifos_devices_and_links_outside_the_folder_are_refused() {
    let dir = setup(&[("good.rules", b"when tier >= silver then tag \"x\"\n")]);
    let rules = dir.path().join("rules");
    let fifo = std::ffi::CString::new(rules.join("pipe.rules").to_string_lossy().as_bytes())
        .expect("path");
    // SAFETY: a valid C string naming a new file in our temp folder.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    std::os::unix::fs::symlink("/dev/zero", rules.join("zero.rules")).expect("symlink");
    std::fs::write(dir.path().join("outside.txt"), "root:x:0:0:secret-line\n").expect("write");
    std::os::unix::fs::symlink(dir.path().join("outside.txt"), rules.join("system.rules"))
        .expect("symlink");
    let config = format!("{}/tests/lang/nudge.yaml", env!("CARGO_MANIFEST_DIR"));
    let (code, text) = within_20s(
        Command::new(env!("CARGO_BIN_EXE_nudge"))
            .args(["check", "--color=never", "--config", &config, "--rules"])
            .arg(&rules),
    );
    // `nudge fmt` read the FIFO too, and hung.
    let (fmt_code, fmt_text) = within_20s(
        Command::new(env!("CARGO_BIN_EXE_nudge"))
            .args(["fmt", "--check", "--config", &config])
            .arg(rules.join("pipe.rules")),
    );
    assert_eq!(fmt_code, Some(2), "{fmt_text}");
    assert!(fmt_text.contains("not a regular file"), "{fmt_text}");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("pipe.rules is not a regular file"), "{text}");
    assert!(
        text.contains("zero.rules links to /dev/zero, outside the project"),
        "{text}"
    );
    assert!(text.contains("system.rules links to"), "{text}");
    assert!(!text.contains("secret-line"), "{text}");
}

/// Runs `cmd`, failing the test if it takes more than 20 s (a hang).
fn within_20s(cmd: &mut Command) -> (Option<i32>, String) {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let started = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            panic!("nudge hung on a special file");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &*String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

/// `nudge segment QUERY --count` on the rules of `rule`, with the test
/// config and plugins: the exit code and stderr, once it is checked that
/// no data folder was opened or made.
fn segment_refused(rule: &[u8], query: &str) -> (Option<i32>, String) {
    let dir = setup(&[("r.rules", rule)]);
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(env!("CARGO_BIN_EXE_nudge"))
        .args(["segment", "--color=never", "--config"])
        .arg(format!("{root}/tests/lang/nudge.yaml"))
        .arg("--rules")
        .arg(dir.path().join("rules"))
        .arg("--plugins")
        .arg(format!("{root}/tests/lang/plugins"))
        .arg("--data")
        .arg(dir.path().join("data"))
        .args([query, "--count"])
        .output()
        .expect("run nudge");
    assert!(
        !dir.path().join("data").exists(),
        "nothing opened or written"
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A segment query over an aggregate no rule keeps: member records have no
/// history for it, so the answer would be wrong; refused with E227.
#[test]
fn a_segment_query_over_an_aggregate_nobody_keeps_is_refused() {
    let (code, text) = segment_refused(
        b"rule \"r\" on purchase when count(purchase, 30d) > 1 then tag \"x\"\n",
        "count(purchase, 60d) > 1",
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("E227"), "{text}");
    assert!(text.contains("kept are: `count(purchase, 30d)`"), "{text}");
}

/// A segment query that calls a plugin function: refused with E228 (not
/// E207 "there are no plugins": a query is checked without them).
#[test]
fn a_segment_query_calling_a_plugin_is_refused() {
    let (code, text) = segment_refused(
        b"rule \"r\" on purchase when crm.is_vip(member) then tag \"vip\"\n",
        "crm.is_vip(member)",
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("E228"), "{text}");
    assert!(
        text.contains("a segment query cannot call the plugin function `crm.is_vip`"),
        "{text}"
    );
}

/// A mistyped `--data` is refused by the commands that read members, and
/// no empty folder is left behind for it.
#[test]
fn a_missing_data_folder_is_refused_not_made() {
    let d = setup(&[("a.rules", b"when tier >= silver then tag \"s\"\n")]);
    for args in [
        &["member", "m1", "--data", "typo"][..],
        &["segment", "tier >= silver", "--count", "--data", "typo"],
        &["model", "--data", "typo"],
        &["fit", "--data", "typo"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_nudge"))
            .args(args)
            .current_dir(d.path())
            .output()
            .expect("nudge");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("no data folder at typo"), "{args:?}: {err}");
        assert!(!d.path().join("typo").exists(), "{args:?} made the folder");
    }
}

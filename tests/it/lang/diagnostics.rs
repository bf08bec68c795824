//! Rule-language cases as data files, checked through the real binary.
//!
//! - `tests/lang/ok/*`: rule files (`.rules`, `.yaml`) that must check clean.
//! - `tests/lang/errors/*`: rule files whose expected `nudge check` output
//!   sits at the end of the file, after `# ---- expected output ----`, each
//!   line commented with `# `.
//! - `tests/lang/config/*.yaml`: configs, checked with `ok/minimal.rules`,
//!   same layout of expected output (errors, or warnings only).
//!
//! `NUDGE_BLESS=1 cargo test --test it lang::` rewrites the expected output; read
//! the diff before committing it.

use std::path::{Path, PathBuf};
use std::process::Command;

const MARKER: &str = "# ---- expected output ----";

fn nudge(args: &[&str]) -> (String, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_nudge"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .arg("--color=never")
        .output()
        .expect("run nudge");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &*String::from_utf8_lossy(&out.stderr);
    (text, out.status.code().unwrap_or(-1))
}

fn cases(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("case folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no cases in {dir}");
    v
}

fn rel(p: &Path) -> String {
    p.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .expect("inside the crate")
        .display()
        .to_string()
}

/// Compares the output with the expected block of `file`; collects mismatches.
fn compare(file: &Path, actual: &str, failures: &mut Vec<String>) {
    let text = std::fs::read_to_string(file).expect("read case");
    let (body, expected) = match text.split_once(MARKER) {
        Some((b, e)) => (b.to_string(), e.to_string()),
        None => (text.clone(), String::new()),
    };
    let expected: String = expected
        .lines()
        .skip(1)
        .map(|l| {
            l.strip_prefix("# ")
                .or_else(|| l.strip_prefix('#'))
                .unwrap_or(l)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let actual: String = actual
        .lines()
        .map(|l| format!("{}\n", l.trim_end()))
        .collect();
    if expected == actual {
        return;
    }
    if std::env::var_os("NUDGE_BLESS").is_some() {
        let mut new = body.trim_end().to_string();
        new.push_str("\n\n");
        new.push_str(MARKER);
        new.push('\n');
        for l in actual.lines() {
            new.push_str(if l.is_empty() { "#" } else { "# " });
            new.push_str(l);
            new.push('\n');
        }
        std::fs::write(file, new).expect("bless");
        return;
    }
    failures.push(format!(
        "{}:\n--- expected\n{expected}--- actual\n{actual}",
        rel(file)
    ));
}

#[test]
fn ok_cases_check_clean() {
    for f in cases("tests/lang/ok") {
        let (out, code) = nudge(&[
            "check",
            "--config",
            "tests/lang/nudge.yaml",
            "--plugins",
            "tests/lang/plugins",
            &rel(&f),
        ]);
        assert_eq!(code, 0, "{} should check clean:\n{out}", rel(&f));
        assert!(
            out.contains(" 0 warnings"),
            "{} has warnings:\n{out}",
            rel(&f)
        );
    }
}

#[test]
fn error_cases_match_their_expected_output() {
    let mut failures = Vec::new();
    for f in cases("tests/lang/errors") {
        let (out, code) = nudge(&[
            "check",
            "--config",
            "tests/lang/nudge.yaml",
            "--plugins",
            "tests/lang/plugins",
            &rel(&f),
        ]);
        let has_error = out.contains("no rules loaded");
        if has_error {
            assert_eq!(code, 1, "{}: errors must exit 1:\n{out}", rel(&f));
        } else {
            assert_eq!(code, 0, "{}: warnings only must exit 0:\n{out}", rel(&f));
        }
        compare(&f, &out, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "{} case(s) differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn config_cases_match_their_expected_output() {
    let mut failures = Vec::new();
    for f in cases("tests/lang/config") {
        let (out, code) = nudge(&[
            "check",
            "--config",
            &rel(&f),
            "--rules",
            "tests/lang/ok/minimal.rules",
        ]);
        // A config with warnings only loads: exit 0.
        let want = if out.contains("no rules loaded") {
            1
        } else {
            0
        };
        assert_eq!(code, want, "{}: errors exit 1, warnings 0:\n{out}", rel(&f));
        compare(&f, &out, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "{} case(s) differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every error code has at least one case, so every message is seen.
#[test]
fn every_code_has_a_case() {
    let mut seen = String::new();
    for dir in ["tests/lang/errors", "tests/lang/config"] {
        for f in cases(dir) {
            seen.push_str(&std::fs::read_to_string(&f).unwrap_or_default());
        }
    }
    seen.push_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/cli/bad_input.rs"),
        )
        .unwrap_or_default(),
    );
    let missing: Vec<&str> = nudge::base::diag::Code::ALL
        .iter()
        .map(|c| c.as_str())
        .filter(|c| !seen.contains(&format!("{c}\n")) && !seen.contains(&format!("\"{c}\"")))
        .collect();
    assert!(missing.is_empty(), "codes without a test case: {missing:?}");
}

/// docs/language.md lists every code.
#[test]
fn every_code_is_documented() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/language.md"))
            .expect("docs/language.md");
    for c in nudge::base::diag::Code::ALL {
        assert!(
            doc.contains(&format!("| {} |", c.as_str())),
            "{} is not in docs/language.md",
            c.as_str()
        );
    }
}

/// The example config and rules shipped at the top level check clean.
#[test]
fn the_example_project_checks_clean() {
    let (out, code) = nudge(&["check"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(" 0 warnings"), "{out}");
}

//! `nudge fmt`: the printer keeps what rules mean and every comment, and is
//! a fixed point. A data file with its expected output (`NUDGE_BLESS=1`
//! rewrites it), every rule file of the repository, generated rule files
//! (proptest), and the command itself.

use nudge::base::diag::SourceId;
use nudge::lang::parse::parse_file;
use nudge::lang::print::{comments, format_file, same_rules};
use proptest::prelude::*;
use std::path::{Path, PathBuf};

const ID: SourceId = SourceId(0);

/// Formats `text` and checks the three promises: same rules, same
/// comments, and formatting the output changes nothing.
fn check_fmt(text: &str, stem: &str) -> String {
    let out = format_file(ID, text, stem).unwrap_or_else(|d| panic!("{d:?}"));
    let (before, _) = parse_file(ID, text, stem);
    let (after, diags) = parse_file(ID, &out, stem);
    assert!(diags.is_empty(), "output does not parse: {diags:?}\n{out}");
    assert!(
        same_rules(&before.rules, &after.rules),
        "meaning changed:\n{text}\n---\n{out}"
    );
    let texts = |t: &str| comments(t).into_iter().map(|c| c.text).collect::<Vec<_>>();
    assert_eq!(texts(text), texts(&out), "comments changed:\n{out}");
    let again = format_file(ID, &out, stem).expect("formats again");
    assert_eq!(again, out, "not a fixed point");
    out
}

#[test]
fn the_messy_file_formats_as_expected() {
    let dir = Path::new("tests/fmt");
    let text = std::fs::read_to_string(dir.join("messy.rules")).expect("input");
    let out = check_fmt(&text, "messy");
    let expected = dir.join("messy.formatted.rules");
    if std::env::var_os("NUDGE_BLESS").is_some() {
        std::fs::write(&expected, &out).expect("bless");
    }
    assert_eq!(
        out,
        std::fs::read_to_string(&expected).expect("expected output")
    );
}

fn rule_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            rule_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rules") {
            out.push(p);
        }
    }
}

#[test]
fn every_rule_file_of_the_repository_keeps_its_meaning() {
    let mut files = Vec::new();
    for d in [
        "rules",
        "examples",
        "tests/lang",
        "tests/cases",
        "tests/fmt",
    ] {
        if Path::new(d).exists() {
            rule_files(Path::new(d), &mut files);
        }
    }
    let mut formatted = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        let stem = f.file_stem().expect("stem").to_string_lossy();
        // Files that are meant not to parse (diagnostic tests) are skipped.
        if !parse_file(ID, &text, &stem).1.is_empty() {
            continue;
        }
        check_fmt(&text, &stem);
        formatted += 1;
    }
    assert!(formatted >= 15, "only {formatted} files");
}

#[test]
fn the_command_checks_rewrites_and_refuses_broken_files() {
    let dir = tempfile::tempdir().expect("dir");
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).expect("mkdir");
    std::fs::copy("tests/fmt/messy.rules", rules.join("messy.rules")).expect("copy");
    std::fs::write(
        rules.join("broken.rules"),
        "rule \"x\" when tier >= then tag \"a\"\n",
    )
    .expect("broken");
    std::fs::write(rules.join("y.yaml"), "not: [a rule file\n").expect("yaml");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_nudge"))
            .current_dir(dir.path())
            .arg("fmt")
            .args(args)
            .output()
            .expect("fmt")
    };
    let out = run(&["--check"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("not formatted: rules/messy.rules"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.rules:1:"), "{stderr}");
    let before = std::fs::read_to_string(rules.join("broken.rules")).expect("read");
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(1), "a broken file is an error");
    assert_eq!(
        std::fs::read_to_string(rules.join("messy.rules")).expect("read"),
        std::fs::read_to_string("tests/fmt/messy.formatted.rules").expect("expected")
    );
    assert_eq!(
        std::fs::read_to_string(rules.join("broken.rules")).expect("read"),
        before
    );
    std::fs::remove_file(rules.join("broken.rules")).expect("rm");
    let out = run(&["--check"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(!rules.join(".messy.rules.fmt.tmp").exists());
}

// ------------------------------------------------------------ generated

fn leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u32..5000).prop_map(|n| n.to_string()),
        (0u32..500, 0u32..100).prop_map(|(a, b)| format!("{a}.{b:02}")),
        prop::sample::select(vec![
            "cycle",
            "tier",
            "gold",
            "points",
            "event.amount",
            "spend",
            "birthday",
            "tags",
            "true",
            "false",
            "null",
            "30d",
            "12h",
            "2026-02-14",
            "today",
        ])
        .prop_map(str::to_string),
        "[a-z #\"\\\\]{0,6}"
            .prop_map(|s| { format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")) }),
        Just("count(purchase, 30d)".to_string()),
        Just("sum(purchase.amount where event.amount > 5, 2w)".to_string()),
        Just("crm.score(member, 3)".to_string()),
        Just("floor(event.amount * 2)".to_string()),
    ]
}

/// Expressions with or without parentheses; some do not parse (chained
/// comparisons) and are skipped.
fn expr() -> impl Strategy<Value = String> {
    leaf().prop_recursive(5, 40, 3, |inner| {
        let op = prop::sample::select(vec![
            "or", "and", "==", "!=", "<", ">=", "+", "-", "*", "/", "%",
        ]);
        prop_oneof![
            (inner.clone(), op, inner.clone(), any::<bool>()).prop_map(|(a, op, b, p)| {
                if p {
                    format!("({a}) {op} ({b})")
                } else {
                    format!("{a} {op} {b}")
                }
            }),
            inner.clone().prop_map(|a| format!("not ({a})")),
            inner.clone().prop_map(|a| format!("-({a})")),
            (inner.clone(), any::<bool>())
                .prop_map(|(a, n)| format!("({a}) {}in [1, \"x\"]", if n { "not " } else { "" })),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) between 1 and ({b})")),
            inner.clone().prop_map(|a| format!("({a}) is not null")),
            inner.prop_map(|a| format!("({a})")),
        ]
    })
}

fn action() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("send coupon 30-6".to_string()),
        Just("send coupon welcome via sms to event.referrer".to_string()),
        Just("send message \"hi # there\" via app".to_string()),
        expr().prop_map(|e| format!("award points ({e})")),
        expr().prop_map(|e| format!("deduct points {e}")),
        expr().prop_map(|e| format!("set city = {e}")),
        Just("set tier gold".to_string()),
        Just("tag \"a b\"".to_string()),
        Just("untag \"x\"".to_string()),
        Just("call crm.sync(member)".to_string()),
    ]
}

fn rule() -> impl Strategy<Value = String> {
    let tails = prop::sample::subsequence(
        vec![
            "on purchase, signup",
            "limit once per 30d",
            "limit 3",
            "holdout 2.5%",
            "priority -3",
            "group \"g\"",
            "budget 5000 per month",
        ],
        0..4,
    )
    .prop_shuffle();
    (
        any::<bool>(),
        expr(),
        prop::collection::vec(action(), 1..4),
        tails,
        prop::sample::select(vec![" ", "\n  ", "  # note\n  "]),
    )
        .prop_map(|(named, when, then, tails, sep)| {
            let head = if named {
                "rule \"r\"".to_string() + sep
            } else {
                String::new()
            };
            format!(
                "{head}when {when}{sep}then {}{sep}{}\n",
                then.join(", "),
                tails.join(sep)
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn printing_a_parsed_file_and_parsing_it_again_gives_the_same_rules(
        rules in prop::collection::vec(rule(), 1..4),
        header in prop::sample::select(vec!["", "# head\n\n", "# a\n# b\n"]),
    ) {
        // Names must differ: number the named rules.
        let mut text = header.to_string();
        for (i, r) in rules.iter().enumerate() {
            text.push_str(&r.replacen("rule \"r\"", &format!("rule \"r{i}\""), 1));
            text.push('\n');
        }
        let (_, diags) = parse_file(ID, &text, "gen");
        prop_assume!(diags.is_empty());
        check_fmt(&text, "gen");
    }
}

//! Property tests: whatever text the parser and checker get, they return
//! rules or diagnostics, never a panic (or a stack overflow).

use proptest::prelude::*;

const CONFIG: &str = include_str!("../../lang/nudge.yaml");

/// Tokens of the rule language, and some that are not.
const TOKENS: &[&str] = &[
    "rule",
    "\"r\"",
    "when",
    "then",
    "on",
    "tick",
    "purchase",
    "limit",
    "once",
    "per",
    "30d",
    "holdout",
    "10%",
    "priority",
    "-3",
    "group",
    "budget",
    "5000",
    "month",
    "and",
    "or",
    "not",
    "in",
    "between",
    "is",
    "null",
    "true",
    "(",
    ")",
    "[",
    "]",
    ",",
    ".",
    "==",
    "!=",
    "<",
    ">=",
    "+",
    "-",
    "*",
    "/",
    "=",
    "tier",
    "silver",
    "gold",
    "cycle",
    "days_since_last_purchase",
    "spend",
    "points",
    "tags",
    "\"mom\"",
    "event",
    "amount",
    "count",
    "sum",
    "where",
    "send",
    "coupon",
    "30-6",
    "welcome",
    "via",
    "sms",
    "message",
    "award",
    "deduct",
    "set",
    "tag",
    "untag",
    "call",
    "crm",
    "is_vip",
    "member",
    "2026-02-14",
    "1.5",
    "12h",
    "#",
    "\n",
    "floor",
    "@",
    "\"",
    "'",
    "😀",
    "\t",
];

fn check_text(text: &str) {
    let l = nudge::project::load::load_texts(CONFIG, &[("p.rules", text)]);
    // Either rules or at least one error, never both missing.
    assert!(l.rules.is_some() || l.errors() > 0);
    spans_inside(&l);
    let y = nudge::project::load::load_texts(CONFIG, &[("p.yaml", text)]);
    assert!(y.rules.is_some() || y.errors() > 0);
    spans_inside(&y);
}

/// Every diagnostic points inside its file, on character boundaries (a
/// caret past the end or inside a character would garble the report).
fn spans_inside(l: &nudge::project::load::Load) {
    for d in &l.diagnostics {
        let Some(source) = d.source else { continue };
        let text = l.sources.text(source);
        assert!(
            d.span.start <= d.span.end
                && d.span.end <= text.len()
                && text.is_char_boundary(d.span.start)
                && text.is_char_boundary(d.span.end),
            "{:?} {:?} of {} bytes: {}",
            d.code,
            d.span,
            text.len(),
            d.message
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_token_sequences(tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..60)) {
        check_text(&tokens.join(" "));
    }

    #[test]
    fn random_text(text in "\\PC{0,200}") {
        check_text(&text);
    }

    #[test]
    fn valid_rule_with_one_token_changed(i in 0usize..40, tok in prop::sample::select(TOKENS)) {
        let base = "rule \"x\" on purchase when days_since_last_purchase > cycle * 1.5 and tier >= silver and \"mom\" in tags then send coupon 30-6 via sms, award points floor(event.amount) limit once per 30d";
        let mut words: Vec<&str> = base.split(' ').collect();
        let n = words.len();
        words[i % n] = tok;
        check_text(&words.join(" "));
    }
}

#[test]
fn random_bytes_through_the_loader() {
    // Bytes that are not UTF-8 reach the loader through files.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("rules")).expect("mkdir");
    let mut x: u64 = 0x243F_6A88_85A3_08D3;
    for i in 0..50 {
        let bytes: Vec<u8> = (0..(i * 37 % 500))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(dir.path().join("rules/r.rules"), &bytes).expect("write");
        let opts = nudge::project::load::LoadOptions {
            builtin_config: false,
            config_only: false,
            config: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lang/nudge.yaml"),
            rules: Some(dir.path().join("rules")),
            plugins: None,
            ..Default::default()
        };
        let l = nudge::project::load::load(&opts);
        assert!(l.rules.is_some() || l.errors() > 0);
    }
}

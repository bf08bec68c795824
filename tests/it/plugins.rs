//! Plugins that misbehave: each ends within its deadline with an error that
//! names the plugin, function and rule; the event is applied without that
//! rule's effects (its other rules still fire); other events are untouched;
//! a counter records the failure. Plus the example sink plugin.

use nudge::engine::Engine;
use nudge::io::event::event_from_json;
use nudge::model::Effect;
use nudge::store::SledStore;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const CONFIG: &str = "timezone: UTC\ntiers: [bronze, silver]\nevents:\n  purchase:\n    amount: money\nplugin_limits:\n  deadline_ms: 100\n";

struct Run {
    effects: Vec<Effect>,
    failures: u64,
    errors: Vec<String>,
    points: i64,
    elapsed: Duration,
}

/// Loads `bad.rhai` holding `script`, with rules: a points rule, the rule
/// under test calling `bad.f(member)` (as condition or action), and a tag rule.
fn run(script: &str, as_condition: bool) -> Result<Run, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("nudge.yaml"), CONFIG).expect("config");
    std::fs::create_dir(dir.path().join("rules")).expect("rules");
    std::fs::create_dir(dir.path().join("plugins")).expect("plugins");
    std::fs::write(dir.path().join("plugins/bad.rhai"), script).expect("plugin");
    let test_rule = if as_condition {
        "rule \"uses bad\" on purchase when bad.f(member) then tag \"bad\""
    } else {
        "rule \"uses bad\" on purchase then call bad.f(member), award points 100"
    };
    std::fs::write(dir.path().join("rules/r.rules"), format!("rule \"points\" on purchase priority 10 then award points 1\n{test_rule}\nrule \"after\" on purchase then tag \"after\"\n")).expect("rules");
    let l = nudge::project::load::load(&nudge::project::load::LoadOptions {
        builtin_config: false,
        config_only: false,
        config: dir.path().join("nudge.yaml"),
        rules: None,
        plugins: None,
        ..Default::default()
    });
    if l.errors() > 0 {
        return Err(l
            .diagnostics
            .iter()
            .map(|d| format!("{} {}", d.code.as_str(), d.message))
            .collect::<Vec<_>>()
            .join("; "));
    }
    let (schema, rules) = (
        std::sync::Arc::new(l.schema.expect("schema")),
        std::sync::Arc::new(l.rules.expect("rules")),
    );
    let mut e = Engine::new(
        schema.clone(),
        rules,
        SledStore::temporary().expect("store"),
    )
    .expect("engine")
    .with_plugins(l.plugins);
    let ev = |id: &str, m: &str| {
        event_from_json(&schema, json!({"id": id, "type": "purchase", "member": m, "at": "2026-01-01T12:00:00Z", "amount": 5})).expect("event")
    };
    let start = Instant::now();
    let c = e.process(&[ev("1", "a"), ev("2", "b")]).expect("process");
    let elapsed = start.elapsed();
    let plugins = e.plugins().expect("plugins");
    Ok(Run {
        effects: c.effects,
        failures: plugins.failures(),
        errors: plugins
            .recent_failures()
            .iter()
            .map(|f| f.to_string())
            .collect(),
        points: e.member("a").expect("read").expect("member").points,
        elapsed,
    })
}

fn rules_of(r: &Run) -> Vec<String> {
    r.effects
        .iter()
        .map(|e| format!("{} {}", e.member, e.rule))
        .collect()
}

/// The failing rule left no trace; the others fired for both events.
fn assert_contained(r: &Run, what: &str) {
    assert_eq!(
        rules_of(r),
        ["a points", "a after", "b points", "b after"],
        "{what}"
    );
    assert_eq!(r.failures, 2, "{what}: one failure per event");
    assert_eq!(
        r.points, 1,
        "{what}: the failing rule's points were not applied"
    );
    assert!(
        r.elapsed < Duration::from_secs(5),
        "{what}: took {:?}",
        r.elapsed
    );
    let e = &r.errors[0];
    assert!(
        e.contains("plugin `bad`") && e.contains("function `f`") && e.contains("rule \"uses bad\""),
        "{what}: {e}"
    );
}

#[test]
fn an_endless_loop_is_stopped() {
    for script in ["fn f(m) { loop {} }", "fn f(m) { while true {} }"] {
        let r = run(script, false).expect("loads");
        assert_contained(&r, script);
        assert!(
            r.errors[0].contains("deadline") || r.errors[0].contains("operations"),
            "{}",
            r.errors[0]
        );
    }
}

#[test]
fn deep_recursion_is_stopped() {
    let r = run("fn g(n) { g(n + 1) }\nfn f(m) { g(0) }", true).expect("loads");
    assert_contained(&r, "recursion");
    assert!(r.errors[0].contains("nest deeper"), "{}", r.errors[0]);
}

#[test]
fn a_string_doubled_until_huge_is_stopped() {
    let r = run("fn f(m) { let s = \"x\"; loop { s += s; } }", false).expect("loads");
    assert_contained(&r, "string");
    assert!(
        r.errors[0].contains("grew past its limit"),
        "{}",
        r.errors[0]
    );
}

#[test]
fn a_map_with_a_million_keys_is_stopped() {
    let r = run(
        "fn f(m) { let x = #{}; for i in 0..1000000 { x[`k${i}`] = i; } true }",
        true,
    )
    .expect("loads");
    assert_contained(&r, "map");
}

#[test]
fn ten_thousand_intents_are_refused() {
    let r = run(
        "fn f(m) { let out = []; out.pad(10000, #{points: 1}); out }",
        false,
    )
    .expect("loads");
    assert_contained(&r, "intents");
    assert!(r.errors[0].contains("the limit is 100"), "{}", r.errors[0]);
}

#[test]
fn a_wrong_type_is_a_rule_error() {
    let r = run("fn f(m) { \"yes\" }", true).expect("loads");
    assert_contained(&r, "wrong type");
    assert!(
        r.errors[0].contains("where the rule expects true/false"),
        "{}",
        r.errors[0]
    );
}

#[test]
fn a_plugin_that_throws() {
    let r = run("fn f(m) { throw \"no CRM today\"; }", false).expect("loads");
    assert_contained(&r, "throw");
    assert!(r.errors[0].contains("no CRM today"), "{}", r.errors[0]);
}

#[test]
fn a_bad_intent_undoes_the_rule() {
    let r = run("fn f(m) { [#{points: 5}, #{coupon: \"nonsense\"}] }", false).expect("loads");
    assert_contained(&r, "bad intent");
    assert!(
        r.errors[0].contains("unknown coupon `nonsense`"),
        "{}",
        r.errors[0]
    );
}

#[test]
fn intents_that_would_lose_or_overflow_something_undo_the_rule() {
    for (script, said) in [
        (
            "fn f(m) { #{points: 3, tag: \"both\"} }",
            "an intent has one of coupon, points, tag, untag, message, payload; this one has",
        ),
        (
            "fn f(m) { #{points: 9223372036854775807} }",
            "`points` is 9223372036854775807; an intent awards or takes at most 1000000000",
        ),
        (
            "fn f(m) { #{points: -9223372036854775807 - 1} }",
            "an intent awards or takes at most",
        ),
        ("fn f(m) { #{tag: 5} }", "`tag` must be a string, not i64"),
        ("fn f(m) { #{coupon: \"30-6\", points: 1} }", "this one has"),
        (
            "fn f(m) { #{tag: \"x\", channel: \"sms\"} }",
            "a tag intent does not take `channel`",
        ),
    ] {
        let r = run(script, false).expect("loads");
        assert_contained(&r, script);
        assert!(r.errors[0].contains(said), "{script}: {}", r.errors[0]);
    }
}

#[test]
fn eval_import_and_syntax_errors_fail_the_load() {
    for script in [
        "fn f(m) { eval(\"1\") }",
        "import \"x\" as y;\nfn f(m) { true }",
        "fn f(m) { true ",
    ] {
        let err = run(script, true).err().unwrap_or_default();
        assert!(err.contains("E130"), "{script}: {err}");
        // The rule that calls it is not told the plugin is unknown too.
        assert!(!err.contains("E207"), "{script}: {err}");
    }
    // A rule calling a function the plugin does not have fails the load too.
    let err = run("fn g(m) { true }", true).err().unwrap_or_default();
    assert!(
        err.contains("E207") && err.contains("no function `f`"),
        "{err}"
    );
}

#[test]
fn scripts_get_copies_of_the_member() {
    let r = run(
        "fn f(m) { m.points = 1000000; m.tags.push(\"hacked\"); [#{points: 2}] }",
        false,
    )
    .expect("loads");
    assert_eq!(r.failures, 0, "{:?}", r.errors);
    assert_eq!(
        r.points,
        1 + 2 + 100,
        "only the returned intents change the member"
    );
}

#[test]
fn the_sms_gateway_turns_an_effect_into_a_request() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let l = nudge::project::load::load(&nudge::project::load::LoadOptions {
        builtin_config: false,
        config_only: false,
        config: root.join("nudge.yaml"),
        rules: None,
        plugins: None,
        ..Default::default()
    });
    assert_eq!(l.errors(), 0);
    let plugins = l.plugins.expect("plugins");
    let effect: Effect = serde_json::from_value(json!({
        "key": "k1", "at": "2026-01-01T12:00:00Z", "member": "m1", "rule": "r", "ruleset": "v", "trigger": "event:e1",
        "action": "coupon", "coupon": "30-6", "threshold": 30, "discount": 6, "channel": "sms", "status": "sent"
    }))
    .expect("effect");
    let req = plugins
        .delivery_request("sms_gateway", &effect)
        .expect("request");
    assert_eq!(req.method, "POST");
    assert_eq!(
        req.url.as_deref(),
        Some("https://sms.example.com/v1/messages")
    );
    assert!(
        req.headers
            .contains(&("X-Idempotency-Key".to_string(), "k1".to_string()))
    );
    let body: serde_json::Value = serde_json::from_str(&req.body).expect("json body");
    assert_eq!(body["to"], "m1");
    assert_eq!(body["text"], "Your coupon 30-6 is ready: spend 30, save 6.");
    // A plugin without `deliver` is a clear error.
    let err = plugins
        .delivery_request("crm", &effect)
        .expect_err("no deliver");
    assert!(
        err.to_string().contains("plugin `crm`, function `deliver`"),
        "{err}"
    );
}

/// The payloads `f` returned.
fn payloads(r: &Run) -> Vec<serde_json::Value> {
    r.effects
        .iter()
        .filter_map(|e| serde_json::to_value(e).ok()?.get("value").cloned())
        .collect()
}

/// A function is given only the member properties it reads (found when the
/// plugin loads), and sees them exactly as in the whole map, which a
/// function gets when it uses `member` any other way (here: a copy).
#[test]
fn a_function_sees_what_it_reads_as_in_the_whole_member() {
    let reads = "[#{payload: #{spend: m.spend, tier: m.tier, tags: m.tags, amount: m.event.amount, points: m.points, days: m.days_since_last_purchase, keys: m.keys().len()}}]";
    let only = run(
        &format!("fn f(member) {{ {} }}", "[#{payload: #{spend: member.spend, tier: member.tier, tags: member.tags, amount: member.event.amount, points: member.points, days: member.days_since_last_purchase}}]"),
        false,
    )
    .expect("loads");
    let whole = run(
        &format!("fn f(member) {{ let m = member; {reads} }}"),
        false,
    )
    .expect("loads");
    assert_eq!(
        only.failures + whole.failures,
        0,
        "{:?} {:?}",
        only.errors,
        whole.errors
    );
    let (only, whole) = (payloads(&only), payloads(&whole));
    assert_eq!(only.len(), 2, "{only:?}");
    let want =
        json!({"spend": 5, "tier": "bronze", "tags": [], "amount": null, "points": 1, "days": 0});
    for (o, w) in only.iter().zip(&whole) {
        assert_eq!(o, &want);
        let mut w = w.clone();
        let keys = w
            .as_object_mut()
            .and_then(|m| m.remove("keys"))
            .and_then(|k| k.as_i64());
        assert!(keys.is_some_and(|k| k > 20), "the whole member: {keys:?}");
        assert_eq!(w, want);
    }
}

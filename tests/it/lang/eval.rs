//! Compiled expressions against member states, from `tests/lang/eval.cases`
//! (see the format at the top of that file).

use nudge::lang::conditions::{Conditions, Scratch};
use nudge::lang::program::{BoolCode, Env, Value};
use rust_decimal::Decimal;
use std::str::FromStr;

struct Case {
    line: usize,
    expr: String,
    want: Option<bool>,
    member: Vec<(String, String)>,
}

fn cases() -> Vec<Case> {
    let text = include_str!("../../lang/eval.cases");
    let mut member = Vec::new();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(m) = line.strip_prefix("member:") {
            member = m
                .split(';')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').expect("name=value");
                    (k.trim().to_string(), v.trim().to_string())
                })
                .collect();
            continue;
        }
        let (expr, want) = line.rsplit_once("=>").expect("EXPR => result");
        let want = match want.trim() {
            "true" => Some(true),
            "false" => Some(false),
            "null" => None,
            other => panic!("line {}: bad result {other}", i + 1),
        };
        out.push(Case {
            line: i + 1,
            expr: expr.trim().to_string(),
            want,
            member: member.clone(),
        });
    }
    out
}

fn value(ty: &nudge::lang::check::Ty, v: &str, tiers: &[String]) -> Value {
    use nudge::lang::check::Ty;
    match ty {
        Ty::Int => Value::Int(v.parse().expect("int")),
        Ty::Dec | Ty::Money => Value::Dec(Decimal::from_str(v).expect("decimal")),
        Ty::Str => Value::Str(v.into()),
        Ty::Bool => Value::Bool(v == "true"),
        Ty::Date => Value::Date(nudge::base::time::parse_date(v).expect("date")),
        Ty::Tier => Value::Tier(tiers.iter().position(|t| t == v).expect("tier") as u8),
        other => panic!("cannot set a {other:?}"),
    }
}

#[test]
fn compiled_expressions_evaluate_as_written() {
    let config = include_str!("../../lang/nudge.yaml");
    let cases = cases();
    assert!(cases.len() > 50);
    let rules: String = cases
        .iter()
        .map(|c| {
            format!(
                "rule \"line {}\"\n  on purchase\n  when {}\n  then tag \"t\"\n",
                c.line, c.expr
            )
        })
        .collect();
    let loaded = nudge::project::load::load_texts(config, &[("eval.rules", &rules)]);
    let errors: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.message.clone())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let set = loaded.rules.expect("rule set");
    let schema = loaded.schema.expect("schema");
    let purchase = &schema.events[schema.event("purchase").expect("purchase").0];
    // The same conditions laid out for the daily tick: every case again.
    let conds: Vec<Option<&BoolCode>> = set.rules.iter().map(|r| r.cond.as_ref()).collect();
    let every: Vec<u32> = (0..set.rules.len() as u32).collect();
    let flat = Conditions::new(&conds, &every);
    let mut failures = Vec::new();
    let mut scratch = Scratch::default();
    for c in &cases {
        let mut member = vec![Value::Null; set.layout.fields.len()];
        let mut event = vec![Value::Null; set.layout.event_fields.len()];
        let mut tags = vec![0u64; set.layout.tags.len().div_ceil(64)];
        let mut today = 0;
        for (k, v) in &c.member {
            if k == "today" {
                today = nudge::base::time::parse_date(v).expect("today");
            } else if k == "tags" {
                for t in v.split('|') {
                    if let Some(bit) = set.layout.tags.iter().position(|x| x == t) {
                        tags[bit / 64] |= 1 << (bit % 64);
                    }
                }
            } else if let Some(f) = k.strip_prefix("event.") {
                let ty = nudge::lang::check::Ty::from_field(
                    purchase.field(f).expect("event field").1.ty,
                );
                if let Some(slot) = set.layout.event_fields.iter().position(|x| x == f) {
                    event[slot] = value(&ty, v, &schema.tiers);
                }
            } else {
                let slot = set.layout.fields.iter().position(|(n, _)| n == k);
                let slot = slot.unwrap_or_else(|| panic!("line {}: no member field `{k}`", c.line));
                member[slot] = value(&set.layout.fields[slot].1, v, &schema.tiers);
            }
        }
        let env = Env {
            member: &member,
            tags: &tags,
            tag_names: &[],
            event: &event,
            today,
            host: None,
            rule: "",
        };
        let name = format!("line {}", c.line);
        let rule = set.rule(&name).expect("rule");
        let got = rule.matches(&env);
        if got != c.want {
            failures.push(format!(
                "line {}: `{}` gave {:?}, expected {:?}",
                c.line, c.expr, got, c.want
            ));
        }
        let index = set
            .rules
            .iter()
            .position(|r| r.name == name)
            .expect("index") as u32;
        // Laid out for the tick, what counts is whether it is true.
        let mut laid_out = None;
        flat.eval(
            &env,
            |_| "",
            &mut scratch,
            |i, is_true| {
                if i == index {
                    laid_out = Some(is_true);
                }
                i != index
            },
        );
        if laid_out != Some(c.want == Some(true)) {
            failures.push(format!(
                "line {}: `{}` laid out for the tick gave {:?}, expected {:?}",
                c.line, c.expr, laid_out, c.want
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

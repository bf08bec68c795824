//! Rule test cases as data (`nudge test`): a YAML file gives the rules (a
//! file or folder, or inline text), optional starting members, events, an
//! optional clock end, and the effects expected. The case runs in a fresh
//! temporary store with a simulated clock, like `nudge replay`.
//!
//! ```yaml
//! rules: ../../rules/winback.rules     # relative to this file; or `rules_text: |`
//! members:
//!   m1: { tier: silver }
//! events:
//!   - { id: e1, type: purchase, member: m1, at: "2026-01-01T12:00:00Z", amount: 10 }
//! until: 2026-02-20                    # run the daily ticks through this day
//! expect:                              # exactly these effects, in order; only the
//!   - { rule: "winback:2", trigger: "tick:2026-02-06", coupon: 30-6 }   # keys given are compared
//! ```

use crate::base::yaml::{self, Node, Positions};
use crate::engine::{Engine, clock};
use crate::io::event::event_from_json;
use crate::model::{Effect, Event, MemberRecord, Stored};
use crate::project::load::{LoadOptions, load, load_texts_in};
use crate::store::{SledStore, Store, WriteSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const KEYS: &[&str] = &[
    "name",
    "config",
    "rules",
    "rules_text",
    "members",
    "events",
    "until",
    "expect",
];

/// The outcome of one case.
#[derive(Debug)]
pub enum CaseOutcome {
    Pass {
        effects: usize,
    },
    /// Expected and actual effects as lines, marked ` `, `-` (expected,
    /// missing) or `+` (not expected).
    Fail {
        diff: Vec<(char, String)>,
    },
    /// The case itself is broken (file, rules or events).
    Error(String),
}

pub struct CaseResult {
    pub path: PathBuf,
    pub name: String,
    pub outcome: CaseOutcome,
    /// How many plugin calls failed while the case ran, and the last
    /// failure as the daemon logs it: a case passes on its effects alone,
    /// so these say why a custom action gave none.
    pub plugin_failures: u64,
    pub last_plugin_failure: Option<String>,
}

/// Case files (`*.yaml`, `*.yml`) under `path`, sorted; or `path` itself.
pub fn find(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let p = entry?.path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Runs one case file; `config` is the default config.
/// Runs one case file with `config` unless the case names its own, and
/// the plugins of `plugins` (`--plugins`) instead of the config's.
pub fn run(path: &Path, config: &Path, plugins: Option<&Path>) -> CaseResult {
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut r = CaseResult {
        path: path.to_path_buf(),
        name,
        outcome: CaseOutcome::Error(String::new()),
        plugin_failures: 0,
        last_plugin_failure: None,
    };
    r.outcome = match run_inner(path, config, plugins, &mut r) {
        Ok(o) => o,
        Err(e) => CaseOutcome::Error(e),
    };
    r
}

// Long because a case's steps in order (config, rules, members, events, ticks, expectations), each failing with its own message.
fn run_inner(
    path: &Path,
    default_config: &Path,
    plugins: Option<&Path>,
    r: &mut CaseResult,
) -> Result<CaseOutcome, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let node = yaml::parse(&text, yaml::Top::Mapping)
        .map_err(|e| at(path, &text, e.offset, &e.message))?;
    let Node::Mapping(m) = &node else {
        return Err(format!(
            "{}: a test case is a mapping of keys",
            path.display()
        ));
    };
    let pos = Positions::new(&text);
    for (k, _) in m.iter() {
        if !KEYS.contains(&k.as_str()) {
            let hint = crate::base::diag::did_you_mean(k.as_str(), KEYS.iter().copied())
                .unwrap_or_else(|| format!("keys are: {}", KEYS.join(", ")));
            return Err(at(
                path,
                &text,
                pos.span(k.span()).start,
                &format!("unknown key `{}`; {hint}", k.as_str()),
            ));
        }
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let str_of = |key: &str| m.get_scalar(key).map(|s| s.as_str().to_string());
    if let Some(n) = str_of("name") {
        r.name = n;
    }
    let config = str_of("config").map_or(default_config.to_path_buf(), |c| dir.join(c));

    let loaded = match (str_of("rules"), str_of("rules_text")) {
        (Some(rules), None) => load(&LoadOptions {
            builtin_config: false,
            config_only: false,
            config: config.clone(),
            rules: Some(dir.join(rules)),
            plugins: plugins.map(Path::to_path_buf),
            ..LoadOptions::default()
        }),
        (None, Some(inline)) => {
            let config_text = std::fs::read_to_string(&config)
                .map_err(|e| format!("{}: {e}", config.display()))?;
            let base = config.parent().unwrap_or(Path::new("."));
            // The config's plugins folder unless `--plugins` names one.
            let mut scratch = crate::base::diag::SourceMap::default();
            let id = scratch.add(&config, config_text.clone());
            let config_plugins = crate::config::load(id, &config_text, base)
                .ok()
                .map(|s| s.paths.plugins);
            let plugins = plugins.map(Path::to_path_buf).or(config_plugins);
            load_texts_in(
                &config_text,
                base,
                &[("case.rules", &inline)],
                plugins.as_deref(),
            )
        }
        _ => {
            return Err(format!(
                "{}: give `rules` (a file or folder) or `rules_text`, not both or neither",
                path.display()
            ));
        }
    };
    if loaded.errors() > 0 {
        let msgs = loaded.error_lines();
        return Err(format!(
            "{}: the rules do not load:\n  {}",
            path.display(),
            msgs.join("\n  ")
        ));
    }
    let plugins = loaded.plugins;
    let (Some(schema), Some(rules)) = (loaded.schema, loaded.rules) else {
        return Err("no rules".into());
    };
    let schema = Arc::new(schema);

    let mut events: Vec<Event> = Vec::new();
    if let Some(list) = m.get_node("events") {
        let Node::Sequence(seq) = list else {
            return Err(at(
                path,
                &text,
                pos.span(list.span()).start,
                "`events` is a list of events",
            ));
        };
        for item in seq.iter() {
            let ev = event_from_json(&schema, yaml::to_json(item))
                .map_err(|e| at(path, &text, pos.span(item.span()).start, &e.to_string()))?;
            events.push(ev);
        }
    }
    let until = match m.get_scalar("until") {
        Some(u) => Some(crate::base::time::parse_date(u.as_str()).ok_or_else(|| {
            at(
                path,
                &text,
                pos.span(u.span()).start,
                "`until` is a date (YYYY-MM-DD)",
            )
        })?),
        None => None,
    };

    let store = SledStore::temporary().map_err(|e| e.to_string())?;
    let start_day = events
        .iter()
        .map(|e| clock::local_day(&schema, e.at))
        .min()
        .or(until)
        .unwrap_or(0);
    if let Some(members) = m.get_node("members") {
        seed_members(&store, &schema, members, start_day)
            .map_err(|e| at(path, &text, pos.span(members.span()).start, &e))?;
    }
    let mut engine = Engine::new(schema, Arc::new(rules), store)
        .map_err(|e| e.to_string())?
        .with_plugins(plugins)
        .cache_members();
    let replayed = crate::sim::replay::replay(&mut engine, events, until, &mut |_| {})
        .map_err(|e| e.to_string())?;
    if let Some(p) = engine.plugins() {
        r.plugin_failures = p.failures();
        r.last_plugin_failure = p.recent_failures().last().map(|f| f.to_string());
    }
    if let Some(r) = replayed.rejected.first() {
        return Err(format!("{}: {r}", path.display()));
    }

    let expect: Vec<serde_json::Map<String, serde_json::Value>> = match m.get_node("expect") {
        None => Vec::new(),
        Some(Node::Sequence(seq)) => seq
            .iter()
            .map(|n| match yaml::to_json(n) {
                serde_json::Value::Object(o) => {
                    expected_keys(n, &o, &pos).map_err(|(k, why)| at(path, &text, k, &why))?;
                    Ok(o)
                }
                _ => Err(at(
                    path,
                    &text,
                    pos.span(n.span()).start,
                    "each expected effect is a mapping like `{ rule: x, action: coupon }`",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(at(
                path,
                &text,
                pos.span(other.span()).start,
                "`expect` is a list of effects",
            ));
        }
    };
    Ok(compare(&expect, &replayed.effects))
}

/// An expected effect's keys are effect fields: a typo (`pionts`) would
/// otherwise only show as a mismatch. Errors carry the key's offset.
fn expected_keys(
    node: &Node,
    o: &serde_json::Map<String, serde_json::Value>,
    pos: &Positions<'_>,
) -> Result<(), (usize, String)> {
    use crate::model::effect::FIELDS;
    let Some(bad) = o.keys().find(|k| !FIELDS.contains(&k.as_str())) else {
        return Ok(());
    };
    let span = match node {
        Node::Mapping(m) => m
            .iter()
            .find(|(k, _)| k.as_str() == bad)
            .map_or(node.span(), |(k, _)| k.span()),
        _ => node.span(),
    };
    let hint = crate::base::diag::did_you_mean(bad, FIELDS.iter().copied())
        .unwrap_or_else(|| format!("an effect's fields are: {}", FIELDS.join(", ")));
    Err((
        pos.span(span).start,
        format!("an expected effect has no field `{bad}`; {hint}"),
    ))
}

fn at(path: &Path, text: &str, offset: usize, msg: &str) -> String {
    let (l, c) = crate::base::diag::line_col(text, offset);
    format!("{}:{l}:{c}: {msg}", path.display())
}

/// Writes the starting members of a case.
fn seed_members(
    store: &SledStore,
    schema: &crate::config::Schema,
    node: &Node,
    day: i32,
) -> Result<(), String> {
    let serde_json::Value::Object(members) = yaml::to_json(node) else {
        return Err("`members` maps member ids to their state".into());
    };
    let mut w = WriteSet::default();
    for (id, state) in members {
        let mut rec = MemberRecord {
            joined: day,
            ..MemberRecord::default()
        };
        let serde_json::Value::Object(fields) = state else {
            return Err(format!(
                "member `{id}`: give a mapping like `{{ tier: silver }}`"
            ));
        };
        for (k, v) in fields {
            let text = match &v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            match k.as_str() {
                "tier" => {
                    rec.tier = schema
                        .tier(&text)
                        .ok_or_else(|| format!("member `{id}`: unknown tier `{text}`"))?
                }
                "points" => {
                    rec.points = text
                        .parse()
                        .map_err(|_| format!("member `{id}`: points are a whole number"))?
                }
                "tags" => {
                    rec.tags = v
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|t| t.as_str().unwrap_or_default().into())
                                .collect()
                        })
                        .unwrap_or_default()
                }
                "birthday" => {
                    rec.birthday = Some(
                        crate::base::time::parse_date(&text)
                            .ok_or_else(|| format!("member `{id}`: birthday is a date"))?,
                    )
                }
                name => match schema.attribute(name) {
                    Some((_, a)) => {
                        let v = crate::io::event::field_value(a.ty, &v)
                            .map_err(|e| format!("member `{id}`, `{name}`: {e}"))?;
                        rec.set_attribute(name, Stored::from(&v));
                    }
                    None => {
                        return Err(format!(
                            "member `{id}`: `{name}` is not tier, points, tags, birthday or a declared attribute"
                        ));
                    }
                },
            }
        }
        w.members.push((id, rec.encode()));
    }
    store.commit(w).map_err(|e| e.to_string())
}

/// Keys shown for effects, in this order; other keys follow sorted.
const ORDER: &[&str] = &[
    "rule",
    "member",
    "trigger",
    "action",
    "coupon",
    "points",
    "tier",
    "tag",
    "attribute",
    "value",
    "message",
    "channel",
    "plugin",
    "reward",
    "amount",
    "balance",
    "variant",
    "status",
    "reason",
];

fn text_of(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn line(obj: &serde_json::Map<String, serde_json::Value>, keys: &[String]) -> String {
    let parts: Vec<String> = keys
        .iter()
        .filter_map(|k| obj.get(k).map(|v| format!("{k}: {}", text_of(v))))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

fn ordered(keys: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut ks: Vec<String> = keys.into_iter().collect();
    ks.sort_by_key(|k| {
        (
            ORDER.iter().position(|o| o == k).unwrap_or(ORDER.len()),
            k.clone(),
        )
    });
    ks.dedup();
    ks
}

/// Matches expected against actual effects in order (a longest common
/// subsequence), comparing only the keys each expected effect gives.
fn compare(
    expect: &[serde_json::Map<String, serde_json::Value>],
    actual: &[Effect],
) -> CaseOutcome {
    let actual: Vec<serde_json::Map<String, serde_json::Value>> = actual
        .iter()
        .map(|e| match serde_json::to_value(e) {
            Ok(serde_json::Value::Object(o)) => o,
            _ => serde_json::Map::new(),
        })
        .collect();
    let matches = |e: &serde_json::Map<String, serde_json::Value>,
                   a: &serde_json::Map<String, serde_json::Value>| {
        e.iter()
            .all(|(k, v)| a.get(k).is_some_and(|x| text_of(x) == text_of(v)))
    };
    let (n, m) = (expect.len(), actual.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if matches(&expect[i], &actual[j]) {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    if lcs[0][0] == n && n == m {
        return CaseOutcome::Pass { effects: m };
    }
    let mut shown: Vec<String> = expect.iter().flat_map(|e| e.keys().cloned()).collect();
    shown.extend(["rule", "member", "trigger", "action"].map(String::from));
    let default_keys = ordered(shown);
    let mut diff = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && matches(&expect[i], &actual[j]) {
            diff.push((' ', line(&actual[j], &ordered(expect[i].keys().cloned()))));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            let mut keys = default_keys.clone();
            // The detail keys an unexpected effect has, after the usual four.
            for k in &ORDER[4..] {
                if actual[j].contains_key(*k) {
                    keys.push(k.to_string());
                }
            }
            diff.push(('+', line(&actual[j], &ordered(keys))));
            j += 1;
        } else {
            diff.push(('-', line(&expect[i], &ordered(expect[i].keys().cloned()))));
            i += 1;
        }
    }
    CaseOutcome::Fail { diff }
}

//! The rhai plugin host. Each `plugins/NAME.rhai` is compiled once, by
//! [`sandbox`]'s engine, to an AST; its functions are called per use:
//! as condition functions (`crm.is_vip(member)`), as custom actions
//! (`call crm.recommend(member, 10)`, returning effect intents), and as
//! sink formats (`deliver(effect)`, returning a delivery request the host
//! sends). Scripts get copies of values and do no I/O; what they return is
//! checked before the engine uses it. A failing call (an error, a limit, a
//! deadline, a wrong type, a panic in the host) is reported, counted, and
//! yields no value; it never stops the engine.

pub mod reads;

use crate::base::time::day_string;
use crate::config::PluginLimits;
use crate::lang::check::Layout;
use crate::lang::program::{Env, Expect, PluginHost, Value};
use crate::model::Effect;
use rhai::{AST, Dynamic, Engine, Map, Scope};
use std::cell::RefCell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

thread_local! {
    /// The call running on this thread: plugin name and start, for the
    /// deadline check and for naming the plugin in its log lines.
    static CURRENT: RefCell<Option<(String, Instant)>> = const { RefCell::new(None) };
}

/// Builds the sandboxed rhai engine: every limit set, `eval` and `import`
/// gone, no module loading, `print`/`debug` to the log, and a wall-clock
/// deadline checked as the script runs.
pub fn sandbox(limits: &PluginLimits) -> Engine {
    let mut e = Engine::new();
    e.set_max_operations(limits.max_operations);
    e.set_max_call_levels(limits.max_call_depth);
    e.set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth);
    e.set_max_string_size(limits.max_string_bytes);
    e.set_max_array_size(limits.max_array);
    e.set_max_map_size(limits.max_map);
    e.set_max_variables(limits.max_variables);
    e.set_max_functions(limits.max_functions);
    e.set_max_modules(0);
    e.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    e.disable_symbol("eval");
    e.disable_symbol("import");
    e.disable_symbol("export");
    let deadline = limits.deadline;
    e.on_progress(move |ops| {
        // Reading the clock on every operation would cost more than the script.
        if ops % 256 != 0 {
            return None;
        }
        CURRENT.with(|c| match &*c.borrow() {
            Some((_, start)) if start.elapsed() > deadline => Some(Dynamic::from("deadline")),
            _ => None,
        })
    });
    e.on_print(|s| {
        CURRENT.with(|c| {
            tracing::info!(
                plugin = c.borrow().as_ref().map_or("?", |x| x.0.as_str()),
                "{s}"
            )
        })
    });
    e.on_debug(|s, _, pos| CURRENT.with(|c| tracing::debug!(plugin = c.borrow().as_ref().map_or("?", |x| x.0.as_str()), %pos, "{s}")));
    e
}

/// Why a plugin call gave nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("plugin `{plugin}`, function `{function}`{}: {message}", rule.as_ref().map(|r| format!(", rule \"{r}\"")).unwrap_or_default())]
pub struct PluginError {
    pub plugin: String,
    pub function: String,
    pub rule: Option<String>,
    pub message: String,
}

pub struct Plugin {
    pub name: String,
    pub ast: AST,
    /// Public functions and their arities.
    pub functions: Vec<(String, usize)>,
    /// Per public function (as `functions` lists them), what it reads of
    /// each parameter given `member`.
    reads: Vec<Vec<reads::Reads>>,
}

/// Compiles one plugin with the sandbox's engine.
pub fn compile(engine: &Engine, name: &str, text: &str) -> Result<Plugin, rhai::ParseError> {
    let ast = engine.compile(text)?;
    let (functions, reads) = ast
        .iter_functions()
        .filter(|f| f.access != rhai::FnAccess::Private)
        .map(|f| {
            let arity = f.params.len();
            let reads = reads::of_function(&ast, f.name, arity, &f.params);
            ((f.name.to_string(), arity), reads)
        })
        .unzip();
    Ok(Plugin {
        name: name.to_string(),
        ast,
        functions,
        reads,
    })
}

/// A thing a custom action asks the engine to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Intent {
    /// A coupon by template name or `30-6`, on an optional channel.
    Coupon {
        coupon: String,
        channel: Option<String>,
    },
    Points(i64),
    Tag(String),
    Untag(String),
    Message {
        message: String,
        channel: String,
    },
    /// Anything else, passed to the sinks as is.
    Payload(serde_json::Value),
}

/// A delivery request a sink plugin made from an effect.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryRequest {
    pub method: String,
    pub url: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// The loaded plugins, the sandbox they run in, and their failures.
pub struct Plugins {
    engine: Engine,
    pub plugins: Vec<Plugin>,
    pub limits: PluginLimits,
    layout: Layout,
    tiers: Vec<String>,
    failures: AtomicU64,
    recent: Mutex<Vec<PluginError>>,
}

/// Failures kept for status pages.
const RECENT_FAILURES: usize = 50;

impl Plugins {
    pub fn new(
        engine: Engine,
        plugins: Vec<Plugin>,
        limits: PluginLimits,
        layout: Layout,
        tiers: Vec<String>,
    ) -> Plugins {
        Plugins {
            engine,
            plugins,
            limits,
            layout,
            tiers,
            failures: AtomicU64::new(0),
            recent: Mutex::new(Vec::new()),
        }
    }

    /// Failed calls so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The most recent failures, oldest first.
    pub fn recent_failures(&self) -> Vec<PluginError> {
        self.recent.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.plugins.iter().position(|p| p.name == name)
    }

    /// Records a failure found by the engine (an intent it cannot carry out).
    pub fn report(&self, e: PluginError) -> PluginError {
        self.fail(e)
    }

    fn fail(&self, e: PluginError) -> PluginError {
        self.failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(plugin = %e.plugin, function = %e.function, rule = e.rule.as_deref().unwrap_or(""), error = %e.message, "Plugin call failed.");
        if let Ok(mut r) = self.recent.lock() {
            if r.len() >= RECENT_FAILURES {
                r.remove(0);
            }
            r.push(e.clone());
        }
        e
    }

    /// Runs `function` of plugin `index` with `args`, within the limits.
    pub fn call_raw(
        &self,
        index: usize,
        function: &str,
        args: Vec<Dynamic>,
        rule: Option<&str>,
    ) -> Result<Dynamic, PluginError> {
        let plugin = self.plugins.get(index).ok_or_else(|| PluginError {
            plugin: format!("#{index}"),
            function: function.to_string(),
            rule: rule.map(str::to_string),
            message: "no such plugin".into(),
        })?;
        let err = |message: String| PluginError {
            plugin: plugin.name.clone(),
            function: function.to_string(),
            rule: rule.map(str::to_string),
            message,
        };
        CURRENT.with(|c| *c.borrow_mut() = Some((plugin.name.clone(), Instant::now())));
        // A panic in a host function must not take the engine down.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.engine
                .call_fn::<Dynamic>(&mut Scope::new(), &plugin.ast, function, args)
        }));
        CURRENT.with(|c| *c.borrow_mut() = None);
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.fail(err(describe(&e, &self.limits)))),
            Err(_) => Err(self.fail(err("the call panicked".into()))),
        }
    }

    /// Runs a custom action and checks the intents it returns.
    pub fn intents(
        &self,
        index: usize,
        function: &str,
        args: &[Value],
        env: &Env<'_>,
        rule: &str,
    ) -> Result<Vec<Intent>, PluginError> {
        let dyn_args = self.arguments(index, function, args, env);
        let out = self.call_raw(index, function, dyn_args, Some(rule))?;
        let err = |message: String| {
            self.fail(PluginError {
                plugin: self.plugins[index].name.clone(),
                function: function.to_string(),
                rule: Some(rule.to_string()),
                message,
            })
        };
        let items: Vec<Dynamic> = if out.is_unit() {
            Vec::new()
        } else if out.is_array() {
            out.into_array().map_err(|t| err(format!("returned {t}")))?
        } else {
            vec![out]
        };
        if items.len() > self.limits.max_intents {
            return Err(err(format!(
                "returned {} intents; the limit is {}",
                items.len(),
                self.limits.max_intents
            )));
        }
        items.into_iter().map(|i| intent(i).map_err(&err)).collect()
    }

    /// Asks a sink plugin's `deliver(effect)` for the request to send.
    pub fn delivery_request(
        &self,
        plugin: &str,
        effect: &Effect,
    ) -> Result<DeliveryRequest, PluginError> {
        let err = |message: String| PluginError {
            plugin: plugin.to_string(),
            function: "deliver".into(),
            rule: None,
            message,
        };
        let index = self
            .index(plugin)
            .ok_or_else(|| err("no such plugin".into()))?;
        let json = serde_json::to_value(effect).map_err(|e| err(e.to_string()))?;
        let arg = json_to_dynamic(&json);
        let out = self.call_raw(index, "deliver", vec![arg], None)?;
        let map = out.try_cast::<Map>().ok_or_else(|| {
            self.fail(err(
                "`deliver` must return a map like #{body: \"...\"}".into()
            ))
        })?;
        let text = |k: &str| map.get(k).map(|v| v.to_string());
        let headers = match map.get("headers").and_then(|h| h.clone().try_cast::<Map>()) {
            Some(h) => h
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            None => Vec::new(),
        };
        let body =
            text("body").ok_or_else(|| self.fail(err("the request has no `body`".into())))?;
        Ok(DeliveryRequest {
            method: text("method").unwrap_or_else(|| "POST".into()),
            url: text("url"),
            headers,
            body,
        })
    }

    /// A call's arguments as scripts see them; `member` with only the
    /// properties the function reads of it, when that is known.
    fn arguments(
        &self,
        index: usize,
        function: &str,
        args: &[Value],
        env: &Env<'_>,
    ) -> Vec<Dynamic> {
        let reads = self.plugins.get(index).and_then(|p| {
            let at = p
                .functions
                .iter()
                .position(|(f, n)| f == function && *n == args.len())?;
            p.reads.get(at)
        });
        args.iter()
            .enumerate()
            .map(|(i, a)| match a {
                Value::Member => {
                    let only = reads.and_then(|r| r.get(i)).and_then(|r| r.as_deref());
                    self.member_map(env, only).into()
                }
                a => self.to_dynamic(a, env),
            })
            .collect()
    }

    /// A value as scripts see it: copies, dates as text, tiers by name.
    fn to_dynamic(&self, v: &Value, env: &Env<'_>) -> Dynamic {
        match v {
            Value::Null => Dynamic::UNIT,
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::Dec(d) => Dynamic::from_decimal(*d),
            Value::Str(s) => s.to_string().into(),
            Value::Date(d) => day_string(*d).into(),
            Value::Duration(s) => (*s).into(),
            Value::Tier(t) => self
                .tiers
                .get(*t as usize)
                .cloned()
                .unwrap_or_default()
                .into(),
            Value::Member => self.member_map(env, None).into(),
        }
    }

    /// The member, read-only: every field, attribute and aggregate the rule
    /// set knows by name, all tags as an array, and the event's fields; or
    /// of those, only the properties `only` names (what the function reads:
    /// [`reads`]).
    fn member_map(&self, env: &Env<'_>, only: Option<&[String]>) -> Map {
        let wanted = |name: &str| only.is_none_or(|o| o.iter().any(|n| n == name));
        let mut m = Map::new();
        for (i, (name, _)) in self.layout.fields.iter().enumerate() {
            if name == "tags" || !wanted(name) {
                continue;
            }
            let v = env.member.get(i).cloned().unwrap_or(Value::Null);
            m.insert(name.as_str().into(), self.to_dynamic(&v, env));
        }
        if wanted("tags") {
            let tags: rhai::Array = env
                .tag_names
                .iter()
                .map(|t| Dynamic::from(t.to_string()))
                .collect();
            m.insert("tags".into(), tags.into());
        }
        if wanted("event") {
            let mut event = Map::new();
            for (i, name) in self.layout.event_fields.iter().enumerate() {
                if let Some(v) = env.event.get(i) {
                    event.insert(name.as_str().into(), self.to_dynamic(v, env));
                }
            }
            m.insert("event".into(), event.into());
        }
        m
    }

    /// Turns a script's result into the value a rule expects.
    fn result_value(v: Dynamic, expect: Expect) -> Result<Value, String> {
        let found = v.type_name().to_string();
        let wrong = || format!("returned {found} where the rule expects {}", expect.name());
        Ok(match expect {
            Expect::Bool => Value::Bool(v.as_bool().map_err(|_| wrong())?),
            Expect::Int => match v.as_int() {
                Ok(i) => Value::Int(i),
                Err(_) => return Err(wrong()),
            },
            Expect::Dec => match (v.as_int(), v.as_decimal()) {
                (Ok(i), _) => Value::Dec(i.into()),
                (_, Ok(d)) => Value::Dec(d),
                _ => match v.as_float() {
                    Ok(f) => Value::Dec(rust_decimal::Decimal::try_from(f).map_err(|_| wrong())?),
                    Err(_) => return Err(wrong()),
                },
            },
            Expect::Str => Value::Str(
                v.into_immutable_string()
                    .map_err(|_| wrong())?
                    .as_str()
                    .into(),
            ),
            Expect::Any => {
                if v.is_unit() {
                    Value::Null
                } else if let Ok(b) = v.as_bool() {
                    Value::Bool(b)
                } else if let Ok(i) = v.as_int() {
                    Value::Int(i)
                } else if let Ok(d) = v.as_decimal() {
                    Value::Dec(d)
                } else {
                    Value::Str(v.to_string().into())
                }
            }
        })
    }
}

impl PluginHost for Plugins {
    fn call(
        &self,
        plugin: u16,
        function: &str,
        args: &[Value],
        env: &Env<'_>,
        expect: Expect,
    ) -> Value {
        let dyn_args = self.arguments(plugin as usize, function, args, env);
        let rule = (!env.rule.is_empty()).then_some(env.rule);
        let Ok(out) = self.call_raw(plugin as usize, function, dyn_args, rule) else {
            return Value::Null;
        };
        match Self::result_value(out, expect) {
            Ok(v) => v,
            Err(message) => {
                let name = self
                    .plugins
                    .get(plugin as usize)
                    .map_or(String::new(), |p| p.name.clone());
                self.fail(PluginError {
                    plugin: name,
                    function: function.to_string(),
                    rule: rule.map(str::to_string),
                    message,
                });
                Value::Null
            }
        }
    }
}

/// A readable reason for a failed call, naming the limit that stopped it.
fn describe(e: &rhai::EvalAltResult, limits: &PluginLimits) -> String {
    use rhai::EvalAltResult as E;
    match e {
        E::ErrorTerminated(..) => format!(
            "stopped at its deadline of {} ms",
            limits.deadline.as_millis()
        ),
        E::ErrorTooManyOperations(..) => format!(
            "stopped after {} operations (the limit)",
            limits.max_operations
        ),
        E::ErrorStackOverflow(..) => format!(
            "calls nest deeper than {} (the limit)",
            limits.max_call_depth
        ),
        E::ErrorDataTooLarge(what, _) => format!("{what} grew past its limit"),
        E::ErrorFunctionNotFound(f, _) => format!("no function {f}"),
        E::ErrorRuntime(v, _) => format!("threw: {v}"),
        other => other.to_string(),
    }
}

/// The most points one intent may award or take: a plugin that returns
/// more has a bug (a unit mix-up, an unchecked sum), and a balance it
/// pushed to the integer's end could never be spent down again.
pub const MAX_INTENT_POINTS: i64 = 1_000_000_000;

/// What an intent map may hold: its kind, and the keys that kind takes
/// besides (a coupon's or message's `channel`).
const INTENT_KINDS: [(&str, &[&str]); 6] = [
    ("coupon", &["channel"]),
    ("points", &[]),
    ("tag", &[]),
    ("untag", &[]),
    ("message", &["channel"]),
    ("payload", &[]),
];

fn intent(item: Dynamic) -> Result<Intent, String> {
    let Some(map) = item.clone().try_cast::<Map>() else {
        return Err(format!(
            "an intent is a map like #{{coupon: \"30-6\"}}, not {}",
            item.type_name()
        ));
    };
    let keys: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
    let kinds: Vec<&str> = INTENT_KINDS
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| map.contains_key(*k))
        .collect();
    let [kind] = kinds[..] else {
        return Err(format!(
            "an intent has one of coupon, points, tag, untag, message, payload; this one has {keys:?} (return one map per intent: [#{{points: 3}}, #{{tag: \"x\"}}])"
        ));
    };
    let allowed = INTENT_KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(&[][..], |(_, also)| *also);
    if let Some(extra) = keys.iter().find(|k| **k != kind && !allowed.contains(k)) {
        return Err(format!("a {kind} intent does not take `{extra}`"));
    }
    let text = |k: &str| -> Result<Option<String>, String> {
        match map.get(k) {
            None => Ok(None),
            Some(v) if v.is_string() => Ok(Some(v.to_string())),
            Some(v) => Err(format!("`{k}` must be a string, not {}", v.type_name())),
        }
    };
    let value = map.get(kind).cloned().unwrap_or_default();
    match kind {
        "coupon" => Ok(Intent::Coupon {
            coupon: text("coupon")?.unwrap_or_default(),
            channel: text("channel")?,
        }),
        "points" => match value.as_int() {
            Ok(n) if n.abs_diff(0) <= MAX_INTENT_POINTS.unsigned_abs() => Ok(Intent::Points(n)),
            Ok(n) => Err(format!(
                "`points` is {n}; an intent awards or takes at most {MAX_INTENT_POINTS}"
            )),
            Err(_) => Err("`points` must be a whole number".to_string()),
        },
        "tag" => Ok(Intent::Tag(text("tag")?.unwrap_or_default())),
        "untag" => Ok(Intent::Untag(text("untag")?.unwrap_or_default())),
        "message" => Ok(Intent::Message {
            message: text("message")?.unwrap_or_default(),
            channel: text("channel")?.ok_or("a message intent needs a `channel`")?,
        }),
        _ => Ok(Intent::Payload(dynamic_to_json(&value))),
    }
}

/// JSON as rhai values: whole numbers as integers, other numbers as exact
/// decimals (never through floating point).
pub fn json_to_dynamic(v: &serde_json::Value) -> Dynamic {
    use serde_json::Value as J;
    match v {
        J::Null => Dynamic::UNIT,
        J::Bool(b) => (*b).into(),
        J::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n
                .to_string()
                .parse::<rust_decimal::Decimal>()
                .map_or_else(|_| n.to_string().into(), Dynamic::from_decimal),
        },
        J::String(s) => s.clone().into(),
        J::Array(a) => a
            .iter()
            .map(json_to_dynamic)
            .collect::<rhai::Array>()
            .into(),
        J::Object(o) => o
            .iter()
            .map(|(k, v)| (k.as_str().into(), json_to_dynamic(v)))
            .collect::<Map>()
            .into(),
    }
}

/// A script's value as JSON (decimals exact; other types by their text).
pub fn dynamic_to_json(v: &Dynamic) -> serde_json::Value {
    if v.is_unit() {
        serde_json::Value::Null
    } else if let Ok(b) = v.as_bool() {
        b.into()
    } else if let Ok(i) = v.as_int() {
        i.into()
    } else if let Ok(d) = v.as_decimal() {
        serde_json::Value::Number(crate::model::json_number(d))
    } else if let Ok(f) = v.as_float() {
        serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, serde_json::Value::Number)
    } else if let Some(a) = v.read_lock::<rhai::Array>() {
        a.iter().map(dynamic_to_json).collect()
    } else if let Some(m) = v.read_lock::<Map>() {
        m.iter()
            .map(|(k, v)| (k.to_string(), dynamic_to_json(v)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    } else {
        v.to_string().into()
    }
}

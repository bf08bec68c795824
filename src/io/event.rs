//! JSON events in: parsing, validating against the schema (every field
//! typed, ids checked, times bounded), and refusing repeated keys.

use crate::base::value::Value;
use crate::config::Schema;
use crate::model::event::{Event, EventError, MAX_AMOUNT, MAX_ID_BYTES, MAX_STRING_BYTES};
use crate::model::fields::FieldType;
use rust_decimal::Decimal;
use std::fmt;
use std::str::FromStr;

fn err(id: Option<&str>, path: &str, message: impl Into<String>) -> EventError {
    EventError {
        line: None,
        id: id.map(str::to_string),
        path: path.to_string(),
        message: message.into(),
    }
}

/// An identifier (event id, member id, `ids` value): 1 to
/// `MAX_ID_BYTES` bytes, no control characters (they would garble logs,
/// file sinks and URLs).
fn id_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_BYTES && !s.chars().any(char::is_control)
}

/// The event times accepted: 1970-01-01 up to 2100-01-01 (UTC). Anything
/// outside is a unit or default-value mistake (milliseconds read as
/// seconds, a `0001-01-01` placeholder) that would put a member's history
/// decades away from every rule's window.
const EARLIEST_AT: i64 = 0;
const LATEST_AT: i64 = 4_102_444_800;

/// How far past the receiving machine's clock an event's time may be.
/// Client clocks drift and time zones get mixed up by hours; more than a
/// day ahead is a mistyped date (`2062` for `2026`), and one such event
/// would move the dedup window's end years ahead and refuse every real
/// event after it.
pub const MAX_AHEAD_SECONDS: i64 = 86_400;

/// Refuses an event dated more than a day past `now` (the daemon's clock,
/// or the wall clock where `nudge ingest` runs). Not part of parsing: the
/// engine and replays take event times as they are.
pub fn check_not_ahead(e: &Event, now: jiff::Timestamp) -> Result<(), EventError> {
    if e.at.as_second() <= now.as_second().saturating_add(MAX_AHEAD_SECONDS) {
        return Ok(());
    }
    Err(err(
        Some(&e.id),
        "at",
        format!(
            "{} is more than a day past this machine's clock ({}): a mistyped date? It would move the dedup window past every later event",
            e.at,
            now.round(jiff::Unit::Second).unwrap_or(now)
        ),
    ))
}

/// Parses and validates one event from JSON text.
pub fn parse_event(schema: &Schema, text: &str) -> Result<Event, EventError> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| err(None, "", format!("not valid JSON: {e}")))?;
    if let Some((_, path)) = duplicate_key(text.as_bytes()) {
        return Err(err(
            None,
            &path,
            "this key appears twice; which value is meant?",
        ));
    }
    event_from_json(schema, v)
}

/// Validates a JSON value as an event of the schema.
// Long because each envelope field (`id`, `type`, `member`/`ids`, `at`, then the declared fields) is checked in turn with its own error.
pub fn event_from_json(schema: &Schema, v: serde_json::Value) -> Result<Event, EventError> {
    let body_hash = xxhash_rust::xxh3::xxh3_128(v.to_string().as_bytes());
    let serde_json::Value::Object(map) = v else {
        return Err(err(None, "", "an event is a JSON object"));
    };
    let id = match map.get("id") {
        Some(serde_json::Value::String(s)) if id_ok(s) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(serde_json::Value::String(_)) => {
            return Err(err(
                None,
                "id",
                format!("must be 1 to {MAX_ID_BYTES} bytes, without control characters"),
            ));
        }
        Some(_) => return Err(err(None, "id", "must be a string")),
        None => return Err(err(None, "id", "missing: every event has an `id`")),
    };
    if id.starts_with("relay:") {
        return Err(err(
            Some(&id),
            "id",
            "ids starting with `relay:` are reserved for the engine's internal events",
        ));
    }
    let idr = Some(id.as_str());
    let kind_name = match map.get("type") {
        Some(serde_json::Value::String(s)) => s.as_str(),
        Some(_) => return Err(err(idr, "type", "must be a string")),
        None => return Err(err(idr, "type", "missing: every event has a `type`")),
    };
    let Some((kind, et)) = schema.event(kind_name) else {
        let names: Vec<&str> = schema.events.iter().map(|e| e.name.as_str()).collect();
        let hint = crate::base::diag::did_you_mean(kind_name, names.iter().copied())
            .unwrap_or_else(|| format!("types are: {}", names.join(", ")));
        return Err(err(
            idr,
            "type",
            format!("unknown event type `{kind_name}`; {hint}"),
        ));
    };
    let mut ids = event_ids(schema, idr, map.get("ids"))?;
    let member = match map.get("member") {
        Some(serde_json::Value::String(s)) if id_ok(s) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(serde_json::Value::String(_)) => {
            return Err(err(
                idr,
                "member",
                format!("must be 1 to {MAX_ID_BYTES} bytes, without control characters"),
            ));
        }
        Some(_) => return Err(err(idr, "member", "must be a string")),
        None if !ids.is_empty() => String::new(),
        None => {
            return Err(err(
                idr,
                "member",
                "missing: every event names its `member` (or its identifiers in `ids`)",
            ));
        }
    };
    // `phone:138` names the member with that identifier, as lookups do: a
    // member id of that shape would otherwise shadow the identifier (a new
    // member `phone:138` beside the one the phone is linked to).
    let member = match member.split_once(':') {
        Some((kind, value)) if schema.id_kinds.iter().any(|k| k == kind) => {
            match ids.iter().find(|(k, _)| k == kind) {
                Some((_, v)) if v != value => {
                    return Err(err(
                        idr,
                        "member",
                        format!("names `{kind}:{value}` but `ids.{kind}` is `{v}`"),
                    ));
                }
                Some(_) => {}
                None => ids.push((kind.to_string(), value.to_string())),
            }
            String::new()
        }
        _ => member,
    };
    let at = match map.get("at") {
        Some(serde_json::Value::String(s)) => jiff::Timestamp::from_str(s).map_err(|e| {
            err(
                idr,
                "at",
                format!("`{s}` is not an RFC 3339 time ({e}); write e.g. 2026-01-01T12:00:00Z"),
            )
        })?,
        Some(_) => return Err(err(idr, "at", "must be an RFC 3339 time string")),
        None => return Err(err(idr, "at", "missing: every event has a time `at`")),
    };
    if !(EARLIEST_AT..LATEST_AT).contains(&at.as_second()) {
        return Err(err(
            idr,
            "at",
            format!("{at} is out of range: event times are from 1970 up to 2100"),
        ));
    }
    for key in map.keys() {
        if !matches!(key.as_str(), "id" | "type" | "member" | "ids" | "at")
            && et.field(key).is_none()
        {
            let hint =
                crate::base::diag::did_you_mean(key, et.fields.iter().map(|f| f.name.as_str()))
                    .unwrap_or_else(|| {
                        format!(
                            "`{}` declares: {}",
                            et.name,
                            et.fields
                                .iter()
                                .map(|f| f.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    });
            return Err(err(
                idr,
                key,
                format!("not a field of `{}`; {hint}", et.name),
            ));
        }
    }
    let mut fields = Vec::with_capacity(et.fields.len());
    for f in &et.fields {
        let v = match map.get(&f.name) {
            None | Some(serde_json::Value::Null) if f.optional => Value::Null,
            None => {
                return Err(err(
                    idr,
                    &f.name,
                    format!("missing: `{}` events need it", et.name),
                ));
            }
            Some(serde_json::Value::Null) => return Err(err(idr, &f.name, "must not be null")),
            Some(v) => field_value(f.ty, v).map_err(|m| err(idr, &f.name, m))?,
        };
        fields.push(v);
    }
    Ok(Event {
        id,
        kind,
        member,
        ids,
        at,
        fields,
        body_hash,
    })
}

/// `ids`: a map of identifier kind (declared in the config) to value.
fn event_ids(
    schema: &Schema,
    id: Option<&str>,
    v: Option<&serde_json::Value>,
) -> Result<Vec<(String, String)>, EventError> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let serde_json::Value::Object(map) = v else {
        return Err(err(
            id,
            "ids",
            "must be an object like {\"phone\": \"13800000000\"}",
        ));
    };
    for (kind, _) in map {
        if !schema.id_kinds.iter().any(|k| k == kind) {
            let hint =
                crate::base::diag::did_you_mean(kind, schema.id_kinds.iter().map(String::as_str))
                    .unwrap_or_else(|| match schema.id_kinds.is_empty() {
                        true => {
                            "declare identifier kinds in the config: `ids: [phone, card]`".into()
                        }
                        false => format!("kinds are: {}", schema.id_kinds.join(", ")),
                    });
            return Err(err(
                id,
                &format!("ids.{kind}"),
                format!("unknown identifier kind; {hint}"),
            ));
        }
    }
    let mut out = Vec::new();
    for kind in &schema.id_kinds {
        let value = match map.get(kind) {
            None | Some(serde_json::Value::Null) => continue,
            Some(serde_json::Value::String(s)) if id_ok(s) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(_) => {
                return Err(err(
                    id,
                    &format!("ids.{kind}"),
                    format!(
                        "must be a string of 1 to {MAX_ID_BYTES} bytes, without control characters"
                    ),
                ));
            }
        };
        out.push((kind.clone(), value));
    }
    Ok(out)
}

/// A JSON value as a value of a declared type, or why it is not one.
pub fn field_value(ty: FieldType, v: &serde_json::Value) -> Result<Value, String> {
    use serde_json::Value as J;
    let found = || match v {
        J::Null => "null".to_string(),
        J::Bool(b) => b.to_string(),
        J::Number(n) => n.to_string(),
        J::String(s) => format!("\"{}\"", s.chars().take(40).collect::<String>()),
        J::Array(_) => "a list".to_string(),
        J::Object(_) => "an object".to_string(),
    };
    match (ty, v) {
        (FieldType::Money | FieldType::Decimal, J::Number(n)) => {
            let d = Decimal::from_str(&n.to_string())
                .or_else(|_| Decimal::from_scientific(&n.to_string()))
                .map_err(|_| format!("{n} is out of range"))?;
            if ty == FieldType::Money && d.is_sign_negative() {
                return Err(format!("money cannot be negative, found {n}"));
            }
            if d.abs() > MAX_AMOUNT {
                return Err(format!(
                    "{n} is out of range: amounts are at most 1000000000000 (10^12)"
                ));
            }
            Ok(Value::Dec(d))
        }
        (FieldType::Int, J::Number(n)) => n
            .as_i64()
            .map(Value::Int)
            .ok_or_else(|| format!("expected a whole number, found {n}")),
        (FieldType::String, J::String(s)) if s.len() <= MAX_STRING_BYTES => {
            Ok(Value::Str(s.as_str().into()))
        }
        (FieldType::String, J::String(_)) => Err(format!("longer than {MAX_STRING_BYTES} bytes")),
        (FieldType::Bool, J::Bool(b)) => Ok(Value::Bool(*b)),
        (FieldType::Date, J::String(s)) => crate::base::time::parse_date(s)
            .map(Value::Date)
            .ok_or_else(|| format!("`{s}` is not a date (YYYY-MM-DD)")),
        (FieldType::Duration, J::String(s)) => crate::base::time::parse_duration(s)
            .map(Value::Duration)
            .ok_or_else(|| format!("`{s}` is not a duration like `30d`")),
        (t, _) => Err(format!("expected {}, found {}", type_name(t), found())),
    }
}

fn type_name(t: FieldType) -> &'static str {
    match t {
        FieldType::Int => "a whole number",
        FieldType::Decimal => "a number",
        FieldType::Money => "money (a number)",
        FieldType::String => "a string",
        FieldType::Bool => "true or false",
        FieldType::Date => "a date string (YYYY-MM-DD)",
        FieldType::Duration => "a duration string like \"30d\"",
    }
}

/// The first key that appears twice in one JSON object of `text`: the
/// index of the event (when `text` is an array) and the key's path.
/// serde_json keeps the last value of a repeated key, so
/// `{"amount":10,"amount":1000}` would be taken as 1000 without a word;
/// input with one is refused instead. `None` also for text that is not
/// JSON (the parser reports that).
pub fn duplicate_key(text: &[u8]) -> Option<(Option<usize>, String)> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(text);
    let e = DupCheck {
        path: String::new(),
        top: true,
    }
    .deserialize(&mut de)
    .err()?;
    let found = e.to_string();
    let rest = found.strip_prefix(DUP)?;
    let rest = rest.split(" at line").next().unwrap_or(rest);
    Some(match rest.split_once('\u{0}') {
        Some((i, path)) => (i.parse().ok(), path.to_string()),
        None => (None, rest.to_string()),
    })
}

const DUP: &str = "duplicate key: ";

/// Walks a JSON value, failing at the first repeated key.
struct DupCheck {
    path: String,
    /// The top level: an array's items are events, named by index.
    top: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for DupCheck {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for DupCheck {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        loop {
            let path = if self.top {
                format!("{i}\u{0}")
            } else {
                format!("{}[{i}]", self.path)
            };
            if seq
                .next_element_seed(DupCheck { path, top: false })?
                .is_none()
            {
                return Ok(());
            }
            i += 1;
        }
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut keys = std::collections::HashSet::new();
        while let Some(k) = map.next_key::<String>()? {
            let path = match self.path.as_str() {
                "" => k.clone(),
                p if p.ends_with('\u{0}') => format!("{p}{k}"),
                p => format!("{p}.{k}"),
            };
            if !keys.insert(k) {
                return Err(serde::de::Error::custom(format!("{DUP}{path}")));
            }
            map.next_value_seed(DupCheck { path, top: false })?;
        }
        Ok(())
    }
}

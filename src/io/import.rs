//! `nudge import`: purchase exports (CSV, or whitespace-separated columns
//! as POS systems and data sets write them) into NDJSON events, through a
//! small mapping file that says which column is what:
//!
//! ```yaml
//! format: whitespace        # or csv (then `delimiter`, default ",", and `header`)
//! type: purchase            # the event type of every row
//! id: "cdnow-{line}"        # a column, or a template ({line}: the 1-based line number)
//! member: 2                 # columns: 1-based numbers, or header names with `header: true`
//! at: 3
//! at_format: "%Y%m%d"       # strftime; default RFC 3339
//! time: "12:00"             # for dates without a time: this local time (config time zone)
//! fields: { amount: 5 }     # event fields by column
//! ```
//!
//! Every produced event is validated against the config like any event, so
//! a bad row is reported with its line and field and left out. Owns only
//! the conversion; events are not applied here.

use crate::base::yaml::{self, Node, Positions};
use crate::config::Schema;
use crate::io::event::event_from_json;
use crate::model::EventError;
use crate::model::fields::FieldType;
use std::io::{BufRead, Write};

/// A mapping file that cannot be used, with its place.
#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}:{col}: {message}")]
pub struct MappingError {
    pub path: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Mapping(#[from] MappingError),
    #[error("cannot read or write: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone, Debug, PartialEq)]
enum Column {
    /// 0-based.
    Index(usize),
    Name(String),
}

#[derive(Clone, Debug)]
enum IdSpec {
    Column(Column),
    /// `{line}` is replaced by the line number.
    Template(String),
}

/// A validated mapping.
#[derive(Clone, Debug)]
pub struct Mapping {
    delimiter: Option<char>,
    header: bool,
    event_type: String,
    id: IdSpec,
    member: Column,
    at: Column,
    at_format: Option<String>,
    time: jiff::civil::Time,
    fields: Vec<(String, Column)>,
}

const KEYS: &[&str] = &[
    "format",
    "delimiter",
    "header",
    "type",
    "id",
    "member",
    "at",
    "at_format",
    "time",
    "fields",
];

/// Reads a mapping file's text; `path` names it in errors.
// Long because each key of the mapping file is checked in turn with its own error.
pub fn parse_mapping(path: &str, text: &str, schema: &Schema) -> Result<Mapping, MappingError> {
    let pos = Positions::new(text);
    let fail = |offset: usize, message: String| {
        let (line, col) = crate::base::diag::line_col(text, offset);
        MappingError {
            path: path.to_string(),
            line,
            col,
            message,
        }
    };
    let node = yaml::parse(text, yaml::Top::Mapping).map_err(|e| fail(e.offset, e.message))?;
    let Node::Mapping(m) = &node else {
        return Err(fail(0, "a mapping file is a mapping of keys".into()));
    };
    for (k, _) in m.iter() {
        if !KEYS.contains(&k.as_str()) {
            let hint = crate::base::diag::did_you_mean(k.as_str(), KEYS.iter().copied())
                .unwrap_or_else(|| format!("keys are: {}", KEYS.join(", ")));
            return Err(fail(
                pos.span(k.span()).start,
                format!("unknown key `{}`; {hint}", k.as_str()),
            ));
        }
    }
    let start = |key: &str| m.get_node(key).map_or(0, |n| pos.span(n.span()).start);
    let scalar = |key: &str| m.get_scalar(key).map(|s| s.as_str().to_string());
    let required = |key: &str| {
        scalar(key).ok_or_else(|| fail(0, format!("`{key}` is missing: which column holds it?")))
    };
    let header = match scalar("header").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(fail(
                start("header"),
                format!("`header` is true or false, not `{other}`"),
            ));
        }
    };
    let delimiter = match scalar("format").as_deref() {
        None | Some("csv") => {
            let d = scalar("delimiter").unwrap_or_else(|| ",".into());
            let mut chars = d.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Some(c),
                _ => {
                    return Err(fail(
                        start("delimiter"),
                        "`delimiter` is one character".into(),
                    ));
                }
            }
        }
        Some("whitespace") => None,
        Some(other) => {
            return Err(fail(
                start("format"),
                format!("unknown format `{other}`; formats are: csv, whitespace"),
            ));
        }
    };
    let column = |key: &str, text: &str| -> Result<Column, MappingError> {
        match text.parse::<usize>() {
            Ok(0) => Err(fail(start(key), "columns are numbered from 1".into())),
            Ok(n) => Ok(Column::Index(n - 1)),
            Err(_) if header => Ok(Column::Name(text.to_string())),
            Err(_) => Err(fail(
                start(key),
                format!("`{text}` is not a column number; names need `header: true`"),
            )),
        }
    };
    let event_type = required("type")?;
    let Some((_, et)) = schema.event(&event_type) else {
        return Err(fail(
            start("type"),
            format!("unknown event type `{event_type}` (not in the config)"),
        ));
    };
    let id_text = required("id")?;
    let id = if id_text.contains("{line}") {
        IdSpec::Template(id_text)
    } else {
        IdSpec::Column(column("id", &id_text)?)
    };
    let member = column("member", &required("member")?)?;
    let at = column("at", &required("at")?)?;
    let at_format = scalar("at_format");
    let time = match scalar("time") {
        None => jiff::civil::time(0, 0, 0, 0),
        Some(t) => t
            .parse::<jiff::civil::Time>()
            .map_err(|_| fail(start("time"), format!("`{t}` is not a time like 12:00")))?,
    };
    let mut fields = Vec::new();
    if let Some(f) = m.get_node("fields") {
        let Node::Mapping(fm) = f else {
            return Err(fail(
                start("fields"),
                "`fields` maps event fields to columns".into(),
            ));
        };
        for (name, col) in fm.iter() {
            if et.field(name.as_str()).is_none() {
                return Err(fail(
                    pos.span(name.span()).start,
                    format!(
                        "`{}` is not a field of `{event_type}` in the config",
                        name.as_str()
                    ),
                ));
            }
            let Node::Scalar(c) = col else {
                return Err(fail(
                    pos.span(col.span()).start,
                    "a column is a number or a header name".into(),
                ));
            };
            fields.push((name.as_str().to_string(), column("fields", c.as_str())?));
        }
    }
    Ok(Mapping {
        delimiter,
        header,
        event_type,
        id,
        member,
        at,
        at_format,
        time,
        fields,
    })
}

/// What an import did.
#[derive(Debug, Default)]
pub struct Imported {
    pub rows: usize,
    pub written: usize,
    /// Rows left out, with their line and field.
    pub invalid: Vec<EventError>,
}

/// Converts `input` row by row and writes one event a line to `out`.
pub fn import(
    schema: &Schema,
    mapping: &Mapping,
    input: impl BufRead,
    mut out: impl Write,
) -> Result<Imported, ImportError> {
    let mut r = Imported::default();
    let mut names: Vec<String> = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let cells = split(&line, mapping.delimiter);
        if mapping.header && names.is_empty() {
            names = cells.into_iter().map(str::to_string).collect();
            continue;
        }
        r.rows += 1;
        match row_event(schema, mapping, &cells, &names, n) {
            Ok(event) => {
                write_event(&mut out, &event)?;
                r.written += 1;
            }
            Err(mut e) => {
                e.line = Some(n);
                r.invalid.push(e);
            }
        }
    }
    out.flush()?;
    Ok(r)
}

/// Cells of a row: split on the delimiter (trimmed, quotes removed), or on
/// runs of whitespace.
fn split(line: &str, delimiter: Option<char>) -> Vec<&str> {
    match delimiter {
        None => line.split_whitespace().collect(),
        Some(d) => line.split(d).map(|c| c.trim().trim_matches('"')).collect(),
    }
}

fn row_event(
    schema: &Schema,
    m: &Mapping,
    cells: &[&str],
    names: &[String],
    line: usize,
) -> Result<Vec<(String, serde_json::Value)>, EventError> {
    let bad = |path: &str, message: String| EventError {
        line: Some(line),
        id: None,
        path: path.to_string(),
        message,
    };
    let cell = |c: &Column, path: &str| -> Result<&str, EventError> {
        let i = match c {
            Column::Index(i) => Some(*i),
            Column::Name(n) => names.iter().position(|x| x == n),
        };
        i.and_then(|i| cells.get(i).copied())
            .ok_or_else(|| bad(path, format!("the row has no column {}", column_name(c))))
    };
    let id = match &m.id {
        IdSpec::Template(t) => t.replace("{line}", &line.to_string()),
        IdSpec::Column(c) => cell(c, "id")?.to_string(),
    };
    let at = timestamp(schema, m, cell(&m.at, "at")?).map_err(|e| bad("at", e))?;
    // In the order events are usually written: id, type, member, at, fields.
    let mut event: Vec<(String, serde_json::Value)> = vec![
        ("id".into(), id.into()),
        ("type".into(), m.event_type.clone().into()),
        (
            "member".into(),
            cell(&m.member, "member")?.to_string().into(),
        ),
        ("at".into(), at.into()),
    ];
    let et = schema.event(&m.event_type).map(|(_, et)| et);
    for (name, c) in &m.fields {
        let text = cell(c, name)?;
        let ty = et.and_then(|et| et.field(name)).map(|(_, f)| f.ty);
        event.push((name.clone(), json_value(ty, text)));
    }
    // The same validation as every event: types, required fields.
    event_from_json(
        schema,
        serde_json::Value::Object(event.iter().cloned().collect()),
    )?;
    Ok(event)
}

/// One event as a JSON line, keys in the given order.
fn write_event(out: &mut impl Write, event: &[(String, serde_json::Value)]) -> std::io::Result<()> {
    let mut line = String::from("{");
    for (i, (k, v)) in event.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        line.push_str(&serde_json::Value::from(k.as_str()).to_string());
        line.push(':');
        line.push_str(&v.to_string());
    }
    line.push_str("}\n");
    out.write_all(line.as_bytes())
}

fn column_name(c: &Column) -> String {
    match c {
        Column::Index(i) => (i + 1).to_string(),
        Column::Name(n) => format!("`{n}`"),
    }
}

/// A cell as the JSON the field's type takes (numbers as exact numbers).
fn json_value(ty: Option<FieldType>, text: &str) -> serde_json::Value {
    match ty {
        Some(FieldType::Money | FieldType::Decimal | FieldType::Int) => {
            let t = text.trim_start_matches('+');
            match t.parse::<serde_json::Number>() {
                Ok(n) => serde_json::Value::Number(n),
                Err(_) => text.into(),
            }
        }
        Some(FieldType::Bool) => match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => true.into(),
            "false" | "no" | "0" => false.into(),
            _ => text.into(),
        },
        _ => text.into(),
    }
}

/// The event time: RFC 3339 by default; with `at_format`, a strftime
/// pattern (a date without a time gets `time`, local to the config).
fn timestamp(schema: &Schema, m: &Mapping, text: &str) -> Result<String, String> {
    let Some(fmt) = &m.at_format else {
        return text
            .parse::<jiff::Timestamp>()
            .map(|t| t.to_string())
            .map_err(|e| format!("`{text}` is not an RFC 3339 time ({e})"));
    };
    let tm = jiff::fmt::strtime::parse(fmt, text)
        .map_err(|e| format!("`{text}` does not match `{fmt}` ({e})"))?;
    if let Ok(ts) = tm.to_timestamp() {
        return Ok(ts.to_string());
    }
    let date = tm
        .to_date()
        .map_err(|e| format!("`{text}` is not a date ({e})"))?;
    let dt = match tm.hour() {
        Some(_) => tm
            .to_datetime()
            .map_err(|e| format!("`{text}` is not a time ({e})"))?,
        None => date.to_datetime(m.time),
    };
    dt.to_zoned_datetime(schema.timezone.clone())
        .map(|z| z.timestamp().to_string())
        .map_err(|e| format!("`{text}`: {e}"))
}

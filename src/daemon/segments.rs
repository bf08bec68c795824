//! `POST /v1/segments/count` and `POST /v1/segments/export`: a segment (a
//! condition, or a named segment) counted or listed over the running
//! daemon's store, with its running rules. Reads only, on a blocking
//! thread; the writer goes on. Routing and the token are `http`'s.

use super::Shared;
use crate::engine::segment::{Scan, default_fields, row_json};
use crate::project::query::{Query, segment_query};
use axum::http::StatusCode;
use serde_json::json;
use std::sync::Arc;

/// A request body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    /// A condition of the rule language.
    when: Option<String>,
    /// A named segment.
    segment: Option<String>,
    #[serde(default)]
    fields: Vec<String>,
    /// The day to evaluate on (default: today).
    at: Option<String>,
}

/// A refused request: its status and JSON body.
pub type Refusal = (StatusCode, serde_json::Value);

/// What a request asks for, checked against the running rules.
struct Asked {
    rules: Arc<crate::lang::RuleSet>,
    schema: Arc<crate::config::Schema>,
    query: Query,
    fields: Vec<String>,
    today: i32,
}

/// A 400 in the one shape every segment 400 has (docs/operations.md):
/// what is wrong, and the diagnostics, none for a refusal that is not a
/// condition's check (a bad body, a day, a segment calling a plugin).
fn bad(message: impl Into<String>) -> Refusal {
    (
        StatusCode::BAD_REQUEST,
        json!({"error": message.into(), "diagnostics": []}),
    )
}

fn asked(shared: &Shared, body: &[u8], export: bool) -> Result<Asked, Refusal> {
    let r: Request = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "{e}; the body is {{\"when\": CONDITION}} or {{\"segment\": NAME}}, with \"fields\" and \"at\" (YYYY-MM-DD) optional"
        ))
    })?;
    let text = match (&r.when, &r.segment) {
        (Some(w), None) => w.clone(),
        (None, Some(s)) => s.clone(),
        _ => {
            return Err(bad(
                "give one of `when` (a condition) or `segment` (a name)",
            ));
        }
    };
    if !export && !r.fields.is_empty() {
        return Err(bad("`fields` is for /v1/segments/export"));
    }
    let (schema, rules) = (shared.schema.load_full(), shared.rules.load_full());
    if let Some(name) = &r.segment
        && rules.segment(name).is_none()
    {
        let names: Vec<&str> = rules.segments.iter().map(|s| s.name.as_str()).collect();
        return Err((
            StatusCode::NOT_FOUND,
            json!({"error": format!("no segment \"{name}\""), "segments": names}),
        ));
    }
    let mut l = crate::project::load::Load::default();
    let fields = if r.fields.is_empty() {
        default_fields()
    } else {
        r.fields
    };
    let query = segment_query(&schema, &rules, &mut l.sources, &text, &fields).map_err(|ds| {
        l.diagnostics = ds;
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "the condition does not check", "diagnostics": l.diagnostics_json()}),
        )
    })?;
    let today = match &r.at {
        Some(d) => crate::base::time::parse_date(d)
            .ok_or_else(|| bad(format!("`at` is a day, YYYY-MM-DD, not `{d}`")))?,
        None => crate::engine::clock::local_day(
            &schema,
            crate::engine::clock::Clock::now(&crate::engine::clock::SystemClock),
        ),
    };
    crate::engine::segment::check_day(&shared.folder, today).map_err(|e| match e {
        crate::engine::segment::SegmentError::TooEarly { .. } => bad(e.to_string()),
        e => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": e.to_string()}),
        ),
    })?;
    Ok(Asked {
        rules,
        schema,
        query,
        fields,
        today,
    })
}

/// `POST /v1/segments/count`: `{"count": N, "members": TOTAL}`, over this
/// node's partitions `parts` (all of them: `None`; cluster mode asks each
/// holder for its own, `daemon::asks`).
pub async fn count(shared: Arc<Shared>, body: Vec<u8>, parts: Option<Vec<usize>>) -> Refusal {
    let work = tokio::task::spawn_blocking(move || {
        let a = asked(&shared, &body, false)?;
        let rules = a.query.rules(&a.rules);
        let mut scan =
            Scan::new(&a.schema, rules, a.query.index, &[]).map_err(|e| bad(e.to_string()))?;
        let folder = match parts {
            None => crate::store::folder::Folder {
                parts: shared.folder.parts.clone(),
            },
            Some(parts) => crate::store::folder::Folder {
                parts: parts
                    .iter()
                    .filter_map(|p| shared.folder.parts.get(*p).cloned())
                    .collect(),
            },
        };
        let c = scan.count(&folder, a.today).map_err(|e| {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": e.to_string()}),
            )
        })?;
        Ok::<_, Refusal>((
            StatusCode::OK,
            json!({"count": c.count, "members": c.members}),
        ))
    });
    match work.await {
        Ok(Ok(r) | Err(r)) => r,
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": e.to_string()}),
        ),
    }
}

/// Lines of an export in flight, ahead of the client.
const EXPORT_BUFFER: usize = 256;

/// `POST /v1/segments/export` on one node (cluster mode's is
/// `asks::export_across`): the members as NDJSON, streamed as they
/// are found. The request is checked before the answer starts (400 with
/// diagnostics); a store error after that ends the stream with a line
/// `{"error": ...}`.
pub async fn export(
    shared: Arc<Shared>,
    body: Vec<u8>,
) -> Result<tokio::sync::mpsc::Receiver<Result<String, std::io::Error>>, Refusal> {
    let (checked_tx, checked_rx) = tokio::sync::oneshot::channel();
    let (tx, rx) = tokio::sync::mpsc::channel(EXPORT_BUFFER);
    tokio::task::spawn_blocking(move || {
        let a = match asked(&shared, &body, true) {
            Ok(a) => a,
            Err(r) => return checked_tx.send(Err(r)),
        };
        let rules = a.query.rules(&a.rules);
        let mut scan = match Scan::new(&a.schema, rules, a.query.index, &a.fields) {
            Ok(s) => s,
            Err(e) => return checked_tx.send(Err(bad(e.to_string()))),
        };
        let _ = checked_tx.send(Ok(()));
        let result = scan.each(&shared.folder, a.today, &mut |scan, id, rec| {
            let line = row_json(&scan.row(id, rec)) + "\n";
            // A client that went away stops the scan.
            tx.blocking_send(Ok(line)).is_ok()
        });
        if let Err(e) = result {
            let _ = tx.blocking_send(Ok(json!({"error": e.to_string()}).to_string() + "\n"));
        }
        Ok(())
    });
    match checked_rx.await {
        Ok(Ok(())) => Ok(rx),
        Ok(Err(r)) => Err(r),
        Err(_) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": "the export stopped"}),
        )),
    }
}

/// One part of an export: the lines of members in the segment, and the
/// member to go on after (`None`: the partition is done).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Part {
    pub lines: String,
    pub next: Option<String>,
}

/// Bytes of lines in a part: a part travels as one NATS message (at most
/// 1 MB by default), its lines escaped as a JSON string.
const PART_BYTES: usize = 256 * 1024;

/// Members looked at for a part: a segment few match still answers in
/// well under the asker's wait.
const PART_MEMBERS: usize = 100_000;

/// Partition `p`'s members in the segment after member `after`, up to a
/// part's size (cluster mode's export, `daemon::asks`). Blocking.
pub fn export_part(
    shared: &Shared,
    body: &[u8],
    p: usize,
    after: Option<&str>,
) -> Result<Part, Refusal> {
    let a = asked(shared, body, true)?;
    let store = shared
        .folder
        .parts
        .get(p)
        .ok_or_else(|| bad(format!("no partition {p}")))?;
    let rules = a.query.rules(&a.rules);
    let mut scan =
        Scan::new(&a.schema, rules, a.query.index, &a.fields).map_err(|e| bad(e.to_string()))?;
    let (mut lines, mut looked, mut last) = (String::new(), 0, None);
    let mut full = false;
    let result = scan.each_after(store, a.today, after, &mut |scan, id, rec| {
        if let Some(rec) = rec {
            lines.push_str(&row_json(&scan.row(id, rec)));
            lines.push('\n');
        }
        looked += 1;
        last = Some(id.to_string());
        full = lines.len() >= PART_BYTES || looked >= PART_MEMBERS;
        !full
    });
    result.map_err(|e| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": e.to_string()}),
        )
    })?;
    Ok(Part {
        lines,
        next: if full { last } else { None },
    })
}

/// An export's request checked here (400 with diagnostics before the
/// answer starts) and its day written in, so that every part, on
/// whichever node, is taken on the same day.
pub fn checked_export(shared: &Shared, body: &[u8]) -> Result<Vec<u8>, Refusal> {
    let a = asked(shared, body, true)?;
    Scan::new(&a.schema, a.query.rules(&a.rules), a.query.index, &a.fields)
        .map_err(|e| bad(e.to_string()))?;
    let mut request: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    request["at"] = crate::base::time::day_string(a.today).into();
    Ok(request.to_string().into_bytes())
}

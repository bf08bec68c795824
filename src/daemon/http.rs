//! The HTTP API (axum). Routes, the bearer token, and the mapping of
//! writer replies to status codes: 202 once durable, 400 with field paths,
//! 409 for a reused id, 413 for a too-large body, 503 while the store
//! cannot write.

use super::writer::{Command, IngestReply};
use super::{LATENCY_BUCKETS, Shared};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use tokio::sync::oneshot;

/// Largest request body: 10,000 events of a kilobyte.
pub const MAX_BODY: usize = 10 * 1024 * 1024;

/// Most events in one request. One request is one commit; a bigger batch
/// would hold the writer (and every other client) for seconds.
pub const MAX_EVENTS: usize = 10_000;

#[derive(Clone)]
struct App {
    shared: Arc<Shared>,
    writer: Sender<Command>,
}

pub fn router(shared: Arc<Shared>, writer: Sender<Command>) -> Router {
    Router::new()
        .route("/v1/events", post(post_events))
        .route("/v1/members/{id}", get(get_member))
        .route("/v1/members/{id}/explain", get(get_explain))
        .route("/v1/segments/count", post(post_segment_count))
        .route("/v1/segments/export", post(post_segment_export))
        .route("/v1/status", get(get_status))
        .route("/v1/reload", post(post_reload))
        .route("/v1/fit", post(post_fit))
        .route("/v1/cluster", get(get_cluster))
        .route("/metrics", get(get_metrics))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            same_origin,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(App { shared, writer })
}

/// Refuses what a web page could make a browser send (CSRF) and requests
/// for a domain name that resolves here (DNS rebinding): a request whose
/// `Origin` is not its own `Host`, and, when no token guards the API, a
/// `Host` that is a domain name rather than `localhost` or an IP address.
async fn same_origin(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (host, origin) = {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_ascii_lowercase)
        };
        (header("host").unwrap_or_default(), header("origin"))
    };
    if let Some(origin) = origin {
        let origin_host = origin.split_once("://").map_or("", |(_, h)| h);
        if origin_host != host {
            return reply(
                StatusCode::FORBIDDEN,
                json!({"error": format!("cross-origin request from {origin} refused")}),
            );
        }
    }
    let open = shared.schema.load().token.is_none();
    if open && !local_host(&host) {
        return reply(
            StatusCode::FORBIDDEN,
            json!({"error": format!("host `{host}` refused: without `http.token`, nudge answers only `localhost` and IP addresses")}),
        );
    }
    next.run(request).await
}

/// `localhost` or an IP address (with or without a port): names a DNS
/// rebinding attack cannot take over.
fn local_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => {
            return v6
                .split(']')
                .next()
                .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok());
        }
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name == "localhost" || name.parse::<std::net::Ipv4Addr>().is_ok()
}

fn reply(code: StatusCode, body: serde_json::Value) -> Response {
    (
        code,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `Authorization: Bearer TOKEN`, compared in constant time.
fn authorized(app: &App, headers: &HeaderMap) -> bool {
    // The running config's token: a reload that changes it takes effect.
    let schema = app.shared.schema.load();
    let Some(token) = &schema.token else {
        return true;
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.iter()
        .zip(b)
        .fold(a.len() ^ b.len(), |acc, (x, y)| acc | (x ^ y) as usize)
        == 0
}

fn unauthorized() -> Response {
    reply(
        StatusCode::UNAUTHORIZED,
        json!({"error": "a valid bearer token is required"}),
    )
}

async fn post_events(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&app, &headers) {
        return unauthorized();
    }
    if let Some((index, path)) = crate::io::event::duplicate_key(&body) {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"errors": [{"index": index, "path": path, "message": "this key appears twice; which value is meant?"}], "stored": 0}),
        );
    }
    let values = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Array(a)) => a,
        Ok(v @ serde_json::Value::Object(_)) => vec![v],
        Ok(_) => {
            return reply(
                StatusCode::BAD_REQUEST,
                json!({"errors": [{"path": "", "message": "send an event object or an array of them"}]}),
            );
        }
        Err(e) => {
            return reply(
                StatusCode::BAD_REQUEST,
                json!({"errors": [{"path": "", "message": format!("not valid JSON: {e}")}]}),
            );
        }
    };
    if values.len() > MAX_EVENTS {
        return reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"errors": [{"path": "", "message": format!("{} events in one request; send at most {MAX_EVENTS} per request", values.len())}], "stored": 0}),
        );
    }
    let n = values.len() as u64;
    app.shared.events_received.fetch_add(n, Ordering::Relaxed);
    if app.shared.cluster.is_some() {
        return publish_events(&app, values).await;
    }
    let (tx, rx) = oneshot::channel();
    if app
        .writer
        .send(Command::Ingest {
            events: values,
            reply: tx,
        })
        .is_err()
    {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "shutting down"}),
        );
    }
    match rx.await {
        Ok(IngestReply::Accepted {
            applied,
            duplicates,
        }) => reply(
            StatusCode::ACCEPTED,
            json!({"applied": applied, "duplicates": duplicates}),
        ),
        Ok(IngestReply::Invalid(errors)) => {
            app.shared.events_rejected.fetch_add(n, Ordering::Relaxed);
            invalid(&errors)
        }
        Ok(IngestReply::Conflict { ids, stored }) => {
            app.shared.events_rejected.fetch_add(n, Ordering::Relaxed);
            reply(
                StatusCode::CONFLICT,
                json!({"error": "event ids already used with a different body", "ids": ids, "stored": stored}),
            )
        }
        Ok(IngestReply::Refused {
            applied,
            duplicates,
            why,
        }) => {
            app.shared
                .events_rejected
                .fetch_add(why.len() as u64, Ordering::Relaxed);
            let errors: Vec<_> = why
                .iter()
                .map(|(index, id, m)| json!({"index": index, "id": id, "message": m}))
                .collect();
            reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"errors": errors, "applied": applied, "duplicates": duplicates}),
            )
        }
        Ok(IngestReply::Unavailable(e)) => {
            reply(StatusCode::SERVICE_UNAVAILABLE, json!({"error": e}))
        }
        Err(_) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "the writer stopped"}),
        ),
    }
}

/// Cluster mode's ingest: 202 once JetStream stored every event of the
/// request (applied later by each partition's owner), 400 for an invalid
/// one (nothing published), 503 when JetStream did not take them all.
async fn publish_events(app: &App, values: Vec<serde_json::Value>) -> Response {
    let n = values.len() as u64;
    match super::cluster::ingest(&app.shared, values).await {
        Ok((accepted, duplicates)) => {
            // Known to JetStream already (a retry): counted as a single
            // node counts its duplicates.
            let dups = duplicates as u64;
            app.shared
                .events_duplicate
                .fetch_add(dups, Ordering::Relaxed);
            reply(
                StatusCode::ACCEPTED,
                json!({"accepted": accepted, "duplicates": duplicates}),
            )
        }
        Err(super::cluster::IngestError::Invalid(errors)) => {
            app.shared.events_rejected.fetch_add(n, Ordering::Relaxed);
            invalid(&errors)
        }
        Err(super::cluster::IngestError::Unavailable(e)) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": format!("the events stream did not take the events: {e}"), "stored": "unknown: send the request again (ids make it safe)"}),
        ),
    }
}

/// 400 for invalid events, each with its index, id and field path.
fn invalid(errors: &[crate::model::EventError]) -> Response {
    let errors: Vec<_> = errors
        .iter()
        .map(|e| json!({"index": e.line.map(|l| l - 1), "id": e.id, "path": e.path, "message": e.message}))
        .collect();
    reply(
        StatusCode::BAD_REQUEST,
        json!({"errors": errors, "stored": 0}),
    )
}

#[derive(serde::Deserialize)]
struct ExplainQuery {
    rule: Option<String>,
    /// Evaluate as of this day (YYYY-MM-DD); default today.
    at: Option<String>,
}

/// Why rules did or did not fire for a member: the conditions now, with
/// their values, and the member's recent decisions per rule.
async fn get_explain(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<ExplainQuery>,
) -> Response {
    if !authorized(&app, &headers) {
        return unauthorized();
    }
    let schema = app.shared.schema.load();
    let day = match q.at.as_deref() {
        Some(d) => match crate::base::time::parse_date(d) {
            Some(day) => day,
            None => {
                return reply(
                    StatusCode::BAD_REQUEST,
                    json!({"error": format!("`at` is a date (YYYY-MM-DD), not `{d}`")}),
                );
            }
        },
        None => crate::engine::clock::local_day(
            &schema,
            crate::engine::clock::Clock::now(&crate::engine::clock::SystemClock),
        ),
    };
    // Cluster mode: the node that holds the member's partition answers.
    let ask = super::asks::Ask::Explain {
        id: id.clone(),
        rule: q.rule.clone(),
        day,
        partition: None,
    };
    let within = match super::asks::elsewhere(&app.shared, &id, ask).await {
        Ok(within) => within,
        Err((status, body)) => return reply(status, body),
    };
    let (status, body) = app
        .shared
        .explain_answer(&id, q.rule.as_deref(), day, within);
    reply(status, body)
}

async fn get_member(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !authorized(&app, &headers) {
        return unauthorized();
    }
    // Cluster mode: the node that holds the member's partition answers.
    let ask = super::asks::Ask::Member {
        id: id.clone(),
        partition: None,
    };
    let within = match super::asks::elsewhere(&app.shared, &id, ask).await {
        Ok(within) => within,
        Err((status, body)) => return reply(status, body),
    };
    let (status, body) = app.shared.member_answer(&id, within);
    reply(status, body)
}

/// `GET /v1/cluster`: nodes, partitions, owners and lags.
async fn get_cluster(State(app): State<App>, headers: HeaderMap) -> Response {
    if !authorized(&app, &headers) {
        return unauthorized();
    }
    if app.shared.cluster.is_none() {
        return reply(
            StatusCode::NOT_FOUND,
            json!({"error": "this node is not in cluster mode (start it with `--cluster`)"}),
        );
    }
    reply(StatusCode::OK, super::cluster::view(&app.shared).await)
}

async fn post_segment_count(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&app, &headers) {
        return unauthorized();
    }
    // Cluster mode: over every partition, each counted by its holder.
    let (code, body) = match app.shared.cluster {
        Some(_) => super::asks::count_across(app.shared.clone(), body.to_vec()).await,
        None => super::segments::count(app.shared.clone(), body.to_vec(), None).await,
    };
    reply(code, body)
}

async fn post_segment_export(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&app, &headers) {
        return unauthorized();
    }
    // Cluster mode: every partition in turn, each read by its holder.
    let lines = match app.shared.cluster {
        Some(_) => super::asks::export_across(app.shared.clone(), body.to_vec()).await,
        None => super::segments::export(app.shared.clone(), body.to_vec()).await,
    };
    match lines {
        Ok(lines) => (
            StatusCode::OK,
            [("content-type", "application/x-ndjson")],
            axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(lines)),
        )
            .into_response(),
        Err((code, body)) => reply(code, body),
    }
}

/// `{"ok": true}`, or `{"ok": false, "error": why}`.
fn health(why: Option<&str>) -> serde_json::Value {
    match why {
        None => json!({"ok": true}),
        Some(why) => json!({"ok": false, "error": why}),
    }
}

fn status_json(app: &App) -> serde_json::Value {
    let s = app.shared.status.load();
    let unhealthy = app.shared.unhealthy();
    let sinks = app.shared.sink_health();
    let held = app.shared.ticks_held.lock().ok().and_then(|h| h.clone());
    let mut ticks = health(held.as_deref());
    let last_tick = app.shared.last_tick.lock().ok().and_then(|d| *d);
    ticks["last"] = json!(last_tick.map(crate::base::time::day_string));
    json!({
        "ok": unhealthy.is_none() && held.is_none() && sinks.iter().all(|(_, e)| e.is_none()),
        "sinks": sinks.iter().map(|(sink, error)| match error {
            None => json!({"sink": sink, "ok": true}),
            Some(e) => json!({"sink": sink, "ok": false, "error": e}),
        }).collect::<Vec<_>>(),
        "writes": health(unhealthy.as_deref()),
        "ticks": ticks,
        "ruleset": s.ruleset,
        "rules": s.rules,
        "last_reload": {"ok": s.last_reload_ok, "diagnostics": s.last_reload_diagnostics},
        "reloads": s.reloads,
        "failed_reloads": s.failed_reloads,
        "events": {
            "received": app.shared.events_received.load(Ordering::Relaxed),
            "applied": app.shared.events_applied.load(Ordering::Relaxed),
            "duplicates": app.shared.events_duplicate.load(Ordering::Relaxed),
            "rejected": app.shared.events_rejected.load(Ordering::Relaxed),
        },
        "outbox": app.shared.outbox_depth(),
        "deferred": app.shared.deferred.load(Ordering::Relaxed),
        "plugin_failures": app.shared.plugin_failures(),
        "plugin_errors": app.shared.plugin_errors(),
        "dead_letters": app.shared.dead_letters(100),
        "rewards": app.shared.reward_stock(),
        // (Predictions are refused on a folder of partitions: one store.)
        "model": crate::engine::predict::load(&app.shared.folder).ok().flatten(),
        "budgets": app.shared.budgets.lock().map(|b| b.iter().map(|(rule, used, total)| json!({"rule": rule, "used": used.to_string(), "total": total.to_string(), "left": (total - used).to_string()})).collect::<Vec<_>>()).unwrap_or_default(),
    })
}

async fn get_status(State(app): State<App>, headers: HeaderMap) -> Response {
    if !authorized(&app, &headers) {
        return unauthorized();
    }
    // Not 200 while writes fail, so a health check that only reads the
    // status code sees it.
    let code = if app.shared.unhealthy().is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    reply(code, status_json(&app))
}

async fn post_reload(State(app): State<App>, headers: HeaderMap) -> Response {
    if !authorized(&app, &headers) {
        return unauthorized();
    }
    let (tx, rx) = oneshot::channel();
    if app
        .writer
        .send(Command::Reload {
            reason: "POST /v1/reload",
            reply: Some(tx),
        })
        .is_err()
    {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "shutting down"}),
        );
    }
    let ok = rx.await.unwrap_or(false);
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    reply(code, status_json(&app))
}

/// Fits the repurchase models now, on the writer (between batches).
async fn post_fit(State(app): State<App>, headers: HeaderMap) -> Response {
    if !authorized(&app, &headers) {
        return unauthorized();
    }
    if app.shared.cluster.is_some() {
        // A node has every partition only as stale copies: the fit is made
        // at refitting ticks from what each holder publishes.
        return reply(
            StatusCode::CONFLICT,
            json!({"error": "in cluster mode the models are fitted at the daily tick, over every partition's histories (prediction.refit); POST /v1/fit fits on a single node"}),
        );
    }
    let (tx, rx) = oneshot::channel();
    if app.writer.send(Command::Fit { reply: tx }).is_err() {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "shutting down"}),
        );
    }
    match rx.await {
        Ok(Ok(fit)) => reply(StatusCode::OK, json!(fit)),
        Ok(Err(why)) => reply(StatusCode::UNPROCESSABLE_ENTITY, json!({"error": why})),
        Err(_) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "the writer stopped"}),
        ),
    }
}

/// Prometheus text format.
/// A Prometheus label value: `\\`, `"` and line breaks escaped (a rule
/// name with a newline once broke the whole scrape).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .replace('\r', "")
}

// Long because the Prometheus exposition, one metric family after another in the order a scrape shows them.
async fn get_metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    if !authorized(&app, &headers) {
        return unauthorized();
    }
    let sh = &app.shared;
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    };
    counter(
        "nudge_events_received_total",
        "Events received over HTTP.",
        sh.events_received.load(Ordering::Relaxed),
    );
    counter(
        "nudge_events_applied_total",
        "Events applied (durable).",
        sh.events_applied.load(Ordering::Relaxed),
    );
    counter(
        "nudge_events_duplicate_total",
        "Redelivered events (already applied; nothing changed).",
        sh.events_duplicate.load(Ordering::Relaxed),
    );
    counter(
        "nudge_events_rejected_total",
        "Events refused (invalid or conflicting).",
        sh.events_rejected.load(Ordering::Relaxed),
    );
    counter(
        "nudge_tick_members_visited_total",
        "Members visited by daily ticks (the due index keeps this to the members due).",
        sh.tick_visits.load(Ordering::Relaxed),
    );
    counter(
        "nudge_plugin_failures_total",
        "Plugin calls that failed.",
        sh.plugin_failures(),
    );
    let s = sh.status.load();
    counter("nudge_reloads_total", "Reloads attempted.", s.reloads);
    counter(
        "nudge_reloads_failed_total",
        "Reloads that failed (the running rules stayed).",
        s.failed_reloads,
    );
    let _ = writeln!(
        out,
        "# HELP nudge_last_reload_ok Whether the last reload succeeded.\n# TYPE nudge_last_reload_ok gauge\nnudge_last_reload_ok {}",
        s.last_reload_ok as u8
    );
    let held = sh.ticks_held.lock().map(|h| h.is_some()).unwrap_or(false);
    let _ = writeln!(
        out,
        "# HELP nudge_ticks_held Whether daily ticks are held because of the wall clock (see /v1/status).\n# TYPE nudge_ticks_held gauge\nnudge_ticks_held {}",
        held as u8
    );
    let _ = writeln!(
        out,
        "# HELP nudge_ruleset_info The running rule set.\n# TYPE nudge_ruleset_info gauge\nnudge_ruleset_info{{version=\"{}\",rules=\"{}\"}} 1",
        s.ruleset, s.rules
    );
    let _ = writeln!(
        out,
        "# HELP nudge_effects_total Effects by rule and status.\n# TYPE nudge_effects_total counter"
    );
    if let Ok(m) = sh.effects.lock() {
        for ((rule, status), n) in m.iter() {
            let _ = writeln!(
                out,
                "nudge_effects_total{{rule=\"{}\",status=\"{status}\"}} {n}",
                label(rule)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP nudge_batch_seconds Time to evaluate and commit a batch.\n# TYPE nudge_batch_seconds histogram"
    );
    if let Ok(h) = sh.latency.lock() {
        let mut cum = 0;
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            cum += h[i];
            let _ = writeln!(out, "nudge_batch_seconds_bucket{{le=\"{b}\"}} {cum}");
        }
        cum += h[LATENCY_BUCKETS.len()];
        let _ = writeln!(
            out,
            "nudge_batch_seconds_bucket{{le=\"+Inf\"}} {cum}\nnudge_batch_seconds_count {cum}"
        );
        let _ = writeln!(
            out,
            "nudge_batch_seconds_sum {}",
            sh.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
    }
    let _ = writeln!(
        out,
        "# HELP nudge_deliveries_total Delivery attempts by sink and result.\n# TYPE nudge_deliveries_total counter"
    );
    if let Ok(m) = sh.deliveries.lock() {
        for (sink, d) in m.iter() {
            let (sink, ok, failed) = (label(sink), d.ok, d.failed);
            let _ = writeln!(
                out,
                "nudge_deliveries_total{{sink=\"{sink}\",result=\"ok\"}} {ok}\nnudge_deliveries_total{{sink=\"{sink}\",result=\"failed\"}} {failed}"
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP nudge_budget_left What is left of each rule's budget this period.\n# TYPE nudge_budget_left gauge"
    );
    if let Ok(b) = sh.budgets.lock() {
        for (rule, used, total) in b.iter() {
            let _ = writeln!(
                out,
                "nudge_budget_left{{rule=\"{}\"}} {}",
                label(rule),
                total - used
            );
        }
    }
    // From counters, not scans: a scrape must stay cheap with millions of members.
    let depth = sh.outbox_depth();
    let members = sh.members();
    let deferred = sh.deferred.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# HELP nudge_deferred Effects waiting for their channel's quiet hours to end.\n# TYPE nudge_deferred gauge\nnudge_deferred {deferred}"
    );
    let _ = writeln!(
        out,
        "# HELP nudge_outbox_depth Effects not yet delivered to every sink.\n# TYPE nudge_outbox_depth gauge\nnudge_outbox_depth {depth}"
    );
    let _ = writeln!(
        out,
        "# HELP nudge_members Members in the store (cluster mode: of the partitions held here).\n# TYPE nudge_members gauge\nnudge_members {members}"
    );
    super::cluster::metrics(sh, &mut out).await;
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4")],
        out,
    )
        .into_response()
}

/// Serves `app` until `shutdown`, then lets open requests finish.
///
/// Not `axum::serve`: it sets no header read timeout, so a client sending
/// a header byte a second holds its connection (and a file descriptor) for
/// ever. Here every connection has a header deadline, every request a
/// deadline for its body and answer (408), and at most
/// `limits.max_connections` are open at once.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: crate::config::HttpLimits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    let app = app.layer(axum::middleware::from_fn_with_state(
        limits.request_timeout,
        request_deadline,
    ));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // At the connection cap, a shutdown must not wait for a free slot.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            conn = listener.accept() => match conn {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most often: wait, do not spin.
                    tracing::warn!(error = %e, "Cannot accept a connection.");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(slot);
        });
    }
    // Requests already in the writer's queue get their answers.
    let _ = tokio::time::timeout(limits.request_timeout, graceful.shutdown()).await;
}

async fn request_deadline(
    State(limit): State<std::time::Duration>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => reply(
            StatusCode::REQUEST_TIMEOUT,
            json!({"error": format!("the request took longer than {} ms", limit.as_millis())}),
        ),
    }
}

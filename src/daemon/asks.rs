//! Cluster mode's reads across nodes: what a node is asked about a member
//! of a partition another node holds (the member, why rules fired for it)
//! goes to that node over NATS request-reply, a segment count is the
//! sum of each holder's count of its partitions, and a segment export is
//! each partition's members in turn, in parts taken by its holder. A node answers on
//! `nudge.asks.<node>` for the partitions it holds, as its own routes
//! would; a node asked about a partition it no longer holds says so (503),
//! and the asker's client tries again.

use super::Shared;
use crate::cluster::Cluster;
use axum::http::StatusCode;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::StreamExt;

/// What one node asks another.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ask {
    /// `GET /v1/members/{id}`; `partition`: where the directory has it
    /// (One ID), else its home.
    Member {
        id: String,
        #[serde(default)]
        partition: Option<usize>,
    },
    /// `GET /v1/members/{id}/explain`, on `day`.
    Explain {
        id: String,
        rule: Option<String>,
        day: i32,
        #[serde(default)]
        partition: Option<usize>,
    },
    /// One ID: the partition member or identifier `id` is in, asked of
    /// partition 0's holder (`engine::directory`).
    Locate { id: String },
    /// `POST /v1/segments/count` with this body, over these partitions.
    Count {
        body: serde_json::Value,
        partitions: Vec<usize>,
    },
    /// A part of `POST /v1/segments/export` with this body: partition
    /// `partition`'s members after member `after`.
    Export {
        body: serde_json::Value,
        partition: usize,
        after: Option<String>,
    },
}

/// How long an asked node may take to count or list: it scans its
/// partitions (NATS's default bound, 10 s, is too short for millions of
/// members).
const ASK_WAIT: Duration = Duration::from_secs(60);

/// How long an asked node may take to read one member or where one is.
/// A live holder answers in milliseconds; right after a holder is killed,
/// NATS may still route to its subscription and the ask is lost, so the
/// client gets a 503 after this rather than after the scan's minute.
const READ_ASK_WAIT: Duration = Duration::from_secs(3);

impl Ask {
    fn wait(&self) -> Duration {
        match self {
            Ask::Member { .. } | Ask::Explain { .. } | Ask::Locate { .. } => READ_ASK_WAIT,
            Ask::Count { .. } | Ask::Export { .. } => ASK_WAIT,
        }
    }
}

/// Answers what other nodes ask this one, for as long as it runs.
pub async fn answer(shared: Arc<Shared>) {
    let Some(cluster) = shared.cluster.clone() else {
        return;
    };
    let subject = Cluster::asks_subject(&cluster.options.node);
    let mut requests = match cluster.client.subscribe(subject).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "Cannot answer reads for other nodes.");
            return;
        }
    };
    while let Some(m) = requests.next().await {
        let Some(reply) = m.reply else { continue };
        let (shared, cluster) = (shared.clone(), cluster.clone());
        // One at a time would hold every member read behind a count.
        tokio::spawn(async move {
            let (status, body) = match serde_json::from_slice::<Ask>(&m.payload) {
                Ok(ask) => answer_one(shared, ask).await,
                Err(e) => (StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
            };
            let answer = json!({"status": status.as_u16(), "body": body});
            let bytes = bytes::Bytes::from(answer.to_string());
            if let Err(e) = cluster.client.publish(reply, bytes).await {
                tracing::warn!(error = %e, "Cannot answer another node's read.");
            }
        });
    }
}

async fn answer_one(shared: Arc<Shared>, ask: Ask) -> (StatusCode, serde_json::Value) {
    let Some(cluster) = shared.cluster.clone() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "not in cluster mode"}),
        );
    };
    let gone = |p: usize| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": format!("partition {p} moved; try again shortly")}),
        )
    };
    match ask {
        Ask::Member { id, partition } => {
            let p = partition.unwrap_or_else(|| home(&cluster, &id));
            match cluster.owned.holds(p) {
                true => shared.member_answer(&id, partition),
                false => gone(p),
            }
        }
        Ask::Explain {
            id,
            rule,
            day,
            partition,
        } => {
            let p = partition.unwrap_or_else(|| home(&cluster, &id));
            match cluster.owned.holds(p) {
                true => shared.explain_answer(&id, rule.as_deref(), day, partition),
                false => gone(p),
            }
        }
        Ask::Locate { id } => match cluster.owned.holds(0) {
            true => match shared.locate_here(&id) {
                Ok(p) => (StatusCode::OK, json!({ "partition": p })),
                Err(e) => unavailable(e.to_string()),
            },
            false => gone(0),
        },
        Ask::Count { body, partitions } => {
            if let Some(p) = partitions.iter().find(|p| !cluster.owned.holds(**p)) {
                return gone(*p);
            }
            let body = body.to_string().into_bytes();
            super::segments::count(shared, body, Some(partitions)).await
        }
        Ask::Export {
            body,
            partition,
            after,
        } => match cluster.owned.holds(partition) {
            true => local_part(shared, body.to_string().into_bytes(), partition, after).await,
            false => gone(partition),
        },
    }
}

/// A part of an export taken from this node's copy of `partition`.
async fn local_part(
    shared: Arc<Shared>,
    body: Vec<u8>,
    partition: usize,
    after: Option<String>,
) -> (StatusCode, serde_json::Value) {
    let work = tokio::task::spawn_blocking(move || {
        super::segments::export_part(&shared, &body, partition, after.as_deref())
    });
    match work.await {
        Ok(Ok(part)) => (StatusCode::OK, json!(part)),
        Ok(Err(refused)) => refused,
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": e.to_string()}),
        ),
    }
}

/// How long an export waits for a partition without a holder, or whose
/// holder moved it, before it ends with an error line.
const PART_WAIT: Duration = Duration::from_secs(30);

/// `POST /v1/segments/export` across the nodes: partition by partition,
/// each in parts taken by its holder (here or asked), so the lines come
/// in the order a single node's export has them. The request is checked
/// here before the answer starts; a part that cannot be had ends the
/// stream with a line `{"error": ...}`.
pub async fn export_across(
    shared: Arc<Shared>,
    body: Vec<u8>,
) -> Result<tokio::sync::mpsc::Receiver<Result<String, std::io::Error>>, super::segments::Refusal> {
    let Some(cluster) = shared.cluster.clone() else {
        return Err(unavailable("not in cluster mode".into()));
    };
    let checked = {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || super::segments::checked_export(&shared, &body))
    };
    let body: serde_json::Value = match checked.await {
        Ok(Ok(b)) => serde_json::from_slice(&b).unwrap_or_default(),
        Ok(Err(refused)) => return Err(refused),
        Err(e) => return Err(unavailable(e.to_string())),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        for p in 0..cluster.partitions {
            let mut after = None;
            loop {
                let part = match part(&shared, &cluster, &body, p, after).await {
                    Ok(part) => part,
                    Err(error) => {
                        let _ = tx
                            .send(Ok(json!({"error": error}).to_string() + "\n"))
                            .await;
                        return;
                    }
                };
                // A client that went away stops the export.
                if !part.lines.is_empty() && tx.send(Ok(part.lines)).await.is_err() {
                    return;
                }
                match part.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
    });
    Ok(rx)
}

/// One part of partition `p` after member `after`, from its holder; asked
/// again while the partition has no holder or moves (503), up to
/// [`PART_WAIT`].
async fn part(
    shared: &Arc<Shared>,
    cluster: &Cluster,
    body: &serde_json::Value,
    p: usize,
    after: Option<String>,
) -> Result<super::segments::Part, String> {
    let started = std::time::Instant::now();
    loop {
        let (status, answer) = if cluster.owned.holds(p) {
            let bytes = body.to_string().into_bytes();
            local_part(shared.clone(), bytes, p, after.clone()).await
        } else {
            let owners = owners(cluster).await;
            match owners.get(&p) {
                Some(node) => {
                    let ask = Ask::Export {
                        body: body.clone(),
                        partition: p,
                        after: after.clone(),
                    };
                    ask_node(cluster, node, &ask).await
                }
                None => unavailable(format!("no node holds partition {p} now")),
            }
        };
        if status == StatusCode::OK {
            return serde_json::from_value(answer).map_err(|e| e.to_string());
        }
        let error = answer["error"].as_str().unwrap_or("refused").to_string();
        if status != StatusCode::SERVICE_UNAVAILABLE || started.elapsed() > PART_WAIT {
            return Err(format!("partition {p}: {error}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn home(cluster: &Cluster, id: &str) -> usize {
    crate::store::folder::partition_of(id, cluster.partitions)
}

/// Where member `id` is read: the answer of the node holding its
/// partition when that is not this node (`Err`), else the partition to
/// read it in here (`Some` on One ID, where the directory says; `None`:
/// its home, or any partition on a single node).
pub async fn elsewhere(
    shared: &Shared,
    id: &str,
    mut ask: Ask,
) -> Result<Option<usize>, (StatusCode, serde_json::Value)> {
    let Some(cluster) = shared.cluster.as_ref() else {
        return Ok(None);
    };
    let located = match super::routing::routed(shared) {
        true => Some(locate(shared, cluster, id).await?),
        false => None,
    };
    let p = located.unwrap_or_else(|| home(cluster, id));
    if cluster.owned.holds(p) {
        return Ok(located);
    }
    if let Ask::Member { partition, .. } | Ask::Explain { partition, .. } = &mut ask {
        *partition = located;
    }
    let owners = owners(cluster).await;
    Err(match owners.get(&p) {
        Some(node) => ask_node(cluster, node, &ask).await,
        None => unavailable(format!(
            "no node holds partition {p} now; try again shortly"
        )),
    })
}

/// One ID: the partition member `id` is in, by partition 0's directory
/// (read here, or asked of partition 0's holder).
async fn locate(
    shared: &Shared,
    cluster: &Cluster,
    id: &str,
) -> Result<usize, (StatusCode, serde_json::Value)> {
    if cluster.owned.holds(0) {
        return shared
            .locate_here(id)
            .map_err(|e| unavailable(e.to_string()));
    }
    let Some(node) = owners(cluster).await.get(&0).cloned() else {
        return Err(unavailable(
            "no node holds partition 0 (One ID's directory) now; try again shortly".into(),
        ));
    };
    let (status, mut body) = ask_node(cluster, &node, &Ask::Locate { id: id.into() }).await;
    match body["partition"].as_u64() {
        Some(p) if status == StatusCode::OK => Ok(p as usize),
        // Say why that node was asked: the member may be held here.
        _ if status == StatusCode::SERVICE_UNAVAILABLE => {
            if let Some(why) = body["error"].as_str() {
                body["error"] = format!(
                    "cannot find where the member is: One ID's directory is on partition 0, held by node `{node}`: {why}"
                )
                .into();
            }
            Err((status, body))
        }
        _ => Err((status, body)),
    }
}

/// A segment count over every partition: this node's share counted here,
/// each other holder asked for its share, the counts added. 503 while a
/// partition has no holder or a holder does not answer.
pub async fn count_across(shared: Arc<Shared>, body: Vec<u8>) -> (StatusCode, serde_json::Value) {
    let Some(cluster) = shared.cluster.clone() else {
        return unavailable("not in cluster mode".into());
    };
    let owners = owners(&cluster).await;
    let mut by_node: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for p in 0..cluster.partitions {
        match owners.get(&p) {
            Some(node) => by_node.entry(node.clone()).or_default().push(p),
            None => {
                return unavailable(format!(
                    "no node holds partition {p} now; try again shortly"
                ));
            }
        }
    }
    let here = by_node.remove(&cluster.options.node).unwrap_or_default();
    // Checked and counted here first: a bad request is answered at once.
    let (status, mine) = super::segments::count(shared.clone(), body.clone(), Some(here)).await;
    if status != StatusCode::OK {
        return (status, mine);
    }
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let asks = by_node.into_iter().map(|(node, partitions)| {
        let ask = Ask::Count {
            body: request.clone(),
            partitions,
        };
        let cluster = cluster.clone();
        async move { ask_node(&cluster, &node, &ask).await }
    });
    let (mut count, mut members) = (
        mine["count"].as_u64().unwrap_or(0),
        mine["members"].as_u64().unwrap_or(0),
    );
    for (status, theirs) in futures_util::future::join_all(asks).await {
        if status != StatusCode::OK {
            return (status, theirs);
        }
        count += theirs["count"].as_u64().unwrap_or(0);
        members += theirs["members"].as_u64().unwrap_or(0);
    }
    (StatusCode::OK, json!({"count": count, "members": members}))
}

/// Asks `node`; its status and body (503 when it does not answer).
async fn ask_node(cluster: &Cluster, node: &str, ask: &Ask) -> (StatusCode, serde_json::Value) {
    let payload = match serde_json::to_vec(ask) {
        Ok(p) => bytes::Bytes::from(p),
        Err(e) => return unavailable(e.to_string()),
    };
    let wait = ask.wait();
    let request = async_nats::Request::new()
        .payload(payload)
        .timeout(Some(wait));
    let request = cluster
        .client
        .send_request(Cluster::asks_subject(node), request);
    let silent = || {
        unavailable(format!(
            "node `{node}` did not answer within {} s (stopped, unreachable or busy): its partitions go to another node once its leases lapse; try again shortly",
            wait.as_secs()
        ))
    };
    // (NATS's own bound is the request's; this one only guards it.)
    let answer = match tokio::time::timeout(wait + Duration::from_secs(1), request).await {
        Ok(Ok(a)) => a,
        // Its lease is still in the bucket but nothing listens for it:
        // stopped, killed or cut off.
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
            return unavailable(format!(
                "node `{node}` does not answer (stopped or unreachable): its partitions go to another node once its leases lapse; try again shortly"
            ));
        }
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::TimedOut => return silent(),
        Ok(Err(e)) => return unavailable(format!("node `{node}`: {e}")),
        Err(_) => return silent(),
    };
    let v: serde_json::Value = match serde_json::from_slice(&answer.payload) {
        Ok(v) => v,
        Err(e) => return unavailable(format!("node `{node}`: {e}")),
    };
    let status = v["status"]
        .as_u64()
        .and_then(|s| StatusCode::from_u16(s as u16).ok());
    (
        status.unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        v["body"].clone(),
    )
}

fn unavailable(error: String) -> (StatusCode, serde_json::Value) {
    (StatusCode::SERVICE_UNAVAILABLE, json!({"error": error}))
}

/// How long reading who holds which partition may take (NATS away).
const OWNERS_WAIT: Duration = Duration::from_secs(2);

/// The partitions' holders, as the leases say (empty: NATS away).
async fn owners(cluster: &Cluster) -> BTreeMap<usize, String> {
    crate::cluster::bounded(OWNERS_WAIT, cluster.owners())
        .await
        .unwrap_or_default()
}

//! Partition snapshots: the holder of a partition puts the partition's
//! whole state (its store, in the backup format of `store::backup`) into
//! the `nudge_snapshots` object store as object `p<k>` every so many
//! events, with the last stream sequence it covers. A node that takes a
//! partition its copy of which is older than the snapshot (or that has
//! none) replaces its copy with the snapshot and applies the stream from
//! there on, instead of from its copy or the stream's start. This module
//! moves snapshots between a file and NATS; taking one and putting it in
//! place are the daemon's and the store's.

use super::{Cluster, ClusterError};
use async_nats::jetstream::object_store::{self, InfoErrorKind, ObjectMetadata};
use std::path::Path;
use std::time::Duration;

/// The object store of snapshots.
pub const SNAPSHOTS_BUCKET: &str = "nudge_snapshots";

/// What a snapshot covers, kept in the object's description.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SnapshotInfo {
    /// The last stream sequence the partition had applied.
    pub applied: u64,
    /// The node that took it.
    pub node: String,
    /// The rule set version it was applied under.
    pub ruleset: String,
    /// One ID: the last entry of partition 0's stream routed to the
    /// partition that it had applied (`store::keys::ROUTED_THROUGH`).
    #[serde(default)]
    pub routed_through: u64,
}

/// How long reading a snapshot's description may take.
const INFO_WAIT: Duration = Duration::from_secs(10);
/// How long moving a whole snapshot may take: a partition of a million
/// members is a few hundred megabytes.
const MOVE_WAIT: Duration = Duration::from_secs(600);

fn object_name(p: usize) -> String {
    format!("p{p}")
}

impl Cluster {
    /// What partition `p`'s snapshot covers, if it has one.
    pub async fn snapshot_info(&self, p: usize) -> Result<Option<SnapshotInfo>, ClusterError> {
        let info = tokio::time::timeout(INFO_WAIT, self.snapshots.info(object_name(p)))
            .await
            .map_err(|_| ClusterError::JetStream("the snapshot store did not answer".into()))?;
        match info {
            Ok(o) => describe(o.description.as_deref()).map(Some),
            Err(e) if e.kind() == InfoErrorKind::NotFound => Ok(None),
            Err(e) => Err(ClusterError::js(e)),
        }
    }

    /// Puts the snapshot in `file` as partition `p`'s, replacing the one
    /// before.
    pub async fn put_snapshot(
        &self,
        p: usize,
        file: &Path,
        info: &SnapshotInfo,
    ) -> Result<(), ClusterError> {
        let put = async {
            let mut f = tokio::fs::File::open(file)
                .await
                .map_err(|e| ClusterError::JetStream(format!("{}: {e}", file.display())))?;
            let meta = ObjectMetadata {
                name: object_name(p),
                description: Some(serde_json::to_string(info).map_err(ClusterError::js)?),
                ..Default::default()
            };
            self.snapshots
                .put(meta, &mut f)
                .await
                .map_err(ClusterError::js)
                .map(drop)
        };
        tokio::time::timeout(MOVE_WAIT, put)
            .await
            .map_err(|_| ClusterError::JetStream("putting a snapshot timed out".into()))?
    }

    /// Writes partition `p`'s snapshot to `file`; what it covers.
    pub async fn get_snapshot(&self, p: usize, file: &Path) -> Result<SnapshotInfo, ClusterError> {
        let get = async {
            let mut object = self
                .snapshots
                .get(object_name(p))
                .await
                .map_err(ClusterError::js)?;
            let info = describe(object.info.description.as_deref())?;
            let mut f = tokio::fs::File::create(file)
                .await
                .map_err(|e| ClusterError::JetStream(format!("{}: {e}", file.display())))?;
            tokio::io::copy(&mut object, &mut f)
                .await
                .map_err(|e| ClusterError::JetStream(format!("reading a snapshot: {e}")))?;
            Ok(info)
        };
        tokio::time::timeout(MOVE_WAIT, get)
            .await
            .map_err(|_| ClusterError::JetStream("getting a snapshot timed out".into()))?
    }
}

fn describe(description: Option<&str>) -> Result<SnapshotInfo, ClusterError> {
    serde_json::from_str(description.unwrap_or_default())
        .map_err(|e| ClusterError::JetStream(format!("a snapshot without its description: {e}")))
}

/// The snapshot store, made or found.
pub(super) async fn ensure_store(
    js: &async_nats::jetstream::Context,
    replicas: usize,
) -> Result<object_store::ObjectStore, ClusterError> {
    if let Ok(s) = js.get_object_store(SNAPSHOTS_BUCKET).await {
        return Ok(s);
    }
    js.create_object_store(object_store::Config {
        bucket: SNAPSHOTS_BUCKET.to_string(),
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| {
        ClusterError::JetStream(format!("making the object store `{SNAPSHOTS_BUCKET}`: {e}"))
    })
}

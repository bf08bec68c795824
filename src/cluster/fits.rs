//! The repurchase models' fit in cluster mode. On one node the fit reads
//! every partition's members; here no node has them all. When a
//! partition's tick refits, its holder puts the partition's histories
//! (`engine::predict::Histories`, as of that point of its stream) into the
//! object store as `histories-<day>-p<k>`, and the fit of the day is made
//! from every partition's once all are there, by whichever holder sees
//! them first. The decision (the fit, or none) is created once in the
//! `nudge_fits` bucket (`fit.<day>`), so every partition, on every node
//! and in every rebuild, ticks with the same fit. This module moves the
//! histories and the decision; waiting for them is the daemon's.

use super::{Cluster, ClusterError};
use crate::engine::predict::{Fit, Histories};
use async_nats::jetstream::kv::CreateErrorKind;
use async_nats::jetstream::object_store::InfoErrorKind;
use std::time::Duration;

/// The bucket of decided fits.
pub const FITS_BUCKET: &str = "nudge_fits";

/// The fit a day's ticks use: `None` when none could be made (`why`),
/// and the predictions stay as they were.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Decided {
    pub fit: Option<Fit>,
    pub why: Option<String>,
}

fn histories_name(day: &str, p: usize) -> String {
    format!("histories-{day}-p{p}")
}

fn fit_key(day: &str) -> String {
    format!("fit.{day}")
}

impl Cluster {
    /// The fit decided for `day`, if it is, as the bucket stream's leader
    /// has it (a lagging replica must not make a partition decide again).
    pub async fn decided_fit(&self, day: &str) -> Result<Option<Decided>, ClusterError> {
        match bounded(self.fits.leader_entry(&fit_key(day))).await? {
            Ok(Some(e)) => serde_json::from_slice(&e.value)
                .map(Some)
                .map_err(|e| ClusterError::JetStream(format!("the fit of {day}: {e}"))),
            Ok(None) => Ok(None),
            Err(e) => Err(ClusterError::js(e)),
        }
    }

    /// Decides `day`'s fit as `d` unless it is decided already; the
    /// decision that stands.
    pub async fn decide_fit(&self, day: &str, d: &Decided) -> Result<Decided, ClusterError> {
        let value = serde_json::to_vec(d).map_err(ClusterError::js)?;
        match bounded(self.fits.create(&fit_key(day), value.into())).await? {
            Ok(_) => Ok(d.clone()),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                self.decided_fit(day).await?.ok_or_else(|| {
                    ClusterError::JetStream(format!("the fit of {day} is there and is not"))
                })
            }
            Err(e) => Err(ClusterError::js(e)),
        }
    }

    /// Whether partition `p`'s histories for `day` are in.
    pub async fn has_histories(&self, day: &str, p: usize) -> Result<bool, ClusterError> {
        match bounded(self.snapshots.info(histories_name(day, p))).await? {
            Ok(o) => Ok(!o.deleted),
            Err(e) if e.kind() == InfoErrorKind::NotFound => Ok(false),
            Err(e) => Err(ClusterError::js(e)),
        }
    }

    pub async fn put_histories(
        &self,
        day: &str,
        p: usize,
        h: &Histories,
    ) -> Result<(), ClusterError> {
        let bytes = serde_json::to_vec(h).map_err(ClusterError::js)?;
        self.put_object(&histories_name(day, p), &bytes).await
    }

    /// Partition `p`'s histories for `day`, if they are in.
    pub async fn get_histories(
        &self,
        day: &str,
        p: usize,
    ) -> Result<Option<Histories>, ClusterError> {
        match self.get_object(&histories_name(day, p)).await? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(ClusterError::js),
            None => Ok(None),
        }
    }

    /// Drops `day`'s histories once its fit is decided: nobody reads them
    /// again.
    pub async fn drop_histories(&self, day: &str) {
        for p in 0..self.partitions {
            let _ = bounded(self.snapshots.delete(histories_name(day, p))).await;
        }
    }
}

/// `f`'s answer, or an error after ten seconds (NATS away).
async fn bounded<T>(f: impl std::future::Future<Output = T>) -> Result<T, ClusterError> {
    super::bounded(Duration::from_secs(10), f)
        .await
        .ok_or_else(|| ClusterError::JetStream("NATS did not answer in time".into()))
}

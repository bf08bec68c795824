//! Cluster mode, on the writer's thread: the fit a partition's refitting
//! tick uses. The partition's histories go to NATS, and the day's fit is
//! made from every partition's once all are in, or read when another
//! holder made it (`cluster::fits`). Until then the partition waits at
//! its tick ([`FitError::Waits`]): its stream is fetched again from there
//! a moment later, while the other partitions go on. Every partition's
//! holder publishes the day's tick at about the same time, so the wait is
//! short; a partition without a holder holds it up to [`FIT_WAIT`], after
//! which the day is decided without a fit (the predictions stay as they
//! were, as when one node cannot fit).

use super::Shared;
use crate::cluster::Cluster;
use crate::cluster::fits::Decided;
use crate::engine::Engine;
use crate::engine::predict::{PredictError, fit_union, histories};
use crate::store::SledStore;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why a refitting tick cannot run yet.
#[derive(Debug)]
pub enum FitError {
    /// Not every partition's histories are in.
    Waits(String),
    Failed(String),
}

impl From<String> for FitError {
    fn from(why: String) -> FitError {
        FitError::Failed(why)
    }
}

/// How long a refitting tick waits for every partition's histories
/// before the day is decided without a fit. Long enough for a dead
/// node's partitions to be taken over and caught up to their tick.
const FIT_WAIT: Duration = Duration::from_secs(600);

/// When each partition started waiting at its tick of a day.
static WAITING: Mutex<BTreeMap<(usize, i32), Instant>> = Mutex::new(BTreeMap::new());

/// Puts the fit decided for `day` into partition `part`'s engine, before
/// its tick (none decided: nothing changes).
pub fn adopt(
    engine: &mut Engine<SledStore>,
    shared: &Shared,
    part: usize,
    day: i32,
) -> Result<(), FitError> {
    let Some(cluster) = shared.cluster.as_ref() else {
        return Ok(());
    };
    let decided = cluster
        .runtime
        .block_on(decide(engine.store(), cluster, part, day))?;
    if let Ok(mut w) = WAITING.lock() {
        w.remove(&(part, day));
    }
    match decided.fit {
        Some(fit) => {
            engine.adopt_fit(&fit).map_err(|e| e.to_string())?;
            tracing::info!(partition = part, members = fit.members, fitted_on = %fit.fitted_on, "Repurchase models fitted over every partition.");
        }
        None => {
            let why = decided.why.unwrap_or_default();
            tracing::info!(partition = part, %why, "No fit today; predictions stay as they were.");
        }
    }
    Ok(())
}

/// The day's decided fit: read, or made once every partition's histories
/// are in (this partition's put first).
async fn decide(
    store: &SledStore,
    cluster: &Cluster,
    part: usize,
    day: i32,
) -> Result<Decided, FitError> {
    let name = crate::base::time::day_string(day);
    let failed = |e: crate::cluster::ClusterError| FitError::Failed(e.to_string());
    if let Some(d) = cluster.decided_fit(&name).await.map_err(failed)? {
        return Ok(d);
    }
    if !cluster.has_histories(&name, part).await.map_err(failed)? {
        let h = histories(store, day).map_err(|e| e.to_string())?;
        cluster
            .put_histories(&name, part, &h)
            .await
            .map_err(failed)?;
    }
    let mut all = Vec::with_capacity(cluster.partitions);
    for q in 0..cluster.partitions {
        match cluster.get_histories(&name, q).await.map_err(failed)? {
            Some(h) => all.push(h),
            None if waited(part, day) < FIT_WAIT => {
                return Err(FitError::Waits(format!(
                    "the tick of {name} fits the models when every partition's histories are in; partition {q}'s are not yet"
                )));
            }
            None => {
                let why = format!(
                    "partition {q}'s histories for {name} did not come within {} s",
                    FIT_WAIT.as_secs()
                );
                let none = Decided {
                    fit: None,
                    why: Some(why),
                };
                return cluster.decide_fit(&name, &none).await.map_err(failed);
            }
        }
    }
    let made = match fit_union(&all, day) {
        Ok(fit) => Decided {
            fit: Some(fit),
            why: None,
        },
        Err(e @ (PredictError::Fit(_) | PredictError::Later { .. })) => Decided {
            fit: None,
            why: Some(e.to_string()),
        },
        Err(e) => return Err(e.to_string().into()),
    };
    let decided = cluster.decide_fit(&name, &made).await.map_err(failed)?;
    cluster.drop_histories(&name).await;
    Ok(decided)
}

/// How long partition `part` has waited at its tick of `day`.
fn waited(part: usize, day: i32) -> Duration {
    WAITING.lock().map_or(Duration::ZERO, |mut w| {
        w.entry((part, day)).or_insert_with(Instant::now).elapsed()
    })
}

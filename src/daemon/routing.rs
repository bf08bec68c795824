//! One ID in cluster mode, on the writer's thread. Every event and relay
//! is published to partition 0, whose holder routes it: looks its names up
//! in the directory (`engine::directory`), publishes it to the partition
//! of its member's group, and when it joins groups of several partitions,
//! first asks each of the others to give up its members of them. A
//! routed batch is published before partition 0 commits its directory
//! changes and stream sequence, so a crash in between routes it again: the
//! same way (the directory is partition 0's state at that point of its
//! stream), with the same message ids, and a partition skips what it has
//! applied by partition 0's sequence (`store::keys::ROUTED_THROUGH`).
//! Giving up and taking in are each one commit of their partition, at
//! their place in its stream; the handover between them goes through the
//! object store (`cluster::handover`).

use super::Shared;
use crate::cluster::{Kind, MoveOut, Outgoing, Routed};
use crate::engine::Engine;
use crate::engine::directory::Directory;
use crate::engine::moves::Handover;
use crate::model::{Effect, Event};
use crate::store::SledStore;

/// What partition 0 routes.
pub enum ToRoute {
    Event(Event),
    Relay(Box<Effect>),
}

/// Why routing, giving up or taking in did not happen now.
pub enum Hold {
    /// Members moving here are not handed over yet.
    Waits(String),
    Failed(String),
}

fn failed(e: impl std::fmt::Display) -> Hold {
    Hold::Failed(e.to_string())
}

fn cluster_of(shared: &Shared) -> Result<&crate::cluster::Cluster, Hold> {
    shared
        .cluster
        .as_deref()
        .ok_or_else(|| failed("not in cluster mode"))
}

/// Whether events are routed by partition 0 (cluster mode with One ID
/// identifiers and more than one partition).
pub fn routed(shared: &Shared) -> bool {
    shared.cluster.as_ref().is_some_and(|c| c.partitions > 1)
        && !shared.schema.load().id_kinds.is_empty()
}

/// Partition 0 routes `items` (its stream sequence, what, the body it
/// came with) and stores its directory's changes with `noted`.
pub fn route(
    engine: &mut Engine<SledStore>,
    shared: &Shared,
    partitions: usize,
    items: Vec<(u64, ToRoute, bytes::Bytes)>,
    noted: Vec<(String, Vec<u8>)>,
) -> Result<(), Hold> {
    let cluster = cluster_of(shared)?;
    let mut dir = Directory::new(engine.store(), partitions);
    let mut out = Vec::new();
    for (seq, what, body) in items {
        let (partition, relay, from) = match what {
            ToRoute::Event(ev) => {
                let place = dir.place_event(&ev).map_err(failed)?;
                for (k, names) in place.from.iter() {
                    let to = place.partition;
                    let names = names.clone();
                    let m = serde_json::to_vec(&MoveOut { to, names }).map_err(failed)?;
                    out.push(Outgoing {
                        partition: *k,
                        id: format!("move:{seq}:p{k}"),
                        body: m.into(),
                        kind: Kind::Move(seq),
                    });
                }
                let from = place.from.iter().map(|(k, _)| *k).collect();
                (place.partition, false, from)
            }
            ToRoute::Relay(r) => (
                dir.place_relay(&r.member).map_err(failed)?,
                true,
                Vec::new(),
            ),
        };
        out.push(Outgoing {
            partition,
            id: format!("routed:{seq}"),
            body,
            kind: Kind::Routed(Routed { seq, relay, from }),
        });
    }
    let writes = dir.into_writes();
    cluster
        .runtime
        .block_on(cluster.publish_events(out))
        .map_err(failed)?;
    engine.keep_directory(writes, noted).map_err(failed)
}

/// Partition `part` gives up its members of `m.names` for the event at
/// partition 0's sequence `seq`: the handover is put, then let go of.
pub fn give(
    engine: &mut Engine<SledStore>,
    shared: &Shared,
    part: usize,
    seq: u64,
    m: MoveOut,
    noted: Vec<(String, Vec<u8>)>,
) -> Result<(), Hold> {
    let cluster = cluster_of(shared)?;
    let h = engine.handover(&m.names).map_err(failed)?;
    let bytes = serde_json::to_vec(&h).map_err(failed)?;
    cluster
        .runtime
        .block_on(cluster.put_handover(seq, part, m.to, &bytes))
        .map_err(failed)?;
    engine.let_go(&h, noted).map_err(failed)?;
    tracing::debug!(
        partition = part,
        to = m.to,
        members = h.members.len(),
        "Members handed over."
    );
    Ok(())
}

/// Takes in the members partitions `from` gave up for the event at
/// partition 0's sequence `seq`; waits while one is not handed over yet.
/// Taken in again after a crash before the event's commit: the same
/// records, so nothing changes.
pub fn take(
    engine: &mut Engine<SledStore>,
    shared: &Shared,
    part: usize,
    seq: u64,
    from: &[usize],
) -> Result<(), Hold> {
    let cluster = cluster_of(shared)?;
    let mut all = Handover::default();
    for &k in from {
        let got = cluster
            .runtime
            .block_on(cluster.get_handover(seq, k, part))
            .map_err(failed)?;
        let Some(bytes) = got else {
            return Err(Hold::Waits(format!(
                "members moving from partition {k} are not handed over yet"
            )));
        };
        let h: Handover = serde_json::from_slice(&bytes).map_err(failed)?;
        all.members.extend(h.members);
        all.identities.extend(h.identities);
    }
    let n = all.members.len() as u64;
    engine.take_in(all, Vec::new()).map_err(failed)?;
    cluster
        .moved_in
        .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

//! One ID's moves between partitions in cluster mode: the members a
//! partition gives up when an event joins them to a group in another
//! partition (`engine::directory`), put by the giving partition's holder
//! in the object store as `handover-<seq>-p<k>-to<t>` (`seq`: the joining
//! event's sequence in partition 0's stream, `k`: the giver, `t`: the
//! taker) and read by the holder of the partition they go to, which waits
//! for it before it applies the event. Putting one again puts the same
//! bytes (a partition's state at a point of its stream is the same on
//! every holder), so a giver that crashed before its commit can put it
//! again. Once a snapshot of the taker covers the event, no rebuild reads
//! the handover again, and the snapshot's holder deletes it. This module
//! moves the bytes; what they hold is `engine::moves::Handover`.

use super::{Cluster, ClusterError};
use async_nats::jetstream::object_store::{InfoErrorKind, ObjectMetadata};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// How long moving an object of a few members (or a partition's
/// histories) may take.
const MOVE_WAIT: Duration = Duration::from_secs(120);

fn handover_name(seq: u64, from: usize, to: usize) -> String {
    format!("handover-{seq}-p{from}-to{to}")
}

/// The sequence and taker a handover's name says.
fn parse_name(name: &str) -> Option<(u64, usize)> {
    let rest = name.strip_prefix("handover-")?;
    let (seq, rest) = rest.split_once("-p")?;
    let (_, to) = rest.split_once("-to")?;
    Some((seq.parse().ok()?, to.parse().ok()?))
}

impl Cluster {
    pub async fn put_handover(
        &self,
        seq: u64,
        from: usize,
        to: usize,
        bytes: &[u8],
    ) -> Result<(), ClusterError> {
        self.put_object(&handover_name(seq, from, to), bytes).await
    }

    /// The handover of partition `from` to `to` for the event at `seq`,
    /// if it is in.
    pub async fn get_handover(
        &self,
        seq: u64,
        from: usize,
        to: usize,
    ) -> Result<Option<Vec<u8>>, ClusterError> {
        self.get_object(&handover_name(seq, from, to)).await
    }

    /// Deletes the handovers partition `to` took in for events of
    /// partition 0's stream up to `through` (a snapshot of `to` covers
    /// them); how many.
    pub async fn drop_handovers(&self, to: usize, through: u64) -> Result<usize, ClusterError> {
        use tokio_stream::StreamExt;
        let mut done = Vec::new();
        let listed = async {
            let mut list = self.snapshots.list().await.map_err(ClusterError::js)?;
            while let Some(o) = list.next().await {
                let o = o.map_err(ClusterError::js)?;
                if !o.deleted
                    && parse_name(&o.name).is_some_and(|(seq, t)| t == to && seq <= through)
                {
                    done.push(o.name);
                }
            }
            Ok::<_, ClusterError>(())
        };
        tokio::time::timeout(MOVE_WAIT, listed)
            .await
            .map_err(|_| ClusterError::JetStream("listing handovers timed out".into()))??;
        for name in &done {
            let delete = tokio::time::timeout(MOVE_WAIT, self.snapshots.delete(name));
            delete
                .await
                .map_err(|_| ClusterError::JetStream(format!("deleting `{name}` timed out")))?
                .map_err(ClusterError::js)?;
        }
        Ok(done.len())
    }

    /// Puts `bytes` as object `name` of the snapshot store.
    pub(super) async fn put_object(&self, name: &str, bytes: &[u8]) -> Result<(), ClusterError> {
        let meta = ObjectMetadata {
            name: name.to_string(),
            ..Default::default()
        };
        let mut reader = bytes;
        let put = self.snapshots.put(meta, &mut reader);
        tokio::time::timeout(MOVE_WAIT, put)
            .await
            .map_err(|_| ClusterError::JetStream(format!("putting `{name}` timed out")))?
            .map(drop)
            .map_err(ClusterError::js)
    }

    /// Object `name` of the snapshot store, if it is there.
    pub(super) async fn get_object(&self, name: &str) -> Result<Option<Vec<u8>>, ClusterError> {
        let get = async {
            match self.snapshots.info(name).await {
                Ok(o) if !o.deleted => {}
                Ok(_) => return Ok(None),
                Err(e) if e.kind() == InfoErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(ClusterError::js(e)),
            }
            let mut o = self.snapshots.get(name).await.map_err(ClusterError::js)?;
            let mut bytes = Vec::new();
            o.read_to_end(&mut bytes)
                .await
                .map_err(|e| ClusterError::JetStream(format!("reading `{name}`: {e}")))?;
            Ok(Some(bytes))
        };
        tokio::time::timeout(MOVE_WAIT, get)
            .await
            .map_err(|_| ClusterError::JetStream(format!("getting `{name}` timed out")))?
    }
}

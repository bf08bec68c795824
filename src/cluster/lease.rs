//! Leases: which node applies which partition. A lease is an entry
//! `p<k>` in the `nudge_leases` bucket naming its node; the bucket's
//! entries expire a lease time after their last write, so a node that
//! stops renewing loses its partitions to the others. A renewal is an
//! update at the revision the node last wrote (compare-and-set): it fails
//! once any other node has written the entry, which fences the node out.
//!
//! The node counts a lease as held until three quarters of a lease time
//! after it *sent* the renewal that the bucket acknowledged: the entry
//! expires a lease time after the bucket *received* it, so the node stops
//! applying a quarter of a lease before any other node may start. Every
//! commit and every effect published checks [`Owned::holds`] first.
//!
//! Live nodes keep an entry in `nudge_nodes` (same expiry); the
//! partitions are shared out evenly over them ([`spread`]), each staying
//! with its holder where the shares allow, so a node that joins or leaves
//! moves only its share: the holder lets go of a partition that is now
//! another's, and that node takes it once the lease is free.

use super::{Cluster, NODES_BUCKET, bounded};
use futures_util::future::join_all;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A lease this node holds.
#[derive(Clone, Copy, Debug)]
pub struct Held {
    /// The entry's revision after this node's last write.
    pub revision: u64,
    pub valid_until: Instant,
    /// The partition's state is taken up (its published effects listed):
    /// its effects may go out.
    pub ready: bool,
    /// Which taking of the lease this is: a consumer started for an
    /// earlier one stops, even when the node holds the partition again.
    pub taken: u64,
    /// The spread gave the partition to another node: since when its
    /// hand-over snapshot was asked for.
    pub handing: Option<Instant>,
    /// The hand-over snapshot is put (or could not be): the lease may go.
    pub handed: bool,
}

/// The partitions this node holds, shared by the lease task, the
/// consumers, the writer and the effect publisher.
pub struct Owned {
    lease: Duration,
    held: Mutex<BTreeMap<usize, Held>>,
    /// Lease changes seen by this node (taken, lost, let go), for metrics.
    changes: std::sync::atomic::AtomicU64,
    /// Set at a clean stop: no lease is taken any more.
    stopping: std::sync::atomic::AtomicBool,
}

impl Owned {
    pub fn new(lease: Duration) -> Owned {
        Owned {
            lease,
            held: Mutex::new(BTreeMap::new()),
            changes: std::sync::atomic::AtomicU64::new(0),
            stopping: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// At a clean stop: this node takes no partition any more (others
    /// stopping let theirs go at the same time), and says so in its entry
    /// so that the spread gives it none.
    pub fn stop_taking(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Acquire)
    }

    /// How long a lease lasts without renewal.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    fn get(&self, p: usize) -> Option<Held> {
        self.held.lock().ok()?.get(&p).copied()
    }

    /// Whether this node may apply partition `p` now.
    pub fn holds(&self, p: usize) -> bool {
        self.get(p).is_some_and(|h| h.valid_until > Instant::now())
    }

    /// Which taking of partition `p`'s lease this node holds.
    pub fn taken(&self, p: usize) -> Option<u64> {
        self.get(p).map(|h| h.taken)
    }

    /// Whether this node may publish partition `p`'s effects now.
    pub fn ready(&self, p: usize) -> bool {
        self.get(p)
            .is_some_and(|h| h.ready && h.valid_until > Instant::now())
    }

    pub fn set_ready(&self, p: usize) {
        if let Ok(mut m) = self.held.lock()
            && let Some(h) = m.get_mut(&p)
        {
            h.ready = true;
        }
    }

    /// The partitions in the lease map, held now or waiting for renewal.
    fn held_now(&self) -> Vec<usize> {
        self.held
            .lock()
            .map_or_else(|_| Vec::new(), |m| m.keys().copied().collect())
    }

    /// The partitions held now.
    pub fn list(&self) -> Vec<usize> {
        let now = Instant::now();
        self.held.lock().map_or_else(
            |_| Vec::new(),
            |m| {
                m.iter()
                    .filter(|(_, h)| h.valid_until > now)
                    .map(|(p, _)| *p)
                    .collect()
            },
        )
    }

    pub fn changes(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records a renewal (`taken`: `None`) or a new taking of the lease.
    fn write(&self, p: usize, revision: u64, sent: Instant, taken: Option<u64>) {
        if let Ok(mut m) = self.held.lock() {
            let before = m.get(&p).copied();
            let held = Held {
                revision,
                valid_until: sent + self.lease * 3 / 4,
                ready: taken.is_none() && before.is_some_and(|h| h.ready),
                taken: taken.or(before.map(|h| h.taken)).unwrap_or_default(),
                handing: before.and_then(|h| h.handing).filter(|_| taken.is_none()),
                handed: before.is_some_and(|h| h.handed) && taken.is_none(),
            };
            m.insert(p, held);
        }
    }

    /// Partition `p`'s hand-over snapshot is put, or will not be: its
    /// lease may go to the node the spread gave it.
    pub fn handed(&self, p: usize) {
        if let Ok(mut m) = self.held.lock()
            && let Some(h) = m.get_mut(&p)
        {
            h.handed = true;
        }
    }

    /// Notes that partition `p`'s hand-over snapshot was asked for; false
    /// when it already was.
    fn ask_hand_over(&self, p: usize) -> bool {
        let Ok(mut m) = self.held.lock() else {
            return false;
        };
        match m.get_mut(&p) {
            Some(h) if h.handing.is_none() => {
                h.handing = Some(Instant::now());
                true
            }
            _ => false,
        }
    }

    fn forget(&self, p: usize) -> Option<Held> {
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.held.lock().ok()?.remove(&p)
    }

    /// Lets go of every partition (at a stop): nothing more is applied.
    pub fn forget_all(&self) -> Vec<(usize, Held)> {
        self.held.lock().map_or_else(
            |_| Vec::new(),
            |mut m| std::mem::take(&mut *m).into_iter().collect(),
        )
    }
}

/// Says once (each time the set changes) which live nodes run another
/// rule set than this node: a partition rebuilt there would apply other
/// rules to its history.
fn warn_of_other_rules(me: &NodeInfo, listed: &BTreeMap<String, NodeInfo>, said: &mut Vec<String>) {
    let other: Vec<String> = listed
        .iter()
        .filter(|(_, n)| !n.version.is_empty() && n.version != me.version)
        .map(|(name, n)| format!("{name} ({})", n.version))
        .collect();
    if other != *said {
        match other.is_empty() {
            false => {
                tracing::warn!(version = %me.version, others = ?other, "Nodes run another rule set than this one: every node must run the same config, rules and plugins.")
            }
            true => tracing::info!(version = %me.version, "Every node runs this rule set again."),
        }
        *said = other;
    }
}

fn lease_key(p: usize) -> String {
    format!("p{p}")
}

/// Which node each partition goes to. The live nodes (sorted by name)
/// each get an equal share, the first ones one more while the partitions
/// do not divide evenly; a partition stays with its owner while the owner
/// is live and within its share (an owner above it keeps first those the
/// nodes below their share have no copy of, then those their copies are
/// least far on for), and the others go, in partition order,
/// to the nodes below their share: to the one whose copy of it is the
/// furthest on (`copies`: node -> partition -> applied sequence), so a
/// restarted node gets back the partitions it has copies of instead of
/// rebuilding others from the whole stream. So a node that joins takes its
/// share and one that leaves hands its share over, and nothing else moves.
/// Every node computes the same from the same owners, nodes and copies.
pub fn spread(
    partitions: usize,
    live: &[String],
    owners: &BTreeMap<usize, String>,
    copies: &BTreeMap<String, BTreeMap<String, u64>>,
) -> Vec<Option<String>> {
    let n = live.len();
    if n == 0 {
        return vec![None; partitions];
    }
    let share = |i: usize| partitions / n + usize::from(i < partitions % n);
    let mut count = vec![0usize; n];
    let mut plan: Vec<Option<String>> = vec![None; partitions];
    let copy = |i: usize, p: usize| {
        copies
            .get(&live[i])
            .and_then(|c| c.get(&p.to_string()))
            .copied()
            .unwrap_or(0)
    };
    // A holder above its share keeps first the partitions of which the
    // nodes below their share (one that joined or came back) have no copy,
    // then those their copies are least far on for, and lets go of the
    // rest: a restarted node gets back what it held, not a partition it
    // would rebuild from the stream's start (with One ID, partition 0, the
    // directory, whose move makes every read wait). Only the nodes below
    // their share are asked: the others' copies say nothing of where a
    // partition should go now, and the stream's sequences are not
    // comparable between partitions. Only a partition's holder applies
    // it, so the other copies of it stand still while it is held, and
    // partitions do not move back and forth as copies advance.
    let owner = |p: usize| {
        owners
            .get(&p)
            .and_then(|o| live.iter().position(|l| l == o))
    };
    let holding = |i: usize| (0..partitions).filter(|&p| owner(p) == Some(i)).count();
    let below: Vec<usize> = (0..n).filter(|&j| holding(j) < share(j)).collect();
    let mut held: Vec<(u64, usize, usize)> = (0..partitions)
        .filter_map(|p| {
            let i = owner(p)?;
            let wanted = below.iter().map(|&j| copy(j, p)).max();
            Some((wanted.unwrap_or(0), p, i))
        })
        .collect();
    held.sort();
    for (_, p, i) in held {
        if count[i] < share(i) {
            count[i] += 1;
            plan[p] = Some(live[i].clone());
        }
    }
    for (p, slot) in plan.iter_mut().enumerate().filter(|(_, s)| s.is_none()) {
        let mut best: Option<usize> = None;
        for i in (0..n).filter(|&i| count[i] < share(i)) {
            if best.is_none_or(|b| copy(i, p) > copy(b, p)) {
                best = Some(i);
            }
        }
        if let Some(i) = best {
            count[i] += 1;
            *slot = Some(live[i].clone());
        }
    }
    plan
}

/// This node's entry in the node bucket: its HTTP address, for the
/// cluster view.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, Default)]
pub struct NodeInfo {
    pub http: String,
    /// The version of the rule set it runs (config, rules, plugins).
    #[serde(default)]
    pub version: String,
    /// The lag of each partition it holds (by partition number, a string
    /// as JSON keys are), as of its last fetch.
    #[serde(default)]
    pub lags: BTreeMap<String, u64>,
    /// The last stream sequence of each partition its copy applied (those
    /// it has a copy of), for the spread to give partitions back.
    #[serde(default)]
    pub copies: BTreeMap<String, u64>,
    /// Stopping: it takes no partition, and the spread gives it none.
    #[serde(default)]
    pub stopping: bool,
}

impl Cluster {
    /// The live nodes, by name, with what they published of themselves.
    /// Listed from the bucket stream's subjects (a request its leader
    /// answers), not by a consumer: right after a NATS server died, making
    /// consumers can take many seconds while reads and writes already
    /// work again.
    pub async fn live_nodes(&self) -> Result<BTreeMap<String, NodeInfo>, super::ClusterError> {
        use tokio_stream::StreamExt;
        let prefix = format!("$KV.{NODES_BUCKET}.");
        let mut subjects = self
            .nodes
            .stream
            .info_with_subjects(format!("{prefix}>"))
            .await
            .map_err(super::ClusterError::js)?;
        let mut names = Vec::new();
        while let Some(s) = subjects.next().await {
            let (subject, _) = s.map_err(super::ClusterError::js)?;
            if let Some(name) = subject.strip_prefix(&prefix) {
                names.push(name.to_string());
            }
        }
        let mut nodes = BTreeMap::new();
        // A deleted entry (a node that left) reads as none.
        for name in names {
            if let Ok(Some(v)) = self.nodes.get(&name).await {
                nodes.insert(name, serde_json::from_slice(&v).unwrap_or_default());
            }
        }
        Ok(nodes)
    }

    /// Who holds each partition's lease now (by the bucket), read all at
    /// once.
    pub async fn owners(&self) -> BTreeMap<usize, String> {
        let reads = (0..self.partitions)
            .map(|p| async move { (p, self.leases.get(lease_key(p)).await.ok().flatten()) });
        join_all(reads)
            .await
            .into_iter()
            .filter_map(|(p, v)| Some((p, String::from_utf8_lossy(&v?).into_owned())))
            .collect()
    }

    /// Keeps this node's entry and leases, forever: renews what it holds,
    /// lets go of what the spread gives another node (once its hand-over
    /// snapshot is put: each such partition is sent on `leaving`, and
    /// [`Owned::handed`] says it is done), takes what it is given once
    /// free. Each partition taken is sent on `gained`.
    pub async fn keep_leases(
        &self,
        me: impl Fn() -> NodeInfo,
        gained: tokio::sync::mpsc::UnboundedSender<usize>,
        leaving: tokio::sync::mpsc::UnboundedSender<usize>,
    ) {
        let every = self.options.lease / 4;
        let mut before: Vec<String> = Vec::new();
        let mut other_rules: Vec<String> = Vec::new();
        loop {
            // Renewals first, all at once, each waiting at most a round:
            // a slow answer for one lease (NATS electing a leader) must
            // not let the others lapse.
            let held = self.owned.held_now();
            join_all(held.into_iter().map(|p| bounded(every, self.renew(p)))).await;
            let me = me();
            let info = bytes::Bytes::from(serde_json::to_vec(&me).unwrap_or_default());
            match bounded(every, self.nodes.put(&self.options.node, info)).await {
                Some(Ok(_)) => {}
                Some(Err(e)) => tracing::warn!(error = %e, "Cannot renew this node's entry."),
                None => {
                    tracing::warn!("Cannot renew this node's entry: NATS did not answer in time.")
                }
            }
            let listed = match bounded(every, self.live_nodes()).await {
                Some(Ok(n)) => n,
                None => {
                    tracing::warn!("Cannot list the live nodes in time; the spread waits.");
                    continue;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "Cannot list the live nodes; the spread waits.");
                    tokio::time::sleep(every).await;
                    continue;
                }
            };
            warn_of_other_rules(&me, &listed, &mut other_rules);
            let mut copies: BTreeMap<String, BTreeMap<String, u64>> = listed
                .iter()
                .map(|(name, n)| (name.clone(), n.copies.clone()))
                .collect();
            copies.insert(self.options.node.clone(), me.copies.clone());
            // A listing made while an entry is rewritten can miss it: a
            // node listed before and missed now is asked for by name.
            // Another node stopping is given no partition.
            let stopping: Vec<String> = listed
                .iter()
                .filter(|(_, n)| n.stopping)
                .map(|(name, _)| name.clone())
                .collect();
            let mut live: Vec<String> = listed.into_keys().collect();
            for name in before
                .iter()
                .filter(|n| !live.contains(n))
                .cloned()
                .collect::<Vec<_>>()
            {
                if matches!(self.nodes.get(&name).await, Ok(Some(_))) {
                    live.push(name);
                }
            }
            live.push(self.options.node.clone());
            live.sort();
            live.dedup();
            before.clone_from(&live);
            // Its own partitions it keeps until its stop snapshots them.
            live.retain(|n| *n == self.options.node || !stopping.contains(n));
            // What this node holds is its own, whatever a read missed.
            let Some(mut owners) = bounded(every, self.owners()).await else {
                tracing::warn!("Cannot read the leases in time; the spread waits.");
                continue;
            };
            for p in self.owned.held_now() {
                owners.insert(p, self.options.node.clone());
            }
            let plan = spread(self.partitions, &live, &owners, &copies);
            for (p, node) in plan.iter().enumerate() {
                let mine = node.as_deref() == Some(self.options.node.as_str());
                self.keep_lease(p, mine, &gained, &leaving).await;
            }
            tokio::time::sleep(every).await;
        }
    }

    async fn keep_lease(
        &self,
        p: usize,
        mine: bool,
        gained: &tokio::sync::mpsc::UnboundedSender<usize>,
        leaving: &tokio::sync::mpsc::UnboundedSender<usize>,
    ) {
        let node = bytes::Bytes::from(self.options.node.clone());
        let sent = Instant::now();
        match self.owned.get(p) {
            // The new holder starts from the partition as it is here, not
            // from an older snapshot or copy: waited for at most two
            // leases (a snapshot of a big partition, NATS slow).
            Some(h)
                if !mine
                    && !h.handed
                    && h.handing
                        .is_none_or(|t| t.elapsed() < self.options.lease * 2) =>
            {
                self.ask_hand_over(p, leaving)
            }
            Some(h) if !mine => {
                self.owned.forget(p);
                tracing::info!(partition = p, "Partition handed over to another node.");
                let leases = self.leases.clone();
                let grace = self.options.lease / 4;
                // The writer and the publisher see the lease gone before
                // the entry goes: nothing is applied after another node
                // may take it.
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    let _ = leases
                        .delete_expect_revision(&lease_key(p), h.revision)
                        .await;
                });
            }
            // Renewed at the start of the round.
            Some(_) => {}
            None if mine && !self.owned.stopping() => {
                if let Ok(revision) = self.leases.create(&lease_key(p), node).await {
                    let taken = self
                        .owned
                        .changes
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                        + 1;
                    self.owned.write(p, revision, sent, Some(taken));
                    tracing::info!(partition = p, "Lease taken.");
                    let _ = gained.send(p);
                }
            }
            None => {}
        }
    }

    /// Asks once for partition `p`'s hand-over snapshot; with nobody to
    /// take it, the lease may go at once.
    fn ask_hand_over(&self, p: usize, leaving: &tokio::sync::mpsc::UnboundedSender<usize>) {
        if self.owned.ask_hand_over(p) && leaving.send(p).is_err() {
            self.owned.handed(p);
        }
    }

    /// Renews partition `p`'s lease at the revision this node last wrote.
    /// Refused at that revision, another node wrote the entry (or it
    /// expired): the lease is lost. Any other failure (a timeout, NATS
    /// away) is tried again next round; the lease lapses here meanwhile.
    async fn renew(&self, p: usize) {
        use async_nats::jetstream::kv::UpdateErrorKind;
        let Some(h) = self.owned.get(p) else { return };
        let node = bytes::Bytes::from(self.options.node.clone());
        let sent = Instant::now();
        match self.leases.update(&lease_key(p), node, h.revision).await {
            Ok(revision) => self.owned.write(p, revision, sent, None),
            Err(e) if e.kind() != UpdateErrorKind::WrongLastRevision => {
                tracing::warn!(partition = p, error = %e, "Cannot renew a lease; trying again.");
            }
            Err(e) => {
                self.owned.forget(p);
                tracing::warn!(partition = p, error = %e, "Lease lost; the partition is no longer applied here.");
            }
        }
    }

    /// Makes sure no live node has this node's name: an entry of it that
    /// is renewed within a lease belongs to another node (an entry left by
    /// a node of this name that died expires, and is waited for).
    pub async fn claim_name(&self) -> Result<(), super::ClusterError> {
        use async_nats::jetstream::kv::Operation;
        let name = &self.options.node;
        let first = self
            .nodes
            .entry(name)
            .await
            .map_err(super::ClusterError::js)?;
        let Some(first) = first.filter(|e| e.operation == Operation::Put) else {
            return Ok(());
        };
        tracing::info!(node = %name, "An entry of this node's name is in the cluster; waiting a lease to see whether it is alive.");
        tokio::time::sleep(self.options.lease * 5 / 4).await;
        let again = self
            .nodes
            .entry(name)
            .await
            .map_err(super::ClusterError::js)?;
        match again {
            Some(e) if e.operation == Operation::Put && e.revision != first.revision => {
                let other: NodeInfo = serde_json::from_slice(&e.value).unwrap_or_default();
                Err(super::ClusterError::NodeTaken {
                    node: name.clone(),
                    http: other.http,
                })
            }
            _ => Ok(()),
        }
    }

    /// Lets go of every lease and this node's entry (at a clean stop, once
    /// nothing more is applied), so that others take over at once.
    pub async fn leave(&self) {
        for (p, h) in self.owned.forget_all() {
            let _ = self
                .leases
                .delete_expect_revision(&lease_key(p), h.revision)
                .await;
        }
        let _ = self.nodes.delete(&self.options.node).await;
    }
}

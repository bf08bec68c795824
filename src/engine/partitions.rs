//! A data folder's partitions driven as one: an engine per partition,
//! each event sent to the partition of its member
//! (`store::folder::partition_of`), and each partition's share of a batch
//! committed on a thread of its own while the others commit theirs. On
//! one partition, [`Partitions::process`] is the engine's own, on the
//! caller's thread, as before partitions.
//!
//! Budgets and the points mall's stock are spent from one
//! [`Ledger`] the partitions' engines share (`engine::budget`); what a rule
//! gives a member of another partition (`to ...`) is handed there as a
//! relay (`engine::relay`: stored by the sender, applied by the recipient
//! with its next commit, here after every batch); the repurchase models
//! are fitted over every partition (`engine::predict::FitShare`). With One
//! ID identifiers, where an event goes is `engine::route`'s to find.
//!
//! A batch over several partitions is several commits: when one fails,
//! the others' events are stored, and sending the batch again finds them
//! as duplicates (their ids are in their members' records).
//!
//! Two ways to drive them: [`Partitions::process`] commits one batch and
//! returns (a request that waits for its answer), and
//! [`Partitions::pipeline`] streams events to a writer thread per
//! partition, each committing its own batches while the caller reads on
//! and the other partitions flush (an import). A member's events keep
//! their order either way: they all go to one partition, in order.

use super::budget::Ledger;
use super::{Committed, Engine, EventOutcome};
use crate::config::Schema;
use crate::lang::RuleSet;
use crate::model::{Effect, Event, MemberRecord};
use crate::plugins::Plugins;
use crate::store::folder::partition_of;
use crate::store::{Store, StoreError};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};

/// Batches a partition's writer may have waiting, besides the one it is
/// committing: enough to keep it busy while the reader fills the next, few
/// enough that a slow partition holds the reader back (memory stays flat).
const QUEUED: usize = 2;

/// Events for one partition, each with the caller's tag (a line number).
#[derive(Default)]
pub struct Batch {
    pub events: Vec<Event>,
    pub tags: Vec<usize>,
}

/// Sends events to their partitions' writers ([`Partitions::pipeline`]),
/// and hands what the writers return to the caller's `done` as it comes.
pub struct Router<'a, T, E> {
    pending: Vec<Batch>,
    writers: Vec<SyncSender<Batch>>,
    results: Receiver<Result<T, E>>,
    done: &'a mut dyn FnMut(T),
    batch: usize,
}

impl<T, E> Router<'_, T, E> {
    /// Queues `ev` for its member's partition; a full batch goes to the
    /// partition's writer (waiting while it has [`QUEUED`]). Fails with a
    /// writer's error once one has stopped.
    pub fn send(&mut self, ev: Event, tag: usize) -> Result<(), E> {
        let k = partition_of(&ev.member, self.writers.len());
        let b = &mut self.pending[k];
        b.events.push(ev);
        b.tags.push(tag);
        if b.events.len() >= self.batch {
            self.flush(k)?;
        }
        self.collect(false)
    }

    fn flush(&mut self, k: usize) -> Result<(), E> {
        let b = std::mem::take(&mut self.pending[k]);
        if b.events.is_empty() || self.writers[k].send(b).is_ok() {
            return Ok(());
        }
        // The writer stopped, and sent its error before it did (the others
        // still run, so wait for that error, not for the end).
        while let Ok(r) = self.results.recv() {
            (self.done)(r?);
        }
        Ok(())
    }

    /// Hands finished batches to `done`; with `wait`, every one to come
    /// (the writers have been told to stop).
    fn collect(&mut self, wait: bool) -> Result<(), E> {
        loop {
            let r = if wait {
                match self.results.recv() {
                    Ok(r) => r,
                    Err(_) => return Ok(()),
                }
            } else {
                match self.results.try_recv() {
                    Ok(r) => r,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => return Ok(()),
                }
            };
            (self.done)(r?);
        }
    }
}

/// Relays and confirmations between the pipeline's writers: each writer
/// sends what its commit stored for other partitions and applied for them,
/// and collects its own before its next batch.
struct Post {
    boxes: Vec<std::sync::Mutex<(Vec<Effect>, Vec<String>)>>,
}

impl Post {
    fn new(n: usize) -> Post {
        Post {
            boxes: (0..n).map(|_| Default::default()).collect(),
        }
    }

    // A writer that panicked holding a box left whole lists: each change
    // is one push or one take.
    fn open(&self, k: usize) -> std::sync::MutexGuard<'_, (Vec<Effect>, Vec<String>)> {
        self.boxes[k].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send<S: Store>(&self, engine: &mut Engine<S>, n: usize) {
        for r in engine.take_outgoing() {
            self.open(partition_of(&r.member, n)).0.push(r);
        }
        for (key, from) in engine.take_applied() {
            self.open(partition_of(&from, n)).1.push(key);
        }
    }

    fn collect<S: Store>(&self, k: usize, engine: &mut Engine<S>) {
        let (relays, confirmed) = std::mem::take(&mut *self.open(k));
        engine.deliver(relays);
        engine.confirm(confirmed);
    }
}

pub struct Partitions<S: Store> {
    engines: Vec<Engine<S>>,
}

/// The data folder's partitions as engines (made with `schema.partitions`
/// of them when the folder is new). A project that needs every member in
/// one partition is refused on a folder of more, before anything is made.
pub fn open(
    folder: &std::path::Path,
    schema: &std::sync::Arc<Schema>,
    rules: &std::sync::Arc<RuleSet>,
    plugins: Option<std::sync::Arc<crate::plugins::Plugins>>,
) -> Result<Partitions<crate::store::SledStore>, StoreError> {
    let n = crate::store::folder::partitions_in(folder)?.unwrap_or(schema.partitions);
    let stores = crate::store::folder::open_partitions(folder, n, schema.cache_bytes)?;
    let whole = Arc::new(crate::store::folder::Folder {
        parts: stores.clone(),
    });
    let fits = super::predict::FitShare::new(whole);
    let engines = stores
        .into_iter()
        .map(|s| {
            let e = Engine::new(schema.clone(), rules.clone(), s)?.with_plugins(plugins.clone());
            Ok(if n > 1 { e.fit_over(fits.clone()) } else { e })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Partitions::new(engines)
}

impl<S: Store + Send> Partitions<S> {
    /// The engines of partitions 0, 1, ...; at least one. On more than
    /// one, their budgets and stock are spent from one ledger, the sums of
    /// what each partition's store says it spent.
    pub fn new(engines: Vec<Engine<S>>) -> Result<Partitions<S>, StoreError> {
        let n = engines.len();
        let ledger = match n {
            1 => None,
            _ => Some(Ledger::load(
                engines.iter().map(|e| e.store() as &dyn Store),
            )?),
        };
        let engines = engines
            .into_iter()
            .enumerate()
            .map(|(k, e)| e.in_partition(k, n, ledger.clone()))
            .collect();
        let mut parts = Partitions { engines };
        // A move between partitions (a One ID merge) a crash cut short is
        // finished before anything else.
        if parts.one_id() {
            parts.finish_moves()?;
        }
        Ok(parts)
    }

    pub fn len(&self) -> usize {
        self.engines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.engines.is_empty()
    }

    pub fn engines(&self) -> &[Engine<S>] {
        &self.engines
    }

    pub fn engines_mut(&mut self) -> &mut [Engine<S>] {
        &mut self.engines
    }

    /// Partition 0's engine: the config and rules all of them run.
    pub fn first(&self) -> &Engine<S> {
        &self.engines[0]
    }

    /// The engine of `member`'s partition (where a One ID merge moved it,
    /// if one did; its home when the note cannot be read).
    pub fn engine_of(&self, member: &str) -> &Engine<S> {
        let home = partition_of(member, self.engines.len());
        let k = match self.one_id() {
            true => self.locate(member).unwrap_or(home),
            false => home,
        };
        &self.engines[k]
    }

    /// The body hash `ev`'s id was applied with, if it was (to tell a
    /// resend from another event reusing the id). With One ID the event's
    /// names may lead to any partition: each is asked.
    pub fn known(&self, ev: &Event) -> Result<Option<u64>, StoreError> {
        if !self.one_id() {
            return self.engine_of(&ev.member).known(ev);
        }
        for e in &self.engines {
            if let Some(h) = e.known(ev)? {
                return Ok(Some(h));
            }
        }
        Ok(None)
    }

    pub fn member(&self, id: &str) -> Result<Option<MemberRecord>, StoreError> {
        self.engine_of(id).member(id)
    }

    /// Swaps config, rules and plugins in every partition, or in none: a
    /// tier list the stores cannot take is refused first.
    pub fn swap(
        &mut self,
        schema: &Arc<Schema>,
        rules: &Arc<RuleSet>,
        plugins: &Option<Arc<Plugins>>,
    ) -> Result<(), StoreError> {
        for e in &self.engines {
            if let Some(why) = super::tier_change(e.store(), &schema.tiers)? {
                return Err(StoreError::TiersChanged(why));
            }
        }
        for e in &mut self.engines {
            e.swap(schema.clone(), rules.clone(), plugins.clone())?;
        }
        Ok(())
    }

    /// Processes a batch: each partition commits its events, all at the
    /// same time. The outcomes are in the batch's order; the effects are
    /// each partition's in turn (a member's in their order), then those of
    /// the relays the batch made for members of other partitions, which
    /// are applied in their partitions before this returns.
    pub fn process(&mut self, events: &[Event]) -> Result<Committed, StoreError> {
        let n = self.engines.len();
        if n == 1 {
            return self.engines[0].process(events);
        }
        if self.one_id() {
            return self.process_one_id(events);
        }
        let targets: Vec<usize> = events.iter().map(|e| partition_of(&e.member, n)).collect();
        self.commit_routed(events, &targets)
    }

    /// Commits `events[i]` in partition `targets[i]`, every partition's
    /// share at the same time, then the relays they made.
    pub(super) fn commit_routed(
        &mut self,
        events: &[Event],
        targets: &[usize],
    ) -> Result<Committed, StoreError> {
        let n = self.engines.len();
        let mut parts: Vec<Vec<Event>> = vec![Vec::new(); n];
        let mut at: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, (ev, k)) in events.iter().zip(targets).enumerate() {
            parts[*k].push(ev.clone());
            at[*k].push(i);
        }
        self.route()?;
        let mut outcomes = vec![EventOutcome::Duplicate; events.len()];
        let mut effects = Vec::new();
        for (result, places) in self.fork(&parts).into_iter().zip(at) {
            let Some(c) = result.transpose()? else {
                continue;
            };
            for (o, i) in c.outcomes.into_iter().zip(places) {
                outcomes[i] = o;
            }
            effects.extend(c.effects);
        }
        effects.extend(self.settle(false)?);
        Ok(Committed { outcomes, effects })
    }

    /// Commits `parts[k]` in partition `k`, for each partition with events
    /// or relays to apply, all at the same time; `None` for the others.
    fn fork(&mut self, parts: &[Vec<Event>]) -> Vec<Option<Result<Committed, StoreError>>> {
        self.each(
            |k, engine| !parts[k].is_empty() || engine.has_mail(),
            |k, engine| engine.process(&parts[k]),
        )
    }

    /// Runs `work` on each partition `pick` chooses, all at the same time
    /// (a thread each; on this thread when it chooses one); the outcomes
    /// in partition order, `None` for those not chosen.
    pub fn each<T: Send>(
        &mut self,
        pick: impl Fn(usize, &Engine<S>) -> bool,
        work: impl Fn(usize, &mut Engine<S>) -> Result<T, StoreError> + Sync,
    ) -> Vec<Option<Result<T, StoreError>>> {
        let chosen: Vec<bool> = (self.engines.iter().enumerate())
            .map(|(k, e)| pick(k, e))
            .collect();
        if chosen.iter().filter(|c| **c).count() <= 1 {
            return (self.engines.iter_mut().enumerate())
                .map(|(k, e)| chosen[k].then(|| work(k, e)))
                .collect();
        }
        let work = &work;
        std::thread::scope(|s| {
            let running: Vec<_> = (self.engines.iter_mut().enumerate())
                .map(|(k, engine)| chosen[k].then(|| s.spawn(move || work(k, engine))))
                .collect();
            running
                .into_iter()
                .map(|t| {
                    t.map(|t| {
                        t.join().unwrap_or_else(|_| {
                            Err(StoreError::Io("a partition's writer stopped".into()))
                        })
                    })
                })
                .collect()
        })
    }

    /// Hands each partition the relays other partitions stored for its
    /// members, and the confirmations of those it stored; whether any
    /// partition has relays to apply.
    fn route(&mut self) -> Result<bool, StoreError> {
        let n = self.engines.len();
        let mut relays: Vec<Vec<Effect>> = vec![Vec::new(); n];
        let mut confirmed: Vec<Vec<String>> = vec![Vec::new(); n];
        let outgoing: Vec<Vec<Effect>> =
            self.engines.iter_mut().map(|e| e.take_outgoing()).collect();
        for r in outgoing.into_iter().flatten() {
            // A member moved by a One ID merge is where its home says.
            let k = match self.one_id() {
                true => self.locate(&r.member)?,
                false => partition_of(&r.member, n),
            };
            relays[k].push(r);
        }
        for e in &mut self.engines {
            for (key, from) in e.take_applied() {
                confirmed[partition_of(&from, n)].push(key);
            }
        }
        for ((e, r), c) in self.engines.iter_mut().zip(relays).zip(confirmed) {
            e.deliver(r);
            e.confirm(c);
        }
        Ok(self.engines.iter().any(|e| e.has_incoming()))
    }

    /// Applies the relays partitions stored for members of others, each in
    /// its recipient's partition; with `all`, also commits the
    /// confirmations, so that nothing is left in transit (a clean stop).
    /// The effects of the relays applied.
    pub fn settle(&mut self, all: bool) -> Result<Vec<Effect>, StoreError> {
        let mut effects = Vec::new();
        let none = vec![Vec::new(); self.engines.len()];
        while self.route()? || (all && self.engines.iter().any(|e| e.has_mail())) {
            for c in self.fork(&none).into_iter().flatten() {
                effects.extend(c?.effects);
            }
        }
        Ok(effects)
    }

    /// Runs a writer thread per partition for as long as `feed` sends
    /// events through the [`Router`] it is given. Each writer calls
    /// `work` with its engine for each batch of up to `batch` events (the
    /// commit, and what follows it); `done` gets what `work` returned, on
    /// this thread, as batches finish. The first error stops the feed;
    /// every batch already sent is finished before this returns it.
    pub fn pipeline<T: Send, E: Send + From<StoreError>>(
        &mut self,
        batch: usize,
        feed: impl FnOnce(&mut Router<'_, T, E>) -> Result<(), E>,
        work: impl Fn(&mut Engine<S>, Batch) -> Result<T, E> + Sync,
        done: &mut dyn FnMut(T),
    ) -> Result<(), E> {
        let (results_tx, results) = std::sync::mpsc::channel();
        let n = self.engines.len();
        let post = Post::new(n);
        let fed = std::thread::scope(|s| {
            let mut writers = Vec::with_capacity(n);
            for (k, engine) in self.engines.iter_mut().enumerate() {
                let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(QUEUED);
                let (results_tx, work, post) = (results_tx.clone(), &work, &post);
                writers.push(tx);
                s.spawn(move || {
                    for b in rx {
                        post.collect(k, engine);
                        let r = work(engine, b);
                        post.send(engine, n);
                        let stop = r.is_err();
                        if results_tx.send(r).is_err() || stop {
                            return;
                        }
                    }
                });
            }
            drop(results_tx);
            let mut router = Router {
                pending: (0..n).map(|_| Batch::default()).collect(),
                writers,
                results,
                done: &mut *done,
                batch,
            };
            let fed = feed(&mut router).and_then(|()| (0..n).try_for_each(|k| router.flush(k)));
            router.writers.clear();
            let finished = router.collect(true);
            fed.and(finished)
        });
        fed?;
        // What the writers sent each other after their last batch: applied
        // and confirmed here, until nothing is in transit.
        for (k, e) in self.engines.iter_mut().enumerate() {
            post.collect(k, e);
        }
        while self.route().map_err(E::from)? || self.engines.iter().any(|e| e.has_mail()) {
            for e in self.engines.iter_mut().filter(|e| e.has_mail()) {
                done(work(e, Batch::default())?);
            }
        }
        Ok(())
    }

    /// Fits the repurchase models over every partition's members
    /// (histories counted to `day`) and keeps the fit in each.
    pub fn refit(&mut self, day: i32) -> Result<super::predict::Fit, super::predict::PredictError> {
        let mut fit = None;
        for e in &mut self.engines {
            fit = Some(e.refit(day)?);
        }
        fit.ok_or(super::predict::PredictError::Store(StoreError::Io(
            "no partitions".into(),
        )))
    }

    /// Saves every partition's due index (at a clean stop).
    pub fn save_due(&mut self) -> Result<(), StoreError> {
        self.engines.iter_mut().try_for_each(|e| e.save_due())
    }
}

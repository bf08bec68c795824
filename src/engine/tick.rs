//! The daily tick: every member due that day (all of them after a start
//! without a due index snapshot, or a rule change) has its points expired
//! and its tick rules run, in chunks of one commit each.

use super::ctx::Trigger;
use super::fire;
use super::points;
use super::{Engine, Uncommitted, clock, due, prune};
use crate::model::{Effect, MemberRecord};
use crate::store::{IdRange, Store, StoreError, WriteSet, keys};

/// Members a daily tick evaluates and commits together (one flush each).
const TICK_CHUNK: usize = 10_000;

/// A tick lists the members due when they are at most this fraction of
/// the index (one in this many); more, and it reads the store in key order
/// instead, without a list (`tick_in_key_order`). Listing costs memory per
/// member due; reading in order costs a pass over every key.
const FEW_DUE: usize = 4;

impl<S: Store> Engine<S> {
    /// Runs the daily tick of `day` for every member and commits it
    /// (in chunks); records `day` as the last completed tick.
    pub fn tick(&mut self, day: i32) -> Result<Vec<Effect>, StoreError> {
        let mut all = Vec::new();
        self.tick_with(day, &mut |effects| all.extend(effects))?;
        Ok(all)
    }

    /// The tick, handing each commit's effects to `on_effects` instead of
    /// keeping them all: a first tick over millions of members makes
    /// millions of effects, and the daemon only counts them.
    pub fn tick_with(
        &mut self,
        day: i32,
        on_effects: &mut dyn FnMut(Vec<Effect>),
    ) -> Result<(), StoreError> {
        self.refit_if_due(day)?;
        let at = clock::tick_instant(&self.schema, day);
        let tick_name = format!("tick:{}", crate::base::time::day_string(day));
        if self.ticks_do_something() {
            // After a start without a snapshot, or a rule change, every
            // member is visited (and gets a due day); after that only the
            // members due.
            let everyone = !self.due_ready || self.full_ticks;
            let due = (!everyone).then(|| self.due.count_on(day));
            let visits = match due {
                Some(n) if n <= self.due.len() / FEW_DUE => {
                    let members = self.due.on(day);
                    for chunk in members.chunks(TICK_CHUNK) {
                        self.tick_chunk(chunk, day, at, &tick_name, on_effects)?;
                    }
                    n
                }
                _ => self.tick_in_key_order(day, at, &tick_name, everyone, on_effects)?,
            };
            self.tick_visits += visits as u64;
            // Only a completed full tick leaves every member with a due day.
            self.due_ready = true;
            self.due_complete = true;
        }
        self.persist(WriteSet {
            meta: vec![(keys::LAST_TICK.into(), day.to_le_bytes().to_vec())],
            ..WriteSet::default()
        })?;
        Ok(())
    }

    /// Visits the members due on `day` (`everyone`: all of them) by
    /// reading the store's member keys in order, a chunk at a time: a list
    /// of every id would cost hundreds of megabytes at millions of members
    /// (the tick that visits everyone, and a day a calendar rule turns for
    /// everyone). How many were visited.
    fn tick_in_key_order(
        &mut self,
        day: i32,
        at: jiff::Timestamp,
        tick_name: &str,
        everyone: bool,
        on_effects: &mut dyn FnMut(Vec<Effect>),
    ) -> Result<usize, StoreError> {
        let (mut after, mut visits) = (None::<String>, 0);
        loop {
            let mut chunk = Vec::with_capacity(TICK_CHUNK);
            let mut last = None;
            let (store, due) = (&self.store, &self.due);
            store.each_member_bytes(&IdRange::after(after.as_deref()), &mut |key, _| {
                let id = String::from_utf8_lossy(key).into_owned();
                if everyone || due.is_due(&id, day) {
                    chunk.push(id.clone());
                }
                last = Some(id);
                chunk.len() < TICK_CHUNK
            })?;
            if !chunk.is_empty() {
                self.tick_chunk(&chunk, day, at, tick_name, on_effects)?;
            }
            visits += chunk.len();
            if chunk.len() < TICK_CHUNK {
                return Ok(visits);
            }
            after = last;
        }
    }

    /// Fits the repurchase models again before the tick of `day` when rules
    /// read predictions and the fit is `prediction.refit` days old (or
    /// there is none). A fit that cannot be made yet (no repeat buyers)
    /// leaves the predictions as they were: null until one can.
    fn refit_if_due(&mut self, day: i32) -> Result<(), StoreError> {
        if self.in_cluster || !self.refit_due(day) {
            return Ok(());
        }
        match self.refit(day) {
            // Nothing to fit yet, or purchases dated after the tick's day
            // (a late-arriving history): predictions stay as they were.
            Ok(_)
            | Err(super::predict::PredictError::Fit(_))
            | Err(super::predict::PredictError::Later { .. }) => Ok(()),
            Err(super::predict::PredictError::Store(e)) => Err(e),
        }
    }

    /// Whether the tick of `day` fits the models again first: rules read
    /// predictions and the fit is `prediction.refit` days old, or none.
    pub fn refit_due(&self, day: i32) -> bool {
        let fitted = self
            .fit()
            .and_then(|f| crate::base::time::parse_date(&f.fitted_on));
        self.rules.reads_predictions
            && !fitted.is_some_and(|d| day - d < self.schema.refit_days && day >= d)
    }

    /// One commit of a tick: the members `ids`.
    fn tick_chunk(
        &mut self,
        ids: &[String],
        day: i32,
        at: jiff::Timestamp,
        tick_name: &str,
        on_effects: &mut dyn FnMut(Vec<Effect>),
    ) -> Result<(), StoreError> {
        let mut p = Uncommitted::default();
        let visited = ids.iter().try_for_each(|id| {
            match self.take(id)? {
                Some(rec) => self.tick_record(id, rec, day, at, tick_name, &mut p),
                None => p.gone.push(id.clone()),
            }
            Ok(())
        });
        let settled = visited.and_then(|()| self.settle_relays(&mut p));
        self.abandoned(settled)?;
        on_effects(self.commit(p, Vec::new())?);
        Ok(())
    }

    /// Whether a tick has anything to do: tick rules, or points that expire.
    pub(super) fn ticks_do_something(&self) -> bool {
        !self.rules.on_tick.is_empty() || self.schema.points.expire_after_days.is_some()
    }

    /// How many members a tick on `day` would visit (`None` before the
    /// first full tick, which visits all); for benchmarks and tests.
    pub fn due_on(&self, day: i32) -> Option<usize> {
        self.due_ready.then(|| self.due.count_on(day))
    }

    /// Evaluates the tick rules for one member on `day` and commits.
    pub fn tick_member(&mut self, member: &str, day: i32) -> Result<Vec<Effect>, StoreError> {
        let at = clock::tick_instant(&self.schema, day);
        let mut p = Uncommitted::default();
        let ticked = self
            .tick_into(member, day, at, &mut p)
            .and_then(|()| self.settle_relays(&mut p));
        self.abandoned(ticked)?;
        self.commit(p, Vec::new())
    }

    pub(super) fn tick_into(
        &mut self,
        member: &str,
        day: i32,
        at: jiff::Timestamp,
        p: &mut Uncommitted,
    ) -> Result<(), StoreError> {
        if !self.ticks_do_something() {
            return Ok(());
        }
        let Some(rec) = self.take(member)? else {
            return Ok(());
        };
        let tick_name = format!("tick:{}", crate::base::time::day_string(day));
        self.tick_record(member, rec, day, at, &tick_name, p);
        Ok(())
    }

    /// The tick of one member's record: expiry, then the tick rules; the
    /// record joins the batch if it changed, else goes back to the cache.
    pub(super) fn tick_record(
        &mut self,
        member: &str,
        mut rec: MemberRecord,
        day: i32,
        at: jiff::Timestamp,
        tick_name: &str,
        p: &mut Uncommitted,
    ) {
        let cx = self.ctx();
        let lots = rec.point_lots.len();
        p.out.effects.extend(points::expire_points(
            &cx, &mut rec, member, tick_name, at, day,
        ));
        // Lots that expired (even with nothing left to take) change the record.
        p.out.changed = rec.point_lots.len() != lots;
        let trigger = || Trigger {
            name: tick_name,
            need: self.plan.need_tick.as_deref(),
            rules: &self.rules.on_tick,
            today: day,
            at,
            event: &[],
        };
        let mut view = self.view.borrow_mut();
        let mut next = day.saturating_add(1);
        if fire::idle(&cx, &rec, &trigger(), &mut view) {
            next = due::next_due(&cx, &rec, &view, day);
        } else {
            fire::run(&cx, &mut rec, member, trigger(), &mut view, &mut p.out);
            // Still turning after its run (a rule held back): due tomorrow.
            if fire::idle(&cx, &rec, &trigger(), &mut view) {
                next = due::next_due(&cx, &rec, &view, day);
            }
        }
        drop(view);
        p.due.push((member.to_string(), next));
        let pruned = prune(&mut rec, &self.plan);
        // Most ticks change nothing; only changed members are written.
        if p.out.changed || pruned {
            p.order.push(member.to_string());
            p.members.insert(member.to_string(), rec);
        } else if let Some(cache) = &self.cache {
            cache.borrow_mut().insert(member.to_string(), rec);
        }
    }

    /// Runs the daily ticks due at the clock's time (see [`clock::due_ticks`]);
    /// returns the days ticked and their effects.
    pub fn run_due_ticks(
        &mut self,
        clock: &dyn clock::Clock,
        catch_up: clock::CatchUp,
        on_effects: &mut dyn FnMut(Vec<Effect>),
    ) -> Result<Vec<i32>, StoreError> {
        let days = clock::due_ticks(&self.schema, self.last_tick()?, clock.now(), catch_up);
        for &d in &days {
            self.tick_with(d, on_effects)?;
        }
        Ok(days)
    }

    /// Members visited by ticks since the engine was built (a member
    /// visited on two days counts twice): what the due index saves shows
    /// here, and in the daemon's log and `/metrics`.
    pub fn tick_visits(&self) -> u64 {
        self.tick_visits
    }

    /// The last day whose tick completed.
    pub fn last_tick(&self) -> Result<Option<i32>, StoreError> {
        self.store.meta_day(keys::LAST_TICK)
    }
}

//! Processing events and ticks (events arrive validated by `io::event`):
//! dedup, resolve the member (One ID), check refunds, fold the event into
//! the member's record, run the triggered rules, and commit the member, the
//! rule states, the outbox entries and the seen-event markers of a whole
//! batch at once (group commit: one atomic, flushed write per batch).
//!
//! Each event is applied to a copy of its member's record and only joins
//! the batch when it went through whole, so a batch never holds half an
//! event. Time comes in as arguments (the event's time, the tick's day);
//! the engine never reads the wall clock.

pub mod act;
pub mod budget;
pub mod clock;
mod commit;
pub mod contact;
mod deferred;
mod dedup;
pub mod due;
pub mod ctx;
pub mod fire;
pub mod fold;
pub mod identity;
pub mod partitions;
pub mod plan;
pub mod points;
pub mod moves;
mod refund;
mod relay;
mod route;
pub mod directory;
pub mod predict;
mod rewards;
pub mod segment;
mod tick;
mod tiers;
pub mod view;

pub use plan::{Evaluator, Need, Plan};
pub use tiers::tier_change;

use crate::base::value::Value;
use crate::config::Schema;
use crate::lang::RuleSet;
use crate::model::{Effect, Event, MemberRecord};
use crate::plugins::Plugins;
use crate::store::{Store, StoreError, keys};
use ctx::{Ctx, Trigger};
use std::collections::HashMap;
use std::sync::Arc;
use view::View;

/// Why an event was not applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejected {
    #[error("event \"{id}\" was already processed with a different body; event ids must be unique")]
    Conflict { id: String },
    /// A refund that cannot apply: nothing of it is stored, so it can be
    /// sent again (after its purchase, say).
    #[error("refund \"{id}\": {why}")]
    Refund { id: String, why: String },
    /// Older than the dedup window: a redelivery that old could not be told
    /// from a new event, so it is refused rather than risk applying twice.
    #[error(
        "event \"{id}\" at {at} is older than the dedup window, which starts at {from} (UTC; {why}): it cannot be told from a duplicate; load older history in time order, or raise `storage.dedup_window` before loading it"
    )]
    TooOld {
        id: String,
        at: String,
        from: String,
        /// Where the start comes from, in words.
        why: String,
        window: i32,
    },
}

/// What happened to one event of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum EventOutcome {
    Applied {
        effects: usize,
    },
    /// Seen before with the same body: nothing changed.
    Duplicate,
    Rejected(Rejected),
}

/// The effects of one commit, in order.
#[derive(Debug, Default)]
pub struct Committed {
    pub outcomes: Vec<EventOutcome>,
    pub effects: Vec<Effect>,
}

pub struct Engine<S: Store> {
    pub schema: Arc<Schema>,
    pub rules: Arc<RuleSet>,
    plan: Plan,
    store: S,
    next_seq: u64,
    view: std::cell::RefCell<View>,
    plugins: Option<Arc<Plugins>>,
    budgets: std::cell::RefCell<budget::Budgets>,
    /// When the earliest deferred effect is due (cached from the store).
    next_deferred: Option<jiff::Timestamp>,
    /// How many effects wait for their quiet hours to end.
    deferred_waiting: u64,
    /// Merges so far (a counter for `/metrics`).
    merges: u64,
    /// Aliases written so far: until the first, no event needs an alias
    /// lookup.
    aliases: u64,
    /// The newest event day (UTC) committed: the dedup window ends there.
    newest_day: Option<i32>,
    /// The first day whose seen markers are all kept: the window's start
    /// never moves back before it (a window raised later cannot bring
    /// back markers already removed).
    seen_floor: Option<i32>,
    /// The last UTC day whose ids a folder of store format 3 may hold as
    /// markers of their own: looked up for events of days up to it.
    format_3_until: Option<i32>,
    /// Decoded member records, for runs that visit every member every day
    /// and fit in memory (replay, tests): see [`Engine::cache_members`].
    cache: Option<std::cell::RefCell<HashMap<String, MemberRecord>>>,
    /// The first day each member's tick can do anything; see [`due`].
    /// Every member the engine writes goes in, so after one full tick (or
    /// a snapshot taken up at the start) it holds every member.
    due: due::Due,
    /// Whether `due` holds every member: a full tick after a rule change
    /// then needs no key scan.
    due_complete: bool,
    /// Whether the due days were computed under the running rules (by a
    /// full tick since the start or the last rule change, or a snapshot).
    due_ready: bool,
    /// Every tick visits every member (to check the due index against).
    full_ticks: bool,
    /// Meta writes held back until the engine's first write (see
    /// [`Engine::persist`]): the due snapshot taken up, a longer tier list.
    held: std::cell::RefCell<Vec<(String, Vec<u8>)>>,
    /// Members visited by ticks since the engine was built.
    tick_visits: u64,
    /// Which partition of its folder the store is, and of how many
    /// (`None`: the folder's only one).
    partition: Option<(usize, usize)>,
    /// Relays to and from other partitions ([`relay`]).
    mail: relay::Mail,
    /// On a folder of partitions: the fit over all of them.
    fits: Option<predict::FitShare>,
    /// Cluster mode: the fit comes from every partition's histories, made
    /// by the daemon before a tick ([`Engine::adopt_fit`]), never here; on
    /// One ID, partition 0 routes every relay (`engine::directory`).
    in_cluster: bool,
}

/// Uncommitted changes of a batch.
#[derive(Default)]
struct Uncommitted {
    members: HashMap<String, MemberRecord>,
    /// Members in the order they were first touched, for a stable write order.
    order: Vec<String>,
    /// The newest event day of the batch, when it is past the stored one.
    newest_day: Option<i32>,
    /// Ids of this batch that went to markers (`SEEN_IN_RECORD`), by UTC
    /// day and id: their body hashes.
    spilled: HashMap<(i32, String), u64>,
    out: ctx::Out,
    /// Members seen for the first time in this batch.
    new_members: Vec<String>,
    /// One ID links made in this batch (identifier or alias -> member).
    identities: HashMap<String, String>,
    /// Members merged into others in this batch.
    removed: Vec<String>,
    /// Aliases this batch wrote.
    aliased: u64,
    /// Due days computed by this batch's tick visits (after its commit,
    /// they replace "due at once" for the members written).
    due: Vec<(String, i32)>,
    /// Members a tick found gone (merged away).
    gone: Vec<String>,
    /// Relays for members of other partitions, stored with the batch.
    outgoing: Vec<Effect>,
    /// How many relays from other partitions the batch applied.
    incoming: usize,
}

impl<S: Store> Engine<S> {
    pub fn new(
        schema: Arc<Schema>,
        rules: Arc<RuleSet>,
        store: S,
    ) -> Result<Engine<S>, StoreError> {
        let next_seq = store.meta_u64(keys::OUTBOX_NEXT)?;
        let merges = store.meta_u64(keys::MERGES)?;
        let aliases = store.meta_u64(keys::ALIASES)?.max(merges);
        let (newest_day, seen_floor) = (
            store.meta_day(keys::NEWEST_EVENT_DAY)?,
            store.meta_day(keys::SEEN_FLOOR)?,
        );
        let snapshot = store.meta(keys::DUE_SNAPSHOT)?.filter(|b| !b.is_empty());
        let due = snapshot
            .as_ref()
            .and_then(|b| due::Due::decode(b, &rules.version));
        // Taken up (or of other rules): once members change without it, a
        // crash must not bring it back, stale. It goes with the first
        // write, so a command that only reads leaves it for the next start.
        let held = match snapshot {
            Some(_) => vec![(keys::DUE_SNAPSHOT.to_string(), Vec::new())],
            None => Vec::new(),
        };
        let mut plan = Plan::new(&schema, &rules);
        plan.fit = predict::load(&store)?.map(Arc::new);
        let format_3_until = store.format_3_markers_until()?;
        let mut engine = Engine {
            schema,
            rules,
            plan,
            store,
            next_seq,
            view: Default::default(),
            plugins: None,
            budgets: Default::default(),
            next_deferred: None,
            deferred_waiting: 0,
            merges,
            aliases,
            newest_day,
            seen_floor,
            format_3_until,
            cache: None,
            due_complete: due.is_some(),
            due_ready: due.is_some(),
            due: due.unwrap_or_default(),
            full_ticks: false,
            held: std::cell::RefCell::new(held),
            tick_visits: 0,
            partition: None,
            mail: Default::default(),
            fits: None,
            in_cluster: false,
        };
        engine.load_mail()?;
        engine.next_deferred = engine.first_deferred()?;
        engine.deferred_waiting = engine.store.meta_count(keys::DEFERRED_PREFIX)?;
        engine.keep_tiers(&engine.schema.tiers.clone())?;
        Ok(engine)
    }

    /// What rule firing needs of the engine.
    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            schema: &self.schema,
            rules: &self.rules,
            plan: &self.plan,
            host: self.plugins.as_deref(),
            budgets: &self.budgets,
            store: &self.store,
        }
    }

    /// Keeps every member record it reads or writes decoded in memory, so
    /// a replay's daily ticks do not decode each member each day. The
    /// engine is the only writer, so the cache stays exact; memory grows
    /// with the members, so the daemon does not use it.
    pub fn cache_members(mut self) -> Self {
        self.cache = Some(Default::default());
        self
    }

    /// Visits every member on every tick instead of the members due: the
    /// same effects, slower; for checking the due index.
    pub fn full_ticks(mut self) -> Self {
        self.full_ticks = true;
        self
    }

    /// A member's record: from the cache when there is one, else the store.
    fn load(&self, id: &str) -> Result<Option<MemberRecord>, StoreError> {
        let Some(cache) = &self.cache else {
            return self.store.member(id);
        };
        if let Some(r) = cache.borrow().get(id) {
            return Ok(Some(r.clone()));
        }
        let r = self.store.member(id)?;
        if let Some(rec) = &r {
            cache.borrow_mut().insert(id.to_string(), rec.clone());
        }
        Ok(r)
    }

    /// A member's record to change in place: taken out of the cache (the
    /// caller puts it back or commits it), else read from the store.
    fn take(&self, id: &str) -> Result<Option<MemberRecord>, StoreError> {
        match &self.cache {
            Some(cache) => match cache.borrow_mut().remove(id) {
                Some(r) => Ok(Some(r)),
                None => self.store.member(id),
            },
            None => self.store.member(id),
        }
    }

    /// Runs plugin calls with `plugins` (loaded with the same rule set).
    /// The engine of partition `k` of `n` ([`partitions::Partitions`]).
    /// Budgets and stock are spent from `ledger`, shared by the partitions.
    pub fn in_partition(mut self, k: usize, n: usize, ledger: Option<budget::Ledger>) -> Self {
        self.partition = (n > 1).then_some((k, n));
        if let Some(l) = ledger {
            self.budgets.get_mut().share(l);
        }
        self
    }

    /// Budgets and stock are drawn in blocks from `from`, shared by the
    /// nodes of a cluster (see [`budget`]).
    pub fn draw_from(&mut self, from: std::sync::Arc<dyn budget::Allotment>) {
        let partition = self.partition.map_or(0, |(k, _)| k);
        self.budgets
            .get_mut()
            .share(budget::Ledger::Drawn { from, partition });
    }

    /// The engine made again from its store, whose contents were replaced
    /// (cluster mode: a partition's snapshot), placed as this one is: same
    /// partition, config, rules, plugins, shared fit and budget ledger.
    /// Nothing of this engine's memory carries over.
    pub fn reopen(&mut self) -> Result<(), StoreError>
    where
        S: Clone,
    {
        let mut fresh = Engine::new(self.schema.clone(), self.rules.clone(), self.store.clone())?
            .with_plugins(self.plugins.clone());
        fresh.partition = self.partition;
        fresh.fits = self.fits.clone();
        fresh.in_cluster = self.in_cluster;
        if let Some(ledger) = self.budgets.get_mut().ledger() {
            fresh.budgets.get_mut().share(ledger);
        }
        *self = fresh;
        Ok(())
    }

    /// A file sink's file for this engine: each partition writes its own,
    /// `effects-p0.ndjson` for `effects.ndjson` (a file has one owner).
    pub fn sink_file(&self, path: &std::path::Path) -> std::path::PathBuf {
        match self.partition {
            Some((k, _)) => crate::base::path_of_writer(path, &format!("p{k}")),
            None => path.to_path_buf(),
        }
    }

    pub fn with_plugins(mut self, plugins: Option<Arc<Plugins>>) -> Self {
        self.plugins = plugins;
        self
    }

    pub fn plugins(&self) -> Option<&Plugins> {
        self.plugins.as_deref()
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Swaps in another rule set (same schema); rule state of rules with
    /// the same name carries over.
    pub fn set_rules(&mut self, rules: Arc<RuleSet>) {
        let fit = self.plan.fit.take();
        self.plan = Plan::new(&self.schema, &rules);
        self.plan.fit = fit;
        self.rules = rules;
    }

    /// Fits the repurchase models on the store's members (histories
    /// counted to `day`), keeps the fit in the store and evaluates the
    /// prediction fields with it from now on.
    /// On a folder of partitions ([`Engine::fit_over`]) the fit is over
    /// every partition's members.
    pub fn refit(&mut self, day: i32) -> Result<predict::Fit, predict::PredictError> {
        let fit = match &self.fits {
            Some(share) => share.fit(day)?,
            None => predict::fit(&self.store, day)?,
        };
        predict::save(&self.store, &fit)?;
        self.plan.fit = Some(Arc::new(fit.clone()));
        Ok(fit)
    }

    /// Fits over every partition of the folder (`share`), not this
    /// partition's members alone.
    pub fn fit_over(mut self, share: predict::FitShare) -> Self {
        self.fits = Some(share);
        self
    }

    /// Cluster mode: the fit is given before each tick that refits
    /// ([`Engine::adopt_fit`]), made from every partition's histories;
    /// this partition never fits on its own members. On One ID, every
    /// relay leaves the partition for partition 0 to route.
    pub fn in_cluster(&mut self) {
        self.in_cluster = true;
    }

    /// Keeps `fit` (made elsewhere from every partition) in the store and
    /// evaluates the prediction fields with it from now on.
    pub fn adopt_fit(&mut self, fit: &predict::Fit) -> Result<(), StoreError> {
        predict::save(&self.store, fit)?;
        self.plan.fit = Some(Arc::new(fit.clone()));
        Ok(())
    }

    /// The fit the prediction fields read, if any.
    pub fn fit(&self) -> Option<&predict::Fit> {
        self.plan.fit.as_deref()
    }

    /// Swaps config, rules and plugins together (a reload); rule state of
    /// rules with the same name carries over.
    /// Puts a new config, rules and plugins in place; refused (nothing
    /// changes) when the config's tier list would re-map members.
    pub fn swap(
        &mut self,
        schema: Arc<Schema>,
        rules: Arc<RuleSet>,
        plugins: Option<Arc<Plugins>>,
    ) -> Result<(), StoreError> {
        self.keep_tiers(&schema.tiers)?;
        // Due days follow from the config, rules and plugins (the version
        // hashes them all): after a change the next tick visits everyone.
        self.due_ready &= rules.version == self.rules.version;
        let fit = self.plan.fit.take();
        self.plan = Plan::new(&schema, &rules);
        self.plan.fit = fit;
        self.schema = schema;
        self.rules = rules;
        self.plugins = plugins;
        Ok(())
    }

    pub fn member(&self, id: &str) -> Result<Option<MemberRecord>, StoreError> {
        self.load(id)
    }

    /// Processes a batch of events and commits it once: when this returns
    /// `Ok`, every applied event is durable.
    pub fn process(&mut self, events: &[Event]) -> Result<Committed, StoreError> {
        self.process_noting(events, Vec::new())
    }

    /// [`Self::process`], with meta entries written in the same commit
    /// (cluster mode's stream sequence: applied exactly when the events
    /// are).
    pub fn process_noting(
        &mut self,
        events: &[Event],
        meta: Vec<(String, Vec<u8>)>,
    ) -> Result<Committed, StoreError> {
        let mut p = Uncommitted::default();
        let mut outcomes = Vec::with_capacity(events.len());
        let incoming = self.take_incoming(&mut p);
        let applied = incoming.and_then(|()| {
            events.iter().try_for_each(|ev| {
                outcomes.push(self.process_one(ev, &mut p)?);
                // What a rule gave another member is theirs before the next
                // event: a gift card pays for that member's next purchase in
                // the same request, whatever the batching.
                if !p.out.relays.is_empty() {
                    self.settle_relays(&mut p)?;
                }
                Ok(())
            })
        });
        self.abandoned(applied)?;
        let effects = self.commit(p, meta)?;
        Ok(Committed { outcomes, effects })
    }

    /// A batch that failed before its commit spent nothing.
    pub(super) fn abandoned<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if r.is_err() {
            self.budgets.borrow_mut().forget();
        }
        r
    }

    /// Undoes [`Self::record`] making `member` new, for an event that
    /// leaves nothing behind.
    fn forget_new(member: &str, p: &mut Uncommitted) {
        if p.new_members.last().is_some_and(|m| m == member) && !p.members.contains_key(member) {
            p.new_members.pop();
        }
    }

    /// The member's record for one event: moved out of the batch when the
    /// batch has it (`true`), so that a busy member's record is not copied
    /// per event; else read (or new). Every way out of `process_one` puts
    /// it back: changed, or as it was ([`Self::untake`]).
    fn take_record(
        &self,
        member: &str,
        day: i32,
        p: &mut Uncommitted,
    ) -> Result<(MemberRecord, bool), StoreError> {
        match p.members.remove(member) {
            Some(rec) => Ok((rec, true)),
            None => Ok((self.record(member, day, p)?, false)),
        }
    }

    /// Leaves the batch as it was before a rejected event.
    fn untake(member: &str, rec: MemberRecord, in_batch: bool, p: &mut Uncommitted) {
        if in_batch {
            p.members.insert(member.to_string(), rec);
        } else {
            Self::forget_new(member, p);
        }
    }

    fn process_one(&mut self, ev: &Event, p: &mut Uncommitted) -> Result<EventOutcome, StoreError> {
        let utc = crate::base::time::utc_day(ev.at);
        if let Some(o) = self.screen(ev, utc, p)? {
            return Ok(o);
        }
        let day = clock::local_day(&self.schema, ev.at);
        let (member, alias) = self.resolve(ev, day, p)?;
        if let Some(o) = self.repeat_in_store(&member, ev, utc, p)? {
            return Ok(o);
        }
        let (mut rec, in_batch) = self.take_record(&member, day, p)?;
        if let Some(o) = Self::repeated(
            ev,
            self.known_in(&member, (&rec.seen, &rec.seen_spilled), &ev.id, utc, p)?,
        ) {
            Self::untake(&member, rec, in_batch, p);
            return Ok(o);
        }
        if let Err(why) = self.refundable(&rec, ev, &member, day) {
            // Nothing of it stays: not even the new member it would make.
            Self::untake(&member, rec, in_batch, p);
            return Ok(EventOutcome::Rejected(Rejected::Refund {
                id: ev.id.clone(),
                why,
            }));
        }
        identity::link_names(&mut rec, ev, alias);
        let cx = self.ctx();
        let shares = fold::fold(&mut rec, ev, day, &self.plan, &self.rules);
        consent(&self.schema, &mut rec, ev);
        let redeemed = redeem(&self.schema, &mut rec, ev, day);
        let slots = self.plan.event_slots(ev);
        let before = p.out.effects.len();
        let trigger_name = format!("event:{}", ev.id);
        if let Some((rule, code)) = redeemed {
            let key = ctx::effect_key("redeem", &member, &trigger_name, 0);
            let name = self.rule_name(rule);
            let mut e = ctx::engine_effect(
                &cx,
                &name,
                &member,
                &trigger_name,
                ev.at,
                crate::model::Action::Redeem,
                key,
            );
            e.code = Some(code);
            p.out.effects.push(e);
        }
        if let Some(points) = self.refund(&mut rec, ev) {
            p.out.effects.push(points::points_effect(
                &cx,
                points::REFUND_RULE,
                &member,
                &trigger_name,
                ev.at,
                -points,
            ));
        }
        p.out.effects.extend(points::expire_points(
            &cx,
            &mut rec,
            &member,
            &trigger_name,
            ev.at,
            day,
        ));
        let trigger = Trigger {
            name: &trigger_name,
            need: self.plan.need_event[ev.kind].as_deref(),
            rules: &self.rules.on_event[ev.kind],
            today: day,
            at: ev.at,
            event: &slots,
        };
        fire::run(
            &cx,
            &mut rec,
            &member,
            trigger,
            &mut self.view.borrow_mut(),
            &mut p.out,
        );
        let own = &p.out.effects[before..];
        self.keep_purchase(&mut rec, ev, day, shares, &trigger_name, own);
        prune(&mut rec, &self.plan);
        self.remember((&member, &mut rec), &ev.id, utc, ev.body_hash as u64, p);
        if !in_batch {
            p.order.push(member.clone());
        }
        p.members.insert(member.clone(), rec);
        if p.newest_day.or(self.newest_day).is_none_or(|n| utc > n) {
            p.newest_day = Some(utc);
        }
        Ok(EventOutcome::Applied {
            effects: p.out.effects.len() - before,
        })
    }

    /// A rule's name by its key (the key's hex when the rule is gone).
    fn rule_name(&self, key: u64) -> String {
        self.plan
            .rule_keys
            .iter()
            .position(|k| *k == key)
            .map_or(format!("{key:016x}"), |i| self.rules.rules[i].name.clone())
    }

    /// The member's record as of the batch so far (new members start today).
    fn record(
        &self,
        member: &str,
        day: i32,
        p: &mut Uncommitted,
    ) -> Result<MemberRecord, StoreError> {
        Ok(match p.members.get(member) {
            Some(r) => r.clone(),
            None => match self.load(member)? {
                Some(r) => r,
                None => {
                    p.new_members.push(member.to_string());
                    MemberRecord {
                        joined: day,
                        ..MemberRecord::default()
                    }
                }
            },
        })
    }
}

impl<S: Store> Engine<S> {
    /// Budget use per rule with a budget, for the period containing
    /// `today`: (rule, used, total).
    pub fn budgets(
        &self,
        today: i32,
    ) -> Vec<(String, rust_decimal::Decimal, rust_decimal::Decimal)> {
        self.budgets
            .borrow_mut()
            .usage(&self.rules.rules, today, &self.store)
    }
}

/// The rule name merge effects carry.
pub const IDENTITY_RULE: &str = "identity";

/// A redeem event marks the member's coupon with that code used (once,
/// and only while it is valid), and forgets coupons long expired. Returns
/// the issuing rule's key and the code of a coupon it marked.
fn redeem(schema: &Schema, rec: &mut MemberRecord, ev: &Event, day: i32) -> Option<(u64, String)> {
    rec.coupons.retain(|c| {
        c.valid_until.max(c.redeemed.unwrap_or(i32::MIN)) + crate::model::COUPON_RETENTION_DAYS
            >= day
    });
    let (kind, field) = schema.redeem?;
    if ev.kind != kind {
        return None;
    }
    let Some(Value::Str(code)) = ev.fields.get(field) else {
        return None;
    };
    let c = rec
        .coupons
        .iter_mut()
        .find(|c| *c.code == **code && c.redeemed.is_none() && c.valid_until >= day)?;
    c.redeemed = Some(day);
    Some((c.rule, c.code.clone()))
}

/// Consent events grant or withdraw contact on the channel they name.
fn consent(schema: &Schema, rec: &mut MemberRecord, ev: &Event) {
    let c = &schema.consent;
    let granted = if Some(ev.kind) == c.grant {
        true
    } else if Some(ev.kind) == c.withdraw {
        false
    } else {
        return;
    };
    let channel =
        schema.events[ev.kind]
            .field(&c.field)
            .and_then(|(i, _)| match ev.fields.get(i) {
                Some(Value::Str(s)) => Some(s.to_string()),
                _ => None,
            });
    if let Some(ch) = channel {
        match rec.consent.iter_mut().find(|(c, _)| *c == ch) {
            Some(entry) => entry.1 = granted,
            None => rec.consent.push((ch, granted)),
        }
    }
}

/// Drops rule states and aggregates the current rule set no longer has;
/// says whether it dropped any.
fn prune(rec: &mut MemberRecord, plan: &Plan) -> bool {
    let before = rec.rules.len() + rec.aggregates.len();
    rec.rules.retain(|r| plan.rule_keys.contains(&r.rule));
    rec.aggregates.retain(|a| plan.agg_keys.contains(&a.key));
    rec.rules.len() + rec.aggregates.len() != before
}

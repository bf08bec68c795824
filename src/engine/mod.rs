//! Processing events and ticks: validate, dedup, fold the event into the
//! member's record, run the triggered rules, and commit the member, the
//! rule states, the outbox entries and the seen-event markers of a whole
//! batch at once (group commit: one atomic, flushed write per batch).
//!
//! Each event is applied to a copy of its member's record and only joins
//! the batch when it went through whole, so a batch never holds half an
//! event. Time comes in as arguments (the event's time, the tick's day);
//! the engine never reads the wall clock.

pub mod budget;
pub mod clock;
pub mod due;
pub mod fire;
pub mod fold;
pub mod identity;
pub mod view;

use crate::lang::RuleSet;
use crate::lang::program::Value;
use crate::model::{Effect, Event, MemberRecord};
use crate::plugins::Plugins;
use crate::schema::Schema;
use crate::store::{Store, StoreError, WriteSet};
use fire::{Ctx, Trigger};
use std::collections::HashMap;
use std::sync::Arc;
use view::View;

/// Meta key of the number of members in the store.
pub const MEMBERS_KEY: &str = "members";
/// The config's tier list the members' tiers refer to (by position).
pub const TIERS_KEY: &str = "tiers";

/// What reading `store` with the tier list `tiers` would re-map, if
/// anything: `Some(why)` when the store's list is not the start of it.
pub fn tier_change<S: Store + ?Sized>(
    store: &S,
    tiers: &[String],
) -> Result<Option<String>, StoreError> {
    Ok(stored_tiers(store)?.and_then(|old| remap(&old, tiers)))
}

fn stored_tiers<S: Store + ?Sized>(store: &S) -> Result<Option<Vec<String>>, StoreError> {
    Ok(store
        .meta(TIERS_KEY)?
        .and_then(|b| serde_json::from_slice(&b).ok()))
}

/// Why going from `old` to `tiers` would re-map members, if it would.
fn remap(old: &[String], tiers: &[String]) -> Option<String> {
    if tiers.starts_with(old) {
        return None;
    }
    let moves: Vec<String> = old
        .iter()
        .enumerate()
        .filter(|(i, t)| tiers.get(*i) != Some(t))
        .map(|(i, t)| match tiers.get(i) {
            Some(n) => format!("members in `{t}` would read as `{n}`"),
            None => format!("members in `{t}` would have no tier"),
        })
        .collect();
    Some(format!(
        "the tier list changed from [{}] to [{}]: {}; members keep their tier by position, so tiers may only be added after the last one (move them back, or start a new data folder)",
        old.join(", "),
        tiers.join(", "),
        moves.join(", ")
    ))
}
/// Members a daily tick evaluates and commits together (one flush each).
const TICK_CHUNK: usize = 10_000;

/// Meta key of the number of One ID merges so far.
pub const MERGES_KEY: &str = "merges";

/// What the engine precomputes from a schema and a rule set.
pub struct Plan {
    pub purchase_kind: Option<usize>,
    /// Field index of the amount in the purchase event.
    pub purchase_amount: usize,
    /// Key of each aggregate (by `layout.aggregates` index).
    pub agg_keys: Vec<u64>,
    /// Key of each rule (by rule index).
    pub rule_keys: Vec<u64>,
    pub n_builtin: usize,
    pub plugin_names: Vec<String>,
    /// Per event type: the field index behind each event slot.
    event_maps: Vec<Vec<Option<usize>>>,
    /// The member slots each trigger's rules read (`None`: all of them).
    pub need_event: Vec<Need>,
    pub need_tick: Need,
    pub need_tier_up: Need,
    pub need_tier_down: Need,
    /// Tag name to its bit in the rule set's tag list.
    pub tag_bits: HashMap<String, u32, xxhash_rust::xxh3::Xxh3DefaultBuilder>,
}

/// Which member slots an evaluation must compute: `None` for all.
pub type Need = Option<Vec<bool>>;

/// The slots the rules `list` read, together.
fn need(rules: &RuleSet, list: &[u32]) -> Need {
    let mut mask = vec![false; rules.layout.fields.len()];
    for &i in list {
        for &s in rules.rules[i as usize].reads.as_deref()? {
            if let Some(m) = mask.get_mut(s as usize) {
                *m = true;
            }
        }
    }
    Some(mask)
}

impl Plan {
    pub fn new(schema: &Schema, rules: &RuleSet) -> Plan {
        let purchase_kind = schema.event(&schema.purchase_event).map(|(i, _)| i);
        let purchase_amount = purchase_kind
            .and_then(|k| schema.events[k].field(&schema.purchase_amount))
            .map_or(0, |(i, _)| i);
        Plan {
            tag_bits: rules
                .layout
                .tags
                .iter()
                .enumerate()
                .map(|(i, t)| (t.clone(), i as u32))
                .collect(),
            need_event: rules.on_event.iter().map(|l| need(rules, l)).collect(),
            need_tick: need(rules, &rules.on_tick),
            need_tier_up: need(rules, &rules.on_tier_up),
            need_tier_down: need(rules, &rules.on_tier_down),
            purchase_kind,
            purchase_amount,
            agg_keys: rules
                .layout
                .aggregates
                .iter()
                .map(|a| xxhash_rust::xxh3::xxh3_64(a.key.as_bytes()))
                .collect(),
            rule_keys: rules
                .rules
                .iter()
                .map(|r| xxhash_rust::xxh3::xxh3_64(r.name.as_bytes()))
                .collect(),
            n_builtin: crate::lang::check::BUILTIN_FIELDS.len(),
            plugin_names: rules.plugins.clone(),
            event_maps: schema
                .events
                .iter()
                .map(|et| {
                    rules
                        .layout
                        .event_fields
                        .iter()
                        .map(|name| et.field(name).map(|(i, _)| i))
                        .collect()
                })
                .collect(),
        }
    }

    /// The event's fields laid out by event slot.
    pub fn event_slots(&self, ev: &Event) -> Vec<Value> {
        self.event_maps[ev.kind]
            .iter()
            .map(|f| {
                f.and_then(|i| ev.fields.get(i).cloned())
                    .unwrap_or(Value::Null)
            })
            .collect()
    }
}

/// Evaluates rule conditions against member records, exactly as firing
/// does (the member view of the day, then each compiled condition), but
/// without firing, state or storage: for benchmarks and what-if tools.
pub struct Evaluator {
    plan: Plan,
    view: View,
    expire: Option<i32>,
}

impl Evaluator {
    pub fn new(schema: &Schema, rules: &RuleSet) -> Evaluator {
        Evaluator {
            plan: Plan::new(schema, rules),
            view: View::default(),
            expire: schema.points.expire_after_days.map(|d| d as i32),
        }
    }

    /// Calls `matched` with the index of every tick rule whose condition is
    /// true for `rec` on `today` (every rule is evaluated).
    pub fn tick_matches(
        &mut self,
        rules: &RuleSet,
        rec: &MemberRecord,
        today: i32,
        mut matched: impl FnMut(u32),
    ) {
        self.view.fill(
            rec,
            &rules.layout,
            &self.plan,
            self.plan.need_tick.as_deref(),
            today,
            self.expire,
        );
        let env = self.view.tick_env(today);
        for &i in &rules.on_tick {
            if rules.rules[i as usize].matches(&env) == Some(true) {
                matched(i);
            }
        }
    }
}

/// Why an event was not applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejected {
    #[error("event \"{id}\" was already processed with a different body; event ids must be unique")]
    Conflict { id: String },
    /// A refund that cannot apply: nothing of it is stored, so it can be
    /// sent again (after its purchase, say).
    #[error("refund \"{id}\": {why}")]
    Refund { id: String, why: String },
}

/// What happened to one event of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
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
    pub outcomes: Vec<Outcome>,
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
    /// Merges so far: until the first, no event needs an alias lookup.
    merges: u64,
    /// Decoded member records, for runs that visit every member every day
    /// and fit in memory (replay, tests): see [`Engine::cache_members`].
    cache: Option<std::cell::RefCell<HashMap<String, MemberRecord>>>,
    /// The first day each member's tick can do anything; see [`due`].
    /// Every member the engine writes goes in, so after one full tick it
    /// holds every member.
    due: due::Due,
    /// Whether `due` holds every member (a full tick since the start read
    /// them all from the store): a full tick after a rule change then
    /// needs no key scan.
    due_complete: bool,
    /// Whether the due days were computed under the running rules (by a
    /// full tick since the start or the last rule change).
    due_ready: bool,
    /// Every tick visits every member (to check the due index against).
    full_ticks: bool,
}

/// Uncommitted changes of a batch.
#[derive(Default)]
struct Pending {
    members: HashMap<String, MemberRecord>,
    /// Members in the order they were first touched, for a stable write order.
    order: Vec<String>,
    seen: HashMap<String, u128>,
    out: fire::Out,
    /// Members seen for the first time in this batch.
    new_members: Vec<String>,
    /// One ID links made in this batch (identifier or alias -> member).
    identities: HashMap<String, String>,
    /// Members merged into others in this batch.
    removed: Vec<String>,
    /// Due days computed by this batch's tick visits (after its commit,
    /// they replace "due at once" for the members written).
    due: Vec<(String, i32)>,
    /// Members a tick found gone (merged away).
    gone: Vec<String>,
}

impl<S: Store> Engine<S> {
    pub fn new(
        schema: Arc<Schema>,
        rules: Arc<RuleSet>,
        store: S,
    ) -> Result<Engine<S>, StoreError> {
        let next_seq = store.meta_u64("outbox_next")?;
        let merges = store.meta_u64(MERGES_KEY)?;
        let plan = Plan::new(&schema, &rules);
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
            merges,
            cache: None,
            due: Default::default(),
            due_complete: false,
            due_ready: false,
            full_ticks: false,
        };
        engine.next_deferred = engine.first_deferred()?;
        engine.keep_tiers(&engine.schema.tiers.clone())?;
        Ok(engine)
    }

    /// Members keep their tier by its position in the config's list, so a
    /// new list must keep the old one as its start (tiers may only be added
    /// at the top): inserting, removing or reordering would re-map every
    /// member (gold read as silver) without a word. The list is kept in the
    /// store; a change that would re-map is refused, saying what it would do.
    fn keep_tiers(&mut self, tiers: &[String]) -> Result<(), StoreError> {
        let old = stored_tiers(&self.store)?;
        if let Some(why) = old.as_deref().and_then(|o| remap(o, tiers)) {
            return Err(StoreError::TiersChanged(why));
        }
        if old.as_deref() == Some(tiers) {
            return Ok(());
        }
        let list = serde_json::to_vec(tiers).map_err(|e| StoreError::Io(e.to_string()))?;
        self.store.commit(WriteSet {
            meta: vec![(TIERS_KEY.into(), list)],
            ..WriteSet::default()
        })
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
        self.plan = Plan::new(&self.schema, &rules);
        self.rules = rules;
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
        self.plan = Plan::new(&schema, &rules);
        self.schema = schema;
        self.rules = rules;
        self.plugins = plugins;
        // Due days follow from the rules: the next tick visits everyone.
        self.due_ready = false;
        Ok(())
    }

    pub fn member(&self, id: &str) -> Result<Option<MemberRecord>, StoreError> {
        self.load(id)
    }

    /// Processes a batch of events and commits it once: when this returns
    /// `Ok`, every applied event is durable.
    pub fn process(&mut self, events: &[Event]) -> Result<Committed, StoreError> {
        let mut p = Pending::default();
        let mut outcomes = Vec::with_capacity(events.len());
        for ev in events {
            outcomes.push(self.process_one(ev, &mut p)?);
        }
        self.settle_relays(&mut p)?;
        let effects = self.commit(p, Vec::new())?;
        Ok(Committed { outcomes, effects })
    }

    fn process_one(&mut self, ev: &Event, p: &mut Pending) -> Result<Outcome, StoreError> {
        let known = match p.seen.get(&ev.id) {
            Some(h) => Some(*h),
            None => self.store.seen(&ev.id)?,
        };
        match known {
            Some(h) if h == ev.body_hash => return Ok(Outcome::Duplicate),
            Some(_) => return Ok(Outcome::Rejected(Rejected::Conflict { id: ev.id.clone() })),
            None => {}
        }
        let day = clock::local_day(&self.schema, ev.at);
        let member = self.resolve(ev, day, p)?;
        let mut rec = self.record(&member, day, p)?;
        if let Err(why) = self.refundable(&rec, ev, &member, day) {
            // Nothing of it stays: not even the new member it would make.
            if p.new_members.last() == Some(&member) && !p.members.contains_key(&member) {
                p.new_members.pop();
            }
            return Ok(Outcome::Rejected(Rejected::Refund {
                id: ev.id.clone(),
                why,
            }));
        }
        for id in &ev.ids {
            identity::link(&mut rec, id.clone());
        }
        let cx = self.ctx();
        let shares = fold::fold(&mut rec, ev, day, &self.plan, &self.rules);
        consent(&self.schema, &mut rec, ev);
        let redeemed = redeem(&self.schema, &mut rec, ev, day);
        let slots = self.plan.event_slots(ev);
        let before = p.out.effects.len();
        let trigger_name = format!("event:{}", ev.id);
        if let Some((rule, code)) = redeemed {
            let key = fire::effect_key("redeem", &member, &trigger_name, 0);
            let name = self.rule_name(rule);
            let mut e =
                fire::engine_effect(&cx, &name, &member, &trigger_name, ev.at, "redeem", key);
            e.code = Some(code);
            p.out.effects.push(e);
        }
        if let Some(points) = self.refund(&mut rec, ev) {
            p.out.effects.push(fire::points_effect(
                &cx,
                fire::REFUND_RULE,
                &member,
                &trigger_name,
                ev.at,
                -points,
            ));
        }
        p.out.effects.extend(fire::expire_points(
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
        if !p.members.contains_key(&member) {
            p.order.push(member.clone());
        }
        p.members.insert(member.clone(), rec);
        p.seen.insert(ev.id.clone(), ev.body_hash);
        Ok(Outcome::Applied {
            effects: p.out.effects.len() - before,
        })
    }

    /// Applies the effects rules gave other members, each as an internal
    /// event `relay:<effect key>` for its recipient: in the batch's commit,
    /// and once (a relay already seen is skipped), so that with members
    /// partitioned over machines a relay can travel as an event.
    fn settle_relays(&mut self, p: &mut Pending) -> Result<(), StoreError> {
        for mut e in std::mem::take(&mut p.out.relays) {
            let id = format!("relay:{}", e.key);
            let hash = xxhash_rust::xxh3::xxh3_128(e.key.as_bytes());
            if p.seen.contains_key(&id) || self.store.seen(&id)?.is_some() {
                continue;
            }
            let at: jiff::Timestamp = e.at.parse().unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            let day = clock::local_day(&self.schema, at);
            let mut rec = self.record(&e.member, day, p)?;
            fire::apply_relay(&self.ctx(), &mut rec, &mut e, day);
            if !p.members.contains_key(&e.member) {
                p.order.push(e.member.clone());
            }
            p.members.insert(e.member.clone(), rec);
            p.seen.insert(id, hash);
            p.out.effects.push(e);
        }
        Ok(())
    }

    /// A rule's name by its key (the key's hex when the rule is gone).
    fn rule_name(&self, key: u64) -> String {
        self.plan
            .rule_keys
            .iter()
            .position(|k| *k == key)
            .map_or(format!("{key:016x}"), |i| self.rules.rules[i].name.clone())
    }

    /// One ID: the member an event is for. A named member that was merged
    /// into another leads to that one. The event's identifiers lead to their
    /// members; when they lead to more than one (or to another member than
    /// the named one), those members are merged into one: the named member
    /// if it exists, else the one that joined first (then the smallest id).
    /// Each merge is an effect (`rule: identity`, `action: merge`).
    fn resolve(&mut self, ev: &Event, day: i32, p: &mut Pending) -> Result<String, StoreError> {
        let named = if ev.member.is_empty() {
            None
        } else {
            Some(self.canonical(&ev.member, p)?)
        };
        if ev.ids.is_empty()
            && let Some(n) = named
        {
            return Ok(n);
        }
        let mut found: Vec<String> = Vec::new();
        for (kind, value) in &ev.ids {
            let key = identity::id_key(kind, value);
            let owner = match p.identities.get(&key) {
                Some(m) => Some(m.clone()),
                None => self.store.identity(&key)?,
            };
            if let Some(o) = owner {
                let o = self.canonical(&o, p)?;
                if !found.contains(&o) {
                    found.push(o);
                }
            }
        }
        let mut existing = Vec::new();
        for m in named.iter().chain(&found) {
            if let Some(rec) = self.existing(m, p)?
                && !existing
                    .iter()
                    .any(|(x, _): &(String, MemberRecord)| x == m)
            {
                existing.push((m.clone(), rec));
            }
        }
        let survivor = match (&named, existing.is_empty()) {
            (Some(n), _) if existing.iter().any(|(m, _)| m == n) => n.clone(),
            (_, false) => existing
                .iter()
                .min_by(|a, b| (a.1.joined, &a.0).cmp(&(b.1.joined, &b.0)))
                .map(|(m, _)| m.clone())
                .unwrap_or_default(),
            (Some(n), true) => n.clone(),
            (None, true) => identity::new_member_id(&ev.ids).unwrap_or_default(),
        };
        // A named member that does not exist yet becomes an alias of the
        // member its identifiers lead to.
        if let Some(n) = &named
            && *n != survivor
            && !existing.iter().any(|(m, _)| m == n)
        {
            p.identities
                .insert(identity::alias_key(n), survivor.clone());
        }
        let trigger = format!("event:{}", ev.id);
        for (i, (absorbed, rec)) in existing.into_iter().enumerate() {
            if absorbed != survivor {
                self.merge(&survivor, &absorbed, rec, day, p)?;
                let key = fire::effect_key(IDENTITY_RULE, &survivor, &trigger, i);
                let cx = self.ctx();
                let mut e = fire::engine_effect(
                    &cx,
                    IDENTITY_RULE,
                    &survivor,
                    &trigger,
                    ev.at,
                    "merge",
                    key,
                );
                e.value = Some(serde_json::json!({ "merged": absorbed }));
                p.out.effects.push(e);
            }
        }
        for (kind, value) in &ev.ids {
            p.identities
                .insert(identity::id_key(kind, value), survivor.clone());
        }
        Ok(survivor)
    }

    /// Follows a merged member's alias to the member it joined.
    fn canonical(&self, member: &str, p: &Pending) -> Result<String, StoreError> {
        if self.merges == 0 && p.removed.is_empty() {
            return Ok(member.to_string());
        }
        let key = identity::alias_key(member);
        Ok(match p.identities.get(&key) {
            Some(m) => m.clone(),
            None => self
                .store
                .identity(&key)?
                .unwrap_or_else(|| member.to_string()),
        })
    }

    /// A member's record if it exists (in the batch or the store).
    fn existing(&self, member: &str, p: &Pending) -> Result<Option<MemberRecord>, StoreError> {
        match p.members.get(member) {
            Some(r) => Ok(Some(r.clone())),
            None => self.load(member),
        }
    }

    /// Merges `absorbed` (with its record) into `survivor`: its record is
    /// folded in and deleted, and its id, the members it had absorbed and
    /// its identifiers lead to `survivor` from now on.
    fn merge(
        &mut self,
        survivor: &str,
        absorbed: &str,
        from: MemberRecord,
        day: i32,
        p: &mut Pending,
    ) -> Result<(), StoreError> {
        let mut into = self.record(survivor, day, p)?;
        for m in from.merged.iter().map(String::as_str).chain([absorbed]) {
            p.identities
                .insert(identity::alias_key(m), survivor.to_string());
        }
        for (kind, value) in &from.ids {
            p.identities
                .insert(identity::id_key(kind, value), survivor.to_string());
        }
        identity::merge(&mut into, from);
        into.merged.push(absorbed.to_string());
        if p.members.remove(absorbed).is_some() {
            p.order.retain(|m| m != absorbed);
        }
        p.removed.push(absorbed.to_string());
        if !p.members.contains_key(survivor) {
            p.order.push(survivor.to_string());
        }
        p.members.insert(survivor.to_string(), into);
        Ok(())
    }

    /// The member's record as of the batch so far (new members start today).
    fn record(&self, member: &str, day: i32, p: &mut Pending) -> Result<MemberRecord, StoreError> {
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

    /// Whether a refund event can apply: its purchase is this member's,
    /// known, not after the refund and not longer ago than `refund.within`.
    /// A refund that arrives before its purchase is refused (and can be
    /// sent again), not accepted and silently lost.
    fn refundable(
        &self,
        rec: &MemberRecord,
        ev: &Event,
        member: &str,
        day: i32,
    ) -> Result<(), String> {
        let Some(policy) = self.schema.refund.as_ref() else {
            return Ok(());
        };
        if ev.kind != policy.event {
            return Ok(());
        }
        let Some(Value::Str(purchase)) = ev.fields.get(policy.purchase_field) else {
            return Ok(());
        };
        let key = xxhash_rust::xxh3::xxh3_64(purchase.as_bytes());
        let Some(entry) = rec.purchases.iter().find(|p| p.event == key) else {
            return Err(format!(
                "purchase \"{purchase}\" is not known for member \"{member}\" (not yet received, another member's, or older than refund.within); send the refund after its purchase"
            ));
        };
        if day < entry.day {
            return Err(format!(
                "dated {} but its purchase \"{purchase}\" is of {}",
                crate::model::day_string(day),
                crate::model::day_string(entry.day)
            ));
        }
        if day > entry.day + policy.within_days {
            return Err(format!(
                "{} days after its purchase \"{purchase}\"; refunds count within {} days (refund.within)",
                day - entry.day,
                policy.within_days
            ));
        }
        Ok(())
    }

    /// A refund event: takes back what the purchase it names added.
    fn refund(&self, rec: &mut MemberRecord, ev: &Event) -> Option<i64> {
        let policy = self.schema.refund.as_ref()?;
        if ev.kind != policy.event {
            return None;
        }
        let Some(Value::Str(purchase)) = ev.fields.get(policy.purchase_field) else {
            return None;
        };
        let amount = match policy.amount_field.and_then(|f| ev.fields.get(f)) {
            Some(Value::Dec(d)) => Some(*d),
            _ => None,
        };
        let expiring = self.schema.points.expire_after_days.is_some();
        fold::refund(rec, purchase, amount, expiring).filter(|&p| p != 0)
    }

    /// Remembers what a purchase added (its aggregate shares, and the
    /// points its own rules awarded), while it can be refunded.
    fn keep_purchase(
        &self,
        rec: &mut MemberRecord,
        ev: &Event,
        day: i32,
        aggregates: Vec<crate::model::AggShare>,
        trigger: &str,
        effects: &[Effect],
    ) {
        let Some(policy) = &self.schema.refund else {
            return;
        };
        rec.purchases.retain(|p| p.day + policy.within_days >= day);
        if Some(ev.kind) != self.plan.purchase_kind {
            return;
        }
        let points = effects
            .iter()
            .filter(|e| e.trigger == trigger && e.status == "sent" && e.rule != fire::EXPIRY_RULE)
            .filter_map(|e| e.points)
            .filter(|&n| n > 0)
            .sum();
        let amount = match ev.fields.get(self.plan.purchase_amount) {
            Some(Value::Dec(d)) => *d,
            _ => rust_decimal::Decimal::ZERO,
        };
        rec.purchases.push(crate::model::PurchaseEntry {
            event: xxhash_rust::xxh3::xxh3_64(ev.id.as_bytes()),
            day,
            amount,
            refunded: rust_decimal::Decimal::ZERO,
            points,
            aggregates,
        });
        let excess = rec
            .purchases
            .len()
            .saturating_sub(crate::model::MAX_REFUNDABLE);
        rec.purchases.drain(..excess);
    }

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
        let at = clock::tick_instant(&self.schema, day);
        let tick_name = format!("tick:{}", crate::model::day_string(day));
        if self.ticks_do_something() {
            // After a start or a rule change every member is visited (and
            // gets a due day); after that only the members due.
            let members = if self.due_ready && !self.full_ticks {
                self.due.on(day)
            } else if self.due_complete {
                self.due.on(i32::MAX)
            } else {
                self.store.member_ids()?
            };
            for chunk in members.chunks(TICK_CHUNK) {
                let mut p = Pending::default();
                for id in chunk {
                    match self.take(id)? {
                        Some(rec) => self.tick_record(id, rec, day, at, &tick_name, &mut p),
                        None => p.gone.push(id.clone()),
                    }
                }
                self.settle_relays(&mut p)?;
                on_effects(self.commit(p, Vec::new())?);
            }
            // Only a completed full tick leaves every member with a due day.
            self.due_ready = true;
            self.due_complete = true;
        }
        self.store.commit(WriteSet {
            meta: vec![("last_tick".into(), day.to_le_bytes().to_vec())],
            ..WriteSet::default()
        })?;
        Ok(())
    }

    /// Whether a tick has anything to do: tick rules, or points that expire.
    fn ticks_do_something(&self) -> bool {
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
        let mut p = Pending::default();
        self.tick_into(member, day, at, &mut p)?;
        self.settle_relays(&mut p)?;
        self.commit(p, Vec::new())
    }

    fn tick_into(
        &mut self,
        member: &str,
        day: i32,
        at: jiff::Timestamp,
        p: &mut Pending,
    ) -> Result<(), StoreError> {
        if !self.ticks_do_something() {
            return Ok(());
        }
        let Some(rec) = self.take(member)? else {
            return Ok(());
        };
        let tick_name = format!("tick:{}", crate::model::day_string(day));
        self.tick_record(member, rec, day, at, &tick_name, p);
        Ok(())
    }

    /// The tick of one member's record: expiry, then the tick rules; the
    /// record joins the batch if it changed, else goes back to the cache.
    #[allow(clippy::too_many_arguments)]
    fn tick_record(
        &mut self,
        member: &str,
        mut rec: MemberRecord,
        day: i32,
        at: jiff::Timestamp,
        tick_name: &str,
        p: &mut Pending,
    ) {
        let cx = self.ctx();
        let lots = rec.point_lots.len();
        p.out.effects.extend(fire::expire_points(
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

    /// The last day whose tick completed.
    pub fn last_tick(&self) -> Result<Option<i32>, StoreError> {
        Ok(self
            .store
            .meta("last_tick")?
            .and_then(|b| b.as_slice().try_into().ok())
            .map(i32::from_le_bytes))
    }

    fn commit(
        &mut self,
        p: Pending,
        meta: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<Effect>, StoreError> {
        let mut w = WriteSet {
            meta,
            ..WriteSet::default()
        };
        let mut members = p.members;
        let mut written = Vec::with_capacity(p.order.len());
        for id in p.order {
            if let Some(rec) = members.remove(&id) {
                w.members.push((id.clone(), rec.encode()));
                written.push((id, rec));
            }
        }
        w.seen = p.seen.into_iter().collect();
        w.seen.sort();
        let mut seq = self.next_seq;
        let mut next_deferred = self.next_deferred;
        for e in &p.out.effects {
            w.outbox
                .push((seq, serde_json::to_vec(e).unwrap_or_default()));
            if let Some(at) = deferred_until(e) {
                let mut later = e.clone();
                later.status = "sent".into();
                later.at = at.to_string();
                w.meta.push((
                    deferred_key(at, seq),
                    serde_json::to_vec(&later).unwrap_or_default(),
                ));
                next_deferred = Some(next_deferred.map_or(at, |n| n.min(at)));
            }
            seq += 1;
        }
        if seq != self.next_seq {
            w.meta
                .push(("outbox_next".into(), seq.to_le_bytes().to_vec()));
        }
        w.meta.extend(self.budgets.borrow_mut().take_dirty());
        let removed = p.removed.len() as u64;
        let added = p.new_members.len() as u64;
        if added > 0 || removed > 0 {
            let total = (self.store.meta_u64(MEMBERS_KEY)? + added).saturating_sub(removed);
            w.meta
                .push((MEMBERS_KEY.into(), total.to_le_bytes().to_vec()));
        }
        if removed > 0 {
            w.meta.push((
                MERGES_KEY.into(),
                (self.merges + removed).to_le_bytes().to_vec(),
            ));
        }
        w.identities = p.identities.into_iter().collect();
        w.identities.sort();
        let w_removed = p.removed.clone();
        w.members_removed = p.removed;
        if let Err(e) = self.store.commit(w) {
            self.budgets.borrow_mut().forget();
            return Err(e);
        }
        self.next_seq = seq;
        self.next_deferred = next_deferred;
        self.merges += removed;
        // Written members are due at once (an event may have made a tick
        // rule's condition turn), unless this batch's tick just placed them.
        // Until a full tick has read every member from the store, the next
        // tick scans the store anyway: the index is only kept from then on,
        // so an import without ticks does not hold every member in memory.
        let keep_due = self.due_complete;
        for (id, _) in written.iter().filter(|_| keep_due) {
            self.due.touch(id);
        }
        if let Some(cache) = &self.cache {
            let mut c = cache.borrow_mut();
            for id in &w_removed {
                c.remove(id);
            }
            c.extend(written);
        }
        for id in p.new_members.iter().filter(|_| keep_due) {
            self.due.touch(id);
        }
        for (id, day) in &p.due {
            self.due.set(id, *day);
        }
        for id in w_removed.iter().chain(&p.gone) {
            self.due.forget(id);
        }
        Ok(p.out.effects)
    }

    /// Whether a deferred effect is due at `now`.
    pub fn deferred_due(&self, now: jiff::Timestamp) -> bool {
        self.next_deferred.is_some_and(|t| t <= now)
    }

    /// Releases the deferred effects due at `now` (their quiet hours are
    /// over): each goes to the outbox as `sent`, with its key and its
    /// `deliver_at` as `at`, so the release gives the same output whenever
    /// it runs. One commit; returns the released effects.
    pub fn release_deferred(&mut self, now: jiff::Timestamp) -> Result<Vec<Effect>, StoreError> {
        let mut released = Vec::new();
        loop {
            let due = self.store.meta_prefix(DEFERRED_PREFIX, 4096)?;
            let mut w = WriteSet::default();
            let mut seq = self.next_seq;
            let mut next = None;
            for (k, v) in due {
                match deferred_key_time(&k) {
                    Some(at) if at <= now => {}
                    at => {
                        next = at;
                        break;
                    }
                }
                if let Ok(e) = serde_json::from_slice::<Effect>(&v) {
                    w.outbox.push((seq, v));
                    seq += 1;
                    released.push(e);
                }
                w.meta_removed.push(k);
            }
            let more = next.is_none() && !w.meta_removed.is_empty();
            if seq != self.next_seq {
                w.meta
                    .push(("outbox_next".into(), seq.to_le_bytes().to_vec()));
            }
            self.store.commit(w)?;
            self.next_seq = seq;
            if !more {
                self.next_deferred = match next {
                    Some(t) => Some(t),
                    None => self.first_deferred()?,
                };
                return Ok(released);
            }
        }
    }

    /// When the earliest deferred effect is due.
    fn first_deferred(&self) -> Result<Option<jiff::Timestamp>, StoreError> {
        Ok(self
            .store
            .meta_prefix(DEFERRED_PREFIX, 1)?
            .first()
            .and_then(|(k, _)| deferred_key_time(k)))
    }

    /// Outbox entries not yet delivered, from `from` on.
    pub fn outbox(&self, from: u64, limit: usize) -> Result<Vec<(u64, Effect)>, StoreError> {
        Ok(self
            .store
            .outbox(from, limit)?
            .into_iter()
            .filter_map(|(s, b)| serde_json::from_slice(&b).ok().map(|e| (s, e)))
            .collect())
    }

    /// Removes the outbox entries below `below` (every sink has them) and
    /// records sink progress, atomically.
    pub fn delivered(
        &mut self,
        below: Option<u64>,
        meta: Vec<(String, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        self.store.commit(WriteSet {
            delivered_below: below,
            meta,
            ..WriteSet::default()
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

/// Meta keys of deferred effects: `defer:` + due time + outbox sequence, so
/// key order is due order.
const DEFERRED_PREFIX: &str = "defer:";

fn deferred_until(e: &Effect) -> Option<jiff::Timestamp> {
    if e.status != "deferred" {
        return None;
    }
    e.deliver_at.as_deref()?.parse().ok()
}

/// Seconds are offset by 2^62 so that times before 1970 sort first too.
fn deferred_key(at: jiff::Timestamp, seq: u64) -> String {
    let secs = (at.as_second() + (1i64 << 62)) as u64;
    format!("{DEFERRED_PREFIX}{secs:020}:{seq:020}")
}

fn deferred_key_time(key: &str) -> Option<jiff::Timestamp> {
    let secs: u64 = key.strip_prefix(DEFERRED_PREFIX)?.get(..20)?.parse().ok()?;
    jiff::Timestamp::from_second(secs as i64 - (1i64 << 62)).ok()
}

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

/// A member's stored state as JSON.
pub fn member_json(
    id: &str,
    rec: &crate::model::MemberRecord,
    schema: &Schema,
    rules: &RuleSet,
) -> serde_json::Value {
    use crate::model::day_string;
    let day = |d: Option<i32>| d.map(day_string);
    let rule_name = |k: u64| {
        rules
            .rules
            .iter()
            .find(|r| xxhash_rust::xxh3::xxh3_64(r.name.as_bytes()) == k)
            .map_or(format!("{k:016x}"), |r| r.name.clone())
    };
    let attrs: serde_json::Map<String, serde_json::Value> = rec
        .attributes
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                crate::model::value_json(&v.into(), &schema.tiers),
            )
        })
        .collect();
    let rule_states: Vec<serde_json::Value> = rec
        .rules
        .iter()
        .map(|r| serde_json::json!({"rule": rule_name(r.rule), "armed": r.armed, "fired": r.fired, "recent": r.recent.iter().map(|d| day_string(*d)).collect::<Vec<_>>()}))
        .collect();
    serde_json::json!({
        "member": id,
        "tier": schema.tiers.get(rec.tier as usize),
        "points": rec.points,
        "orders": rec.orders,
        "spend": crate::model::json_number(rec.spend),
        "joined_at": day_string(rec.joined),
        "first_purchase_at": day(rec.first_purchase),
        "last_purchase_at": day(rec.last_purchase),
        "purchase_days": rec.purchase_days,
        "tags": rec.tags,
        "birthday": day(rec.birthday),
        "attributes": attrs,
        "ids": rec.ids.iter().map(|(k, v)| identity::id_key(k, v)).collect::<Vec<_>>(),
        "merged": rec.merged,
        "rules": rule_states,
    })
}

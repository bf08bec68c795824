//! Segments over a data folder: which members a segment's condition holds
//! for on a day, counted or listed with the fields asked for. A segment is
//! evaluated as the daily tick evaluates a condition (the member view of
//! the day, no event), in one pass over the store. It reads only; it
//! changes no member and no rule state. Which segment (a named one, or a
//! query compiled by `lang::compile::compile_query`) is the caller's.
//!
//! Counting reads, decodes and tests members on every core, a range of
//! member ids per thread at a time: reading sled and decoding records is
//! most of a scan's time. Listing goes in member id order, on one thread.

use super::plan::Plan;
use super::view::View;
use crate::base::value::Value;
use crate::config::Schema;
use crate::lang::RuleSet;
use crate::model::MemberRecord;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("unknown field `{name}`; fields are: member, {fields}")]
    UnknownField { name: String, fields: String },
    #[error("the field `{name}` is asked for twice")]
    Repeated { name: String },
    #[error(
        "segments and explanations are worked out from member records as they are now, and this folder's members are as of {last} (its last event or daily tick): {day} is before that (records keep no history to count back to it); `nudge replay --until DAY --data NEW_FOLDER` makes a folder as it was on a day"
    )]
    TooEarly { day: String, last: String },
    #[error(
        "{segment} calls the plugin function `{function}`, and segments are counted and exported without plugins (it would match no one); tag the members with a rule (`when {function}(member) then tag \"...\"`) and make the segment `\"...\" in tags` (members get the tag at the next event or tick the rule runs on)"
    )]
    Plugin { segment: String, function: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Refuses a day before the store's present: member records hold the
/// present, not history (windows drop their old days, counters hold
/// today's totals), so a day before the last event or tick would be
/// answered wrong.
pub fn check_day(store: &dyn Store, day: i32) -> Result<(), SegmentError> {
    let tick = store.meta_day(crate::store::keys::LAST_TICK)?;
    let event = store.meta_day(crate::store::keys::NEWEST_EVENT_DAY)?;
    // Event days are UTC days; a member's local day may be the one before.
    let first = tick.max(event.map(|d| d - 1));
    match (first, tick.max(event)) {
        (Some(first), Some(last)) if day < first => Err(SegmentError::TooEarly {
            day: crate::base::time::day_string(day),
            last: crate::base::time::day_string(last),
        }),
        _ => Ok(()),
    }
}

/// What an export row holds.
enum Field {
    Member,
    /// The tag names, from the record.
    Tags,
    Slot(u16),
}

/// One segment of a rule set, ready to test members against.
pub struct Scan<'r> {
    schema: &'r Schema,
    rules: &'r RuleSet,
    index: usize,
    test: Test,
    need: Vec<bool>,
    fields: Vec<(String, Field)>,
}

/// What testing a member needs, one per thread.
struct Test {
    plan: Plan,
    view: View,
    expire: Option<i32>,
}

/// Decimal places of numbers in exports.
const EXPORT_DECIMALS: u32 = 6;

/// Ranges of ids per counting thread: enough that a thread that finishes
/// early takes another range instead of waiting for a long one.
const RANGES_PER_THREAD: usize = 32;

/// How many members a scan saw and how many matched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub count: u64,
    pub members: u64,
}

impl<'r> Scan<'r> {
    /// Segment `index` of `rules`, with the export `fields` (member fields
    /// and attributes by name, `member`, `tags`).
    pub fn new(
        schema: &'r Schema,
        rules: &'r RuleSet,
        index: usize,
        fields: &[String],
    ) -> Result<Scan<'r>, SegmentError> {
        let layout = &rules.layout;
        if let Some(seg) = rules.segments.get(index)
            && let Some((plugin, function)) = crate::lang::compile::plugin_call(&seg.checked.cond)
        {
            let function = rules.plugin_function(plugin, function);
            let segment = match seg.name.as_str() {
                "" => "the query".to_string(),
                name => format!("segment \"{name}\""),
            };
            return Err(SegmentError::Plugin { segment, function });
        }
        let n_plain = layout.fields.len() - layout.computed();
        let mut need = vec![false; layout.fields.len()];
        match rules.segments.get(index).and_then(|s| s.reads.as_deref()) {
            Some(reads) => reads.iter().for_each(|&s| need[s as usize] = true),
            None => need.iter_mut().for_each(|n| *n = true),
        }
        let mut out = Vec::new();
        for name in fields {
            if out.iter().any(|(n, _)| n == name) {
                return Err(SegmentError::Repeated { name: name.clone() });
            }
            let field = match name.as_str() {
                "member" => Field::Member,
                "tags" => Field::Tags,
                // A plain field, or a windowed prediction the query computes.
                n => match layout.fields[..n_plain]
                    .iter()
                    .position(|(f, _)| f == n)
                    .or_else(|| {
                        let mut p = layout.predicted.iter().map(|(s, _, _)| *s as usize);
                        p.find(|&s| layout.fields[s].0 == n)
                    }) {
                    Some(i) => {
                        need[i] = true;
                        Field::Slot(i as u16)
                    }
                    None => {
                        // Windowed predictions are any window: named by form.
                        let names: Vec<&str> = layout.fields[..n_plain]
                            .iter()
                            .map(|(f, _)| f.as_str())
                            .chain(["expected_purchases(Nd)", "predicted_clv(Nd)"])
                            .collect();
                        return Err(SegmentError::UnknownField {
                            name: name.clone(),
                            fields: names.join(", "),
                        });
                    }
                },
            };
            out.push((name.clone(), field));
        }
        Ok(Scan {
            schema,
            rules,
            index,
            test: Test::new(schema, rules),
            need,
            fields: out,
        })
    }

    /// Whether `rec` is in the segment on `today` (unknown is not in).
    pub fn matches(&mut self, rec: &MemberRecord, today: i32) -> bool {
        self.test
            .matches(self.rules, self.index, &self.need, rec, today)
    }

    /// The names of the export fields, in order.
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(n, _)| n.as_str())
    }

    /// The export fields of the member last passed to `matches`.
    pub fn row(&self, id: &str, rec: &MemberRecord) -> Vec<(&str, serde_json::Value)> {
        self.fields
            .iter()
            .map(|(name, f)| {
                let v = match f {
                    Field::Member => id.into(),
                    Field::Tags => rec.tags.iter().map(|t| t.as_str()).collect(),
                    Field::Slot(s) => match &self.test.view.member[*s as usize] {
                        // Ratios (`cycle`, `avg_order`) carry 28 digits;
                        // a list for people and vendors needs six.
                        Value::Dec(d) => {
                            let d = d.round_dp(EXPORT_DECIMALS).normalize();
                            serde_json::Value::Number(crate::model::json_number(d))
                        }
                        v => crate::model::value_json(v, &self.schema.tiers),
                    },
                };
                (name.as_str(), v)
            })
            .collect()
    }

    /// Counts the members of the segment on `today`: the store cut into
    /// ranges of ids, each read, decoded and tested on one of the threads
    /// (one per core) as it comes free.
    pub fn count(
        &mut self,
        store: &(dyn Store + Sync),
        today: i32,
    ) -> Result<Counts, SegmentError> {
        check_day(store, today)?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        if threads < 2 {
            return self.each(store, today, &mut |_, _, _| true);
        }
        let fit = super::predict::load(store)?.map(std::sync::Arc::new);
        let ranges = store.member_ranges(threads * RANGES_PER_THREAD)?;
        let next = std::sync::atomic::AtomicUsize::new(0);
        let (rules, index, need, schema) = (self.rules, self.index, &self.need, self.schema);
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    let (ranges, next, fit) = (&ranges, &next, fit.clone());
                    s.spawn(move || {
                        let mut test = Test::new(schema, rules);
                        test.plan.fit = fit;
                        let mut c = Counts::default();
                        let mut corrupt = None;
                        while let Some(range) =
                            ranges.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                        {
                            store.each_member_bytes(range, &mut |id, bytes| {
                                match MemberRecord::decode(bytes) {
                                    Ok(rec) => {
                                        c.members += 1;
                                        let hit = test.matches(rules, index, need, &rec, today);
                                        c.count += u64::from(hit);
                                        true
                                    }
                                    Err(message) => {
                                        let member = String::from_utf8_lossy(id).into_owned();
                                        corrupt = Some(StoreError::Corrupt { member, message });
                                        false
                                    }
                                }
                            })?;
                            if let Some(e) = corrupt {
                                return Err(e);
                            }
                        }
                        Ok::<_, StoreError>(c)
                    })
                })
                .collect();
            let mut total = Counts::default();
            for w in workers {
                let c = w
                    .join()
                    .map_err(|_| StoreError::Io("a segment counting thread failed".into()))??;
                total.count += c.count;
                total.members += c.members;
            }
            Ok(total)
        })
    }

    /// Calls `matched` with every member in the segment on `today`, in
    /// member id order, until it returns `false`.
    pub fn each(
        &mut self,
        store: &dyn Store,
        today: i32,
        matched: &mut dyn FnMut(&Self, &str, &MemberRecord) -> bool,
    ) -> Result<Counts, SegmentError> {
        check_day(store, today)?;
        self.test.plan.fit = super::predict::load(store)?.map(std::sync::Arc::new);
        let mut c = Counts::default();
        store.each_member(&mut |id, rec| {
            c.members += 1;
            if self.matches(&rec, today) {
                c.count += 1;
                return matched(self, id, &rec);
            }
            true
        })?;
        Ok(c)
    }

    /// Calls `visit` with every member of `store` after member `after`
    /// (all: `None`), in member id order, with its record when it is in
    /// the segment on `today`, until `visit` returns `false`: an export
    /// taken in parts (cluster mode asks each partition's holder for one
    /// part at a time).
    pub fn each_after(
        &mut self,
        store: &dyn Store,
        today: i32,
        after: Option<&str>,
        visit: &mut dyn FnMut(&Self, &str, Option<&MemberRecord>) -> bool,
    ) -> Result<(), SegmentError> {
        check_day(store, today)?;
        self.test.plan.fit = super::predict::load(store)?.map(std::sync::Arc::new);
        let mut corrupt = None;
        store.each_member_bytes(&crate::store::IdRange::after(after), &mut |id, bytes| {
            let id = String::from_utf8_lossy(id);
            match MemberRecord::decode(bytes) {
                Ok(rec) => {
                    let hit = self.matches(&rec, today);
                    visit(self, &id, hit.then_some(&rec))
                }
                Err(message) => {
                    let member = id.into_owned();
                    corrupt = Some(StoreError::Corrupt { member, message });
                    false
                }
            }
        })?;
        match corrupt {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

impl Test {
    fn new(schema: &Schema, rules: &RuleSet) -> Test {
        Test {
            plan: Plan::new(schema, rules),
            view: View::default(),
            expire: schema.points.expire_after_days.map(|d| d as i32),
        }
    }

    fn matches(
        &mut self,
        rules: &RuleSet,
        index: usize,
        need: &[bool],
        rec: &MemberRecord,
        today: i32,
    ) -> bool {
        let Some(seg) = rules.segments.get(index) else {
            return false;
        };
        self.view.fill(
            rec,
            &rules.layout,
            &self.plan,
            Some(need),
            today,
            self.expire,
        );
        seg.cond.eval(&self.view.tick_env(today)) == Some(true)
    }
}

/// An export row as one line of JSON, its fields in the order asked for.
pub fn row_json(row: &[(&str, serde_json::Value)]) -> String {
    let mut out = String::from("{");
    for (i, (name, v)) in row.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::Value::from(*name).to_string());
        out.push(':');
        out.push_str(&v.to_string());
    }
    out.push('}');
    out
}

/// The fields an export has when none are asked for.
pub fn default_fields() -> Vec<String> {
    ["member", "tier", "points"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

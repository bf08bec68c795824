//! Segments over a data folder: which members a segment's condition holds
//! for on a day, counted or listed with the fields asked for. A segment is
//! evaluated as the daily tick evaluates a condition (the member view of
//! the day, no event), in one pass over the store. It reads only; it
//! changes no member and no rule state. Which segment (a named one, or a
//! query compiled by `lang::compile::compile_query`) is the caller's.

use super::plan::Plan;
use super::view::View;
use crate::config::Schema;
use crate::lang::RuleSet;
use crate::model::MemberRecord;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("unknown field `{name}`; fields are: member, {fields}")]
    UnknownField { name: String, fields: String },
    #[error(transparent)]
    Store(#[from] StoreError),
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
    rules: &'r RuleSet,
    index: usize,
    plan: Plan,
    view: View,
    need: Vec<bool>,
    fields: Vec<(String, Field)>,
    tiers: Vec<String>,
    expire: Option<i32>,
}

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
        schema: &Schema,
        rules: &'r RuleSet,
        index: usize,
        fields: &[String],
    ) -> Result<Scan<'r>, SegmentError> {
        let layout = &rules.layout;
        let n_plain = layout.fields.len() - layout.aggregates.len() - layout.expiring.len();
        let mut need = vec![false; layout.fields.len()];
        match rules.segments.get(index).and_then(|s| s.reads.as_deref()) {
            Some(reads) => reads.iter().for_each(|&s| need[s as usize] = true),
            None => need.iter_mut().for_each(|n| *n = true),
        }
        let mut out = Vec::new();
        for name in fields {
            let field = match name.as_str() {
                "member" => Field::Member,
                "tags" => Field::Tags,
                n => match layout.fields[..n_plain].iter().position(|(f, _)| f == n) {
                    Some(i) => {
                        need[i] = true;
                        Field::Slot(i as u16)
                    }
                    None => {
                        let names: Vec<&str> = layout.fields[..n_plain]
                            .iter()
                            .map(|(f, _)| f.as_str())
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
            rules,
            index,
            plan: Plan::new(schema, rules),
            view: View::default(),
            need,
            fields: out,
            tiers: schema.tiers.clone(),
            expire: schema.points.expire_after_days.map(|d| d as i32),
        })
    }

    /// Whether `rec` is in the segment on `today` (unknown is not in).
    pub fn matches(&mut self, rec: &MemberRecord, today: i32) -> bool {
        let Some(seg) = self.rules.segments.get(self.index) else {
            return false;
        };
        self.view.fill(
            rec,
            &self.rules.layout,
            &self.plan,
            Some(&self.need),
            today,
            self.expire,
        );
        seg.cond.eval(&self.view.tick_env(today)) == Some(true)
    }

    /// The export fields of the member last passed to `matches`.
    pub fn row(&self, id: &str, rec: &MemberRecord) -> Vec<(&str, serde_json::Value)> {
        self.fields
            .iter()
            .map(|(name, f)| {
                let v = match f {
                    Field::Member => id.into(),
                    Field::Tags => rec.tags.clone().into(),
                    Field::Slot(s) => {
                        let v = &self.view.member[*s as usize];
                        crate::model::value_json(v, &self.tiers)
                    }
                };
                (name.as_str(), v)
            })
            .collect()
    }

    /// Counts the members of the segment on `today`.
    pub fn count(&mut self, store: &dyn Store, today: i32) -> Result<Counts, SegmentError> {
        self.each(store, today, &mut |_, _, _| true)
    }

    /// Calls `matched` with every member in the segment on `today`, in
    /// member id order, until it returns `false`.
    pub fn each(
        &mut self,
        store: &dyn Store,
        today: i32,
        matched: &mut dyn FnMut(&Self, &str, &MemberRecord) -> bool,
    ) -> Result<Counts, SegmentError> {
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

//! Resolving names: member fields, attributes, `event.` fields (with the
//! event types that have them), and the hints for names that are not.

use super::*;
use crate::base::diag::{Code, Diagnostic, Span, did_you_mean};
use crate::lang::ast::{self};
use crate::lang::program::Value;
use crate::model::fields::FieldType;

impl Checker<'_> {
    // Long because a dotted name resolves through several namespaces (event fields, built-ins, attributes, tags, tiers), each with its own hint when it is not there.
    pub(super) fn path(&mut self, parts: &[ast::Ident], span: Span) -> R<TExpr> {
        let mk = |ty: Ty, kind: TKind| TExpr {
            ty,
            konst: false,
            span,
            kind,
        };
        let first = &parts[0];
        if parts.len() == 1 {
            let name = first.name.as_str();
            if self.filter_event.is_some() {
                self.error(
                    Code::UnknownName,
                    span,
                    format!("`{name}` cannot be used in an aggregate's `where`"),
                    Some("the filter reads the counted event only: `event.FIELD`".into()),
                );
                return Err(());
            }
            if let Some(i) = self.layout.fields.iter().position(|(n, _)| n == name) {
                let ty = self.layout.fields[i].1.clone();
                return Ok(mk(ty, TKind::Slot(i as u16)));
            }
            if let Some(t) = self.schema.tier(name) {
                return Ok(TExpr {
                    ty: Ty::Tier,
                    konst: true,
                    span,
                    kind: TKind::Lit(Value::Tier(t)),
                });
            }
            if name == "today" {
                return Ok(mk(Ty::Date, TKind::Today));
            }
            if name == "member" {
                return Ok(mk(Ty::Member, TKind::Member));
            }
            if name == "event" {
                self.error(
                    Code::UnknownEventField,
                    span,
                    "`event` needs a field",
                    Some("write `event.FIELD`, e.g. `event.amount`".into()),
                );
                return Err(());
            }
            let cands: Vec<&str> = self
                .layout
                .fields
                .iter()
                .map(|(n, _)| n.as_str())
                .chain(self.schema.tiers.iter().map(|t| t.as_str()))
                .chain(["today"])
                .collect();
            // `category` for `event.category`: the most common slip.
            let event_field = self
                .schema
                .events
                .iter()
                .any(|e| e.fields.iter().any(|f| f.name == name));
            let hint = if event_field {
                format!("`{name}` is a field of the event: write `event.{name}`")
            } else if matches!(
                name,
                "expected_purchases" | "predicted_clv" | "points_expiring"
            ) {
                format!("`{name}` takes a window: `{name}(90d)`")
            } else {
                did_you_mean(name, cands.iter().copied()).unwrap_or_else(|| {
                    "fields are the built-ins (see docs/language.md), the config's `attributes` and tier names".to_string()
                })
            };
            self.error(
                Code::UnknownName,
                first.span,
                format!("unknown field `{name}`"),
                Some(hint),
            );
            return Err(());
        }
        if first.name == "event" && parts.len() == 2 {
            return self.event_field(&parts[1], span);
        }
        if self.schema.event(&first.name).is_some() {
            self.error(
                Code::UnknownName,
                span,
                format!(
                    "`{}.{}` is only meaningful inside an aggregate",
                    first.name, parts[1].name
                ),
                Some(format!(
                    "for the triggering event write `event.{}`; over a window, `sum({}.{}, 30d)`",
                    parts[1].name, first.name, parts[1].name
                )),
            );
            return Err(());
        }
        let hint = did_you_mean(
            &first.name,
            std::iter::once("event").chain(self.schema.events.iter().map(|e| e.name.as_str())),
        )
        .unwrap_or_else(|| "only `event.FIELD` has a dot".into());
        self.error(
            Code::UnknownName,
            span,
            format!(
                "unknown name `{}`",
                parts
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(".")
            ),
            Some(hint),
        );
        Err(())
    }

    pub(super) fn event_slot(&mut self, name: &str) -> u16 {
        let n = self.event_slots.len() as u16;
        *self.event_slots.entry(name.to_string()).or_insert_with(|| {
            self.layout.event_fields.push(name.to_string());
            n
        })
    }

    // Long because an event field is checked against the rule's triggers, the event types that have it, and its type, each with its own hint.
    pub(super) fn event_field(&mut self, field: &ast::Ident, span: Span) -> R<TExpr> {
        let name = field.name.as_str();
        // Inside an aggregate filter: the aggregated event type.
        let types: Vec<usize> = if let Some(et) = self.filter_event {
            vec![et]
        } else {
            let Some(rcx) = &self.rule else {
                return Err(());
            };
            let t = rcx.triggers.clone();
            if t.state {
                (0..self.schema.events.len()).collect()
            } else {
                if rcx.segment {
                    self.error(
                        Code::EventInTick,
                        span,
                        format!("a segment is a set of members, with no event to read `event.{name}` from"),
                        Some("use member fields and aggregates, e.g. `count(purchase where event.category == \"coffee\", 90d) >= 3`".into()),
                    );
                    return Err(());
                }
                if t.events.is_empty() {
                    let on = if t.tick {
                        "tick"
                    } else if t.tier_up {
                        "tier_up"
                    } else {
                        "tier_down"
                    };
                    self.error(
                        Code::EventInTick,
                        span,
                        format!("this rule runs `on {on}`, which has no event to read `event.{name}` from"),
                        Some("run it on an event (`on purchase`) or use member fields and aggregates".into()),
                    );
                    return Err(());
                }
                t.events.clone()
            }
        };
        let state =
            self.filter_event.is_none() && self.rule.as_ref().is_some_and(|r| r.triggers.state);
        let mut found: Vec<(usize, FieldType)> = Vec::new();
        let mut missing: Vec<&str> = Vec::new();
        for &i in &types {
            let et = &self.schema.events[i];
            match et.field(name) {
                Some((_, f)) => found.push((i, f.ty)),
                None => missing.push(&et.name),
            }
        }
        if found.is_empty() {
            let all: Vec<&str> = types
                .iter()
                .flat_map(|&i| self.schema.events[i].fields.iter().map(|f| f.name.as_str()))
                .collect();
            let hint = did_you_mean(name, all.iter().copied()).unwrap_or_else(|| {
                if all.is_empty() {
                    "these events declare no fields".to_string()
                } else {
                    format!("fields here are: {}", dedup(all).join(", "))
                }
            });
            self.error(
                Code::UnknownEventField,
                field.span,
                format!("no event this rule runs on has a field `{name}`"),
                Some(hint),
            );
            return Err(());
        }
        if !missing.is_empty() && !state {
            self.error(
                Code::UnknownEventField,
                field.span,
                format!("`{name}` is not a field of `{}`", missing.join("`, `")),
                Some(format!(
                    "declare it for those events, or split the rule by event type (`on {}`)",
                    self.schema.events[found[0].0].name
                )),
            );
            return Err(());
        }
        let ty = found[0].1;
        if let Some((i, t)) = found.iter().find(|(_, t)| *t != ty) {
            self.error(
                Code::TypeMismatch,
                field.span,
                format!(
                    "`{name}` has a different type in `{}` than in `{}`",
                    self.schema.events[*i].name, self.schema.events[found[0].0].name
                ),
                Some(format!("declare it with one type ({:?} vs {:?})", ty, t)),
            );
            return Err(());
        }
        // `on purchase, tick` runs on ticks as surely as a rule without `on`.
        let also_tick = self.filter_event.is_none()
            && self
                .rule
                .as_ref()
                .is_some_and(|r| !r.triggers.state && r.triggers.tick);
        if (state || also_tick)
            && let Some(r) = self.rule.as_mut()
            && !r.warned_event_on_tick
        {
            r.warned_event_on_tick = true;
            let (why, fix) = if state {
                (
                    "this rule has no `on`, so it also runs on ticks",
                    "add `on EVENT` to run it only on events",
                )
            } else {
                (
                    "this rule also runs `on tick`",
                    "split it: one rule `on EVENT` that reads the event, one `on tick` that does not",
                )
            };
            let d = Diagnostic::new(
                Code::EventOnTick,
                self.source,
                span,
                format!("`event.{name}` is null on the daily tick, and {why}"),
            )
            .hint(fix);
            self.err(d);
        }
        let slot = self.event_slot(name);
        Ok(TExpr {
            ty: Ty::from_field(ty),
            konst: false,
            span,
            kind: TKind::Event(slot),
        })
    }
}

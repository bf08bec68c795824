//! The member and event data a project declares: time zone, tiers,
//! attributes, event types, the purchase event, identifier kinds.

use super::{S, Validator, sorted};
use crate::base::diag::{Code, Diagnostic, Span};
use crate::base::yaml::Spanned;
use crate::config::file::{AttrFile, ConfigFile};
use crate::config::{EventType, Field};
use crate::model::fields::{BUILTIN_TRIGGERS, FieldType};
use std::collections::HashMap;

impl Validator<'_> {
    /// The time zone (UTC when not given).
    pub(super) fn timezone(&mut self, f: &ConfigFile) -> (String, jiff::tz::TimeZone) {
        let timezone_name = f
            .timezone
            .as_ref()
            .map_or("UTC".to_string(), |t| t.to_string());
        let timezone = match jiff::tz::TimeZone::get(&timezone_name) {
            Ok(tz) => tz,
            Err(_) => {
                if let Some(t) = &f.timezone {
                    self.err(
                        t,
                        format!("unknown time zone `{}`", t.as_str()),
                        Some("use an IANA name such as `Asia/Shanghai` or `Europe/Berlin`".into()),
                    );
                }
                jiff::tz::TimeZone::UTC
            }
        };
        (timezone_name, timezone)
    }

    /// The tier list, lowest first.
    pub(super) fn tiers(&mut self, f: &ConfigFile) -> Vec<String> {
        let mut tiers = Vec::new();
        match &f.tiers {
            None => self.diags.push(
                Diagnostic::new(
                    Code::ConfigShape,
                    self.source,
                    Span::new(0, 0),
                    "the config has no `tiers`",
                )
                .hint("list the tiers lowest first, e.g. `tiers: [bronze, silver, gold, diamond]`"),
            ),
            Some(ts) if ts.is_empty() => self.diags.push(
                Diagnostic::new(
                    Code::ConfigValue,
                    self.source,
                    self.pos.span(ts.span()),
                    "`tiers` is empty; every member has a tier",
                )
                .hint("list the tiers lowest first, e.g. `tiers: [bronze, silver, gold, diamond]`"),
            ),
            Some(ts) => {
                let ts: &Vec<S> = ts;
                if ts.len() > 64 {
                    self.err(&ts[64], "more than 64 tiers", None);
                }
                for t in ts {
                    if self.name(t, "tier") && self.not_reserved(t, "tier") {
                        if tiers.iter().any(|x| x == t.as_str()) {
                            self.err(t, format!("tier `{}` is listed twice", t.as_str()), None);
                        }
                        tiers.push(t.to_string());
                    }
                }
            }
        }
        tiers
    }

    /// Declared member attributes, with their defaults.
    pub(super) fn attributes(&mut self, declared: HashMap<S, AttrFile>) -> Vec<Field> {
        let mut attributes: Vec<Field> = Vec::new();
        for (name, attr) in sorted(declared) {
            let at = |text: String| Spanned::new(*name.span(), text);
            let (ty, default) = match attr {
                AttrFile::Type(ty) => (at(ty), None),
                AttrFile::Full(full) => (at(full.ty), full.default.map(at)),
            };
            if !self.name(&name, "attribute") {
                continue;
            }
            if crate::model::fields::BUILTIN_FIELDS
                .iter()
                .any(|(b, _)| *b == name.as_str())
            {
                self.err(
                    &name,
                    format!("`{}` is a built-in member field", name.as_str()),
                    Some("pick another name; nudge keeps this one itself".into()),
                );
                continue;
            }
            match FieldType::parse(ty.trim()) {
                Some(t) => {
                    let default = default.and_then(|d| self.default_value(t, &d));
                    attributes.push(Field {
                        name: name.to_string(),
                        ty: t,
                        optional: true,
                        default,
                    })
                }
                None => self.err(
                    &ty,
                    format!("unknown type `{}`", ty.as_str()),
                    Some(format!("types are: {}", FieldType::NAMES.join(", "))),
                ),
            }
        }
        attributes
    }

    /// Declared event types and their fields.
    pub(super) fn events(&mut self, declared: HashMap<S, Option<HashMap<S, S>>>) -> Vec<EventType> {
        let mut events: Vec<EventType> = Vec::new();
        for (name, fields) in sorted(declared) {
            if !self.name(&name, "event type") {
                continue;
            }
            if BUILTIN_TRIGGERS.contains(&name.as_str()) {
                self.err(
                    &name,
                    format!(
                        "`{}` is a built-in trigger, not an event type",
                        name.as_str()
                    ),
                    None,
                );
                continue;
            }
            let mut et = EventType {
                name: name.to_string(),
                fields: Vec::new(),
            };
            for (fname, ty) in sorted(fields.unwrap_or_default()) {
                if !self.name(&fname, "field") {
                    continue;
                }
                if ["id", "type", "member", "ids", "at"].contains(&fname.as_str()) {
                    self.err(
                        &fname,
                        format!("`{}` is part of every event", fname.as_str()),
                        Some("every event has `id`, `type`, `member` (or `ids`) and `at`".into()),
                    );
                    continue;
                }
                match FieldType::parse_field(&ty) {
                    Some((t, optional)) => et.fields.push(Field {
                        default: None,
                        name: fname.to_string(),
                        ty: t,
                        optional,
                    }),
                    None => self.err(
                        &ty,
                        format!("unknown type `{}`", ty.as_str()),
                        Some(format!(
                            "types are: {} (`?` after the type: optional)",
                            FieldType::NAMES.join(", ")
                        )),
                    ),
                }
            }
            events.push(et);
        }
        events
    }

    /// The purchase event and its money field (`purchase:`).
    pub(super) fn purchase(&mut self, f: &ConfigFile, events: &[EventType]) -> (String, String) {
        let (purchase_event, purchase_amount) = match &f.purchase {
            Some(p) => (
                p.event
                    .as_ref()
                    .map_or("purchase".into(), |s| s.to_string()),
                p.amount.as_ref().map_or("amount".into(), |s| s.to_string()),
            ),
            None => ("purchase".into(), "amount".into()),
        };
        match events.iter().find(|e| e.name == purchase_event) {
            None => {
                let d = Diagnostic::new(
                    Code::ConfigValue,
                    self.source,
                    f.purchase.as_ref().and_then(|p| p.event.as_ref()).map_or(Span::new(0, 0), |s| self.pos.span(s.span())),
                    format!("the purchase event `{purchase_event}` is not declared under `events`"),
                )
                .hint(format!("declare it: `events: {{ {purchase_event}: {{ {purchase_amount}: money }} }}`"));
                self.diags.push(d);
            }
            Some(e) => match e.fields.iter().find(|x| x.name == purchase_amount) {
                Some(fl) if fl.ty == FieldType::Money && !fl.optional => {}
                _ => self.diags.push(
                    Diagnostic::new(Code::ConfigValue, self.source, Span::new(0, 0), format!("the purchase event `{purchase_event}` needs a required field `{purchase_amount}` of type money"))
                        .hint(format!("declare it under `events: {{ {purchase_event}: {{ {purchase_amount}: money }} }}`")),
                ),
            },
        }
        (purchase_event, purchase_amount)
    }

    /// Identifier kinds for One ID (`ids:`).
    pub(super) fn id_kinds(&mut self, f: &ConfigFile) -> Vec<String> {
        let mut id_kinds: Vec<String> = Vec::new();
        for k in &f.ids {
            if k.as_str() == "member" {
                self.err(
                    k,
                    "`member` is not an identifier kind: events name members directly",
                    None,
                );
            } else if id_kinds.iter().any(|x| x == k.as_str()) {
                self.err(
                    k,
                    format!("identifier kind `{}` is listed twice", k.as_str()),
                    None,
                );
            } else if self.name(k, "kind") {
                id_kinds.push(k.to_string());
            }
        }
        id_kinds
    }
}

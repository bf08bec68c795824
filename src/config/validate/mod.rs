//! `ConfigFile` -> `Schema`: every value checked, every error collected
//! with its position. Split by section: the declared data (`domain`), what
//! marketing configures (`marketing`), how the service runs (`runtime`);
//! shared checks live here.

mod domain;
mod marketing;
mod runtime;

pub(super) use super::file::S;
use super::file::{ConfigFile, HttpFile, PluginLimitsFile, RefundFile};
use super::{Cap, EventType, HttpLimits, PluginLimits, RefundPolicy, Schema};
use crate::base::diag::{Code, Diagnostic, SourceId, Span};
use crate::base::time::parse_duration;
use crate::base::yaml::{Positions, Spanned};
use crate::model::fields::FieldType;
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::str::FromStr;

pub(super) struct Validator<'a> {
    pub(super) source: SourceId,
    pub(super) pos: Positions<'a>,
    pub(super) diags: Vec<Diagnostic>,
}

pub(super) fn sorted<K, V>(m: HashMap<Spanned<K>, V>) -> Vec<(Spanned<K>, V)> {
    let mut v: Vec<_> = m.into_iter().collect();
    v.sort_by_key(|(k, _)| k.span().start().map_or(0, |m| m.character()));
    v
}

impl Validator<'_> {
    pub(super) fn err(&mut self, at: &S, msg: impl Into<String>, hint: Option<String>) {
        let span = self.pos.span(at.span());
        self.diags
            .push(Diagnostic::new(Code::ConfigValue, self.source, span, msg).maybe_hint(hint));
    }

    pub(super) fn name(&mut self, n: &S, what: &str) -> bool {
        // As the grammar's `ident`: letters of any script, ASCII digits, `_`.
        let ok = n
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
            && n.chars()
                .all(|c| c.is_alphabetic() || c.is_ascii_digit() || c == '_')
            && !crate::base::names::KEYWORDS.contains(&n.as_str());
        if !ok {
            self.err(
                n,
                format!("`{}` cannot be {} {what} name", n.as_str(), article(what)),
                Some(
                    "names are letters, digits and `_`, start with a letter, and are not keywords"
                        .into(),
                ),
            );
        }
        ok
    }

    /// An attribute's `default:` as a value of its type.
    pub(super) fn default_value(
        &mut self,
        ty: FieldType,
        d: &S,
    ) -> Option<crate::base::value::Value> {
        use crate::base::value::Value;
        let text = d.as_str().trim();
        let v = match ty {
            FieldType::Int => text.parse().ok().map(Value::Int),
            FieldType::Decimal | FieldType::Money => rust_decimal::Decimal::from_str_exact(text)
                .ok()
                .map(Value::Dec),
            FieldType::String => Some(Value::Str(text.into())),
            FieldType::Bool => match text {
                "true" => Some(Value::Bool(true)),
                "false" => Some(Value::Bool(false)),
                _ => None,
            },
            FieldType::Date => crate::base::time::parse_date(text).map(Value::Date),
            FieldType::Duration => None,
        };
        if v.is_none() {
            self.err(
                d,
                format!("`{text}` is not a value of type {}", ty.name()),
                Some("write a value of the attribute's type: `default: 0`, `default: \"none\"`, `default: 2026-01-01`; durations take no default".into()),
            );
        }
        v
    }

    /// A tier named like a built-in field or `today`, `member`, `event`
    /// would load and then be unusable: in a rule the name means the field.
    pub(super) fn not_reserved(&mut self, n: &S, what: &str) -> bool {
        let name = n.as_str();
        let builtin = crate::model::fields::BUILTIN_FIELDS
            .iter()
            .any(|(b, _)| *b == name);
        if !builtin && !["today", "member", "event"].contains(&name) {
            return true;
        }
        self.err(
            n,
            format!(
                "`{name}` cannot be {} {what} name: in rules it means the built-in `{name}`",
                article(what)
            ),
            Some(format!("pick another name, e.g. `{what}_{name}`")),
        );
        false
    }

    /// `refund:`, or a declared `refund` event type with a string field
    /// `purchase` by default.
    pub(super) fn refund(
        &mut self,
        f: Option<&RefundFile>,
        events: &[EventType],
    ) -> Option<RefundPolicy> {
        let event = f.and_then(|r| r.event.as_ref());
        let name = event.map_or("refund", |e| e.as_str());
        let Some(kind) = events.iter().position(|e| e.name == name) else {
            if let Some(e) = event {
                self.err(
                    e,
                    format!("unknown event type `{name}`"),
                    Some("declare it under `events:`".into()),
                );
            } else if f.is_some() {
                self.diags.push(
                    Diagnostic::new(
                        Code::ConfigValue,
                        self.source,
                        Span::new(0, 0),
                        "`refund:` needs a `refund` event type (or `refund.event`)",
                    )
                    .hint(
                        "declare e.g. `events: { refund: { purchase: string, amount: money? } }`",
                    ),
                );
            }
            return None;
        };
        let et = &events[kind];
        let purchase = f.and_then(|r| r.purchase.as_ref());
        let pname = purchase.map_or("purchase", |p| p.as_str());
        let purchase_field = match et.field(pname) {
            Some((i, fl)) if fl.ty == FieldType::String => Some(i),
            _ => {
                let msg = format!(
                    "the refund event `{name}` needs a string field `{pname}` with the refunded purchase's event id"
                );
                self.err_at(purchase, msg);
                None
            }
        };
        let amount = f.and_then(|r| r.amount.as_ref());
        let aname = amount.map_or("amount", |a| a.as_str());
        let amount_field = match et.field(aname) {
            Some((i, fl)) if fl.ty == FieldType::Money => Some(i),
            Some(_) => {
                let msg = format!("the refund's `{aname}` field must be of type money");
                self.err_at(amount, msg);
                None
            }
            None => {
                if let Some(a) = amount {
                    self.err(a, format!("`{name}` has no field `{aname}`"), None);
                }
                None
            }
        };
        let within_days = match f.and_then(|r| r.within.as_ref()) {
            Some(w) => self.duration_days(w)? as i32,
            None => 90,
        };
        Some(RefundPolicy {
            event: kind,
            purchase_field: purchase_field?,
            amount_field,
            within_days,
        })
    }

    /// An error at the key's value when the file has it, else about the
    /// file as a whole (a default that does not fit).
    pub(super) fn err_at(&mut self, at: Option<&S>, msg: String) {
        match at {
            Some(a) => self.err(a, msg, None),
            None => self.diags.push(Diagnostic::new(
                Code::ConfigValue,
                self.source,
                Span::new(0, 0),
                msg,
            )),
        }
    }

    pub(super) fn duration_days(&mut self, s: &S) -> Option<i64> {
        let text = s.as_str().trim();
        let (message, hint) = match parse_duration(text) {
            Some(secs) if secs % 86_400 == 0 => return Some(secs / 86_400),
            Some(_) => (
                format!("`{text}` is not a whole number of days"),
                "write days or weeks, e.g. `1d` or `2w`".to_string(),
            ),
            None => duration_mistake(text),
        };
        self.err(s, message, Some(hint));
        None
    }

    pub(super) fn money(&mut self, s: &S) -> Option<Decimal> {
        match Decimal::from_str(s.trim()) {
            Ok(d) if d >= Decimal::ZERO => Some(d),
            _ => {
                self.err(
                    s,
                    format!("`{}` is not an amount of money", s.as_str()),
                    Some("write a plain number, e.g. `30` or `9.90`".into()),
                );
                None
            }
        }
    }

    pub(super) fn schema(&mut self, mut f: ConfigFile, base: &std::path::Path) -> Schema {
        let (timezone_name, timezone) = self.timezone(&f);
        let tiers = self.tiers(&f);
        let attributes = self.attributes(std::mem::take(&mut f.attributes));
        let events = self.events(std::mem::take(&mut f.events));
        let (purchase_event, purchase_amount) = self.purchase(&f, &events);
        let channels = self.channels(std::mem::take(&mut f.channels));
        let coupons = self.coupons(std::mem::take(&mut f.coupons), &channels);
        let rewards = self.rewards(std::mem::take(&mut f.rewards));
        let (listen, token) = self.listen_and_token(&f);
        Schema {
            attribution_days: self.attribution_days(&f),
            id_kinds: self.id_kinds(&f),
            refund: self.refund(f.refund.as_ref(), &events),
            plugin_limits: self.plugin_limits(f.plugin_limits.as_ref()),
            control_group_ppm: self.control_group(&f),
            consent: self.consent(&f, &events),
            coupon_secret: f.coupon_secret.as_ref().map(|s| s.to_string()),
            redeem: self.redeem(&f, &events),
            timezone_name,
            timezone,
            tiers,
            purchase_event,
            purchase_amount,
            attributes,
            events,
            coupons,
            rewards,
            channels,
            points: self.points(&f),
            daily_at: self.daily_at(&f),
            paths: self.paths(&f, base),
            listen,
            token,
            http_limits: self.http_limits(f.http.as_ref()),
            cache_bytes: self.cache_bytes(&f),
            partitions: self.partitions(&f),
            dedup_window_days: self.storage_days(&f, |s| s.dedup_window.as_ref(), 30),
            outbox_retention_days: self.storage_days(&f, |s| s.outbox_retention.as_ref(), 7),
            refit_days: f
                .prediction
                .as_ref()
                .and_then(|p| p.refit.as_ref())
                .and_then(|s| self.duration_days(s))
                .map_or(1, |d| d.clamp(1, 36_500) as i32),
            sinks: self.sinks(&f, base),
            stream_sinks: Vec::new(),
            plugin_sink_places: f
                .sinks
                .iter()
                .filter_map(|s| s.plugin.as_ref())
                .map(|p| (p.to_string(), self.source, self.pos.span(p.span())))
                .collect(),
        }
    }
}

impl Validator<'_> {
    pub(super) fn positive(&mut self, v: &Option<S>) -> Option<u64> {
        let s = v.as_ref()?;
        match s.trim().parse::<u64>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                self.err(
                    s,
                    format!("`{}` is not a positive whole number", s.as_str()),
                    None,
                );
                None
            }
        }
    }

    pub(super) fn http_limits(&mut self, f: Option<&HttpFile>) -> HttpLimits {
        let mut l = HttpLimits::default();
        let Some(f) = f else { return l };
        let ms = std::time::Duration::from_millis;
        if let Some(n) = self.positive(&f.header_timeout_ms) {
            l.header_timeout = ms(n);
        }
        if let Some(n) = self.positive(&f.request_timeout_ms) {
            l.request_timeout = ms(n);
        }
        if let Some(n) = self.positive(&f.max_connections) {
            l.max_connections = n as usize;
        }
        l
    }

    pub(super) fn plugin_limits(&mut self, f: Option<&PluginLimitsFile>) -> PluginLimits {
        let mut l = PluginLimits::default();
        let Some(f) = f else { return l };
        let mut num = |v: &Option<S>, slot: &mut u64| {
            if let Some(n) = self.positive(v) {
                *slot = n;
            }
        };
        let mut ops = l.max_operations;
        num(&f.max_operations, &mut ops);
        let mut deadline = l.deadline.as_millis() as u64;
        num(&f.deadline_ms, &mut deadline);
        let mut sizes = [
            l.max_call_depth,
            l.max_expr_depth,
            l.max_string_bytes,
            l.max_array,
            l.max_map,
            l.max_variables,
            l.max_functions,
            l.max_intents,
        ]
        .map(|x| x as u64);
        let fields = [
            &f.max_call_depth,
            &f.max_expr_depth,
            &f.max_string_bytes,
            &f.max_array,
            &f.max_map,
            &f.max_variables,
            &f.max_functions,
            &f.max_intents,
        ];
        for (slot, field) in sizes.iter_mut().zip(fields) {
            num(field, slot);
        }
        let [call, expr, string, array, map, vars, fns, intents] = sizes.map(|x| x as usize);
        l.max_operations = ops;
        l.deadline = std::time::Duration::from_millis(deadline);
        (
            l.max_call_depth,
            l.max_expr_depth,
            l.max_string_bytes,
            l.max_array,
        ) = (call, expr, string, array);
        (l.max_map, l.max_variables, l.max_functions, l.max_intents) = (map, vars, fns, intents);
        l
    }
}

pub(super) fn parse_cap(s: &str) -> Option<Cap> {
    let (n, per) = s.split_once(" per ")?;
    Some(Cap {
        count: n.trim().parse().ok().filter(|n| *n > 0)?,
        per_secs: parse_duration(per)?,
    })
}

pub(super) fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && m.to_string().len() <= 2).then_some(h * 60 + m)
}

pub(super) fn parse_quiet_hours(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-')?;
    let (a, b) = (parse_hhmm(a)?, parse_hhmm(b)?);
    (a != b).then_some((a, b))
}

/// What is wrong with a duration that does not parse, and the fix.
fn duration_mistake(text: &str) -> (String, String) {
    let (number, unit) = text.split_at(text.len() - text.chars().last().map_or(0, char::len_utf8));
    match (number.trim().parse::<i64>(), unit) {
        (Ok(n), "h" | "d" | "w") if n <= 0 => (
            format!("`{text}` is not more than zero"),
            "write a positive number of days, e.g. `30d`".into(),
        ),
        (Ok(n), "y") => (
            format!("`{text}`: years are not a unit here"),
            format!("write days: `{}d`", n.saturating_mul(365)),
        ),
        (Ok(_), "m" | "M") => (
            format!("`{text}`: months (or minutes) are not a unit here"),
            "write days, e.g. `30d`".into(),
        ),
        _ => (
            format!("`{text}` is not a duration in days"),
            "write e.g. `30d` or `2w`".into(),
        ),
    }
}

/// `a` or `an` before `what` ("an attribute", "a tier").
fn article(what: &str) -> &'static str {
    if what.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

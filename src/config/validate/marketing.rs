//! What marketing declares: channels (caps, consent, quiet hours), coupon
//! templates, points, the control group, consent and redeem events, the
//! attribution window.

use super::{S, Validator, parse_cap, parse_quiet_hours, sorted};
use crate::base::diag::{Code, Diagnostic, Span, did_you_mean};
use crate::config::file::{ChannelFile, ConfigFile, CouponFile, RewardFile};
use crate::config::{Channel, ConsentEvents, CouponTemplate, EventType, PointsPolicy, Reward};
use crate::model::fields::FieldType;
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::str::FromStr;

impl Validator<'_> {
    /// Channels: frequency caps, consent mode, quiet hours.
    pub(super) fn channels(&mut self, declared: HashMap<S, Option<ChannelFile>>) -> Vec<Channel> {
        let mut channels: Vec<Channel> = Vec::new();
        for (name, ch) in sorted(declared) {
            if !self.name(&name, "channel") {
                continue;
            }
            let mut c = Channel {
                name: name.to_string(),
                cap: None,
                quiet_hours: None,
                opt_in: false,
            };
            if let Some(ch) = ch {
                if let Some(cap) = &ch.cap {
                    c.cap = parse_cap(cap);
                    if c.cap.is_none() {
                        self.err(
                            cap,
                            format!("`{}` is not a frequency cap", cap.as_str()),
                            Some("write `N per DURATION`, e.g. `2 per 7d`".into()),
                        );
                    }
                }
                if let Some(m) = &ch.consent {
                    match m.as_str() {
                        "opt_in" => c.opt_in = true,
                        "opt_out" => {}
                        other => self.err(m, format!("`{other}` is not a consent mode"), Some("write `opt_in` (contact only after consent) or `opt_out` (until withdrawn)".into())),
                    }
                }
                if let Some(q) = &ch.quiet_hours {
                    c.quiet_hours = parse_quiet_hours(q);
                    if c.quiet_hours.is_none() {
                        self.err(
                            q,
                            format!("`{}` is not a time range", q.as_str()),
                            Some("write `HH:MM-HH:MM` in local time, e.g. `21:00-09:00`".into()),
                        );
                    }
                }
            }
            channels.push(c);
        }
        channels
    }

    /// Coupon templates: threshold, discount, validity, channel.
    pub(super) fn coupons(
        &mut self,
        declared: HashMap<S, CouponFile>,
        channels: &[Channel],
    ) -> Vec<CouponTemplate> {
        let mut coupons = Vec::new();
        for (name, c) in sorted(declared) {
            if !self.name(&name, "coupon") {
                continue;
            }
            let threshold = match &c.threshold {
                Some(t) => self.money(t),
                None => Some(Decimal::ZERO),
            };
            let discount = self.money(&c.discount);
            let valid_days = match &c.valid {
                Some(v) => self.duration_days(v),
                None => Some(30),
            };
            if let Some(ch) = &c.channel
                && !channels.iter().any(|x| x.name == ch.as_str())
            {
                let hint = did_you_mean(ch, channels.iter().map(|x| x.name.as_str()))
                    .unwrap_or_else(|| {
                        format!(
                            "channels are: {}",
                            channels
                                .iter()
                                .map(|x| x.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    });
                self.err(ch, format!("unknown channel `{}`", ch.as_str()), Some(hint));
            }
            if let (Some(t), Some(d)) = (threshold, discount) {
                if d.is_zero() || (!t.is_zero() && d >= t) {
                    self.err(
                        &c.discount,
                        format!("coupon `{}` saves {d} on a spend of {t}", name.as_str()),
                        Some("the discount must be above zero and below the threshold".into()),
                    );
                }
                if let Some(v) = valid_days {
                    coupons.push(CouponTemplate {
                        name: name.to_string(),
                        threshold: t,
                        discount: d,
                        valid_days: v,
                        channel: c.channel.as_ref().map(|s| s.to_string()),
                    });
                }
            }
        }
        coupons
    }

    /// The points mall: each reward's points (a whole number above zero),
    /// cash and stock.
    pub(super) fn rewards(&mut self, declared: HashMap<S, RewardFile>) -> Vec<Reward> {
        let mut out = Vec::new();
        for (name, r) in sorted(declared) {
            if name.trim().is_empty() {
                self.err(&name, "a reward needs a name", None);
                continue;
            }
            let points = match r.points.trim().parse::<i64>() {
                Ok(p) if p > 0 => Some(p),
                _ => {
                    self.err(
                        &r.points,
                        format!("`{}` is not a number of points", r.points.as_str()),
                        Some("write a whole number above zero, e.g. `points: 1500`".into()),
                    );
                    None
                }
            };
            let cash = r.cash.as_ref().and_then(|c| self.money(c));
            let stock = match &r.stock {
                None => Some(None),
                Some(s) => match s.trim().parse::<u64>() {
                    Ok(n) => Some(Some(n)),
                    Err(_) => {
                        self.err(
                            s,
                            format!("`{}` is not a stock", s.as_str()),
                            Some("write how many there are in all, e.g. `stock: 200`".into()),
                        );
                        None
                    }
                },
            };
            if let (Some(points), Some(stock), true) =
                (points, stock, r.cash.is_none() || cash.is_some())
            {
                out.push(Reward {
                    name: name.to_string(),
                    points,
                    cash,
                    stock,
                });
            }
        }
        out
    }

    /// Points expiry and reminders.
    pub(super) fn points(&mut self, f: &ConfigFile) -> PointsPolicy {
        let mut points = PointsPolicy::default();
        if let Some(p) = &f.points {
            points.expire_after_days = p.expire_after.as_ref().and_then(|s| self.duration_days(s));
            points.remind_before_days =
                p.remind_before.as_ref().and_then(|s| self.duration_days(s));
        }
        points
    }

    /// The control group's share, in parts per million.
    pub(super) fn control_group(&mut self, f: &ConfigFile) -> u32 {
        match &f.control_group {
            Some(c) => match c
                .trim()
                .strip_suffix('%')
                .and_then(|p| Decimal::from_str(p.trim()).ok())
            {
                Some(p) if p >= Decimal::ZERO && p < Decimal::from(100) => {
                    (p * Decimal::from(10_000)).trunc().try_into().unwrap_or(0)
                }
                _ => {
                    let why = if c.trim().ends_with('%') {
                        "is not a share below 100%"
                    } else {
                        "is not a percentage"
                    };
                    self.err(
                        c,
                        format!("`{}` {why}", c.as_str()),
                        Some("write e.g. `control_group: 5%`".into()),
                    );
                    0
                }
            },
            None => 0,
        }
    }

    /// The events that grant and withdraw consent.
    pub(super) fn consent(&mut self, f: &ConfigFile, events: &[EventType]) -> ConsentEvents {
        {
            let c = f.consent.as_ref();
            let event = |v: &mut Self, key: Option<&S>, default: &str| -> Option<usize> {
                match key {
                    Some(k) => {
                        let found = events.iter().position(|e| e.name == k.as_str());
                        if found.is_none() {
                            v.err(
                                k,
                                format!("unknown event type `{}`", k.as_str()),
                                Some("declare it under `events:`".into()),
                            );
                        }
                        found
                    }
                    None => events.iter().position(|e| e.name == default),
                }
            };
            let grant = event(self, c.and_then(|c| c.grant.as_ref()), "consent");
            let withdraw = event(self, c.and_then(|c| c.withdraw.as_ref()), "unsubscribe");
            let field = c
                .and_then(|c| c.field.as_ref())
                .map_or("channel".to_string(), |f| f.to_string());
            for (i, key) in [(grant, "grant"), (withdraw, "withdraw")] {
                if let Some(i) = i
                    && events[i]
                        .field(&field)
                        .is_none_or(|(_, fl)| fl.ty != FieldType::String)
                {
                    self.diags.push(Diagnostic::new(Code::ConfigValue, self.source, Span::new(0, 0), format!("the consent {key} event `{}` needs a string field `{field}` naming the channel", events[i].name)));
                }
            }
            ConsentEvents {
                grant,
                withdraw,
                field,
            }
        }
    }

    /// The redeem event and its coupon-code field.
    pub(super) fn redeem(
        &mut self,
        f: &ConfigFile,
        events: &[EventType],
    ) -> Option<(usize, usize)> {
        {
            let r = f.redeem.as_ref();
            let event = r.and_then(|r| r.event.as_ref());
            let name = event.map_or("redeem", |e| e.as_str());
            let field = r
                .and_then(|r| r.field.as_ref())
                .map_or("coupon", |x| x.as_str());
            match events.iter().position(|e| e.name == name) {
                Some(i) => match events[i].field(field) {
                    Some((fi, fl)) if fl.ty == FieldType::String => Some((i, fi)),
                    _ => {
                        self.diags.push(Diagnostic::new(Code::ConfigValue, self.source, Span::new(0, 0), format!("the redeem event `{name}` needs a string field `{field}` with the coupon code")));
                        None
                    }
                },
                None => {
                    if let Some(e) = event {
                        self.err(
                            e,
                            format!("unknown event type `{name}`"),
                            Some("declare it under `events:`".into()),
                        );
                    }
                    None
                }
            }
        }
    }

    /// Days after a coupon or message a purchase counts as its response.
    pub(super) fn attribution_days(&mut self, f: &ConfigFile) -> i64 {
        match &f.attribution_window {
            Some(w) => self.duration_days(w).unwrap_or(30),
            None => 30,
        }
    }
}

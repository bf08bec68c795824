//! Checking actions: coupons, points, tiers, tags, messages, `set`, `to`,
//! plugin calls (custom actions and functions) and their arguments.

use super::*;
use crate::base::diag::{Code, Diagnostic, did_you_mean};
use crate::lang::ast::{self};
use crate::model::fields::{BUILTIN_FIELDS, FieldType};

const WRITABLE_BUILTINS: &[&str] = &["birthday"];

impl Checker<'_> {
    /// An action, for another member when it says `to`.
    pub(super) fn action_for(&mut self, a: &ast::Action, t: &Triggers) -> R<TAction> {
        let action = self.action(a, t);
        let Some(to) = &a.to else {
            return action;
        };
        let own = match &a.kind {
            ast::ActionKind::Wallet { debit: true, .. } => Some("`debit wallet`"),
            ast::ActionKind::Reward { .. } => Some("`redeem reward`"),
            _ => None,
        };
        if let Some(what) = own {
            self.error(
                Code::BadClause,
                to.span,
                format!("{what} is for the member's own balance, not another's"),
                Some("give to another member with `credit wallet N to ...` or `send voucher N to ...`".into()),
            );
            return Err(());
        }
        let to = self.expr(to)?;
        let to = self.expect(to, &Ty::Str, "`to` takes a member id (a string)")?;
        Ok(TAction::For {
            to,
            action: Box::new(action?),
        })
    }

    // Long because one match over the action kinds, each arm checking its own arguments.
    pub(super) fn action(&mut self, a: &ast::Action, _t: &Triggers) -> R<TAction> {
        use ast::ActionKind as K;
        match &a.kind {
            K::Coupon {
                coupon,
                coupon_span,
                via,
            } => {
                let coupon = match coupon {
                    ast::CouponRef::Literal {
                        threshold,
                        discount,
                    } => CouponSpec::Literal {
                        threshold: *threshold,
                        discount: *discount,
                    },
                    ast::CouponRef::Template(name) => match self.schema.coupon(name) {
                        Some((i, _)) => CouponSpec::Template(i),
                        None => {
                            let names: Vec<&str> = self
                                .schema
                                .coupons
                                .iter()
                                .map(|c| c.name.as_str())
                                .collect();
                            let hint = did_you_mean(name, names.iter().copied()).unwrap_or_else(|| {
                                if names.is_empty() {
                                    "declare templates under `coupons:` in the config, or write a threshold coupon like `30-6`".into()
                                } else {
                                    format!("coupons are: {}; or write a threshold coupon like `30-6`", names.join(", "))
                                }
                            });
                            self.error(
                                Code::UnknownCoupon,
                                *coupon_span,
                                format!("unknown coupon `{name}`"),
                                Some(hint),
                            );
                            if let Some(v) = via {
                                let _ = self.channel(v);
                            }
                            return Err(());
                        }
                    },
                };
                let channel = match via {
                    Some(v) => Some(self.channel(v)?),
                    None => None,
                };
                Ok(TAction::Coupon { coupon, channel })
            }
            K::Message { template, via } => match via {
                Some(v) => Ok(TAction::Message {
                    template: template.clone(),
                    channel: self.channel(v)?,
                }),
                None => {
                    self.error(
                        Code::UnknownChannel,
                        a.span,
                        "a message needs a channel",
                        Some(format!(
                            "add `via CHANNEL`; channels are: {}",
                            self.channel_names()
                        )),
                    );
                    Err(())
                }
            },
            K::Points { deduct, amount } => {
                let e = self.expr(amount)?;
                let e = self.expect(e, &Ty::Int, "points are whole numbers")?;
                Ok(TAction::Points {
                    deduct: *deduct,
                    amount: e,
                })
            }
            K::Set { target, value } => {
                let v = if target.name == "tier" {
                    self.tier_name(value)?
                } else {
                    self.expr(value)?
                };
                if target.name == "tier" {
                    let v = self.expect(v, &Ty::Tier, "`set tier` takes a tier name")?;
                    return Ok(TAction::SetTier(v));
                }
                if let Some(i) = self
                    .layout
                    .fields
                    .iter()
                    .position(|(n, _)| *n == target.name)
                {
                    let is_builtin = i < BUILTIN_FIELDS.len();
                    if is_builtin && !WRITABLE_BUILTINS.contains(&target.name.as_str()) {
                        let hint = match target.name.as_str() {
                            "points" => "use `award points N` or `deduct points N`".to_string(),
                            "wallet" => "use `credit wallet N` or `debit wallet N`".to_string(),
                            "tags" => "use `tag \"x\"` or `untag \"x\"`".to_string(),
                            _ => "nudge keeps it from the member's events; declare an attribute of your own in the config".to_string(),
                        };
                        self.error(
                            Code::ReadOnly,
                            target.span,
                            format!("`{}` is kept by nudge and cannot be set", target.name),
                            Some(hint),
                        );
                        return Err(());
                    }
                    let ty = self.layout.fields[i].1.clone();
                    let v =
                        self.expect(v, &ty, &format!("`{}` holds {}", target.name, ty.name()))?;
                    self.warn_null_arithmetic(&v);
                    return Ok(TAction::Set {
                        slot: i as u16,
                        value: v,
                    });
                }
                let hint = did_you_mean(
                    &target.name,
                    self.schema.attributes.iter().map(|a| a.name.as_str()),
                )
                .unwrap_or_else(|| "declare it under `attributes:` in the config".into());
                self.error(
                    Code::UnknownName,
                    target.span,
                    format!("unknown attribute `{}`", target.name),
                    Some(hint),
                );
                Err(())
            }
            K::Tag { tag, untag } => {
                if tag.trim().is_empty() {
                    self.error(Code::BadLiteral, a.span, "a tag cannot be empty", None);
                    return Err(());
                }
                Ok(TAction::Tag {
                    bit: self.intern_tag(tag),
                    tag: tag.clone(),
                    untag: *untag,
                })
            }
            K::Call { call } => {
                let (plugin, args) = self.plugin_call(call)?;
                Ok(TAction::Call {
                    plugin,
                    function: call.function.name.clone(),
                    args,
                })
            }
            K::Voucher {
                threshold,
                discount,
                via,
            } => {
                let threshold = match threshold {
                    Some(t) => Some(self.money_value(t, "a coupon's threshold is money")?),
                    None => None,
                };
                let discount = self.money_value(discount, "a voucher is worth money")?;
                let channel = match via {
                    Some(v) => Some(self.channel(v)?),
                    None => None,
                };
                Ok(TAction::Voucher {
                    threshold,
                    discount,
                    channel,
                })
            }
            K::Wallet { debit, amount } => Ok(TAction::Wallet {
                debit: *debit,
                amount: self.money_value(amount, "a wallet holds money")?,
            }),
            K::Reward { name } => self.reward(name),
        }
    }

    /// A money value: money, or a plain number (`credit wallet 100`).
    fn money_value(&mut self, e: &ast::Expr, why: &str) -> R<TExpr> {
        let t = self.expr(e)?;
        // A plain number is taken as money here: compiled as a decimal.
        if matches!(t.ty, Ty::Int | Ty::Dec) {
            return Ok(t);
        }
        self.expect(t, &Ty::Money, why)
    }

    /// `redeem reward EXPR`: a reward name (a string), known when literal.
    fn reward(&mut self, name: &ast::Expr) -> R<TAction> {
        let names: Vec<&str> = self
            .schema
            .rewards
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        if names.is_empty() {
            self.error(
                Code::UnknownName,
                name.span,
                "there is no points mall: the config has no `rewards:`",
                Some("declare them in nudge.yaml: `rewards: { mug: { points: 800 } }`".into()),
            );
            return Err(());
        }
        if let ast::ExprKind::Lit(ast::Literal::Str(n)) = &name.kind
            && !names.contains(&n.as_str())
        {
            let hint = did_you_mean(n, names.iter().copied())
                .unwrap_or_else(|| format!("rewards are: {}", names.join(", ")));
            self.error(
                Code::UnknownName,
                name.span,
                format!("unknown reward \"{n}\""),
                Some(hint),
            );
            return Err(());
        }
        let t = self.expr(name)?;
        let t = self.expect(t, &Ty::Str, "a reward is named by a string")?;
        Ok(TAction::Reward { name: t })
    }

    pub(super) fn channel_names(&self) -> String {
        let n: Vec<&str> = self
            .schema
            .channels
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        if n.is_empty() {
            "none declared".into()
        } else {
            n.join(", ")
        }
    }

    pub(super) fn channel(&mut self, v: &ast::Ident) -> R<usize> {
        match self.schema.channel(&v.name) {
            Some((i, _)) => Ok(i),
            None => {
                let hint = did_you_mean(
                    &v.name,
                    self.schema.channels.iter().map(|c| c.name.as_str()),
                )
                .unwrap_or_else(|| format!("channels are: {}", self.channel_names()));
                self.error(
                    Code::UnknownChannel,
                    v.span,
                    format!("unknown channel `{}`", v.name),
                    Some(hint),
                );
                Err(())
            }
        }
    }

    /// `set stars = stars + 1` on an attribute without a default: it is
    /// null until set, so the sum stays null and the `set` never does
    /// anything. Warned once per `set`, naming the attribute and the fix.
    pub(super) fn warn_null_arithmetic(&mut self, value: &TExpr) {
        let first_attr = BUILTIN_FIELDS.len();
        let n_attrs = self.schema.attributes.len();
        let mut stack = vec![(value, false)];
        while let Some((e, in_arith)) = stack.pop() {
            match &e.kind {
                TKind::Slot(s) if in_arith => {
                    let s = *s as usize;
                    let is_attr = (first_attr..first_attr + n_attrs).contains(&s);
                    let has_default = self.layout.defaults.iter().any(|(d, _)| *d as usize == s);
                    if is_attr && !has_default {
                        let attr = &self.schema.attributes[s - first_attr];
                        let (name, ty) = (attr.name.clone(), attr.ty);
                        let d = Diagnostic::new(
                            Code::NullArithmetic,
                            self.source,
                            e.span,
                            format!("`{name}` is null until a rule sets it, so this arithmetic stays null and the `set` does nothing"),
                        )
                        .hint(format!(
                            "give it a default in nudge.yaml: `{name}: {{ type: {}, default: {} }}`",
                            ty.name(),
                            if ty == FieldType::String { "\"\"" } else { "0" }
                        ));
                        self.err(d);
                        return;
                    }
                }
                TKind::Arith(_, a, b) => {
                    stack.push((a, true));
                    stack.push((b, true));
                }
                TKind::Neg(a) => stack.push((a, true)),
                TKind::Func(_, a) => stack.push((a, in_arith)),
                _ => {}
            }
        }
    }

    pub(super) fn intern_tag(&mut self, tag: &str) -> u32 {
        match self.layout.tags.iter().position(|t| t == tag) {
            Some(i) => i as u32,
            None => {
                self.layout.tags.push(tag.to_string());
                (self.layout.tags.len() - 1) as u32
            }
        }
    }

    /// A segment query is checked without the plugins, as scans run
    /// without them: saying the plugin does not exist would send the user
    /// looking for a file that is there.
    fn query_plugin<T>(&mut self, call: &ast::PluginCall) -> R<T> {
        let f = format!("{}.{}", call.plugin.name, call.function.name);
        self.err(
            Diagnostic::new(
                Code::QueryPlugin,
                self.source,
                crate::base::diag::Span::new(call.plugin.span.start, call.function.span.end),
                format!("a segment query cannot call the plugin function `{f}`"),
            )
            .label("segments are counted and exported without plugins")
            .hint(query_plugin_hint(&f)),
        );
        Err(())
    }

    pub(super) fn plugin_call(&mut self, call: &ast::PluginCall) -> R<(u16, Vec<TExpr>)> {
        if self.frozen_aggregates.is_some() {
            return self.query_plugin(call);
        }
        let Some(pi) = self
            .plugins
            .plugins
            .iter()
            .position(|(n, _)| *n == call.plugin.name)
        else {
            if self.plugins.broken.contains(&call.plugin.name) {
                return Err(()); // its own file's error (E130) says it all
            }
            let names: Vec<&str> = self
                .plugins
                .plugins
                .iter()
                .map(|(n, _)| n.as_str())
                .collect();
            let hint =
                did_you_mean(&call.plugin.name, names.iter().copied()).unwrap_or_else(|| {
                    if names.is_empty() {
                        format!(
                            "there are no plugins; a plugin `{0}` is the file `plugins/{0}.rhai`",
                            call.plugin.name
                        )
                    } else {
                        format!("plugins are: {}", names.join(", "))
                    }
                });
            self.error(
                Code::UnknownPlugin,
                call.plugin.span,
                format!("unknown plugin `{}`", call.plugin.name),
                Some(hint),
            );
            return Err(());
        };
        let fns = &self.plugins.plugins[pi].1;
        let arity = fns
            .iter()
            .filter(|(n, _)| *n == call.function.name)
            .map(|(_, a)| *a)
            .collect::<Vec<_>>();
        if arity.is_empty() {
            let hint = did_you_mean(&call.function.name, fns.iter().map(|(n, _)| n.as_str()))
                .unwrap_or_else(|| {
                    format!(
                        "`{}` has: {}",
                        call.plugin.name,
                        fns.iter()
                            .map(|(n, a)| format!("{n}/{a}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                });
            self.error(
                Code::UnknownPlugin,
                call.function.span,
                format!(
                    "plugin `{}` has no function `{}`",
                    call.plugin.name, call.function.name
                ),
                Some(hint),
            );
            return Err(());
        }
        if !arity.contains(&call.args.len()) {
            let span = call.plugin.span.to(call.function.span);
            self.error(
                Code::Arity,
                span,
                format!(
                    "`{}.{}` takes {} argument(s), not {}",
                    call.plugin.name,
                    call.function.name,
                    arity
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(" or "),
                    call.args.len()
                ),
                None,
            );
            return Err(());
        }
        let mut args = Vec::new();
        let mut bad = false;
        for a in &call.args {
            match self.expr(a) {
                Ok(e) => args.push(e),
                Err(()) => bad = true,
            }
        }
        if bad { Err(()) } else { Ok((pi as u16, args)) }
    }
}

//! Typed rules to a [`RuleSet`]: expression trees become the typed code of
//! `program`, rules are ordered (priority, then load order) and indexed by
//! trigger, and the rule set gets a version id from its inputs. Nothing here
//! can fail: the checker has already rejected what would not compile.

use super::check::{
    Arith, BudgetSpec, CheckedRule, CheckedSegment, CouponSpec, Func, Layout, TAction, TExpr,
    TKind, Triggers, Ty,
};
use super::conditions::Conditions;
use super::program::*;
pub use super::terms::Term;
use super::terms::terms;
use super::timing::{Codes, Timing};
use super::timing::{push_children, timing};
use crate::base::diag::{Code, Diagnostic, SourceId, Span};
use rust_decimal::Decimal;
use std::sync::Arc;

/// A compiled, checked set of rules: what the engine evaluates.
#[derive(Debug)]
pub struct RuleSet {
    /// Identifies the inputs (config, rules, plugins); effects carry it.
    pub version: String,
    /// In evaluation order.
    pub rules: Vec<CompiledRule>,
    pub layout: Layout,
    /// Aggregate filters, by `layout.aggregates` index.
    pub aggregate_filters: Vec<Option<BoolCode>>,
    /// Rules to run for each event type (by `Schema::events` index), in order.
    pub on_event: Vec<Vec<u32>>,
    pub on_tick: Vec<u32>,
    pub on_tier_up: Vec<u32>,
    pub on_tier_down: Vec<u32>,
    /// Group names; `CompiledRule::group` indexes it.
    pub groups: Vec<String>,
    /// Plugin names; plugin calls index it.
    pub plugins: Vec<String>,
    /// How each rule's condition moves with the day, by rule index (kept
    /// out of `CompiledRule`: evaluation walks those, and smaller is faster).
    pub timing: Vec<Timing>,
    /// The conditions of `on_tick`, laid out for the daily tick's pass
    /// over every member.
    pub tick_conditions: Conditions,
    /// Named segments, in definition order.
    pub segments: Vec<Segment>,
    /// Some rule reads a prediction (`p_alive`, `expected_purchases(90d)`,
    /// ...): the daily tick keeps the models fitted.
    pub reads_predictions: bool,
}

/// A named segment, compiled: what `nudge segment` and the HTTP API count
/// and export. (Rules that use it carry its condition in their own.)
#[derive(Debug)]
pub struct Segment {
    pub name: String,
    pub cond: BoolCode,
    /// The member slots it reads (`None`: all).
    pub reads: Option<Box<[u16]>>,
    /// As checked, for queries that name it.
    pub checked: CheckedSegment,
}

/// One arm of an experiment.
#[derive(Debug)]
pub struct Variant {
    pub name: Arc<str>,
    /// Share of all members, in parts per million.
    pub ppm: u32,
    /// Its actions: this range of the rule's `actions`.
    pub actions: std::ops::Range<usize>,
}

impl RuleSet {
    /// A plugin call's name as written (`crm.is_vip`): `plugin` indexes
    /// `plugins` (a query's own rule set lists none: the function alone).
    pub fn plugin_function(&self, plugin: u16, function: &str) -> String {
        match self.plugins.get(plugin as usize) {
            Some(p) => format!("{p}.{function}"),
            None => function.to_string(),
        }
    }

    pub fn rule(&self, name: &str) -> Option<&CompiledRule> {
        self.rules.iter().find(|r| r.name == name)
    }
    pub fn segment(&self, name: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.name == name)
    }
}

#[derive(Debug)]
pub struct CompiledRule {
    pub name: String,
    pub source: SourceId,
    pub triggers: Triggers,
    /// `None`: no `when`, always matches.
    pub cond: Option<BoolCode>,
    pub actions: Vec<Action>,
    pub limit: Option<(u32, Option<u32>)>,
    pub holdout_ppm: u32,
    pub priority: i64,
    pub group: Option<u32>,
    pub budget: Option<BudgetSpec>,
    /// The member slots the rule reads; `None` when it reads the whole
    /// member (passes `member` to a plugin). Lets an evaluation compute
    /// only the aggregates its rules need.
    pub reads: Option<Box<[u16]>>,
    /// The condition's tests, for `nudge explain`.
    pub terms: Vec<Term>,
    /// A state rule whose own actions change what its condition reads
    /// (`when points >= 1000 then deduct points 1000`): it is armed again
    /// after each firing, so it fires once per evaluation for as long as
    /// its condition holds, instead of once until the condition turns false.
    pub rearm: bool,
    /// An experiment's arms (empty: `actions` are all the rule's).
    pub variants: Box<[Variant]>,
}

impl CompiledRule {
    /// Rules about the member's state fire on the rising edge.
    pub fn edge_triggered(&self) -> bool {
        self.triggers.state || self.triggers.tick
    }

    pub fn matches(&self, env: &Env<'_>) -> Option<bool> {
        match &self.cond {
            Some(c) => c.eval(env),
            None => Some(true),
        }
    }
}

#[derive(Debug)]
pub enum Action {
    /// For another member (by id): relayed to them as an internal event.
    For {
        to: StrCode,
        action: Box<Action>,
    },
    Coupon {
        coupon: CouponSpec,
        channel: Option<usize>,
    },
    Message {
        template: Arc<str>,
        channel: usize,
    },
    Points {
        deduct: bool,
        amount: IntCode,
    },
    SetTier(IntCode),
    Set {
        slot: u16,
        value: AnyCode,
    },
    Tag {
        tag: Arc<str>,
        bit: u32,
        untag: bool,
    },
    Call(PluginCode),
    /// A coupon of computed values; no threshold is a voucher.
    Voucher {
        threshold: Option<DecCode>,
        discount: DecCode,
        channel: Option<usize>,
    },
    Wallet {
        debit: bool,
        amount: DecCode,
    },
    Reward(StrCode),
}

/// Compiles a segment query (see `check::check_query`) as a rule set of
/// one segment and no rules, so it is evaluated the way segments are.
pub fn compile_query(layout: Layout, cond: TExpr, n_event_types: usize) -> RuleSet {
    let query = CheckedSegment {
        name: String::new(),
        source: SourceId(0),
        span: cond.span,
        cond,
    };
    let sources = crate::base::diag::SourceMap::default();
    compile(
        &sources,
        Vec::new(),
        vec![query],
        layout,
        n_event_types,
        Vec::new(),
        "query".into(),
    )
}

/// Compiles checked rules. `version` identifies the inputs.
pub fn compile(
    sources: &crate::base::diag::SourceMap,
    rules: Vec<CheckedRule>,
    segments: Vec<CheckedSegment>,
    layout: Layout,
    n_event_types: usize,
    plugins: Vec<String>,
    version: String,
) -> RuleSet {
    let mut set = RuleSet {
        version,
        rules: Vec::with_capacity(rules.len()),
        aggregate_filters: layout
            .aggregates
            .iter()
            .map(|a| a.filter.as_ref().map(bool_code))
            .collect(),
        layout,
        on_event: vec![Vec::new(); n_event_types],
        on_tick: Vec::new(),
        on_tier_up: Vec::new(),
        on_tier_down: Vec::new(),
        groups: Vec::new(),
        plugins,
        timing: Vec::with_capacity(rules.len()),
        tick_conditions: Conditions::default(),
        segments: segments.into_iter().map(segment).collect(),
        reads_predictions: false,
    };
    for (i, r) in rules.into_iter().enumerate() {
        let i = i as u32;
        let t = &r.triggers;
        for (e, list) in set.on_event.iter_mut().enumerate() {
            if t.state || t.events.contains(&e) {
                list.push(i);
            }
        }
        if t.state || t.tick {
            set.on_tick.push(i);
        }
        if t.tier_up {
            set.on_tier_up.push(i);
        }
        if t.tier_down {
            set.on_tier_down.push(i);
        }
        let group = r
            .group
            .as_ref()
            .map(|g| match set.groups.iter().position(|x| x == g) {
                Some(p) => p as u32,
                None => {
                    set.groups.push(g.clone());
                    (set.groups.len() - 1) as u32
                }
            });
        let reads = rule_reads(&r);
        let rearm = (t.state || t.tick) && writes_what_it_reads(&r, &set.layout);
        let terms = terms(r.cond.as_ref(), sources.text(r.source), bool_code, any_code);
        set.timing.push(timing(
            r.cond.as_ref(),
            &set.layout,
            &Codes {
                bool: bool_code,
                any: any_code,
            },
        ));
        set.rules.push(CompiledRule {
            reads,
            terms,
            name: r.name,
            source: r.source,
            triggers: r.triggers,
            cond: r.cond.as_ref().map(bool_code),
            actions: r.actions.into_iter().map(action).collect(),
            limit: r.limit,
            holdout_ppm: r.holdout_ppm,
            priority: r.priority,
            group,
            budget: r.budget,
            rearm,
            variants: r.variants.into_iter().map(variant).collect(),
        });
    }
    set.reads_predictions = set.rules.iter().any(|r| {
        r.reads
            .as_deref()
            .is_some_and(|slots| slots.iter().any(|s| is_prediction(*s, &set.layout)))
    });
    let conds: Vec<Option<&BoolCode>> = set.rules.iter().map(|r| r.cond.as_ref()).collect();
    set.tick_conditions = Conditions::new(&conds, &set.on_tick);
    set
}

/// A slot the repurchase models' fit gives.
fn is_prediction(s: u16, layout: &Layout) -> bool {
    use crate::lang::check::slot::{CHURN_RISK, EXPECTED_NEXT_PURCHASE, P_ALIVE};
    [P_ALIVE, CHURN_RISK, EXPECTED_NEXT_PURCHASE].contains(&s)
        || layout.predicted.iter().any(|(p, _, _)| *p == s)
}

fn segment(s: CheckedSegment) -> Segment {
    Segment {
        name: s.name.clone(),
        cond: bool_code(&s.cond),
        reads: reads(vec![&s.cond]),
        checked: s,
    }
}

fn variant((name, ppm, actions): (String, u32, std::ops::Range<usize>)) -> Variant {
    Variant {
        name: name.into(),
        ppm,
        actions,
    }
}

/// Whether a rule's actions on its own member write a slot its condition
/// reads (points, tags, tier, open coupons, attributes). A plugin action
/// may award points, tag or issue coupons.
fn writes_what_it_reads(r: &CheckedRule, layout: &Layout) -> bool {
    let slot = |name: &str| layout.fields.iter().position(|(n, _)| n == name);
    let (points, tags, tier, coupons) = (
        slot("points"),
        slot("tags"),
        slot("tier"),
        slot("coupons_open"),
    );
    // Tags by tag: a rule that reads the tag "mom" (`"mom" in tags`) and writes the tag
    // "coupon" does not change its own condition (and re-arming it would
    // make every member it fired for due for a visit every day).
    let mut writes: Vec<Option<usize>> = Vec::new();
    let mut tag_writes: Vec<u32> = Vec::new();
    for a in &r.actions {
        match a {
            TAction::For { .. } | TAction::Message { .. } => {}
            TAction::Points { .. } => writes.push(points),
            TAction::SetTier(_) => writes.push(tier),
            TAction::Set { slot, .. } => writes.push(Some(*slot as usize)),
            TAction::Tag { bit, .. } => tag_writes.push(*bit),
            TAction::Coupon { .. } | TAction::Voucher { .. } => writes.push(coupons),
            TAction::Call { .. } => writes.extend([points, tags, coupons]),
            TAction::Wallet { .. } => writes.push(slot("wallet")),
            TAction::Reward { .. } => writes.push(points),
        }
    }
    let all_tags_written = tags.is_some() && writes.contains(&tags);
    let mut exprs: Vec<&TExpr> = r.cond.iter().collect();
    while let Some(e) = exprs.pop() {
        let hit = match &e.kind {
            TKind::Slot(s) => {
                let s = Some(*s as usize);
                writes.contains(&s) || (s == tags && !tag_writes.is_empty())
            }
            TKind::HasTag(bit) => all_tags_written || tag_writes.contains(bit),
            _ => {
                push_children(e, &mut exprs);
                continue;
            }
        };
        if hit {
            return true;
        }
    }
    false
}

/// The member slots a rule reads (condition and action values), or `None`
/// when it reads the whole member.
fn rule_reads(r: &CheckedRule) -> Option<Box<[u16]>> {
    let mut exprs: Vec<&TExpr> = r.cond.iter().collect();
    let mut actions: Vec<&TAction> = r.actions.iter().collect();
    while let Some(a) = actions.pop() {
        match a {
            TAction::For { to, action } => {
                exprs.push(to);
                actions.push(action);
            }
            TAction::Points { amount, .. } => exprs.push(amount),
            TAction::SetTier(e) => exprs.push(e),
            TAction::Set { value, .. } => exprs.push(value),
            TAction::Call { args, .. } => exprs.extend(args),
            TAction::Voucher {
                threshold,
                discount,
                ..
            } => exprs.extend(threshold.iter().chain([discount])),
            TAction::Wallet { amount, .. } => exprs.push(amount),
            TAction::Reward { name } => exprs.push(name),
            TAction::Coupon { .. } | TAction::Message { .. } | TAction::Tag { .. } => {}
        }
    }
    reads(exprs)
}

/// The first plugin call in `e`: the plugin's index and the function.
pub fn plugin_call(e: &TExpr) -> Option<(u16, &str)> {
    let mut stack = vec![e];
    while let Some(e) = stack.pop() {
        if let TKind::Plugin {
            plugin, function, ..
        } = &e.kind
        {
            return Some((*plugin, function.as_str()));
        }
        push_children(e, &mut stack);
    }
    None
}

/// The first plugin call `e` reaches through an `in segment "..."`, with
/// that use's span (the outermost: the one in `e`'s own text). A query's
/// own plugin calls are refused when it is checked; a named segment's
/// are not, as rules that use the segment call them.
pub fn plugin_call_in_segment(e: &TExpr) -> Option<(Span, u16, &str)> {
    let mut stack = vec![(e, None)];
    let mut children = Vec::new();
    while let Some((e, seg)) = stack.pop() {
        let seg = match (&e.kind, seg) {
            (
                TKind::Plugin {
                    plugin, function, ..
                },
                Some(span),
            ) => {
                return Some((span, *plugin, function.as_str()));
            }
            (TKind::Named(_), None) => Some(e.span),
            _ => seg,
        };
        push_children(e, &mut children);
        stack.extend(children.drain(..).map(|c| (c, seg)));
    }
    None
}

/// The member slots `exprs` read, or `None` when they read the whole member.
fn reads(mut exprs: Vec<&TExpr>) -> Option<Box<[u16]>> {
    let (mut slots, mut all) = (Vec::new(), false);
    while let Some(e) = exprs.pop() {
        match &e.kind {
            TKind::Slot(s) => slots.push(*s),
            TKind::Member => all = true,
            _ => push_children(e, &mut exprs),
        }
    }
    if all {
        return None;
    }
    slots.sort_unstable();
    slots.dedup();
    Some(slots.into())
}

fn action(a: TAction) -> Action {
    match a {
        TAction::For { to, action: a } => Action::For {
            to: str_code(&to),
            action: Box::new(action(*a)),
        },
        TAction::Coupon { coupon, channel } => Action::Coupon { coupon, channel },
        TAction::Message { template, channel } => Action::Message {
            template: template.into(),
            channel,
        },
        TAction::Points { deduct, amount } => Action::Points {
            deduct,
            amount: int_code(&amount),
        },
        TAction::SetTier(e) => Action::SetTier(int_code(&e)),
        TAction::Set { slot, value } => Action::Set {
            slot,
            value: any_code(&value),
        },
        TAction::Tag { tag, bit, untag } => Action::Tag {
            tag: tag.into(),
            bit,
            untag,
        },
        TAction::Call {
            plugin,
            function,
            args,
        } => Action::Call(plugin_code(plugin, &function, &args)),
        TAction::Voucher {
            threshold,
            discount,
            channel,
        } => Action::Voucher {
            threshold: threshold.as_ref().map(dec_code),
            discount: dec_code(&discount),
            channel,
        },
        TAction::Wallet { debit, amount } => Action::Wallet {
            debit,
            amount: dec_code(&amount),
        },
        TAction::Reward { name } => Action::Reward(str_code(&name)),
    }
}

fn plugin_code(plugin: u16, function: &str, args: &[TExpr]) -> PluginCode {
    PluginCode {
        plugin,
        function: function.into(),
        args: args.iter().map(any_code).collect(),
    }
}

/// Warnings for conditions made of literals that are not true: such a
/// rule never fires.
pub fn never_true(conds: &[(SourceId, TExpr)]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (source, c) in conds {
        let v = const_bool(c);
        if v != Some(true) {
            out.push(
                Diagnostic::new(
                    Code::NeverTrue,
                    *source,
                    c.span,
                    "this condition is never true",
                )
                .label(format!(
                    "always {}",
                    v.map_or("unknown (null)".to_string(), |b| b.to_string())
                ))
                .hint("the rule will never fire; check the values"),
            );
        }
    }
    out
}

/// The value of a condition made of literals only.
pub fn const_bool(e: &TExpr) -> Option<bool> {
    let env = Env {
        member: &[],
        tags: &[],
        tag_names: &[],
        event: &[],
        today: 0,
        host: None,
        rule: "",
    };
    bool_code(e).eval(&env)
}

fn is_int_kind(t: &Ty) -> bool {
    matches!(t, Ty::Int | Ty::Date | Ty::Duration | Ty::Tier)
}

fn int_kind(t: &Ty) -> IntKind {
    match t {
        Ty::Date => IntKind::Date,
        Ty::Duration => IntKind::Duration,
        Ty::Tier => IntKind::Tier,
        _ => IntKind::Int,
    }
}

fn any_code(e: &TExpr) -> AnyCode {
    match &e.ty {
        Ty::Bool => AnyCode::Bool(bool_code(e)),
        Ty::Dec | Ty::Money => AnyCode::Dec(dec_code(e)),
        Ty::Str => AnyCode::Str(str_code(e)),
        Ty::Member => AnyCode::Member,
        t if is_int_kind(t) => AnyCode::Int(int_code(e), int_kind(t)),
        _ => match &e.kind {
            TKind::Plugin {
                plugin,
                function,
                args,
            } => AnyCode::Plugin(Box::new(plugin_code(*plugin, function, args))),
            _ => AnyCode::Bool(BoolCode::Const(None)),
        },
    }
}

fn bool_code(e: &TExpr) -> BoolCode {
    match &e.kind {
        TKind::Lit(Value::Bool(b)) => BoolCode::Const(Some(*b)),
        TKind::Lit(_) => BoolCode::Const(None),
        TKind::Slot(s) => BoolCode::Slot(*s),
        TKind::Event(s) => BoolCode::Event(*s),
        TKind::Not(a) => BoolCode::Not(Box::new(bool_code(a))),
        TKind::And(..) => {
            let items = flatten(e, true);
            match items.iter().map(Simple::of).collect::<Option<Vec<_>>>() {
                // Cheapest tests first: `and` gives the same answer in any
                // order (false if any is false, else unknown if any is).
                Some(mut simple) => {
                    simple.sort_by_key(Simple::cost);
                    BoolCode::AllSimple(simple.into_boxed_slice())
                }
                None => BoolCode::And(items.into_boxed_slice()),
            }
        }
        TKind::Or(..) => BoolCode::Or(flatten(e, false).into_boxed_slice()),
        TKind::Cmp(op, a, b) => compare(*op, a, b),
        TKind::HasTag(bit) => BoolCode::HasTag(*bit),
        TKind::Named(a) => bool_code(a),
        TKind::In(item, list) => in_list(item, list),
        TKind::IsNull(a) => BoolCode::IsNull(Box::new(any_code(a))),
        TKind::Plugin {
            plugin,
            function,
            args,
        } => BoolCode::Plugin(Box::new(plugin_code(*plugin, function, args))),
        _ => BoolCode::Const(None),
    }
}

/// `a and (b and c)` as one `And` of three.
fn flatten(e: &TExpr, and: bool) -> Vec<BoolCode> {
    let mut out = Vec::new();
    let mut stack = vec![e];
    while let Some(x) = stack.pop() {
        match (&x.kind, and) {
            (TKind::And(a, b), true) | (TKind::Or(a, b), false) => {
                stack.push(b);
                stack.push(a);
            }
            (TKind::Named(a), _) => stack.push(a),
            _ => out.push(bool_code(x)),
        }
    }
    out
}

fn compare(op: Cmp, a: &TExpr, b: &TExpr) -> BoolCode {
    match (&a.ty, &b.ty) {
        (x, y) if is_int_kind(x) && is_int_kind(y) => match (int_code(a), int_code(b)) {
            (IntCode::Slot(s), IntCode::Const(c)) => BoolCode::IntSlotConst(op, s, c),
            (IntCode::Const(c), IntCode::Slot(s)) => BoolCode::IntSlotConst(op.flip(), s, c),
            (l, r) => BoolCode::CmpInt(op, l, r),
        },
        (Ty::Str, _) => BoolCode::CmpStr(op, str_code(a), str_code(b)),
        (Ty::Bool, _) => BoolCode::CmpBool(op, Box::new(bool_code(a)), Box::new(bool_code(b))),
        _ => match (dec_code(a), dec_code(b)) {
            (DecCode::Slot(s), DecCode::Const(c)) => BoolCode::DecSlotConst(op, s, c),
            (DecCode::Const(c), DecCode::Slot(s)) => BoolCode::DecSlotConst(op.flip(), s, c),
            (DecCode::FromInt(x), DecCode::Mul(y, k)) => match (*x, *y, *k) {
                (IntCode::Slot(a), DecCode::Slot(b), DecCode::Const(k)) => {
                    BoolCode::IntSlotDecTimes(op, a, b, k)
                }
                (x, y, k) => BoolCode::CmpDec(
                    op,
                    DecCode::FromInt(Box::new(x)),
                    DecCode::Mul(Box::new(y), Box::new(k)),
                ),
            },
            (l, r) => BoolCode::CmpDec(op, l, r),
        },
    }
}

fn in_list(item: &TExpr, list: &[TExpr]) -> BoolCode {
    let consts = list.iter().map(const_value);
    match &item.ty {
        t if is_int_kind(t) && list.iter().all(|e| is_int_kind(&e.ty)) => {
            let env = empty_env();
            BoolCode::InInt(
                int_code(item),
                list.iter().filter_map(|e| int_code(e).eval(&env)).collect(),
            )
        }
        Ty::Str => BoolCode::InStr(
            str_code(item),
            consts
                .filter_map(|v| if let Value::Str(s) = v { Some(s) } else { None })
                .collect(),
        ),
        Ty::Dec | Ty::Money | Ty::Int => {
            let env = empty_env();
            BoolCode::InDec(
                dec_code(item),
                list.iter().filter_map(|e| dec_code(e).eval(&env)).collect(),
            )
        }
        _ => BoolCode::Or(list.iter().map(|e| compare(Cmp::Eq, item, e)).collect()),
    }
}

fn empty_env() -> Env<'static> {
    Env {
        member: &[],
        tags: &[],
        tag_names: &[],
        event: &[],
        today: 0,
        host: None,
        rule: "",
    }
}

fn const_value(e: &TExpr) -> Value {
    any_code(e).value(&empty_env())
}

fn int_code(e: &TExpr) -> IntCode {
    let b = |x: &TExpr| Box::new(int_code(x));
    match &e.kind {
        TKind::Lit(Value::Int(i)) => IntCode::Const(*i),
        TKind::Lit(Value::Date(d)) => IntCode::Const(*d as i64),
        TKind::Lit(Value::Duration(d)) => IntCode::Const(*d),
        TKind::Lit(Value::Tier(t)) => IntCode::Const(*t as i64),
        TKind::Slot(s) => IntCode::Slot(*s),
        TKind::Event(s) => IntCode::Event(*s),
        TKind::Today => IntCode::Today,
        TKind::Neg(a) => IntCode::Neg(b(a)),
        TKind::Func(Func::Abs, a) => IntCode::Abs(b(a)),
        TKind::Func(f @ (Func::DayOfMonth | Func::Weekday | Func::Month), a) => {
            IntCode::Calendar(*f, b(a))
        }
        TKind::Func(f, a) => {
            let d = Box::new(dec_code(a));
            match f {
                Func::Floor => IntCode::Floor(d),
                Func::Ceil => IntCode::Ceil(d),
                _ => IntCode::Round(d),
            }
        }
        TKind::Arith(op, l, r) => int_arith(*op, e, l, r),
        TKind::Plugin {
            plugin,
            function,
            args,
        } => IntCode::Plugin(Box::new(plugin_code(*plugin, function, args))),
        _ => IntCode::Const(0),
    }
}

/// Integer arithmetic, including dates (days) and durations (seconds).
fn int_arith(op: Arith, e: &TExpr, l: &TExpr, r: &TExpr) -> IntCode {
    const DAY: i64 = 86_400;
    let (li, ri) = (Box::new(int_code(l)), Box::new(int_code(r)));
    match (&e.ty, &l.ty, &r.ty, op) {
        // date ± duration: whole days, rounding toward the past.
        (Ty::Date, Ty::Date, Ty::Duration, Arith::Add) => {
            IntCode::Add(li, Box::new(IntCode::DivFloor(ri, DAY)))
        }
        (Ty::Date, Ty::Date, Ty::Duration, _) => {
            IntCode::Sub(li, Box::new(IntCode::DivFloor(ri, DAY)))
        }
        (Ty::Date, Ty::Duration, Ty::Date, _) => {
            IntCode::Add(Box::new(IntCode::DivFloor(li, DAY)), ri)
        }
        (Ty::Duration, Ty::Date, Ty::Date, _) => IntCode::Mul(
            Box::new(IntCode::Sub(li, ri)),
            Box::new(IntCode::Const(DAY)),
        ),
        (_, _, _, Arith::Add) => IntCode::Add(li, ri),
        (_, _, _, Arith::Sub) => IntCode::Sub(li, ri),
        (_, _, _, Arith::Rem) => IntCode::Rem(li, ri),
        _ => IntCode::Mul(li, ri),
    }
}

fn dec_code(e: &TExpr) -> DecCode {
    let b = |x: &TExpr| Box::new(dec_code(x));
    match &e.kind {
        TKind::Lit(Value::Dec(d)) => DecCode::Const(*d),
        TKind::Lit(Value::Int(i)) => DecCode::Const(Decimal::from(*i)),
        TKind::Slot(s) if !is_int_kind(&e.ty) => DecCode::Slot(*s),
        TKind::Event(s) if !is_int_kind(&e.ty) => DecCode::Event(*s),
        TKind::Neg(a) if !is_int_kind(&e.ty) => DecCode::Neg(b(a)),
        TKind::Func(Func::Abs, a) if !is_int_kind(&e.ty) => DecCode::Abs(b(a)),
        TKind::Arith(op, l, r) if !is_int_kind(&e.ty) => match op {
            Arith::Add => DecCode::Add(b(l), b(r)),
            Arith::Sub => DecCode::Sub(b(l), b(r)),
            Arith::Mul => DecCode::Mul(b(l), b(r)),
            Arith::Div => DecCode::Div(b(l), b(r)),
            // Remainders are whole numbers; the checker types them so.
            Arith::Rem => DecCode::FromInt(Box::new(int_code(e))),
        },
        TKind::Plugin {
            plugin,
            function,
            args,
        } => DecCode::Plugin(Box::new(plugin_code(*plugin, function, args))),
        // Integers where a decimal is needed.
        _ => DecCode::FromInt(Box::new(int_code(e))),
    }
}

fn str_code(e: &TExpr) -> StrCode {
    match &e.kind {
        TKind::Lit(Value::Str(s)) => StrCode::Const(s.clone()),
        TKind::Slot(s) => StrCode::Slot(*s),
        TKind::Event(s) => StrCode::Event(*s),
        TKind::Plugin {
            plugin,
            function,
            args,
        } => StrCode::Plugin(Box::new(plugin_code(*plugin, function, args))),
        _ => StrCode::Const("".into()),
    }
}

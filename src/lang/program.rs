//! The compiled form of conditions and action arguments, and its evaluator.
//!
//! Expressions are trees of typed nodes (`BoolCode`, `IntCode`, `DecCode`,
//! `StrCode`) over an [`Env`]: member fields live in numbered slots, tags
//! are bits, tiers are ordinals, event fields have slots of their own. Names
//! were resolved when the rules were loaded, so evaluating does no string
//! lookups and no heap allocation. Null follows SQL: comparisons with null
//! are unknown (`None`), and `and`/`or`/`not` use three-valued logic.

pub use crate::base::value::Value;
use rust_decimal::Decimal;
use std::borrow::Cow;
use std::sync::Arc;

/// A built-in function of one argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    Floor,
    Ceil,
    Round,
    Abs,
    /// Of a date: the day of the month (1-31), the ISO weekday (1 = Monday)
    /// and the month (1-12).
    DayOfMonth,
    Weekday,
    Month,
}

/// What an expression is evaluated against.
pub struct Env<'a> {
    /// Member fields by slot (see `RuleSet::layout`).
    pub member: &'a [Value],
    /// The member's tags as bits, by the rule set's tag index.
    pub tags: &'a [u64],
    /// All the member's tags by name (for plugins, which may look at tags
    /// no rule mentions).
    pub tag_names: &'a [crate::model::Name],
    /// Fields of the triggering event by event slot; empty on ticks.
    pub event: &'a [Value],
    /// The evaluation's calendar day (days since 1970-01-01, local time).
    pub today: i32,
    /// Runs plugin functions; without one, plugin calls are null.
    pub host: Option<&'a dyn PluginHost>,
    /// The rule being evaluated (for plugin error reports); may be empty.
    pub rule: &'a str,
}

/// The type a rule expects from a plugin function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    Bool,
    Int,
    Dec,
    Str,
    Any,
}

impl Expect {
    pub fn name(self) -> &'static str {
        match self {
            Expect::Bool => "true/false",
            Expect::Int => "a whole number",
            Expect::Dec => "a number",
            Expect::Str => "a string",
            Expect::Any => "a value",
        }
    }
}

/// Calls plugin functions for conditions (see `plugins`).
pub trait PluginHost {
    /// `args` may hold [`Value::Member`], meaning the member in `env`. A
    /// result that is not of the `expect`ed type is reported by the host
    /// and comes back as null.
    fn call(
        &self,
        plugin: u16,
        function: &str,
        args: &[Value],
        env: &Env<'_>,
        expect: Expect,
    ) -> Value;
}

/// A call of a plugin function.
#[derive(Clone, Debug)]
pub struct PluginCode {
    pub plugin: u16,
    pub function: Arc<str>,
    pub args: Box<[AnyCode]>,
}

impl PluginCode {
    pub fn call(&self, env: &Env<'_>, expect: Expect) -> Value {
        let Some(host) = env.host else {
            return Value::Null;
        };
        host.call(self.plugin, &self.function, &self.args(env), env, expect)
    }

    pub fn args(&self, env: &Env<'_>) -> Vec<Value> {
        self.args.iter().map(|a| a.value(env)).collect()
    }
}

impl Env<'_> {
    fn slot(&self, s: u16) -> &Value {
        self.member.get(s as usize).unwrap_or(&Value::Null)
    }
    fn event(&self, s: u16) -> &Value {
        self.event.get(s as usize).unwrap_or(&Value::Null)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    /// The same test with its operands swapped (`a < b` is `b > a`).
    pub fn flip(self) -> Cmp {
        match self {
            Cmp::Lt => Cmp::Gt,
            Cmp::Le => Cmp::Ge,
            Cmp::Gt => Cmp::Lt,
            Cmp::Ge => Cmp::Le,
            other => other,
        }
    }

    #[inline]
    fn test<T: PartialOrd>(self, a: T, b: T) -> bool {
        match self {
            Cmp::Eq => a == b,
            Cmp::Ne => a != b,
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
            Cmp::Gt => a > b,
            Cmp::Ge => a >= b,
        }
    }
}

/// A condition: true, false or unknown (`None`).
#[derive(Clone, Debug)]
pub enum BoolCode {
    Const(Option<bool>),
    Slot(u16),
    Event(u16),
    Not(Box<BoolCode>),
    And(Box<[BoolCode]>),
    Or(Box<[BoolCode]>),
    CmpInt(Cmp, IntCode, IntCode),
    CmpDec(Cmp, DecCode, DecCode),
    CmpStr(Cmp, StrCode, StrCode),
    CmpBool(Cmp, Box<BoolCode>, Box<BoolCode>),
    HasTag(u32),
    InInt(IntCode, Box<[i64]>),
    InDec(DecCode, Box<[Decimal]>),
    InStr(StrCode, Box<[Arc<str>]>),
    IsNull(Box<AnyCode>),
    Plugin(Box<PluginCode>),
    /// Specialised forms of the commonest tests (a field against a
    /// constant, `days > cycle * 1.5`): the same results, fewer steps.
    IntSlotConst(Cmp, u16, i64),
    DecSlotConst(Cmp, u16, Decimal),
    /// Int slot `op` dec slot times a constant, compared exactly in i128.
    IntSlotDecTimes(Cmp, u16, u16, Decimal),
    /// `and` of simple tests only, evaluated in one loop without a call
    /// per test (most rule conditions are this).
    AllSimple(Box<[Simple]>),
}

/// A test that needs no recursion: a field against a constant, a tag.
#[derive(Clone, Debug)]
pub enum Simple {
    /// An int field within `lo..=hi` (what `<`, `<=`, `==`, `>=`, `>`
    /// against a constant amount to): one range check, no operator.
    IntIn(u16, i64, i64),
    Int(Cmp, u16, i64),
    Dec(Cmp, u16, Decimal),
    /// Has the tag (`true`) or has not (`false`).
    Tag(u32, bool),
    Times(Cmp, u16, u16, Decimal),
}

impl Simple {
    /// The simple form of a test, when it has one.
    pub fn of(b: &BoolCode) -> Option<Simple> {
        Some(match b {
            BoolCode::IntSlotConst(op, s, c) => {
                let (s, c) = (*s, *c);
                match op {
                    Cmp::Eq => Simple::IntIn(s, c, c),
                    Cmp::Lt => Simple::IntIn(s, i64::MIN, c.checked_sub(1)?),
                    Cmp::Le => Simple::IntIn(s, i64::MIN, c),
                    Cmp::Gt => Simple::IntIn(s, c.checked_add(1)?, i64::MAX),
                    Cmp::Ge => Simple::IntIn(s, c, i64::MAX),
                    Cmp::Ne => Simple::Int(*op, s, c),
                }
            }
            BoolCode::DecSlotConst(op, s, c) => Simple::Dec(*op, *s, at_money_scale(*c)),
            BoolCode::HasTag(bit) => Simple::Tag(*bit, true),
            BoolCode::Not(inner) => match &**inner {
                BoolCode::HasTag(bit) => Simple::Tag(*bit, false),
                _ => return None,
            },
            BoolCode::IntSlotDecTimes(op, a, b, k) => Simple::Times(*op, *a, *b, *k),
            _ => return None,
        })
    }

    /// Relative cost, to order the tests of an `and`.
    pub fn cost(&self) -> u8 {
        match self {
            Simple::Tag(..) => 0,
            Simple::IntIn(..) | Simple::Int(..) => 1,
            Simple::Dec(..) => 2,
            Simple::Times(..) => 3,
        }
    }

    #[inline(always)]
    pub(crate) fn eval(&self, env: &Env<'_>) -> Option<bool> {
        match self {
            Simple::IntIn(s, lo, hi) => env.slot(*s).int().map(|v| *lo <= v && v <= *hi),
            Simple::Int(op, s, c) => env.slot(*s).int().map(|v| op.test(v, *c)),
            Simple::Dec(op, s, c) => env.slot(*s).dec().map(|v| {
                // Money against a constant at its scale: one integer test.
                let key = if v.scale() == c.scale() && v.scale() < 20 {
                    v.mantissa().cmp(&c.mantissa()) as i8
                } else {
                    dec_key(v, *c)
                };
                op.test(key, 0)
            }),
            Simple::Tag(bit, want) => {
                let word = env.tags.get((*bit / 64) as usize).copied().unwrap_or(0);
                Some((word & (1u64 << (bit % 64)) != 0) == *want)
            }
            Simple::Times(op, a, b, k) => times_test(env, *op, *a, *b, *k),
        }
    }
}

/// A constant with fewer than two decimals, written with two (the same
/// value): money fields have two, and a test at one scale compares
/// mantissas only.
fn at_money_scale(c: Decimal) -> Decimal {
    let mut m = c;
    if c.scale() < 2 {
        m.rescale(2);
    }
    if m == c { m } else { c }
}

/// Three-valued `and` over `items` (SQL's): false if any is false, else
/// unknown if any is unknown, else true. `or` is its dual.
#[inline(always)]
fn all<T>(items: &[T], test: impl Fn(&T) -> Option<bool>) -> Option<bool> {
    let mut unknown = false;
    for i in items {
        match test(i) {
            Some(false) => return Some(false),
            None => unknown = true,
            Some(true) => {}
        }
    }
    if unknown { None } else { Some(true) }
}

/// `int slot op dec slot * k`.
#[inline(always)]
fn times_test(env: &Env<'_>, op: Cmp, a: u16, b: u16, k: Decimal) -> Option<bool> {
    let x = env.slot(a).int()?;
    let y = env.slot(b).dec()?;
    let ord = match times_cmp(x, y, k) {
        Some(o) => o,
        None => dec_key(Decimal::from(x), y.checked_mul(k)?),
    };
    Some(op.test(ord, 0))
}

/// Integers, and what is stored as one: dates (days), durations (seconds),
/// tiers (ordinals).
#[derive(Clone, Debug)]
pub enum IntCode {
    Const(i64),
    Slot(u16),
    Event(u16),
    Today,
    Add(Box<IntCode>, Box<IntCode>),
    Sub(Box<IntCode>, Box<IntCode>),
    Mul(Box<IntCode>, Box<IntCode>),
    /// Remainder (Euclidean, never negative); by zero is unknown.
    Rem(Box<IntCode>, Box<IntCode>),
    /// Division rounding toward minus infinity by a constant (unit changes).
    DivFloor(Box<IntCode>, i64),
    Neg(Box<IntCode>),
    Abs(Box<IntCode>),
    Floor(Box<DecCode>),
    Ceil(Box<DecCode>),
    Round(Box<DecCode>),
    /// `day_of_month`, `weekday` or `month` of a date (a day number).
    Calendar(Func, Box<IntCode>),
    Plugin(Box<PluginCode>),
}

/// Exact decimals and money.
#[derive(Clone, Debug)]
pub enum DecCode {
    Const(Decimal),
    Slot(u16),
    Event(u16),
    FromInt(Box<IntCode>),
    Add(Box<DecCode>, Box<DecCode>),
    Sub(Box<DecCode>, Box<DecCode>),
    Mul(Box<DecCode>, Box<DecCode>),
    Div(Box<DecCode>, Box<DecCode>),
    Neg(Box<DecCode>),
    Abs(Box<DecCode>),
    Plugin(Box<PluginCode>),
}

#[derive(Clone, Debug)]
pub enum StrCode {
    Const(Arc<str>),
    Slot(u16),
    Event(u16),
    Plugin(Box<PluginCode>),
}

/// A value of any type, for `is null`, `set` and plugin arguments.
#[derive(Clone, Debug)]
pub enum AnyCode {
    Bool(BoolCode),
    Int(IntCode, IntKind),
    Dec(DecCode),
    Str(StrCode),
    Member,
    Plugin(Box<PluginCode>),
}

/// What an [`IntCode`] holds, to turn it back into a [`Value`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntKind {
    Int,
    Date,
    Duration,
    Tier,
}

impl BoolCode {
    pub fn eval(&self, env: &Env<'_>) -> Option<bool> {
        match self {
            BoolCode::Const(b) => *b,
            BoolCode::Slot(s) => env.slot(*s).bool(),
            BoolCode::Event(s) => env.event(*s).bool(),
            BoolCode::Not(b) => b.eval(env).map(|b| !b),
            BoolCode::And(items) => all(items, |i| i.eval(env)),
            BoolCode::Or(items) => all(items, |i| i.eval(env).map(|b| !b)).map(|b| !b),
            BoolCode::CmpInt(op, a, b) => Some(op.test(a.eval(env)?, b.eval(env)?)),
            BoolCode::CmpDec(op, a, b) => Some(op.test(dec_key(a.eval(env)?, b.eval(env)?), 0)),
            BoolCode::CmpStr(op, a, b) => Some(op.test(a.eval(env)?, b.eval(env)?)),
            BoolCode::CmpBool(op, a, b) => Some(op.test(a.eval(env)?, b.eval(env)?)),
            BoolCode::HasTag(bit) => {
                let word = env.tags.get((*bit / 64) as usize).copied().unwrap_or(0);
                Some(word & (1u64 << (bit % 64)) != 0)
            }
            BoolCode::InInt(a, set) => a.eval(env).map(|v| set.contains(&v)),
            BoolCode::InDec(a, set) => a.eval(env).map(|v| set.iter().any(|x| dec_key(v, *x) == 0)),
            BoolCode::InStr(a, set) => a.eval(env).map(|v| set.iter().any(|s| **s == *v)),
            BoolCode::IsNull(a) => Some(a.is_null(env)),
            BoolCode::Plugin(p) => p.call(env, Expect::Bool).bool(),
            BoolCode::IntSlotConst(op, s, c) => env.slot(*s).int().map(|v| op.test(v, *c)),
            BoolCode::DecSlotConst(op, s, c) => {
                env.slot(*s).dec().map(|v| op.test(dec_key(v, *c), 0))
            }
            BoolCode::IntSlotDecTimes(op, a, b, k) => times_test(env, *op, *a, *b, *k),
            BoolCode::AllSimple(tests) => all(tests, |t| t.eval(env)),
        }
    }
}

impl IntCode {
    pub fn eval(&self, env: &Env<'_>) -> Option<i64> {
        match self {
            IntCode::Const(i) => Some(*i),
            IntCode::Slot(s) => env.slot(*s).int(),
            IntCode::Event(s) => env.event(*s).int(),
            IntCode::Today => Some(env.today as i64),
            // Overflow is unknown, like null: the rule does not fire.
            IntCode::Add(a, b) => a.eval(env)?.checked_add(b.eval(env)?),
            IntCode::Sub(a, b) => a.eval(env)?.checked_sub(b.eval(env)?),
            IntCode::Mul(a, b) => a.eval(env)?.checked_mul(b.eval(env)?),
            IntCode::Rem(a, b) => a.eval(env)?.checked_rem_euclid(b.eval(env)?),
            IntCode::DivFloor(a, d) => Some(a.eval(env)?.div_euclid(*d)),
            IntCode::Neg(a) => a.eval(env)?.checked_neg(),
            IntCode::Abs(a) => a.eval(env)?.checked_abs(),
            IntCode::Floor(d) => dec_to_int(d.eval(env)?.floor()),
            IntCode::Ceil(d) => dec_to_int(d.eval(env)?.ceil()),
            IntCode::Calendar(f, d) => calendar(*f, d.eval(env)?),
            IntCode::Round(d) => {
                dec_to_int(d.eval(env)?.round_dp_with_strategy(
                    0,
                    rust_decimal::RoundingStrategy::MidpointAwayFromZero,
                ))
            }
            IntCode::Plugin(p) => p.call(env, Expect::Int).int(),
        }
    }
}

/// Compares decimals as -1, 0 or 1. Decimals hold 28 significant digits,
/// so a repeating division leaves a residue: 40 / 3 * 1.5 comes out as
/// 19.99999999999999999999999999995, not 20. Values that carry such a
/// residue (20 or more decimal places) compare equal when they differ by
/// less than 10^-24 of their size; money and plain decimals, which never
/// have that many places, compare exactly.
#[inline]
fn dec_key(a: Decimal, b: Decimal) -> i8 {
    if (a.scale() >= 20 || b.scale() >= 20) && a != b {
        let tolerance = a.abs().max(b.abs()) * Decimal::new(1, 24);
        if (a - b).abs() <= tolerance {
            return 0;
        }
    }
    // Money against a whole number, and the like: the mantissas at one
    // scale, in i128 (far cheaper than a decimal comparison).
    let (sa, sb) = (a.scale(), b.scale());
    let scaled = if sa >= sb {
        pow10(sa - sb)
            .and_then(|p| b.mantissa().checked_mul(p))
            .map(|bm| (a.mantissa(), bm))
    } else {
        pow10(sb - sa)
            .and_then(|p| a.mantissa().checked_mul(p))
            .map(|am| (am, b.mantissa()))
    };
    match scaled {
        Some((x, y)) => x.cmp(&y) as i8,
        None => a.cmp(&b) as i8,
    }
}

/// 10^n in i128 (up to 10^38), from a table: `checked_pow` loops, and
/// this runs for every decimal test of every member.
#[inline(always)]
fn pow10(n: u32) -> Option<i128> {
    const TABLE: [i128; 39] = {
        let mut t = [1i128; 39];
        let mut i = 1;
        while i < 39 {
            t[i] = t[i - 1] * 10;
            i += 1;
        }
        t
    };
    TABLE.get(n as usize).copied()
}

/// `x` against `y * k`, exactly, with integers: -1, 0 or 1; `None` when
/// the numbers are too large for i128 (then decimals decide).
#[inline]
fn times_cmp(x: i64, y: Decimal, k: Decimal) -> Option<i8> {
    let scale = y.scale() + k.scale();
    // Long fractions (a cycle of 10/3 days) compare with `dec_key`'s
    // tolerance; exact integers would disagree with it.
    if scale >= 20 {
        return None;
    }
    let product = y.mantissa().checked_mul(k.mantissa())?;
    let lhs = (x as i128).checked_mul(pow10(scale)?)?;
    Some(lhs.cmp(&product) as i8)
}

fn dec_to_int(d: Decimal) -> Option<i64> {
    i64::try_from(d).ok()
}

impl DecCode {
    pub fn eval(&self, env: &Env<'_>) -> Option<Decimal> {
        match self {
            DecCode::Const(d) => Some(*d),
            DecCode::Slot(s) => env.slot(*s).dec(),
            DecCode::Event(s) => env.event(*s).dec(),
            DecCode::FromInt(i) => i.eval(env).map(Decimal::from),
            DecCode::Add(a, b) => a.eval(env)?.checked_add(b.eval(env)?),
            DecCode::Sub(a, b) => a.eval(env)?.checked_sub(b.eval(env)?),
            DecCode::Mul(a, b) => a.eval(env)?.checked_mul(b.eval(env)?),
            // Division by zero is unknown, like null.
            DecCode::Div(a, b) => a.eval(env)?.checked_div(b.eval(env)?),
            DecCode::Neg(a) => Some(-a.eval(env)?),
            DecCode::Abs(a) => Some(a.eval(env)?.abs()),
            DecCode::Plugin(p) => p.call(env, Expect::Dec).dec(),
        }
    }
}

impl StrCode {
    /// Borrowed, except for a plugin's result.
    pub fn eval<'a>(&'a self, env: &'a Env<'a>) -> Option<Cow<'a, str>> {
        match self {
            StrCode::Const(s) => Some(Cow::Borrowed(s)),
            StrCode::Slot(s) => env.slot(*s).str().map(Cow::Borrowed),
            StrCode::Event(s) => env.event(*s).str().map(Cow::Borrowed),
            StrCode::Plugin(p) => match p.call(env, Expect::Str) {
                Value::Str(s) => Some(Cow::Owned(s.to_string())),
                _ => None,
            },
        }
    }
}

impl AnyCode {
    pub fn is_null(&self, env: &Env<'_>) -> bool {
        match self {
            AnyCode::Bool(b) => b.eval(env).is_none(),
            AnyCode::Int(i, _) => i.eval(env).is_none(),
            AnyCode::Dec(d) => d.eval(env).is_none(),
            AnyCode::Str(s) => s.eval(env).is_none(),
            AnyCode::Member => false,
            AnyCode::Plugin(p) => p.call(env, Expect::Any) == Value::Null,
        }
    }

    /// The value, for actions and plugin arguments (this allocates for strings).
    pub fn value(&self, env: &Env<'_>) -> Value {
        let v = match self {
            AnyCode::Bool(b) => b.eval(env).map(Value::Bool),
            AnyCode::Int(i, kind) => i.eval(env).map(|v| match kind {
                IntKind::Int => Value::Int(v),
                IntKind::Date => Value::Date(v as i32),
                IntKind::Duration => Value::Duration(v),
                IntKind::Tier => Value::Tier(v.clamp(0, u8::MAX as i64) as u8),
            }),
            AnyCode::Dec(d) => d.eval(env).map(Value::Dec),
            AnyCode::Str(s) => s.eval(env).map(|s| Value::Str(Arc::from(&*s))),
            AnyCode::Member => Some(Value::Member),
            AnyCode::Plugin(p) => Some(p.call(env, Expect::Any)),
        };
        v.unwrap_or(Value::Null)
    }
}

/// A calendar part of a day number (days since 1970-01-01).
fn calendar(f: Func, day: i64) -> Option<i64> {
    let date = jiff::civil::date(1970, 1, 1)
        .checked_add(jiff::Span::new().try_days(day).ok()?)
        .ok()?;
    Some(match f {
        Func::DayOfMonth => date.day() as i64,
        Func::Weekday => date.weekday().to_monday_one_offset() as i64,
        _ => date.month() as i64,
    })
}

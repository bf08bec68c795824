//! The conditions of a list of rules laid out for evaluating them all, one
//! member after another: the daily tick, and the check whether a member's
//! tick would change anything. What the callers want to know of a rule is
//! only whether its condition is true (unknown is not true), and that is
//! what this answers, the same as [`BoolCode::eval`] being `Some(true)`.
//!
//! Rules are bits (by position in the list), and the simple tests of all
//! rules are grouped by the field they read. For each field the values are
//! cut into intervals at every test's bounds; within an interval every
//! test on the field is true or false throughout, so the set of rules with
//! a false test there is computed when the rules are loaded. Evaluating a
//! member is then, per field, one binary search and an `or` of that set
//! into the failed rules; per byte of tag bits, an `or` of the set for
//! that byte's value. Only then are the tests with no table (`!=`,
//! decimals with more places, `days > cycle * k`, `or` and `not` trees,
//! plugin calls) run, one by one, for the rules still open. An interpreter
//! that dispatched on each test's kind and stopped at a rule's first false
//! test spent most of its time in mispredicted jumps.
//!
//! What this does not own: the meaning of a test ([`Simple`] and
//! [`BoolCode`] are the reference; this is the same answer, faster).

use super::program::{BoolCode, Cmp, Env, Simple};
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// The most a field's table may take. A table has a row of one bit per
/// rule for each interval, and a field tested by every one of 5,000 rules
/// at distinct bounds would need 10,000 rows of 80 words (6 MB); such a
/// field's tests are run one by one instead.
const TABLE_BUDGET: usize = 256 * 1024;

#[derive(Clone, Debug, Default)]
pub struct Conditions {
    /// Rule indexes in list order; a rule's bit is its position here.
    rules: Vec<u32>,
    /// Words of a row: one bit per rule.
    words: usize,
    fields: Vec<Field>,
    tags: Vec<TagByte>,
    /// Tests with no table, run after the tables while their rule is open.
    others: Vec<(u32, Other)>,
}

/// The tests on one field, integer or money (in cents).
#[derive(Clone, Debug)]
struct Field {
    slot: u16,
    money: bool,
    /// Where each interval of values starts, ascending, the first at
    /// `i64::MIN`.
    starts: Vec<i64>,
    /// For each interval, then for null: the rules with a test on this
    /// field that is false there (`words` words each).
    rows: Vec<u64>,
    /// The field's tests, run one by one for a money value with more than
    /// two places (which has no interval).
    tests: Vec<(u32, Simple)>,
}

/// The tags in one byte of a tag word: for each of the byte's 256 values,
/// the rules with a test of those tags that fails (a member's tags are
/// then one lookup per byte, not one per tag).
#[derive(Clone, Debug)]
struct TagByte {
    word: u32,
    shift: u32,
    rows: Vec<u64>,
}

#[derive(Clone, Debug)]
enum Other {
    Simple(Simple),
    Tree(BoolCode),
}

/// Scratch for [`Conditions::eval`], kept by the caller between members.
#[derive(Default, Debug)]
pub struct Scratch {
    /// A bit per rule, by position: a test of it was not true.
    failed: Vec<u64>,
}

/// A test on a field as `lo <= value <= hi`: the rule's position, the
/// bounds, the test.
type RangeTest = (u32, i64, i64, Simple);

/// The tests of a rule list gathered by what they read.
#[derive(Default)]
struct Gathered {
    /// (money, slot) -> its tests.
    fields: BTreeMap<(bool, u16), Vec<RangeTest>>,
    /// tag bit -> (position, wanted).
    tags: BTreeMap<u32, Vec<(u32, bool)>>,
    others: Vec<(u32, Other)>,
}

impl Gathered {
    /// Files the tests of one rule's condition.
    fn split(&mut self, at: u32, b: &BoolCode) {
        match b {
            BoolCode::AllSimple(tests) => {
                for t in tests.iter() {
                    self.file(at, t.clone());
                }
            }
            BoolCode::And(items) => {
                for item in items.iter() {
                    self.split(at, item);
                }
            }
            b => match Simple::of(b) {
                Some(t) => self.file(at, t),
                None => self.others.push((at, Other::Tree(b.clone()))),
            },
        }
    }

    fn file(&mut self, at: u32, t: Simple) {
        match t {
            Simple::IntIn(s, lo, hi) => {
                self.fields
                    .entry((false, s))
                    .or_default()
                    .push((at, lo, hi, t));
            }
            Simple::Dec(op, s, k) => match money_range(op, k) {
                Some((lo, hi)) => self
                    .fields
                    .entry((true, s))
                    .or_default()
                    .push((at, lo, hi, t)),
                None => self.others.push((at, Other::Simple(t))),
            },
            Simple::Tag(bit, want) => self.tags.entry(bit).or_default().push((at, want)),
            t => self.others.push((at, Other::Simple(t))),
        }
    }
}

impl Conditions {
    /// The conditions of `list` (rule indexes into `conds`), in its order.
    pub fn new(conds: &[Option<&BoolCode>], list: &[u32]) -> Conditions {
        let mut g = Gathered::default();
        for (at, &rule) in list.iter().enumerate() {
            if let Some(b) = conds.get(rule as usize).copied().flatten() {
                g.split(at as u32, b);
            }
        }
        let words = list.len().div_ceil(64);
        let mut c = Conditions {
            rules: list.to_vec(),
            words,
            others: g.others,
            ..Conditions::default()
        };
        for ((money, slot), tests) in g.fields {
            match field_table(slot, money, tests, words) {
                Ok(f) => c.fields.push(f),
                Err(tests) => c
                    .others
                    .extend(tests.into_iter().map(|(at, t)| (at, Other::Simple(t)))),
            }
        }
        let mut bytes: BTreeMap<u32, Vec<(u32, u32, bool)>> = BTreeMap::new();
        for (bit, tests) in g.tags {
            let byte = bytes.entry(bit / 8).or_default();
            byte.extend(tests.into_iter().map(|(at, want)| (bit, at, want)));
        }
        for (byte, tests) in bytes {
            // An `or` of a row costs about what a test does per 4 words.
            if tests.len() * 4 < words || 256 * words * 8 > TABLE_BUDGET {
                let one_by_one = tests
                    .into_iter()
                    .map(|(bit, at, want)| (at, Simple::Tag(bit, want)));
                c.others
                    .extend(one_by_one.map(|(at, t)| (at, Other::Simple(t))));
                continue;
            }
            let mut rows = vec![0u64; 256 * words];
            for value in 0..256usize {
                for &(bit, at, want) in &tests {
                    let has = value & (1 << (bit % 8)) != 0;
                    if has != want {
                        set(&mut rows[value * words..], at);
                    }
                }
            }
            c.tags.push(TagByte {
                word: byte / 8,
                shift: (byte % 8) * 8,
                rows,
            });
        }
        c.others.sort_by_key(|(at, _)| *at);
        c
    }

    /// Each rule's index and whether its condition is true, in list order,
    /// until `each` returns false. `name` gives a rule's name for the tests
    /// evaluated one by one (plugin calls report it).
    pub fn eval<'n>(
        &self,
        env: &Env<'n>,
        name: impl Fn(u32) -> &'n str,
        scratch: &mut Scratch,
        mut each: impl FnMut(u32, bool) -> bool,
    ) {
        self.run(env, name, scratch);
        for (at, &rule) in self.rules.iter().enumerate() {
            if !each(rule, !is_set(&scratch.failed, at as u32)) {
                return;
            }
        }
    }

    /// The index of each rule whose condition is true, in list order.
    pub fn matches<'n>(
        &self,
        env: &Env<'n>,
        name: impl Fn(u32) -> &'n str,
        scratch: &mut Scratch,
        mut matched: impl FnMut(u32),
    ) {
        self.run(env, name, scratch);
        // The set bits of each word, lowest first: no branch per rule.
        for (w, &failed) in scratch.failed.iter().enumerate() {
            let mut open = !failed;
            while open != 0 {
                let at = w * 64 + open.trailing_zeros() as usize;
                match self.rules.get(at) {
                    Some(&rule) => matched(rule),
                    None => break,
                }
                open &= open - 1;
            }
        }
    }

    /// Marks in `scratch` the rules with a test that is not true.
    fn run<'n>(&self, env: &Env<'n>, name: impl Fn(u32) -> &'n str, scratch: &mut Scratch) {
        let (failed, w) = (&mut scratch.failed, self.words);
        failed.clear();
        failed.resize(w, 0);
        for f in &self.fields {
            let v = env.member.get(f.slot as usize);
            let value = if f.money {
                v.and_then(|v| v.dec()).map(|d| cents(d).ok_or(()))
            } else {
                v.and_then(|v| v.int()).map(Ok)
            };
            let row = match value {
                Some(Ok(x)) => interval(&f.starts, x),
                None => f.starts.len(),
                Some(Err(())) => {
                    for (at, t) in &f.tests {
                        if t.eval(env) != Some(true) {
                            set(failed, *at);
                        }
                    }
                    continue;
                }
            };
            or(failed, &f.rows[row * w..(row + 1) * w]);
        }
        for t in &self.tags {
            let word = env.tags.get(t.word as usize).copied().unwrap_or(0);
            let row = ((word >> t.shift) & 0xff) as usize;
            or(failed, &t.rows[row * w..(row + 1) * w]);
        }
        for (at, test) in &self.others {
            if is_set(failed, *at) {
                continue;
            }
            let value = match test {
                Other::Simple(t) => t.eval(env),
                Other::Tree(b) => b.eval(&Env {
                    rule: name(self.rules[*at as usize]),
                    ..*env
                }),
            };
            if value != Some(true) {
                set(failed, *at);
            }
        }
    }
}

/// The interval of `starts` that holds `x` (`starts[0]` is `i64::MIN`).
/// A field of a few rules has a few bounds, and a member's value falls
/// anywhere among them: counting the bounds at or below `x` has no branch
/// to mispredict (and vectorises), where a binary search missed about one
/// branch in two.
#[inline]
fn interval(starts: &[i64], x: i64) -> usize {
    if starts.len() <= 32 {
        starts.iter().map(|&s| usize::from(s <= x)).sum::<usize>() - 1
    } else {
        starts.partition_point(|&s| s <= x) - 1
    }
}

/// The interval table of one field's tests, or the tests back when it
/// would be too big.
fn field_table(
    slot: u16,
    money: bool,
    tests: Vec<RangeTest>,
    words: usize,
) -> Result<Field, Vec<(u32, Simple)>> {
    let mut starts: Vec<i64> = vec![i64::MIN];
    for &(_, lo, hi, _) in &tests {
        starts.push(lo);
        if let Some(after) = hi.checked_add(1) {
            starts.push(after);
        }
    }
    starts.sort_unstable();
    starts.dedup();
    let rows_len = (starts.len() + 1) * words;
    if rows_len * 8 > TABLE_BUDGET || tests.len() * 4 < words {
        return Err(tests.into_iter().map(|(at, _, _, t)| (at, t)).collect());
    }
    let mut rows = vec![0u64; rows_len];
    for (i, &x) in starts.iter().enumerate() {
        for &(at, lo, hi, _) in &tests {
            if !(lo <= x && x <= hi) {
                set(&mut rows[i * words..], at);
            }
        }
    }
    // Null: every test on the field is unknown, so not true.
    let null = starts.len() * words;
    for &(at, ..) in &tests {
        set(&mut rows[null..], at);
    }
    Ok(Field {
        slot,
        money,
        starts,
        rows,
        tests: tests.into_iter().map(|(at, _, _, t)| (at, t)).collect(),
    })
}

fn set(bits: &mut [u64], at: u32) {
    bits[(at / 64) as usize] |= 1 << (at % 64);
}

fn is_set(bits: &[u64], at: u32) -> bool {
    bits[(at / 64) as usize] & (1 << (at % 64)) != 0
}

fn or(into: &mut [u64], row: &[u64]) {
    for (a, b) in into.iter_mut().zip(row) {
        *a |= b;
    }
}

/// A decimal of at most two places, in cents, when it fits.
fn cents(d: Decimal) -> Option<i64> {
    let scale = d.scale();
    if scale > 2 {
        return None;
    }
    let m = d.mantissa().checked_mul(10i128.pow(2 - scale))?;
    i64::try_from(m).ok()
}

/// `x op k` over cents as `lo <= x <= hi`, for a constant of two places
/// (what money constants are compiled to); `!=` has no range.
fn money_range(op: Cmp, k: Decimal) -> Option<(i64, i64)> {
    if k.scale() != 2 {
        return None;
    }
    let c = cents(k)?;
    Some(match op {
        Cmp::Eq => (c, c),
        Cmp::Lt => (i64::MIN, c.checked_sub(1)?),
        Cmp::Le => (i64::MIN, c),
        Cmp::Gt => (c.checked_add(1)?, i64::MAX),
        Cmp::Ge => (c, i64::MAX),
        Cmp::Ne => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::value::Value;

    /// xorshift64*: a fixed sequence, so a failure repeats.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    const OPS: [Cmp; 6] = [Cmp::Eq, Cmp::Ne, Cmp::Lt, Cmp::Le, Cmp::Gt, Cmp::Ge];
    // Slots 0-2 hold integers, 3-5 decimals; `tags` tags.

    fn dec(r: &mut Rng) -> Decimal {
        let places = [0, 1, 2, 2, 3, 28][r.below(6) as usize];
        let m = r.below(4_000) as i64 - 2_000;
        if places == 28 {
            Decimal::from(m) / Decimal::from(7)
        } else {
            Decimal::new(m, places)
        }
    }

    fn test(r: &mut Rng, tags: u32) -> BoolCode {
        let op = OPS[r.below(6) as usize];
        match r.below(6) {
            0 | 1 => BoolCode::IntSlotConst(op, r.below(3) as u16, r.below(40) as i64 - 20),
            2 => BoolCode::DecSlotConst(op, 3 + r.below(3) as u16, dec(r)),
            3 => BoolCode::HasTag(r.below(tags as u64) as u32),
            4 => BoolCode::Not(Box::new(BoolCode::HasTag(r.below(tags as u64) as u32))),
            _ => BoolCode::IntSlotDecTimes(op, r.below(3) as u16, 3 + r.below(3) as u16, dec(r)),
        }
    }

    /// A condition as the compiler makes them: one test, an `and` of
    /// simple tests, or a tree with `or`.
    fn condition(r: &mut Rng, tags: u32) -> Option<BoolCode> {
        let tests = |r: &mut Rng| {
            (0..1 + r.below(3))
                .map(|_| test(r, tags))
                .collect::<Vec<_>>()
        };
        match r.below(5) {
            0 => None,
            1 => Some(test(r, tags)),
            2 => {
                let simple = tests(r).iter().map(Simple::of).collect::<Option<Vec<_>>>();
                simple.map(|s| BoolCode::AllSimple(s.into_boxed_slice()))
            }
            3 => Some(BoolCode::And(tests(r).into_boxed_slice())),
            _ => Some(BoolCode::And(Box::new([
                BoolCode::Or(tests(r).into_boxed_slice()),
                test(r, tags),
            ]))),
        }
    }

    fn member(r: &mut Rng, tags: u32) -> (Vec<Value>, Vec<u64>) {
        let mut slots = Vec::new();
        for i in 0..6 {
            slots.push(match (i < 3, r.below(8)) {
                (_, 0) => Value::Null,
                (true, _) => Value::Int(r.below(40) as i64 - 20),
                (false, _) => Value::Dec(dec(r)),
            });
        }
        // Sparse for many tags, so that a wanted tag is sometimes there.
        let words = tags.div_ceil(64) as usize;
        let bits = (0..words).map(|_| {
            if words > 2 {
                r.next() & r.next()
            } else {
                r.next()
            }
        });
        (slots, bits.collect())
    }

    #[test]
    fn every_rule_is_true_exactly_when_its_condition_evaluates_to_true() {
        let mut r = Rng(0x5EED_0001);
        // Few rules: every field and tag byte gets a table; many rules
        // over many tags: tag bytes with few tests are run one by one.
        let sizes = std::iter::repeat_n((12, 70), 300).chain(std::iter::repeat_n((300, 640), 20));
        for (n, tags) in sizes {
            let conds: Vec<Option<BoolCode>> = (0..n).map(|_| condition(&mut r, tags)).collect();
            let refs: Vec<Option<&BoolCode>> = conds.iter().map(Option::as_ref).collect();
            let list: Vec<u32> = (0..n).rev().collect();
            let c = Conditions::new(&refs, &list);
            let mut scratch = Scratch::default();
            for _ in 0..50 {
                let (slots, bits) = member(&mut r, tags);
                let env = Env {
                    member: &slots,
                    tags: &bits,
                    tag_names: &[],
                    event: &[],
                    today: 0,
                    host: None,
                    rule: "",
                };
                let mut got = Vec::new();
                c.eval(
                    &env,
                    |_| "",
                    &mut scratch,
                    |i, t| {
                        got.push((i, t));
                        true
                    },
                );
                let want: Vec<(u32, bool)> = list
                    .iter()
                    .map(|&i| {
                        let v = conds[i as usize]
                            .as_ref()
                            .map_or(Some(true), |b| b.eval(&env));
                        (i, v == Some(true))
                    })
                    .collect();
                assert_eq!(got, want, "{conds:?}\n{slots:?} {bits:?}");
                let mut matched = Vec::new();
                c.matches(&env, |_| "", &mut scratch, |i| matched.push(i));
                let true_ones: Vec<u32> = want.iter().filter(|w| w.1).map(|w| w.0).collect();
                assert_eq!(matched, true_ones, "{conds:?}\n{slots:?} {bits:?}");
            }
        }
    }
}

//! A member record's bytes on disk: a format byte, the record's fields as
//! postcard writes them, then its long lists packed (from format 5 on: the
//! windowed aggregates' day buckets, the points lots and the purchases kept
//! for refunds, written empty in their places; from format 6 on, also the
//! events seen within the dedup window). Reading records of older
//! formats is here too. What a record holds is `super::member`'s.
//!
//! Packed, days are counted from the entry before; a bucket of one
//! purchase leaves out its count, minimum and maximum, and a bucket of a
//! count leaves out its sum, minimum and maximum (all zero); a purchase
//! names the aggregates it added to by their place in the record, not by
//! their 8-byte key, and says "the purchase's amount" or "nothing" without
//! repeating the number. Why it matters: sled rewrites a record whole on
//! every change and keeps the old copy until it cleans its segments, and
//! with a year's window and 90 days of refunds these lists were 15 of a
//! busy member's 17 KB (docs/engine.md, "What sled costs"). Packing is
//! exact: every list reads back equal, scales of decimals included.

use super::member::{AggShare, AggState, Bucket, MemberRecord, PurchaseEntry, SeenEvent, dec};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Dec(#[serde(with = "dec")] Decimal);

#[derive(Serialize, Deserialize)]
struct Lists {
    aggregates: Vec<Agg>,
    point_lots: Vec<(i32, i64)>,
    purchases: Vec<Purchase>,
}

/// The seen events, first in a record of format 6 so that a redelivery
/// check reads them without decoding the rest: days counted as in the
/// lists, the hashes as 8 bytes each (a varint of a hash is longer); then
/// the days whose ids spilled into markers.
type Seen = (Vec<(i32, [u8; 8], [u8; 8])>, Vec<i32>);

#[derive(Serialize, Deserialize)]
struct Agg {
    key: u64,
    days: Vec<Day>,
}

/// A bucket, its day as days after the bucket before (the first: after
/// day 0).
#[derive(Serialize, Deserialize)]
enum Day {
    /// `count` events adding nothing (sum, minimum and maximum 0).
    Counted { after: i32, count: u32 },
    /// One event: count 1, minimum and maximum the sum.
    Once { after: i32, sum: Dec },
    Full {
        after: i32,
        count: u32,
        sum: Dec,
        min: Dec,
        max: Dec,
    },
}

#[derive(Serialize, Deserialize)]
struct Purchase {
    /// The event id's hash, as 8 bytes (a varint of a hash takes 9 or 10).
    event: [u8; 8],
    /// Days after the purchase before (the first: after day 0; a late
    /// purchase's is negative).
    after: i32,
    amount: Dec,
    refunded: Dec,
    points: i64,
    shares: Vec<Share>,
}

/// A purchase's part of one aggregate, the aggregate by its place in the
/// record's list.
#[derive(Serialize, Deserialize)]
enum Share {
    Amount(u32),
    Zero(u32),
    Value(u32, Dec),
    /// An aggregate the record no longer holds (kept as it was).
    Key(u64, Dec),
}

/// Days of a list counted from the entry before (the first: from day 0).
#[derive(Default)]
struct Days(i32);

impl Days {
    /// Days from the entry before to `day`, which becomes the entry before.
    fn after(&mut self, day: i32) -> i32 {
        day.wrapping_sub(std::mem::replace(&mut self.0, day))
    }

    /// The day `after` days after the entry before, which it becomes.
    fn on(&mut self, after: i32) -> i32 {
        self.0 = self.0.wrapping_add(after);
        self.0
    }
}

/// Equal, and written the same (`40.00` is not `40`).
fn same(a: Decimal, b: Decimal) -> bool {
    a == b && a.scale() == b.scale()
}

/// Appends the packed lists of `rec` to `out`.
fn pack(rec: &MemberRecord, out: &mut Vec<u8>) {
    let keys: Vec<u64> = rec.aggregates.iter().map(|a| a.key).collect();
    let (mut lots, mut purchases) = (Days::default(), Days::default());
    let lists = Lists {
        aggregates: rec.aggregates.iter().map(pack_agg).collect(),
        point_lots: rec
            .point_lots
            .iter()
            .map(|&(d, n)| (lots.after(d), n))
            .collect(),
        purchases: rec
            .purchases
            .iter()
            .map(|p| pack_purchase(p, &keys, purchases.after(p.day)))
            .collect(),
    };
    // Serializing plain data into a Vec cannot fail.
    if let Ok(bytes) = postcard::to_allocvec(&lists) {
        out.extend_from_slice(&bytes);
    }
}

fn pack_agg(a: &AggState) -> Agg {
    let mut steps = Days::default();
    let days = a.buckets.iter().map(|b| {
        let after = steps.after(b.day);
        let zero = |d: Decimal| same(d, Decimal::ZERO);
        if zero(b.sum) && zero(b.min) && zero(b.max) {
            Day::Counted {
                after,
                count: b.count,
            }
        } else if b.count == 1 && same(b.min, b.sum) && same(b.max, b.sum) {
            Day::Once {
                after,
                sum: Dec(b.sum),
            }
        } else {
            Day::Full {
                after,
                count: b.count,
                sum: Dec(b.sum),
                min: Dec(b.min),
                max: Dec(b.max),
            }
        }
    });
    Agg {
        key: a.key,
        days: days.collect(),
    }
}

fn pack_purchase(p: &PurchaseEntry, keys: &[u64], after: i32) -> Purchase {
    let shares = p.aggregates.iter().map(|s| {
        match keys.iter().position(|k| *k == s.key).map(|i| i as u32) {
            Some(i) if same(s.value, p.amount) => Share::Amount(i),
            Some(i) if same(s.value, Decimal::ZERO) => Share::Zero(i),
            Some(i) => Share::Value(i, Dec(s.value)),
            None => Share::Key(s.key, Dec(s.value)),
        }
    });
    Purchase {
        event: p.event.to_le_bytes(),
        after,
        amount: Dec(p.amount),
        refunded: Dec(p.refunded),
        points: p.points,
        shares: shares.collect(),
    }
}

/// Reads the lists packed in `bytes` into `rec` (all of `bytes`: nothing
/// may follow).
fn unpack(bytes: &[u8], rec: &mut MemberRecord) -> Result<(), String> {
    let (lists, rest): (Lists, _) =
        postcard::take_from_bytes(bytes).map_err(|e| format!("corrupt member record: {e}"))?;
    if !rest.is_empty() {
        return Err(format!(
            "corrupt member record: {} bytes past its end",
            rest.len()
        ));
    }
    rec.aggregates = lists.aggregates.into_iter().map(unpack_agg).collect();
    let keys: Vec<u64> = rec.aggregates.iter().map(|a| a.key).collect();
    let (mut lots, mut purchases) = (Days::default(), Days::default());
    rec.point_lots = lists
        .point_lots
        .into_iter()
        .map(|(a, n)| (lots.on(a), n))
        .collect();
    rec.purchases = Vec::with_capacity(lists.purchases.len());
    for p in lists.purchases {
        let day = purchases.on(p.after);
        rec.purchases.push(unpack_purchase(p, day, &keys)?);
    }
    Ok(())
}

fn pack_seen(rec: &MemberRecord) -> Seen {
    let mut days = Days::default();
    let ids = rec
        .seen
        .iter()
        .map(|s| (days.after(s.day), s.id.to_le_bytes(), s.hash.to_le_bytes()));
    (ids.collect(), rec.seen_spilled.clone())
}

fn unpack_seen((ids, spilled): Seen) -> (Vec<SeenEvent>, Vec<i32>) {
    let mut days = Days::default();
    let ids = ids.into_iter().map(|(after, id, hash)| SeenEvent {
        day: days.on(after),
        id: u64::from_le_bytes(id),
        hash: u64::from_le_bytes(hash),
    });
    (ids.collect(), spilled)
}

fn unpack_agg(a: Agg) -> AggState {
    let mut steps = Days::default();
    let buckets = a.days.into_iter().map(|d| {
        let (after, count, sum, min, max) = match d {
            Day::Counted { after, count } => {
                (after, count, Decimal::ZERO, Decimal::ZERO, Decimal::ZERO)
            }
            Day::Once { after, sum } => (after, 1, sum.0, sum.0, sum.0),
            Day::Full {
                after,
                count,
                sum,
                min,
                max,
            } => (after, count, sum.0, min.0, max.0),
        };
        Bucket {
            day: steps.on(after),
            count,
            sum,
            min,
            max,
        }
    });
    AggState {
        key: a.key,
        buckets: buckets.collect(),
    }
}

fn unpack_purchase(p: Purchase, day: i32, keys: &[u64]) -> Result<PurchaseEntry, String> {
    let key = |i: u32| {
        keys.get(i as usize)
            .copied()
            .ok_or_else(|| format!("corrupt member record: aggregate {i} of {}", keys.len()))
    };
    let mut shares = Vec::with_capacity(p.shares.len());
    for s in p.shares {
        shares.push(match s {
            Share::Amount(i) => AggShare {
                key: key(i)?,
                value: p.amount.0,
            },
            Share::Zero(i) => AggShare {
                key: key(i)?,
                value: Decimal::ZERO,
            },
            Share::Value(i, v) => AggShare {
                key: key(i)?,
                value: v.0,
            },
            Share::Key(k, v) => AggShare { key: k, value: v.0 },
        });
    }
    Ok(PurchaseEntry {
        event: u64::from_le_bytes(p.event),
        day,
        amount: p.amount.0,
        refunded: p.refunded.0,
        points: p.points,
        aggregates: shares,
    })
}

/// Format version of encoded member records (the first byte).
/// 2: decimals as scale and mantissa, refunds, One ID and decision
/// history. A folder written by format 1 is refused with this message; its
/// events can be ingested again.
/// 3: `wallet` and `first_day_spend` added at the end.
/// 4: `recent_days` added at the end.
/// 5: `aggregates`, `point_lots` and `purchases` written empty in their
/// places and packed after the record.
/// 6: the events seen within the dedup window first, before the record
/// (they were markers of their own in the store).
pub const RECORD_VERSION: u8 = 6;

impl MemberRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![RECORD_VERSION];
        // Serializing plain data into a Vec cannot fail.
        if let Ok(seen) = postcard::to_allocvec(&pack_seen(self)) {
            out.extend_from_slice(&seen);
        }
        if let Ok(body) = postcard::to_allocvec(self) {
            out.extend_from_slice(&body);
        }
        pack(self, &mut out);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<MemberRecord, String> {
        let corrupt = |e: postcard::Error| format!("corrupt member record: {e}");
        match bytes.split_first() {
            Some((&RECORD_VERSION, bytes)) => {
                let (seen, body): (Seen, _) = postcard::take_from_bytes(bytes).map_err(corrupt)?;
                let (mut rec, packed): (MemberRecord, _) =
                    postcard::take_from_bytes(body).map_err(corrupt)?;
                unpack(packed, &mut rec)?;
                (rec.seen, rec.seen_spilled) = unpack_seen(seen);
                Ok(rec)
            }
            // Format 5 is format 6 without the seen events.
            Some((5, body)) => {
                let (mut rec, packed): (MemberRecord, _) =
                    postcard::take_from_bytes(body).map_err(corrupt)?;
                unpack(packed, &mut rec)?;
                Ok(rec)
            }
            // Formats 2 to 4 hold the two lists in their places. An older
            // format is format 4 without its last fields; postcard writes
            // fields one after another with no framing, so the old bytes
            // and the missing fields' empty values make a record of format
            // 4. Rewritten in this format at the member's next change.
            Some((v @ 2..=4, body)) => {
                let mut body = body.to_vec();
                if *v == 2 {
                    body.extend_from_slice(
                        &postcard::to_allocvec(&WalletOnly::default()).unwrap_or_default(),
                    );
                }
                if *v < 4 {
                    body.extend_from_slice(
                        &postcard::to_allocvec(&Vec::<i32>::new()).unwrap_or_default(),
                    );
                }
                postcard::from_bytes(&body).map_err(corrupt)
            }
            Some((v, _)) => Err(format!(
                "member record of format {v}, this nudge reads {RECORD_VERSION}"
            )),
            None => Err("empty member record".into()),
        }
    }
}

/// The seen events of an encoded record and the days whose ids spilled
/// into markers, read without the rest of it (none before format 6).
pub fn decode_seen(bytes: &[u8]) -> Result<(Vec<SeenEvent>, Vec<i32>), String> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, bytes)) => {
            let (seen, _): (Seen, _) = postcard::take_from_bytes(bytes)
                .map_err(|e| format!("corrupt member record: {e}"))?;
            Ok(unpack_seen(seen))
        }
        _ => Ok((Vec::new(), Vec::new())),
    }
}

/// What format 3 added, empty, encoded as it ends a record.
#[derive(Default, Serialize)]
struct WalletOnly {
    #[serde(with = "dec")]
    wallet: Decimal,
    #[serde(with = "super::member::dec_opt")]
    first_day_spend: Option<Decimal>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::member::{Decision, Outcome, RuleState, Stored};

    /// Records of formats 2 (before the wallet), 3 (before the recent
    /// purchase days) and 4 (the lists in their places) read as this
    /// format, so data folders need no migration.
    #[test]
    fn records_of_older_formats_read_with_the_new_fields_empty() {
        let rec = MemberRecord {
            joined: 20_000,
            points: 1234,
            spend: Decimal::new(9999, 2),
            tags: vec!["vip".into()],
            history: vec![],
            ..MemberRecord::default()
        };
        // With its lists empty, format 4 is the record as postcard writes it.
        let v4 = postcard::to_allocvec(&rec).expect("encode");
        let days = postcard::to_allocvec(&Vec::<i32>::new()).expect("encode");
        let wallet = postcard::to_allocvec(&WalletOnly::default()).expect("encode");
        let v3 = &v4[..v4.len() - days.len()];
        let v2 = &v3[..v3.len() - wallet.len()];
        for (format, body) in [(4, &v4[..]), (3, v3), (2, v2)] {
            let bytes = [&[format][..], body].concat();
            assert_eq!(MemberRecord::decode(&bytes).expect("old format"), rec);
        }
        assert!(MemberRecord::decode(&[9, 1, 2]).is_err());
    }

    /// `rich()` encoded by nudge before format 5 (commit d915212).
    const FORMAT_4_RICH: &str = "04c0b80201c2b8020190b90203040280890f9a0102020376697006636f6666656501b06d01057374617273020a02e78a8d89f0ddefd6de0102c2b80201029e1f029e1f029e1f90b9020202904e02d00f02c03e110190b9020102e80702d00f02d00f016301020190b9020103736d7390b9020103736d730101c2b802010001c2b802640288b3aaddcbb9b7f7ff0190b90202c03e00005003e78a8d89f0ddefd6de0102c03e1100000501f6010392b90202d00f02e80714011102d00f010570686f6e65013101026d32016390b9020002f40301029e1f02c2b80290b902";

    #[test]
    fn a_format_4_record_with_every_list_reads_whole() {
        let bytes: Vec<u8> = (0..FORMAT_4_RICH.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&FORMAT_4_RICH[i..i + 2], 16).expect("hex"))
            .collect();
        assert_eq!(MemberRecord::decode(&bytes).expect("format 4"), rich());
    }

    /// Format 5 is format 6 without the seen events, whose empty list is
    /// the first byte after the format's.
    #[test]
    fn a_format_5_record_reads_with_no_seen_events() {
        let rec = rich();
        let mut bytes = rec.encode();
        // The two empty lists, one byte (its length) each.
        assert_eq!(bytes.drain(1..3).collect::<Vec<u8>>(), [0, 0]);
        bytes[0] = 5;
        assert_eq!(MemberRecord::decode(&bytes).expect("format 5"), rec);
        assert_eq!(decode_seen(&bytes).expect("seen"), (vec![], vec![]));
    }

    /// Packing is exact (scales, a share of an aggregate the record no
    /// longer holds, a late purchase, a refunded bucket) and smaller.
    #[test]
    fn records_read_back_equal_and_packed() {
        let mut rec = rich();
        // Packed, it is shorter than in format 4 (whose hex has two
        // characters a byte).
        assert!(
            rec.encode().len() * 2 < FORMAT_4_RICH.len(),
            "{} bytes",
            rec.encode().len()
        );
        let seen = |day, id: &str, hash| SeenEvent {
            day,
            id: SeenEvent::id_hash(id),
            hash,
        };
        // A late event's day comes before the one listed before it.
        rec.seen = vec![
            seen(20_040, "e9", u64::MAX),
            seen(20_038, "e8", 0),
            seen(20_040, "e10", 7),
        ];
        rec.seen_spilled = vec![20_039, 20_040];
        let bytes = rec.encode();
        assert_eq!(bytes[0], RECORD_VERSION);
        assert_eq!(MemberRecord::decode(&bytes).expect("decode"), rec);
        assert_eq!(
            decode_seen(&bytes).expect("seen"),
            (rec.seen.clone(), rec.seen_spilled.clone())
        );
        // The amount written another way is not the amount.
        rec.purchases[0].aggregates[0].value = Decimal::new(40, 0);
        rec.purchases[1].day = 20_000;
        rec.aggregates[0].buckets[0].sum = Decimal::new(199_900, 4);
        let zero = |scale| Decimal::new(0, scale);
        for (day, count, scale) in [(20_050, 3, 0), (20_051, 1, 2)] {
            rec.aggregates[1].buckets.push(Bucket {
                day,
                count,
                sum: zero(scale),
                min: zero(scale),
                max: zero(scale),
            });
        }
        rec.point_lots.push((19_000, -5));
        assert_eq!(MemberRecord::decode(&rec.encode()).expect("decode"), rec);
        let mut cut = rec.encode();
        cut.pop();
        assert!(MemberRecord::decode(&cut).is_err());
        cut.extend_from_slice(&[0, 0, 0]);
        assert!(MemberRecord::decode(&cut).is_err());
    }

    /// A member who bought every day for a year, with six aggregates
    /// over a 365-day window and 90 days of refundable purchases: the
    /// shape that took 17 KB a record in format 4 (docs/engine.md).
    #[test]
    fn a_busy_members_record_packs_small() {
        let keys: Vec<u64> = (0..6).map(|k| u64::MAX / 7 * (k + 1)).collect();
        let amount = |day: i32| Decimal::new(10_000 + i64::from(day % 97) * 13, 2);
        let mut rec = MemberRecord::default();
        for (i, key) in keys.iter().enumerate() {
            let buckets = (20_000..20_365).map(|day| {
                // Half the aggregates count, half add the amount.
                let v = if i % 2 == 0 {
                    amount(day)
                } else {
                    Decimal::ZERO
                };
                Bucket {
                    day,
                    count: 1,
                    sum: v,
                    min: v,
                    max: v,
                }
            });
            rec.aggregates.push(AggState {
                key: *key,
                buckets: buckets.collect(),
            });
        }
        rec.point_lots = (20_000..20_365).map(|day| (day, 120)).collect();
        for day in 20_275..20_365 {
            let shares = keys.iter().enumerate().map(|(i, key)| AggShare {
                key: *key,
                value: if i % 2 == 0 {
                    amount(day)
                } else {
                    Decimal::ZERO
                },
            });
            rec.purchases.push(PurchaseEntry {
                event: u64::MAX / 3 + day as u64,
                day,
                amount: amount(day),
                refunded: Decimal::ZERO,
                points: 120,
                aggregates: shares.collect(),
            });
        }
        let bytes = rec.encode();
        assert_eq!(MemberRecord::decode(&bytes).expect("decode"), rec);
        // Per bucket: a tag, the day step and the sum (a count: the count);
        // per purchase: 8 bytes of event hash, its numbers, two a share.
        let bound = 6 * 365 * 6 + 365 * 3 + 90 * (20 + 6 * 2) + 200;
        assert!(
            bytes.len() <= bound,
            "{} bytes, more than {bound}",
            bytes.len()
        );
    }

    /// A record with something in every field.
    fn rich() -> MemberRecord {
        let d = |m: i64, s: u32| Decimal::new(m, s);
        let b = |day, count, sum, min, max| Bucket {
            day,
            count,
            sum,
            min,
            max,
        };
        MemberRecord {
            joined: 20_000,
            first_purchase: Some(20_001),
            last_purchase: Some(20_040),
            purchase_days: 3,
            orders: 4,
            spend: d(123_456, 2),
            points: 77,
            tier: 2,
            tags: vec!["vip".into(), "coffee".into()],
            birthday: Some(7_000),
            attributes: vec![("stars".into(), Stored::Int(5))],
            aggregates: vec![
                AggState {
                    key: 0xdead_beef_0123_4567,
                    buckets: vec![
                        b(20_001, 1, d(1999, 2), d(1999, 2), d(1999, 2)),
                        b(20_040, 2, d(5000, 2), d(1000, 2), d(4000, 2)),
                    ],
                },
                AggState {
                    key: 17,
                    buckets: vec![b(20_040, 1, d(500, 2), d(1000, 2), d(1000, 2))],
                },
            ],
            rules: vec![RuleState {
                rule: 99,
                armed: true,
                fired: 2,
                recent: vec![20_040],
            }],
            contacts: vec![("sms".into(), 20_040)],
            consent: vec![("sms".into(), true)],
            tier_history: vec![(20_001, 1)],
            coupons: vec![],
            point_lots: vec![(20_001, 50)],
            purchases: vec![
                PurchaseEntry {
                    event: 0xffee_ddcc_bbaa_9988,
                    day: 20_040,
                    amount: d(4000, 2),
                    refunded: d(0, 0),
                    points: 40,
                    aggregates: vec![
                        AggShare {
                            key: 0xdead_beef_0123_4567,
                            value: d(4000, 2),
                        },
                        AggShare {
                            key: 17,
                            value: d(0, 0),
                        },
                        AggShare {
                            key: 5,
                            value: d(123, 1),
                        },
                    ],
                },
                PurchaseEntry {
                    event: 3,
                    day: 20_041,
                    amount: d(1000, 2),
                    refunded: d(500, 2),
                    points: 10,
                    aggregates: vec![AggShare {
                        key: 17,
                        value: d(1000, 2),
                    }],
                },
            ],
            ids: vec![("phone".into(), "1".into())],
            merged: vec!["m2".into()],
            history: vec![Decision {
                rule: 99,
                day: 20_040,
                outcome: Outcome::Sent,
            }],
            wallet: d(250, 2),
            first_day_spend: Some(d(1999, 2)),
            recent_days: vec![20_001, 20_040],
            seen: vec![],
            seen_spilled: vec![],
        }
    }
}

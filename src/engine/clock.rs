//! Time: the clock the daemon reads and the simulated one replay and tests
//! drive, and the calendar arithmetic in the config's time zone (days,
//! tick instants). `SystemClock::now` is the only read of wall time in nudge.

use crate::config::Schema;
use jiff::Timestamp;
use std::sync::atomic::{AtomicI64, Ordering};

pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// Wall time, for the daemon.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that only moves when told to, for replay and tests.
pub struct SimClock {
    micros: AtomicI64,
}

impl SimClock {
    pub fn new(at: Timestamp) -> SimClock {
        SimClock {
            micros: AtomicI64::new(at.as_microsecond()),
        }
    }
    pub fn set(&self, at: Timestamp) {
        self.micros.store(at.as_microsecond(), Ordering::SeqCst);
    }
}

impl Clock for SimClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_microsecond(self.micros.load(Ordering::SeqCst))
            .unwrap_or(Timestamp::UNIX_EPOCH)
    }
}

const EPOCH: jiff::civil::Date = jiff::civil::date(1970, 1, 1);

/// The local calendar day of an instant (days since 1970-01-01).
pub fn local_day(schema: &Schema, at: Timestamp) -> i32 {
    let date = at.to_zoned_datetime(schema.timezone.clone()).date();
    (date - EPOCH).get_days()
}

pub fn day_date(day: i32) -> jiff::civil::Date {
    EPOCH
        .checked_add(jiff::Span::new().days(day as i64))
        .unwrap_or(EPOCH)
}

/// When the daily tick of `day` runs: `schedule.daily_at` local time (on a
/// day when that time does not exist, the instant after the clocks jump).
pub fn tick_instant(schema: &Schema, day: i32) -> Timestamp {
    let t = jiff::civil::time(
        (schema.daily_at / 60) as i8,
        (schema.daily_at % 60) as i8,
        0,
        0,
    );
    day_date(day)
        .to_datetime(t)
        .to_zoned_datetime(schema.timezone.clone())
        .map(|z| z.timestamp())
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Local midnight at the start of `day` (or the first instant of the day
/// when midnight is skipped).
pub fn day_start(schema: &Schema, day: i32) -> Timestamp {
    day_date(day)
        .to_zoned_datetime(schema.timezone.clone())
        .map(|z| z.timestamp())
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The last day whose tick is due at `now`.
pub fn last_due_tick(schema: &Schema, now: Timestamp) -> i32 {
    let today = local_day(schema, now);
    if tick_instant(schema, today) <= now {
        today
    } else {
        today - 1
    }
}

/// How a schedule that fell behind catches up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatchUp {
    /// Every missed day in order (replay: history is re-enacted).
    EveryDay,
    /// Only the latest due day (a daemon back from downtime ticks once,
    /// not once per missed day).
    Once,
}

/// The days whose daily tick is due at `now`, after `last_done`.
pub fn due_ticks(
    schema: &Schema,
    last_done: Option<i32>,
    now: Timestamp,
    catch_up: CatchUp,
) -> Vec<i32> {
    let last_due = last_due_tick(schema, now);
    match last_done {
        Some(d) if d >= last_due => Vec::new(),
        Some(d) if catch_up == CatchUp::EveryDay => (d + 1..=last_due).collect(),
        _ => vec![last_due],
    }
}

/// When a contact at `at` may go out on a channel with quiet hours
/// `(from, to)` (minutes after local midnight; `from > to` wraps past
/// midnight): `None` outside quiet hours, else the instant they end, in the
/// config's time zone (a wall time skipped by a DST jump resolves to the
/// instant after the jump).
pub fn quiet_until(schema: &Schema, (from, to): (u16, u16), at: Timestamp) -> Option<Timestamp> {
    let local = at.to_zoned_datetime(schema.timezone.clone());
    let minute = local.hour() as u16 * 60 + local.minute() as u16;
    let quiet = if from < to {
        (from..to).contains(&minute)
    } else {
        minute >= from || minute < to
    };
    if !quiet {
        return None;
    }
    // The window ends today if its end is still ahead, else tomorrow.
    let date = if minute < to {
        local.date()
    } else {
        local.date().tomorrow().ok()?
    };
    let end = jiff::civil::time((to / 60) as i8, (to % 60) as i8, 0, 0);
    date.to_datetime(end)
        .to_zoned_datetime(schema.timezone.clone())
        .ok()
        .map(|z| z.timestamp())
}

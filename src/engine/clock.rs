//! Time: the clock the daemon reads and the simulated one replay and tests
//! drive, and the calendar arithmetic in the config's time zone (days,
//! tick instants). `SystemClock::now` is the only read of wall time in nudge;
//! `ClockWatch` holds the daemon's ticks when the wall clock jumps.

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

/// Time since the machine booted, suspended time included (Linux's
/// `CLOCK_BOOTTIME`): unlike wall time, setting the clock does not move it.
pub fn since_boot() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own; on failure it
    // writes nothing and the zero reading makes the watch see no jump.
    unsafe {
        libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts);
    }
    std::time::Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// How far the wall clock may run ahead of the time since boot while the
/// daemon runs before ticks are held. A tick on a wrong day expires points
/// and ages every day count (a clock set two years ahead once tagged every
/// member dormant); two days leave room for a paused virtual machine whose
/// clock is put right when it resumes.
pub const CLOCK_JUMP: std::time::Duration = std::time::Duration::from_secs(2 * 86_400);

/// Watches the wall clock against the time since boot, from the first
/// reading on.
#[derive(Debug, Default)]
pub struct ClockWatch {
    start: Option<(Timestamp, std::time::Duration)>,
}

/// Why the daily tick does not run now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TickHeld {
    /// The wall clock moved ahead of the time since boot by this many
    /// seconds while the daemon ran.
    Jumped { seconds: i64 },
    /// The last tick's day lies more than a day after the day due now
    /// (the clock was set back, or the folder came from a machine ahead
    /// of this one).
    Ahead { last: i32, due: i32 },
}

impl std::fmt::Display for TickHeld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TickHeld::Jumped { seconds } => write!(
                f,
                "the wall clock jumped {:.1} days ahead while nudge ran: ticks are held, since a tick on a wrong day expires points and ages day counts; set the clock right, or restart nudge to accept the new time",
                *seconds as f64 / 86_400.0
            ),
            TickHeld::Ahead { last, due } => write!(
                f,
                "the last tick, {}, lies ahead of the clock (the tick due now is {}): no tick runs until the clock passes it",
                crate::base::time::day_string(*last),
                crate::base::time::day_string(*due)
            ),
        }
    }
}

impl ClockWatch {
    /// Whether the tick must wait, given a wall clock reading, the time
    /// since boot, the last tick's day and the day due by the wall clock.
    pub fn check(
        &mut self,
        wall: Timestamp,
        boot: std::time::Duration,
        last_tick: Option<i32>,
        due: i32,
    ) -> Option<TickHeld> {
        let (wall0, boot0) = *self.start.get_or_insert((wall, boot));
        let walked = wall.as_second() - wall0.as_second();
        let booted = boot.as_secs() as i64 - boot0.as_secs() as i64;
        if walked - booted > CLOCK_JUMP.as_secs() as i64 {
            return Some(TickHeld::Jumped {
                seconds: walked - booted,
            });
        }
        // One day ahead is today's tick run before `schedule.daily_at` was
        // moved later (or a first start's): the next is tomorrow's anyway.
        match last_tick {
            Some(last) if last > due + 1 => Some(TickHeld::Ahead { last, due }),
            _ => None,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn a_jump_of_the_wall_clock_holds_ticks_until_it_is_set_right() {
        let mut w = ClockWatch::default();
        let day = |s: &str| crate::base::time::parse_date(s).expect("date");
        // A reading: the wall clock, the time since boot, the last tick.
        let mut check = |wall: &str, since: Duration, last: Option<&str>, due: &str| {
            w.check(at(wall), since, last.map(day), day(due))
        };
        let boot = Duration::from_secs(1_000);
        assert_eq!(
            check("2026-03-01T09:00:00Z", boot, None, "2026-03-01"),
            None
        );
        // Three days on both clocks (suspended time counts): no jump.
        let later = boot + Duration::from_secs(3 * 86_400);
        assert_eq!(
            check(
                "2026-03-04T09:00:00Z",
                later,
                Some("2026-03-01"),
                "2026-03-04"
            ),
            None
        );
        // Two years on the wall clock in an hour.
        let hour = later + Duration::from_secs(3_600);
        let held = check(
            "2028-03-04T10:00:00Z",
            hour,
            Some("2026-03-04"),
            "2028-03-04",
        );
        assert!(
            matches!(held, Some(TickHeld::Jumped { seconds }) if seconds > 700 * 86_400),
            "{held:?}"
        );
        assert!(
            held.expect("held")
                .to_string()
                .contains("jumped 731.0 days ahead")
        );
        // Set right again: ticks go on.
        assert_eq!(
            check(
                "2026-03-04T10:00:00Z",
                hour,
                Some("2026-03-04"),
                "2026-03-04"
            ),
            None
        );
        // Today's tick ran, then `daily_at` moved later: not held.
        assert_eq!(
            check(
                "2026-03-04T10:00:00Z",
                hour,
                Some("2026-03-05"),
                "2026-03-04"
            ),
            None
        );
        // Set back: the last tick lies ahead.
        let back = check(
            "2026-03-04T10:00:00Z",
            hour,
            Some("2026-03-09"),
            "2026-03-04",
        );
        assert_eq!(
            back,
            Some(TickHeld::Ahead {
                last: day("2026-03-09"),
                due: day("2026-03-04")
            })
        );
        assert!(
            back.expect("held")
                .to_string()
                .contains("the last tick, 2026-03-09, lies ahead")
        );
    }
}

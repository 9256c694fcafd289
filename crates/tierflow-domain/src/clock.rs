//! The clock that store and worker code read the time from.
//!
//! Domain rules never read a clock; they take `now`. The store takes a `&dyn Clock` and reads it
//! once per operation, so a test with a [`ManualClock`] can stand before a grace period ends, then
//! [`ManualClock::advance`] past it and run the job that applies the downgrade.

use std::sync::Mutex;

use chrono::{DateTime, Duration, SubsecRound as _, Utc};

/// A source of the current time.
///
/// Clocks return whole microseconds, PostgreSQL's `timestamptz` precision, so a time written to
/// the database reads back equal to the value that was written.
pub trait Clock: Send + Sync {
    /// The current instant, in whole microseconds.
    fn now(&self) -> DateTime<Utc>;
}

fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// The wall clock, for production.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        to_micros(Utc::now())
    }
}

/// A clock that moves only when told to, for tests.
#[derive(Debug)]
pub struct ManualClock {
    // std's Mutex: held for a copy, never across an await.
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Mutex::new(start),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }

    /// Sets the clock to `to`.
    pub fn set(&self, to: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        to_micros(*self.now.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let start = SystemClock.now();
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::seconds(90));
        assert_eq!(clock.now(), start + Duration::seconds(90));
    }

    #[test]
    fn clocks_keep_microseconds_like_postgres() {
        assert_eq!(SystemClock.now().timestamp_subsec_nanos() % 1_000, 0);
        let t: DateTime<Utc> = "2026-11-25T12:00:00.123456789Z".parse().unwrap();
        assert_eq!(
            ManualClock::new(t).now().timestamp_subsec_nanos(),
            123_456_000
        );
    }
}

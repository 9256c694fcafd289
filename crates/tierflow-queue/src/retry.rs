//! The retry policy: exponential backoff with jitter, stored as the job's next `run_at`.
//!
//! After the n-th failed attempt a job waits `BASE × 2^(n−1)`, capped at [`MAX_DELAY`], then
//! shifted by up to ±[`JITTER`] so that jobs that failed together (a downstream outage) do not
//! retry together. The delay is written into the row (`run_at`) in the statement that releases the
//! job, so it survives restarts and holds across every worker.

use std::time::Duration;

/// The first retry's delay.
pub const BASE: Duration = Duration::from_secs(1);
/// No retry waits longer than this (10 minutes): long enough to ride out a deploy or a failover.
pub const MAX_DELAY: Duration = Duration::from_secs(600);
/// The jitter, as a fraction of the delay.
pub const JITTER: f64 = 0.2;

/// The delay before the next attempt, after `failed_attempts` failures (1 for the first).
pub fn exponential_backoff(failed_attempts: i32) -> Duration {
    let exp = failed_attempts.clamp(1, 31) as u32 - 1;
    let plain = BASE.saturating_mul(2u32.saturating_pow(exp)).min(MAX_DELAY);
    with_jitter(plain, JITTER)
}

/// `plain` shifted by up to ±`fraction` of itself, at random.
pub fn with_jitter(plain: Duration, fraction: f64) -> Duration {
    plain.mul_f64(1.0 + rand::random_range(-fraction..=fraction))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_jitter_and_stop_at_the_cap() {
        for (attempt, plain) in [
            (1, 1.0),
            (2, 2.0),
            (3, 4.0),
            (6, 32.0),
            (20, 600.0),
            (31, 600.0),
        ] {
            for _ in 0..50 {
                let d = exponential_backoff(attempt).as_secs_f64();
                assert!(
                    d >= plain * (1.0 - JITTER) - 1e-9 && d <= plain * (1.0 + JITTER) + 1e-9,
                    "attempt {attempt}: {d}"
                );
            }
        }
    }

    #[test]
    fn jitter_spreads_retries() {
        let delays: std::collections::BTreeSet<u128> = (0..20)
            .map(|_| exponential_backoff(5).as_micros())
            .collect();
        assert!(delays.len() > 10);
    }
}

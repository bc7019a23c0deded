//! Retry timing and circuit breakers. Both take time as an argument, so
//! tests drive them without sleeping.

use std::time::{Duration, Instant};

use crate::config::{BreakerConfig, RetryConfig};

/// Capped exponential backoff with full jitter: the delay before retry `n`
/// (1-based) is uniform in `[0, min(max_delay, base · 2^(n-1))]`.
pub struct Backoff {
    config: RetryConfig,
    rng: u64,
}

impl Backoff {
    pub fn new(config: RetryConfig, seed: u64) -> Self {
        Backoff {
            config,
            rng: seed | 1,
        }
    }

    pub fn max_attempts(&self) -> Option<u32> {
        self.config.max_attempts
    }

    /// The ceiling of the delay before retry `n` (before jitter).
    pub fn ceiling(&self, n: u32) -> Duration {
        let exp = self
            .config
            .base_delay
            .saturating_mul(1u32 << n.saturating_sub(1).min(20));
        exp.min(self.config.max_delay)
    }

    /// The jittered delay before retry `n`, at least a millisecond.
    pub fn delay(&mut self, n: u32) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let ceiling = self.ceiling(n).as_millis().max(1) as u64;
        Duration::from_millis(1 + self.rng % ceiling)
    }
}

/// The breaker's state, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// Opens after `failure_threshold` consecutive failures, lets one trial
/// through after `cooldown`, and closes on a success.
pub struct Breaker {
    config: BreakerConfig,
    failures: u32,
    opened_at: Option<Instant>,
    trial_in_flight: bool,
    /// Times the breaker opened.
    pub opened: u64,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Breaker {
            config,
            failures: 0,
            opened_at: None,
            trial_in_flight: false,
            opened: 0,
        }
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        match self.opened_at {
            None => BreakerState::Closed,
            Some(at) if now.duration_since(at) < self.config.cooldown => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Whether a request may go out now; if not, how long until it may.
    pub fn permit(&mut self, now: Instant) -> Result<(), Duration> {
        match self.state(now) {
            BreakerState::Closed => Ok(()),
            BreakerState::Open => {
                let at = self.opened_at.unwrap_or(now);
                Err(self.config.cooldown.saturating_sub(now.duration_since(at)))
            }
            BreakerState::HalfOpen if self.trial_in_flight => Err(Duration::from_millis(100)),
            BreakerState::HalfOpen => {
                self.trial_in_flight = true;
                Ok(())
            }
        }
    }

    pub fn success(&mut self) {
        self.failures = 0;
        self.opened_at = None;
        self.trial_in_flight = false;
    }

    pub fn failure(&mut self, now: Instant) {
        self.failures += 1;
        let trial_failed = self.trial_in_flight;
        self.trial_in_flight = false;
        if trial_failed
            || (self.opened_at.is_none() && self.failures >= self.config.failure_threshold)
        {
            self.opened_at = Some(now);
            self.opened += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter_inside_the_ceiling() {
        let config = RetryConfig {
            max_attempts: Some(10),
            alert_after: Duration::from_secs(120),
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        };
        let mut b = Backoff::new(config, 42);
        let ceilings: Vec<u64> = (1..=7).map(|n| b.ceiling(n).as_millis() as u64).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 2000, 2000]);
        let mut distinct = std::collections::HashSet::new();
        for n in 1..=200 {
            let d = b.delay(n % 7 + 1);
            assert!(
                d >= Duration::from_millis(1)
                    && d <= b.ceiling(n % 7 + 1) + Duration::from_millis(1)
            );
            distinct.insert(d);
        }
        assert!(distinct.len() > 50, "jitter spreads retries");
    }

    #[test]
    fn breaker_opens_half_opens_and_closes() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig {
            failure_threshold: 3,
            cooldown: Duration::from_secs(10),
        });
        for _ in 0..2 {
            assert!(b.permit(t0).is_ok());
            b.failure(t0);
        }
        assert_eq!(b.state(t0), BreakerState::Closed);
        b.failure(t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert_eq!(
            b.permit(t0 + Duration::from_secs(4)),
            Err(Duration::from_secs(6))
        );
        // After the cooldown: one trial, and only one.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert!(b.permit(later).is_ok());
        assert!(b.permit(later).is_err());
        // The trial fails: open again for a full cooldown.
        b.failure(later);
        assert_eq!(b.state(later + Duration::from_secs(9)), BreakerState::Open);
        let again = later + Duration::from_secs(10);
        assert!(b.permit(again).is_ok());
        b.success();
        assert_eq!(b.state(again), BreakerState::Closed);
        assert_eq!(b.opened, 2);
    }
}

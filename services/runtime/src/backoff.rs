//! Exponential backoff for reconnecting clients (an agent-node whose market
//! went away, a trainer's subscription).
//!
//! Delay `n` (0-based since the last [`Backoff::reset`]) is
//! `min(max, base · factor^n)`. With jitter, each delay is drawn uniformly
//! from `[d/2, d]` ("equal jitter"): nodes restarted together do not all
//! reconnect in the same instant, yet never wait less than half the nominal
//! delay. The jitter comes from a seeded RNG, so runs are reproducible.

use std::time::Duration;

use peergrid_core::rng::SeededRng;

#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    factor: f64,
    attempt: u32,
    jitter: Option<SeededRng>,
}

impl Backoff {
    /// `base` is the first delay, `max` caps every delay, `factor` is the growth
    /// per attempt. A `factor` below 1 or not finite is treated as 1 (constant
    /// delay); a `base` above `max` is lowered to `max`.
    pub fn new(base: Duration, max: Duration, factor: f64) -> Backoff {
        let factor = if factor.is_finite() && factor >= 1.0 { factor } else { 1.0 };
        Backoff { base: base.min(max), max, factor, attempt: 0, jitter: None }
    }

    /// Draws each delay from `[d/2, d]` with an RNG seeded by `seed`.
    pub fn with_jitter(mut self, seed: u64) -> Backoff {
        self.jitter = Some(SeededRng::new(seed));
        self
    }

    /// The delay to wait before the next attempt; advances the attempt count.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.base.as_secs_f64() * self.factor.powi(self.attempt.min(1024) as i32);
        let capped = nominal.min(self.max.as_secs_f64());
        self.attempt = self.attempt.saturating_add(1);
        let secs = match self.jitter.as_mut() {
            Some(rng) => rng.uniform(capped / 2.0, capped),
            None => capped,
        };
        Duration::from_secs_f64(secs)
    }

    /// Back to the first delay, after a successful attempt.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(MS(100), MS(1000), 2.0);
        let delays: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        assert_eq!(delays, [MS(100), MS(200), MS(400), MS(800), MS(1000), MS(1000)]);
        assert_eq!(b.attempts(), 6);
        b.reset();
        assert_eq!(b.next_delay(), MS(100));
    }

    #[test]
    fn many_attempts_do_not_overflow() {
        let mut b = Backoff::new(MS(1), Duration::from_secs(30), 10.0);
        for _ in 0..5000 {
            assert!(b.next_delay() <= Duration::from_secs(30));
        }
    }

    #[test]
    fn degenerate_parameters_are_tamed() {
        let mut b = Backoff::new(MS(500), MS(200), f64::NAN);
        assert_eq!(b.next_delay(), MS(200));
        assert_eq!(b.next_delay(), MS(200), "factor NaN ⇒ constant");
        let mut b = Backoff::new(MS(100), MS(1000), 0.5);
        assert_eq!([b.next_delay(), b.next_delay()], [MS(100), MS(100)]);
    }

    #[test]
    fn jitter_stays_within_half_to_full_and_is_seeded() {
        let run = |seed| {
            let mut b = Backoff::new(MS(100), MS(1000), 2.0).with_jitter(seed);
            (0..8).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7), "same seed, same delays");
        assert_ne!(a, run(8));
        let nominal = [100, 200, 400, 800, 1000, 1000, 1000, 1000];
        for (d, n) in a.iter().zip(nominal) {
            assert!(*d >= MS(n) / 2 && *d <= MS(n), "{d:?} outside [{}, {n}] ms", n / 2);
        }
    }
}

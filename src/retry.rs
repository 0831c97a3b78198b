//! Backoff between retries, and pacing of bundle downloads to FullStory's
//! rate limit.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Exponential backoff with full jitter, capped, where a server's
/// `Retry-After` takes precedence.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait before retry number `attempt` (1 for the first retry).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            // The server knows when it will take us again; a little jitter
            // stops several clients from returning in lockstep.
            return wait + self.jitter(Duration::from_millis(250).min(self.base));
        }
        let exp = attempt.saturating_sub(1).min(30);
        let ceiling = self
            .base
            .saturating_mul(1u32 << exp)
            .min(self.max)
            .max(Duration::from_millis(1));
        // Full jitter, but never less than half, so retries still back off.
        ceiling / 2 + self.jitter(ceiling / 2)
    }

    fn jitter(&self, up_to: Duration) -> Duration {
        let nanos = up_to.as_nanos().min(u128::from(u64::MAX)) as u64;
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }
}

/// Parses a `Retry-After` value: seconds (what FullStory sends) or an HTTP
/// date. Waits are capped at an hour.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    parse_retry_after_at(value, chrono::Utc::now())
}

fn parse_retry_after_at(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    let secs = match value.parse::<f64>() {
        Ok(secs) => secs,
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
            (at.with_timezone(&chrono::Utc) - now)
                .num_milliseconds()
                .max(0) as f64
                / 1000.0
        }
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

/// A sliding-window limit: at most `limit` starts in any `window`.
#[derive(Debug)]
pub struct Pacer {
    limit: usize,
    window: Duration,
    starts: VecDeque<Instant>,
}

impl Pacer {
    /// A pacer allowing `limit` starts per `window`; a zero window never waits.
    pub fn new(limit: u32, window: Duration) -> Pacer {
        Pacer {
            limit: limit.max(1) as usize,
            window,
            starts: VecDeque::new(),
        }
    }

    /// Records a start at `now` and returns `None`, or returns how long to
    /// wait before one is allowed.
    pub fn try_start(&mut self, now: Instant) -> Option<Duration> {
        if self.window.is_zero() {
            return None;
        }
        while let Some(&first) = self.starts.front() {
            if now.duration_since(first) >= self.window {
                self.starts.pop_front();
            } else {
                break;
            }
        }
        if self.starts.len() < self.limit {
            self.starts.push_back(now);
            return None;
        }
        let oldest = self.starts.front().copied()?;
        Some((oldest + self.window).saturating_duration_since(now))
    }

    /// Pushes every recorded start back so none is allowed before `until`;
    /// used after a 429, when the server's clock is what counts.
    pub fn hold_until(&mut self, until: Instant) {
        let shift = until.checked_sub(self.window).unwrap_or(until);
        for start in &mut self.starts {
            if *start < shift {
                *start = shift;
            }
        }
        while self.starts.len() < self.limit {
            self.starts.push_back(shift);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_obeys_retry_after() {
        let b = Backoff {
            base: Duration::from_secs(2),
            max: Duration::from_secs(60),
        };
        for _ in 0..100 {
            let d1 = b.delay(1, None);
            assert!(d1 >= Duration::from_secs(1) && d1 <= Duration::from_secs(2));
            let d3 = b.delay(3, None);
            assert!(d3 >= Duration::from_secs(4) && d3 <= Duration::from_secs(8));
            let d20 = b.delay(20, None);
            assert!(d20 >= Duration::from_secs(30) && d20 <= Duration::from_secs(60));
            let ra = b.delay(1, Some(Duration::from_secs(7)));
            assert!(ra >= Duration::from_secs(7) && ra <= Duration::from_millis(7250));
        }
    }

    #[test]
    fn retry_after_parsing() {
        assert_eq!(parse_retry_after("5"), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("soon"), None);
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:27:30Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            parse_retry_after_at("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after_at("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn pacer_allows_limit_per_window() {
        let mut p = Pacer::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(p.try_start(t0), None);
        assert_eq!(p.try_start(t0 + Duration::from_secs(1)), None);
        assert_eq!(
            p.try_start(t0 + Duration::from_secs(10)),
            Some(Duration::from_secs(50))
        );
        assert_eq!(p.try_start(t0 + Duration::from_secs(60)), None);
        assert_eq!(
            p.try_start(t0 + Duration::from_secs(60)),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn pacer_hold_blocks_until_then() {
        let mut p = Pacer::new(2, Duration::from_secs(10));
        let t0 = Instant::now() + Duration::from_secs(100);
        p.hold_until(t0 + Duration::from_secs(5));
        assert_eq!(p.try_start(t0), Some(Duration::from_secs(5)));
        assert_eq!(p.try_start(t0 + Duration::from_secs(5)), None);
    }

    #[test]
    fn zero_window_never_waits() {
        let mut p = Pacer::new(1, Duration::ZERO);
        let t = Instant::now();
        for _ in 0..10 {
            assert_eq!(p.try_start(t), None);
        }
    }
}

//! Retrying: exponential backoff, the server's `Retry-After`, and the loop
//! that runs one request until it succeeds, fails for good, or retries run out.

use std::time::Duration;

use super::Failure;
use super::pace::Pace;
use crate::error::{Error, Result};

/// Exponential backoff with full jitter, capped, where a server's
/// `Retry-After` takes precedence.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub(crate) base: Duration,
    pub(crate) max: Duration,
}

impl Backoff {
    /// The wait before retry number `attempt` (1 for the first retry).
    pub(crate) fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
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
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
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

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    pub(crate) backoff: Backoff,
    pub(crate) max_retries: u32,
}

impl Retry {
    /// Runs `attempt` until it succeeds, fails for good, or retries run out.
    /// A `Retry-After` from the server also holds `pace`, so no other request
    /// of that kind starts before the server is ready.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        what: &str,
        pace: Option<&Pace>,
        mut attempt: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, Failure>>,
    {
        let mut tries = 0u32;
        loop {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry { why, retry_after }) => {
                    tries += 1;
                    if tries > self.max_retries {
                        return Err(Error::Api(format!(
                            "{what}: giving up after {tries} attempts: {why}; the STATE written so far is safe to resume from: re-run later, or raise max_retries"
                        )));
                    }
                    let wait = self.backoff.delay(tries, retry_after);
                    if let (Some(pause), Some(pace)) = (retry_after, pace) {
                        pace.hold(pause).await;
                    }
                    tracing::warn!(
                        "{what}: attempt {tries} failed: {why}; retrying in {:.1}s ({} retries left)",
                        wait.as_secs_f64(),
                        self.max_retries - tries + 1
                    );
                    tokio::time::sleep(wait).await;
                }
            }
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
}

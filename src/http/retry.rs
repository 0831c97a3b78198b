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
/// date. See [`Retry::longest_wait`] for how long the tap is willing to wait.
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
    // A century stands for "absurdly long" and keeps the arithmetic in range.
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3.2e9)))
}

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    pub(crate) backoff: Backoff,
    pub(crate) max_retries: u32,
}

/// A `Retry-After` up to this long is always waited out (FullStory's own
/// rate limit asks for up to a minute), even with a smaller `retry_max_delay`.
const RETRY_AFTER_FLOOR: Duration = Duration::from_secs(60);

impl Retry {
    /// The policy the settings give, used for every request of a run.
    pub(crate) fn from_config(config: &crate::config::Config) -> Retry {
        Retry {
            backoff: Backoff {
                base: config.retry_base_delay,
                max: config.retry_max_delay,
            },
            max_retries: config.max_retries,
        }
    }

    /// The longest `Retry-After` the tap waits out: `retry_max_delay`, or a
    /// minute if that is less. A server asking for more ends the run, since
    /// sleeping for hours inside a scheduled job helps nobody.
    pub(crate) fn longest_wait(&self) -> Duration {
        self.backoff.max.max(RETRY_AFTER_FLOOR)
    }

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
                // Only callers that expect deletions ask for this; retrying
                // cannot bring the resource back.
                Err(Failure::Gone(why)) => return Err(Error::Gone(format!("{what}: {why}"))),
                Err(Failure::Retry {
                    why, retry_after, ..
                }) => {
                    if let Some(wait) = retry_after.filter(|w| *w > self.longest_wait()) {
                        return Err(Error::Api(too_long(what, &why, wait, self.longest_wait())));
                    }
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

/// The error for a `Retry-After` past what the tap waits.
fn too_long(what: &str, why: &str, wait: Duration, longest: Duration) -> String {
    let until = chrono::Duration::from_std(wait)
        .ok()
        .and_then(|d| chrono::Utc::now().checked_add_signed(d))
        // Rounded up to the second: "until" must not be too early.
        .and_then(|at| {
            crate::time::from_unix(at.timestamp() + i64::from(at.timestamp_subsec_nanos() > 0))
        })
        .map(|at| format!(" (until {})", crate::time::format_rfc3339(at)))
        .unwrap_or_default();
    format!(
        "{what}: {why}; the server asks to wait {}{until}, longer than the {} the tap waits at most (retry_max_delay, or a minute if less); the STATE written so far is safe to resume from: re-run after that",
        human_wait(wait),
        human_wait(longest)
    )
}

/// A wait as `26h05m`, `3m04s` or `5s`, rounded up.
fn human_wait(wait: Duration) -> String {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s:02}s"),
        _ => format!("{h}h{m:02}m"),
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
    fn waits_read_as_people_write_them() {
        assert_eq!(human_wait(Duration::from_secs(5)), "5s");
        assert_eq!(human_wait(Duration::from_millis(4500)), "5s");
        assert_eq!(human_wait(Duration::from_secs(184)), "3m04s");
        assert_eq!(human_wait(Duration::from_secs(86_400)), "24h00m");
        assert_eq!(human_wait(Duration::from_secs(7_500)), "2h05m");
    }

    fn retry(max: u64) -> Retry {
        Retry {
            backoff: Backoff {
                base: Duration::from_millis(1),
                max: Duration::from_secs(max),
            },
            max_retries: 3,
        }
    }

    #[tokio::test]
    async fn a_retry_after_past_the_cap_fails_at_once_naming_when_to_rerun() {
        let mut calls = 0;
        let started = std::time::Instant::now();
        let result: Result<()> = retry(120)
            .run("listing", None, || {
                calls += 1;
                async {
                    Err(Failure::Retry {
                        why: "HTTP 429".into(),
                        retry_after: parse_retry_after("86400"),
                        throttled: true,
                    })
                }
            })
            .await;
        let text = result.unwrap_err().to_string();
        assert_eq!(calls, 1);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(text.contains("wait 24h00m (until 20"), "{text}");
        // A whole second, as in "2026-11-27T11:26:08Z".
        let until = &text[text.find("(until ").unwrap() + 7..];
        assert_eq!(until.find(')'), Some(20), "{text}");
        assert!(text.contains("re-run after that"), "{text}");
    }

    #[test]
    fn the_cap_is_retry_max_delay_but_at_least_a_minute() {
        assert_eq!(retry(120).longest_wait(), Duration::from_secs(120));
        assert_eq!(retry(1).longest_wait(), Duration::from_secs(60));
    }

    #[test]
    fn retry_after_parsing() {
        assert_eq!(parse_retry_after("5"), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(
            parse_retry_after("86400"),
            Some(Duration::from_secs(86_400))
        );
        assert!(parse_retry_after("1e300").is_some());
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

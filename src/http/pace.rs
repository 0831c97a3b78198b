//! Pacing requests to a rate limit: a sliding window per endpoint.

use std::time::{Duration, Instant};

use sliding_window::SlidingWindow;
use tokio::sync::Mutex;

/// Paces one endpoint's requests, shared by the tasks that make them.
#[derive(Debug)]
pub(crate) struct Pace {
    /// What is paced, for the log line (e.g. "downloads").
    what: &'static str,
    pacer: Mutex<Pacer>,
}

impl Pace {
    /// At most `limit` starts per `window`; a zero window never waits.
    pub(crate) fn new(what: &'static str, limit: u32, window: Duration) -> Pace {
        Pace {
            what,
            pacer: Mutex::new(Pacer::new(limit, window)),
        }
    }

    /// Waits until a request may start, and counts it.
    pub(crate) async fn wait(&self) {
        loop {
            let wait = self.pacer.lock().await.try_start(Instant::now());
            match wait {
                None => return,
                Some(wait) => {
                    tracing::info!(
                        "pacing {} to the rate limit: waiting {:.1}s",
                        self.what,
                        wait.as_secs_f64()
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Tells the pacer that the server asked for a pause.
    pub(crate) async fn hold(&self, wait: Duration) {
        self.pacer.lock().await.hold_until(Instant::now() + wait);
    }
}

/// A sliding-window limit: at most `limit` starts in any `window`.
#[derive(Debug)]
pub(crate) struct Pacer {
    window: SlidingWindow,
}

impl Pacer {
    /// A pacer allowing `limit` starts per `window`; a zero window never waits.
    pub(crate) fn new(limit: u32, window: Duration) -> Pacer {
        Pacer {
            window: SlidingWindow::new(limit.max(1) as usize, window),
        }
    }

    /// Records a start at `now` and returns `None`, or returns how long to
    /// wait before one is allowed.
    pub(crate) fn try_start(&mut self, now: Instant) -> Option<Duration> {
        if self.window.window().is_zero() {
            return None;
        }
        self.window.try_admit(now).err()
    }

    /// Pushes every recorded start back so none is allowed before `until`;
    /// used after a 429, when the server's clock is what counts.
    pub(crate) fn hold_until(&mut self, until: Instant) {
        self.window.hold_until(until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

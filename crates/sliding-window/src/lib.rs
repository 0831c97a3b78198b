//! A sliding-window rate limit: at most `limit` starts in any `window`.
//!
//! The tap paces its bundle downloads with it, and the demo server enforces
//! FullStory's download limit with it, so both sides count the same way.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The starts admitted in the last `window`, oldest first.
#[derive(Debug, Clone)]
pub struct SlidingWindow {
    limit: usize,
    window: Duration,
    starts: VecDeque<Instant>,
}

impl SlidingWindow {
    /// A window admitting `limit` starts per `window`. A limit of 0 admits
    /// nothing; a zero window forgets every start at once.
    pub fn new(limit: usize, window: Duration) -> SlidingWindow {
        SlidingWindow {
            limit,
            window,
            starts: VecDeque::new(),
        }
    }

    /// The length of the window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Records a start at `now`, or returns how long until the oldest start
    /// leaves the window (the whole window when the limit is 0).
    pub fn try_admit(&mut self, now: Instant) -> Result<(), Duration> {
        while self
            .starts
            .front()
            .is_some_and(|&first| now.duration_since(first) >= self.window)
        {
            self.starts.pop_front();
        }
        if self.starts.len() < self.limit {
            self.starts.push_back(now);
            return Ok(());
        }
        Err(match self.starts.front() {
            Some(&oldest) => (oldest + self.window).saturating_duration_since(now),
            None => self.window,
        })
    }

    /// Moves every recorded start forward so that no start is admitted before
    /// `until`: for when the other side's clock is what counts (a 429).
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

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn admits_limit_per_window_then_says_how_long_to_wait() {
        let mut w = SlidingWindow::new(2, 60 * SEC);
        let t0 = Instant::now();
        assert_eq!(w.try_admit(t0), Ok(()));
        assert_eq!(w.try_admit(t0 + SEC), Ok(()));
        assert_eq!(w.try_admit(t0 + 10 * SEC), Err(50 * SEC));
        // A refused start is not recorded.
        assert_eq!(w.try_admit(t0 + 59 * SEC), Err(SEC));
        assert_eq!(w.try_admit(t0 + 60 * SEC), Ok(()));
        assert_eq!(w.try_admit(t0 + 60 * SEC), Err(SEC));
        assert_eq!(w.try_admit(t0 + 61 * SEC), Ok(()));
    }

    #[test]
    fn zero_limit_admits_nothing_and_waits_a_window() {
        let mut w = SlidingWindow::new(0, 60 * SEC);
        let t0 = Instant::now();
        assert_eq!(w.try_admit(t0), Err(60 * SEC));
        assert_eq!(w.try_admit(t0 + 600 * SEC), Err(60 * SEC));
    }

    #[test]
    fn zero_window_admits_everything() {
        let mut w = SlidingWindow::new(1, Duration::ZERO);
        let t = Instant::now();
        for _ in 0..10 {
            assert_eq!(w.try_admit(t), Ok(()));
        }
    }

    #[test]
    fn hold_blocks_until_then_and_frees_the_full_limit() {
        let mut w = SlidingWindow::new(2, 10 * SEC);
        let t0 = Instant::now() + 100 * SEC;
        assert_eq!(w.try_admit(t0 - 8 * SEC), Ok(()));
        w.hold_until(t0 + 5 * SEC);
        assert_eq!(w.try_admit(t0), Err(5 * SEC));
        assert_eq!(w.try_admit(t0 + 5 * SEC), Ok(()));
        assert_eq!(w.try_admit(t0 + 5 * SEC), Ok(()));
        assert_eq!(w.try_admit(t0 + 5 * SEC), Err(10 * SEC));
    }
}

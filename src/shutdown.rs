//! Stopping on SIGINT and SIGTERM without splitting a unit.
//!
//! A signal reaches the run two ways. The CLI's `select!` drops the sync
//! while it waits (on a download, a poll, a page), which stops it at once.
//! But a unit being copied to a slow target keeps the sync busy, and the
//! next unit may already be fetched when that copy ends, so the sync can go
//! from one commit to the next without waiting at all. The [`Stop`] flag
//! covers that case: the pipeline reads it before each commit and ends the
//! run there, with every unit written so far covered by its STATE.
//!
//! The [`watchdog`] bounds the wait for the unit already going out: it ends
//! the process once the target has taken nothing for [`STALL`], or at a
//! second signal. A target that reads, however slowly, gets the whole unit
//! and its STATE.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use crate::error::{Error, Signal};

/// How long the output may take nothing, after a signal, before the
/// process stops without finishing the unit going out.
pub(crate) const STALL: Duration = Duration::from_secs(10);

/// Whether a signal has asked the run to stop, shared by the watchdog that
/// sets it and the pipeline that reads it between units.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stop(Arc<AtomicU8>);

impl Stop {
    /// Asks the run to stop at the next unit boundary.
    pub(crate) fn request(&self, signal: Signal) {
        let code = match signal {
            Signal::Int => 1,
            Signal::Term => 2,
        };
        let _ = self
            .0
            .compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// The first signal that asked the run to stop, if one has.
    pub(crate) fn requested(&self) -> Option<Signal> {
        match self.0.load(Ordering::SeqCst) {
            1 => Some(Signal::Int),
            2 => Some(Signal::Term),
            _ => None,
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn signal() -> Signal {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => Signal::Int,
        _ = term.recv() => Signal::Term,
    }
}

/// Waits for a signal and raises `stop`; then exits the process if the
/// output takes nothing for [`STALL`] (a target that stopped reading
/// without closing its input would block a write forever), or at once on a
/// second signal.
pub(crate) async fn watchdog(stop: Stop) {
    let first = signal().await;
    stop.request(first);
    let mut taken = crate::singer::bytes_out();
    loop {
        tokio::select! {
            () = tokio::time::sleep(STALL) => {}
            _ = signal() => break,
        }
        let now = crate::singer::bytes_out();
        if now == taken {
            break;
        }
        taken = now;
    }
    let err = Error::Interrupted(first);
    tracing::error!(
        "{err} (forced: the output stopped draining; records after the last STATE will be sent again next run)"
    );
    std::process::exit(err.exit_code());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_signal_is_the_one_kept() {
        let stop = Stop::default();
        assert_eq!(stop.requested(), None);
        stop.request(Signal::Term);
        stop.request(Signal::Int);
        assert_eq!(stop.clone().requested(), Some(Signal::Term));
    }
}

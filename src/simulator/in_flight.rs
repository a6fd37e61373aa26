//! How many token and ticket calls are being answered at once, and the most so far:
//! what a test or benchmark checks `refresh.max_concurrent_calls` against.
//!
//! Atomics rather than the state's mutex: a call is counted until its reply is ready,
//! injected delay included, and the state is never locked across that wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The counters; shared by every clone of the simulator.
#[derive(Debug, Default)]
pub struct InFlight {
    now: AtomicU64,
    max: AtomicU64,
}

/// Counts one call while it lives; dropped when the reply is ready or the client hung up.
pub struct Guard(Arc<InFlight>);

impl InFlight {
    /// Counts a call that has just arrived.
    pub fn enter(self: &Arc<Self>) -> Guard {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        Guard(self.clone())
    }

    /// (calls in flight now, the most at once since start or reset).
    pub fn read(&self) -> (u64, u64) {
        (
            self.now.load(Ordering::SeqCst),
            self.max.load(Ordering::SeqCst),
        )
    }

    /// Starts the maximum again from the calls in flight now.
    pub fn reset(&self) {
        self.max
            .store(self.now.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_maximum_remembers_the_peak_until_reset() {
        let counters = Arc::new(InFlight::default());
        let (a, b) = (counters.enter(), counters.enter());
        drop(a);
        let c = counters.enter();
        assert_eq!(counters.read(), (2, 2));
        drop((b, c));
        assert_eq!(counters.read(), (0, 2));
        counters.reset();
        assert_eq!(counters.read(), (0, 0));
    }
}

//! Time as the refresher sees it: the wall clock for what is stored and shared with
//! other instances, tokio's monotonic clock for deadlines.
//!
//! In production the wall clock is the system's. The deterministic simulation
//! (`tests/sim`) runs on tokio's paused clock and needs a wall clock that moves with
//! it, so the wall clock is a value handed to the refresher rather than
//! `SystemTime::now()` called wherever it is needed.

use std::time::SystemTime;

use tokio::time::Instant;

/// A wall clock: the system's, or one that follows tokio's (possibly paused) clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// `(wall time, tokio instant)` at the start of a simulated clock.
    simulated: Option<(SystemTime, Instant)>,
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Self {
        Self { simulated: None }
    }

    /// A wall clock that reads `start` now and then moves with tokio's clock: on a
    /// paused runtime it moves only when tokio's time does.
    pub fn simulated(start: SystemTime) -> Self {
        Self {
            simulated: Some((start, Instant::now())),
        }
    }

    /// The wall time now.
    pub fn now(&self) -> SystemTime {
        match self.simulated {
            None => SystemTime::now(),
            Some((start, at)) => start + at.elapsed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_simulated_clock_moves_with_tokio_time() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let clock = Clock::simulated(start);
        assert_eq!(clock.now(), start);
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now(), start + Duration::from_secs(90));
    }
}

//! Rate-limited log lines: a few lines per interval, the rest counted for a summary.
//!
//! A client hammering the server with a wrong key must not fill the disk with one warn
//! line per request, nor drown the lines that matter (SPEC.md, "Inbound limits").
//! [`LogLimiter::admit`] says whether to write one more line; what it refuses is
//! counted, and the owner writes one summary line per interval with
//! [`LogLimiter::take_suppressed`] (see `App::run`).
//!
//! Lock-free: one compare-and-swap on a line that is written anyway, one atomic add on a
//! suppressed one. Nothing is allocated.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Length of a window, and the period of the summary lines: long enough that a flood
/// costs a handful of lines a minute, short enough that the summary is news.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Lines written per window: enough to show who is refused and why (a flood usually
/// repeats one reason), few enough not to matter in any log volume.
pub const LOG_BURST: u32 = 5;

/// Admits at most `burst` lines per `interval`; counts the rest.
#[derive(Debug)]
pub struct LogLimiter {
    epoch: Instant,
    interval_ms: u64,
    burst: u32,
    /// The current window's number (high 32 bits) and the lines admitted in it (low 32
    /// bits), in one word so that a new window and its first line are one swap.
    window: AtomicU64,
    /// Lines refused since the last [`take_suppressed`](Self::take_suppressed).
    suppressed: AtomicU64,
}

impl Default for LogLimiter {
    /// [`LOG_BURST`] lines per [`LOG_INTERVAL`].
    fn default() -> Self {
        Self::new(LOG_BURST, LOG_INTERVAL)
    }
}

impl LogLimiter {
    /// At most `burst` lines per `interval` (windows aligned on the limiter's creation).
    pub fn new(burst: u32, interval: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            interval_ms: u64::try_from(interval.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            burst,
            window: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a line may be written at `now`; when not, it is counted as suppressed.
    pub fn admit(&self, now: Instant) -> bool {
        let elapsed = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        // 2^32 windows of 10 s are 1,361 years: the number never wraps in practice.
        let number = (elapsed / self.interval_ms).min(u64::from(u32::MAX));
        let mut current = self.window.load(Ordering::Relaxed);
        loop {
            let (window, admitted) = (current >> 32, current & u64::from(u32::MAX));
            // A thread whose `now` is a little older than the window another thread
            // opened counts against that window: windows only move forward.
            let next = if number > window {
                (number << 32) | 1
            } else if admitted < u64::from(self.burst) {
                current + 1
            } else {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                return false;
            };
            match self.window.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// The lines suppressed since the last call, for the summary line; resets the count.
    pub fn take_suppressed(&self) -> u64 {
        self.suppressed.swap(0, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_gets_a_few_lines_per_interval_and_the_rest_is_counted() {
        let limiter = LogLimiter::new(3, Duration::from_secs(10));
        let start = limiter.epoch;
        let admitted = (0..100)
            .filter(|i| limiter.admit(start + Duration::from_millis(i * 10)))
            .count();
        assert_eq!(admitted, 3);
        assert_eq!(limiter.take_suppressed(), 97);
        assert_eq!(
            limiter.take_suppressed(),
            0,
            "the count restarts after a summary"
        );

        // The next window admits lines again.
        let later = start + Duration::from_secs(10);
        assert!(limiter.admit(later));
        assert!(limiter.admit(later));
        assert!(limiter.admit(later));
        assert!(!limiter.admit(later));
        assert_eq!(limiter.take_suppressed(), 1);
    }

    #[test]
    fn a_late_caller_counts_against_the_newer_window() {
        let limiter = LogLimiter::new(1, Duration::from_secs(10));
        let start = limiter.epoch;
        assert!(limiter.admit(start + Duration::from_secs(25)));
        // An older `now` (read before a thread switch) neither reopens window 1 nor
        // gets a second line into window 2.
        assert!(!limiter.admit(start + Duration::from_secs(15)));
        assert_eq!(limiter.take_suppressed(), 1);
    }

    #[test]
    fn threads_racing_on_one_window_get_exactly_the_burst() {
        let limiter = std::sync::Arc::new(LogLimiter::new(5, Duration::from_secs(3600)));
        let now = Instant::now();
        let admitted: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let limiter = limiter.clone();
                    scope.spawn(move || (0..1000).filter(|_| limiter.admit(now)).count())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(admitted, 5);
        assert_eq!(limiter.take_suppressed(), 3995);
    }
}

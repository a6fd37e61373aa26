//! The simulator's clock: real time plus an offset that tests and demos can advance.
//!
//! Lifetimes, grace periods and the 30 s spacing of forced stable_token calls are all
//! measured on this clock, so a test can jump two hours ahead with one call instead of
//! sleeping, and the result does not depend on how busy the machine is.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Seconds in a day.
const DAY_SECS: u64 = 86_400;

/// Furthest the clock may be advanced in total. Far past any token's life, and far from
/// the point where adding to an `Instant` would overflow.
pub const MAX_OFFSET: Duration = Duration::from_secs(100 * 365 * DAY_SECS);

/// Daily quotas and the 20 forced stable_token calls per day reset when WeChat's day
/// changes; the server's quota guard uses the same function.
pub use crate::domain::wechat_day;

/// Monotonic time plus an adjustable offset, with the wall-clock time it corresponds to.
#[derive(Debug)]
pub struct Clock {
    /// When the simulator started, on tokio's monotonic clock.
    started: Instant,
    /// Unix time at `started`; only used to find WeChat's day.
    started_unix: Duration,
    /// How far the simulator has been moved ahead of real time.
    offset: Duration,
}

impl Clock {
    /// A clock that reads real time until advanced.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            // A system clock before 1970 is a broken machine; day 0 is a fine answer there.
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
            offset: Duration::ZERO,
        }
    }

    /// The simulator's current instant: every expiry is compared with this.
    pub fn now(&self) -> Instant {
        Instant::now() + self.offset
    }

    /// Moves the clock ahead (in total at most [`MAX_OFFSET`]); it never goes back, so
    /// issued credentials stay consistent.
    pub fn advance(&mut self, by: Duration) {
        self.offset = self.offset.saturating_add(by).min(MAX_OFFSET);
    }

    /// Total amount the clock has been advanced.
    pub fn offset(&self) -> Duration {
        self.offset
    }

    /// Unix seconds at the simulator's current instant.
    pub fn unix_secs(&self) -> u64 {
        (self.started_unix + (self.now() - self.started)).as_secs()
    }

    /// WeChat's day (UTC+8) at the simulator's current instant.
    pub fn day(&self) -> u64 {
        wechat_day(self.unix_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unix_epoch_is_in_day_zero_since_it_is_8am_in_china() {
        assert_eq!(wechat_day(0), 0);
    }

    #[test]
    fn the_day_changes_at_16_00_utc_which_is_midnight_in_china() {
        // 1970-01-01T15:59:59Z is 23:59:59 in Beijing; one second later is the next day.
        assert_eq!(wechat_day(57_599), 0);
        assert_eq!(wechat_day(57_600), 1);
    }

    #[test]
    fn new_year_2024_in_beijing_starts_a_new_day_at_its_utc_instant() {
        // 2024-01-01T00:00:00+08:00 = 2023-12-31T16:00:00Z = 1_704_038_400.
        let midnight = 1_704_038_400;
        assert_eq!(wechat_day(midnight), 19_723);
        assert_eq!(wechat_day(midnight - 1), 19_722);
        assert_eq!(wechat_day(midnight + DAY_SECS - 1), 19_723);
    }

    #[test]
    fn utc_midnight_is_in_the_same_wechat_day_as_the_evening_before() {
        // 2024-01-02T00:00:00Z is 08:00 in Beijing on January 2nd, same day as 16:00Z Jan 1.
        assert_eq!(wechat_day(1_704_153_600), wechat_day(1_704_124_800));
    }

    #[tokio::test(start_paused = true)]
    async fn advancing_moves_now_and_the_day_forward() {
        let mut clock = Clock::new();
        let (before, day) = (clock.now(), clock.day());
        clock.advance(Duration::from_secs(DAY_SECS));
        assert_eq!(clock.now() - before, Duration::from_secs(DAY_SECS));
        assert_eq!(clock.day(), day + 1);
        assert_eq!(clock.offset(), Duration::from_secs(DAY_SECS));
    }
}

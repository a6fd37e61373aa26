//! What a credential's refreshes did lately, for the status page's 24-hour timeline:
//! the last [`CAPACITY`] outcomes, each a time and whether it failed.
//!
//! Kept small on purpose: a server holds it for every credential (20,000 at 10,000
//! apps). An event is one `u64` (Unix seconds shifted left, the low bit saying
//! "failed"), the ring grows only as events arrive (a token refreshed on schedule
//! records 12 a day, so its ring stays at 16 slots, 128 bytes) and never past
//! [`CAPACITY`] (512 bytes), whatever WeChat does. Events older than a day are left
//! where they are and skipped when read: nothing needs to run to expire them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Most events kept per credential: a failing token retried every second would fill
/// any ring, and the newest are what a person looks at.
pub const CAPACITY: usize = 64;

/// How far back the timeline reaches.
pub const WINDOW: Duration = Duration::from_secs(24 * 3600);

/// One refresh outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// When it ended, to the second.
    pub at: SystemTime,
    pub failed: bool,
}

/// The ring of one credential's recent events.
#[derive(Debug, Default)]
pub struct History {
    /// Packed events; once full, `next` is the oldest one, overwritten next.
    events: Vec<u64>,
    next: usize,
}

fn pack(event: Event) -> u64 {
    let secs = event
        .at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    (secs << 1) | u64::from(event.failed)
}

fn unpack(packed: u64) -> Event {
    Event {
        at: UNIX_EPOCH + Duration::from_secs(packed >> 1),
        failed: packed & 1 == 1,
    }
}

impl History {
    /// Records one outcome at `at`.
    pub fn record(&mut self, at: SystemTime, failed: bool) {
        let packed = pack(Event { at, failed });
        if self.events.len() < CAPACITY {
            self.events.push(packed);
        } else {
            self.events[self.next] = packed;
            self.next = (self.next + 1) % CAPACITY;
        }
    }

    /// The events of the [`WINDOW`] before `now`, oldest first.
    pub fn recent(&self, now: SystemTime) -> Vec<Event> {
        let since = now.checked_sub(WINDOW).unwrap_or(UNIX_EPOCH);
        let (newer, older) = self.events.split_at(self.next);
        older
            .iter()
            .chain(newer)
            .map(|&packed| unpack(packed))
            .filter(|event| event.at >= since && event.at <= now)
            .collect()
    }

    /// Bytes held for the events (what the ring costs a credential beyond its own
    /// fixed size).
    pub fn heap_bytes(&self) -> usize {
        self.events.capacity() * std::mem::size_of::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn events_come_back_oldest_first_with_their_outcome() {
        let mut history = History::default();
        history.record(at(10), false);
        history.record(at(20), true);
        assert_eq!(
            history.recent(at(30)),
            [
                Event {
                    at: at(10),
                    failed: false
                },
                Event {
                    at: at(20),
                    failed: true
                }
            ]
        );
    }

    #[test]
    fn the_ring_keeps_the_newest_events_and_never_grows_past_its_capacity() {
        let mut history = History::default();
        for i in 0..1000 {
            history.record(at(i), i % 7 == 0);
        }
        let recent = history.recent(at(1000));
        assert_eq!(recent.len(), CAPACITY);
        assert_eq!(recent.first().unwrap().at, at(1000 - CAPACITY as u64));
        assert_eq!(recent.last().unwrap().at, at(999));
        assert!(recent.windows(2).all(|w| w[0].at < w[1].at));
        assert_eq!(history.heap_bytes(), CAPACITY * 8);
    }

    #[test]
    fn a_quiet_credential_holds_little_and_an_empty_one_nothing() {
        assert_eq!(History::default().heap_bytes(), 0);
        let mut history = History::default();
        for i in 0..12 {
            history.record(at(i * 7200), false);
        }
        assert!(history.heap_bytes() <= 16 * 8, "{}", history.heap_bytes());
    }

    #[test]
    fn events_older_than_a_day_are_not_shown() {
        let mut history = History::default();
        history.record(at(0), true);
        history.record(at(3600), false);
        let day_later = at(3600) + WINDOW - Duration::from_secs(1);
        assert_eq!(
            history.recent(day_later),
            [Event {
                at: at(3600),
                failed: false
            }]
        );
    }
}

//! The quota guard: WeChat allows each app 2000 calls a day to `/cgi-bin/token`
//! (`[quota] daily_limit`), counted per WeChat day (midnight to midnight China time).
//! A server that burns them on force refreshes and retries cannot renew its token in
//! the evening, and every WeChat call of the company fails until midnight.
//!
//! So every upstream call is counted per app and endpoint, in the store (restarts and
//! cluster members share the count), and:
//! - discretionary calls (force refreshes, retries while a token is still served) stop
//!   once `daily_limit - reserve` calls were made today;
//! - essential calls (a scheduled refresh, or any refresh while no token is held) may
//!   use the reserve: they are what keeps the token alive;
//! - once WeChat answers 45009 (quota used up), that endpoint of that app is not called
//!   again until WeChat's day rolls over (or the server restarts, after a person used
//!   `clear_quota`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::Trigger;
use crate::config::QuotaConfig;
use crate::domain::{wechat_day_at, wechat_day_start};
use crate::metrics::CredentialLabels;
use crate::store::TokenStore;
use crate::upstream;

/// WeChat's "reach max api daily quota limit".
pub const QUOTA_ERRCODE: i64 = 45009;

/// How much a call matters, which decides whether it may use the reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    /// Keeps the token alive: may use the whole daily limit.
    Essential,
    /// Could be skipped without losing the token: stops at `daily_limit - reserve`.
    Discretionary,
}

impl Spend {
    /// The class of a call for a refresh with `trigger`; `retry` when the credential's
    /// previous attempt failed, `live` when a token with life left is being served.
    pub fn of(trigger: Trigger, retry: bool, live: bool) -> Self {
        let essential = match trigger {
            Trigger::Scheduled => !retry || !live,
            Trigger::Dependency => !live,
            Trigger::Forced | Trigger::Restored | Trigger::Peer => false,
        };
        if essential {
            Spend::Essential
        } else {
            Spend::Discretionary
        }
    }
}

/// Why the guard refused a call. No call was made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "quota reserved: {used} of today's {limit} calls to {endpoint} are used; the last {reserve} are kept for scheduled refreshes, so force refreshes and retries wait until midnight China time"
    )]
    Reserved {
        endpoint: Arc<str>,
        used: u64,
        limit: u64,
        reserve: u64,
    },
    #[error(
        "WeChat's daily quota of {endpoint} is used up (errcode 45009): no calls until midnight China time"
    )]
    Exhausted { endpoint: Arc<str> },
}

/// Today's use of one app's endpoint, for the status page and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Calls counted today (WeChat's day).
    pub used: u64,
    /// `[quota] daily_limit`.
    pub limit: u64,
    /// WeChat answered 45009 today: no calls until midnight China time.
    pub exhausted: bool,
}

/// What the guard remembers per app and endpoint.
#[derive(Debug, Default)]
struct Day {
    day: u64,
    used: u64,
    exhausted: bool,
    /// The "reserve reached" warning was logged today.
    warned: bool,
}

impl Day {
    /// Forgets yesterday: WeChat's quota has been reset.
    fn roll(&mut self, day: u64) {
        if self.day != day {
            *self = Day {
                day,
                ..Day::default()
            };
        }
    }
}

type Key = (Arc<str>, Arc<str>);

/// Counts calls and refuses those the quota cannot afford.
pub struct QuotaGuard {
    settings: QuotaConfig,
    store: Arc<dyn TokenStore>,
    /// (app, endpoint) -> today's use. A std lock, never held across an await.
    days: Mutex<HashMap<Key, Day>>,
}

fn key(labels: &CredentialLabels) -> Key {
    (labels.app.clone(), labels.endpoint.clone())
}

impl QuotaGuard {
    pub fn new(settings: QuotaConfig, store: Arc<dyn TokenStore>) -> Self {
        Self {
            settings,
            store,
            days: Mutex::new(HashMap::new()),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> QuotaConfig {
        self.settings
    }

    fn days(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Day>> {
        self.days.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads today's counts of `apps` from the store, so a restart does not start the
    /// day from zero.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn restore<'a>(
        &self,
        apps: impl IntoIterator<Item = &'a Arc<str>>,
        now: SystemTime,
    ) -> Result<(), crate::store::Error> {
        let day = wechat_day_at(now);
        let apps: Vec<&Arc<str>> = apps.into_iter().collect();
        let names: Vec<&str> = apps.iter().map(|app| &***app).collect();
        let counts = self.store.load_quotas(&names, day).await?;
        let mut days = self.days();
        for (app, counts) in apps.into_iter().zip(counts) {
            for (endpoint, used) in counts {
                let entry = days.entry((app.clone(), endpoint.into())).or_default();
                entry.roll(day);
                entry.used = entry.used.max(used);
            }
        }
        Ok(())
    }

    /// Admits one call to the endpoint of `labels` (and counts it), or refuses it.
    ///
    /// # Errors
    /// The [`Refusal`] when the call must not be made.
    pub fn admit(
        &self,
        labels: &CredentialLabels,
        spend: Spend,
        now: SystemTime,
    ) -> Result<(), Refusal> {
        self.decide(labels, spend, now, true)
    }

    /// Would a call be admitted now? Like [`admit`](Self::admit), without counting it.
    ///
    /// # Errors
    /// The [`Refusal`] a call would get.
    pub fn check(
        &self,
        labels: &CredentialLabels,
        spend: Spend,
        now: SystemTime,
    ) -> Result<(), Refusal> {
        self.decide(labels, spend, now, false)
    }

    fn decide(
        &self,
        labels: &CredentialLabels,
        spend: Spend,
        now: SystemTime,
        count: bool,
    ) -> Result<(), Refusal> {
        let mut days = self.days();
        let today = days.entry(key(labels)).or_default();
        today.roll(wechat_day_at(now));
        if today.exhausted {
            return Err(Refusal::Exhausted {
                endpoint: labels.endpoint.clone(),
            });
        }
        let limit = self.settings.discretionary_limit();
        if spend == Spend::Discretionary && today.used >= limit {
            if !std::mem::replace(&mut today.warned, true) {
                tracing::warn!(
                    app = %labels.app, endpoint = %labels.endpoint, used = today.used,
                    daily_limit = self.settings.daily_limit, reserve = self.settings.reserve,
                    "quota reserve reached: force refreshes and retries wait until midnight China time; scheduled refreshes go on"
                );
            }
            return Err(Refusal::Reserved {
                endpoint: labels.endpoint.clone(),
                used: today.used,
                limit: self.settings.daily_limit,
                reserve: self.settings.reserve,
            });
        }
        if count {
            today.used += 1;
        }
        Ok(())
    }

    /// Records an admitted call once it ended: stores the count (keeping the larger of
    /// ours and the store's, which counts other instances too), and on 45009 stops the
    /// endpoint until WeChat's day rolls over.
    pub async fn record(
        &self,
        labels: &CredentialLabels,
        error: Option<&upstream::Error>,
        now: SystemTime,
    ) {
        let day = wechat_day_at(now);
        let stored = self
            .store
            .add_quota_use(&labels.app, &labels.endpoint, day)
            .await;
        let mut days = self.days();
        let today = days.entry(key(labels)).or_default();
        today.roll(day);
        match stored {
            Ok(count) => today.used = today.used.max(count),
            Err(e) => tracing::warn!(
                app = %labels.app, endpoint = %labels.endpoint, backend = self.store.backend(), error = %e,
                "cannot store the quota count; counting in memory"
            ),
        }
        if error.and_then(upstream::Error::errcode) == Some(QUOTA_ERRCODE) && !today.exhausted {
            today.exhausted = true;
            tracing::error!(
                app = %labels.app, endpoint = %labels.endpoint, used_today = today.used,
                "WeChat's daily quota is used up (errcode 45009): no more calls to this API until midnight China time; a person can reset it with clear_quota (10 times a month), then restart this server"
            );
        }
    }

    /// When the endpoint of `labels` may be called again, if WeChat said 45009 today.
    pub fn blocked_until(&self, labels: &CredentialLabels, now: SystemTime) -> Option<SystemTime> {
        let day = wechat_day_at(now);
        let days = self.days();
        let today = days.get(&key(labels))?;
        (today.day == day && today.exhausted).then(|| wechat_day_start(day + 1))
    }

    /// Today's use of the endpoint of `labels`.
    pub fn usage(&self, labels: &CredentialLabels, now: SystemTime) -> Usage {
        let day = wechat_day_at(now);
        let days = self.days();
        let (used, exhausted) = days
            .get(&key(labels))
            .filter(|d| d.day == day)
            .map_or((0, false), |d| (d.used, d.exhausted));
        Usage {
            used,
            limit: self.settings.daily_limit,
            exhausted,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::wechat_day_start;
    use crate::store::MemoryStore;

    fn guard(daily_limit: u64, reserve: u64) -> QuotaGuard {
        QuotaGuard::new(
            QuotaConfig {
                daily_limit,
                reserve,
            },
            Arc::new(MemoryStore::new()),
        )
    }

    fn labels() -> CredentialLabels {
        CredentialLabels::new("default", "access_token", "/cgi-bin/token")
    }

    #[test]
    fn forced_calls_and_retries_are_discretionary_scheduled_ones_essential() {
        use Trigger::*;
        assert_eq!(Spend::of(Forced, false, true), Spend::Discretionary);
        assert_eq!(Spend::of(Forced, false, false), Spend::Discretionary);
        assert_eq!(Spend::of(Scheduled, false, true), Spend::Essential);
        assert_eq!(Spend::of(Scheduled, true, true), Spend::Discretionary);
        assert_eq!(Spend::of(Scheduled, true, false), Spend::Essential);
        assert_eq!(Spend::of(Dependency, false, true), Spend::Discretionary);
        assert_eq!(Spend::of(Dependency, false, false), Spend::Essential);
    }

    #[tokio::test]
    async fn the_reserve_is_kept_for_essential_calls() {
        let g = guard(10, 3);
        let (l, now) = (labels(), SystemTime::now());
        for _ in 0..7 {
            g.admit(&l, Spend::Discretionary, now).unwrap();
        }
        let refused = g.admit(&l, Spend::Discretionary, now).unwrap_err();
        assert!(
            matches!(refused, Refusal::Reserved { used: 7, .. }),
            "{refused}"
        );
        for _ in 0..5 {
            g.admit(&l, Spend::Essential, now).unwrap();
        }
        assert_eq!(g.usage(&l, now).used, 12);
    }

    #[tokio::test]
    async fn counts_are_stored_and_restored_for_today_only() {
        let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
        let settings = QuotaConfig {
            daily_limit: 10,
            reserve: 3,
        };
        let (l, now) = (labels(), SystemTime::now());
        let g = QuotaGuard::new(settings, store.clone());
        for _ in 0..4 {
            g.admit(&l, Spend::Essential, now).unwrap();
            g.record(&l, None, now).await;
        }
        let restarted = QuotaGuard::new(settings, store);
        restarted.restore([&l.app], now).await.unwrap();
        assert_eq!(restarted.usage(&l, now).used, 4);
        let tomorrow = wechat_day_start(wechat_day_at(now) + 1);
        assert_eq!(restarted.usage(&l, tomorrow).used, 0);
    }

    #[tokio::test]
    async fn a_45009_stops_the_endpoint_until_the_wechat_day_rolls_over() {
        let g = guard(2000, 200);
        let (l, now) = (labels(), SystemTime::now());
        g.admit(&l, Spend::Essential, now).unwrap();
        let quota = upstream::Error::WeChat {
            errcode: 45009,
            errmsg: "reach max api daily quota limit".into(),
        };
        g.record(&l, Some(&quota), now).await;
        assert!(g.usage(&l, now).exhausted);
        assert!(matches!(
            g.admit(&l, Spend::Essential, now),
            Err(Refusal::Exhausted { .. })
        ));
        let midnight = wechat_day_start(wechat_day_at(now) + 1);
        assert_eq!(g.blocked_until(&l, now), Some(midnight));
        // Other endpoints of the app are not affected.
        let ticket = CredentialLabels::new("default", "ticket", "/cgi-bin/ticket/getticket");
        g.admit(&ticket, Spend::Discretionary, now).unwrap();
        // After midnight China time, calls resume.
        let after = midnight + Duration::from_secs(1);
        assert_eq!(g.blocked_until(&l, after), None);
        g.admit(&l, Spend::Discretionary, after).unwrap();
        assert_eq!(g.usage(&l, after).used, 1);
    }
}

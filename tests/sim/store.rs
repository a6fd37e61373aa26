//! A model of the Redis store with its semantics (see `src/store/redis.rs`): per-key
//! records saved by compare-and-set on the version, pending marks (earliest wins,
//! none without a record, cleared by a save), leases (`SET NX PX` on tokio's clock),
//! quota counts, and a change feed (`PUBLISH` after each save, mark and clear, to
//! every subscriber; `Resynchronise` on each (re)subscription).
//!
//! Each instance reaches the shared state through its own handle, so that one
//! instance can be cut off: during an outage (every instance) or a partition (one),
//! an operation fails after 2 s, like a Redis timeout, and the feed loses what it
//! would have delivered (the subscriber gets `Resynchronise` once it is reachable
//! again). When slow, answers take up to 1.2 s. An operation that is applied and
//! whose answer is then cut off fails although it took effect. Operations of a
//! crashed instance fail and have no effect. A scenario with one instance may make it
//! unshared (`is_shared` false, no feed), like the embedded store.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::time::Instant;
use wechat_token_server::domain::CredentialKey;
use wechat_token_server::store::{
    Error, QuotaCounts, SaveOutcome, StoreEvent, StoredApp, StoredToken, TokenStore,
};

use crate::world::{World, lock};

/// How long an operation waits before failing when the store cannot be reached.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Subscriber {
    pub inst: usize,
    pub era: u64,
    pub tx: mpsc::Sender<StoreEvent>,
    /// Missed an event while cut off: owed a `Resynchronise`.
    pub missed: bool,
}

#[derive(Default)]
pub struct StoreState {
    pub records: BTreeMap<CredentialKey, StoredToken>,
    pub leases: BTreeMap<CredentialKey, (String, Instant)>,
    quota: BTreeMap<(String, String), (u64, u64)>,
    pub subscribers: Vec<Subscriber>,
    /// Per credential, the WeChat issue order of the last token saved (invariant (c)).
    pub last_saved_seq: BTreeMap<CredentialKey, u64>,
    pub saves: u64,
    /// Every token value ever saved.
    pub saved_values: BTreeSet<String>,
}

impl StoreState {
    fn publish(&mut self, world: &World, key: &CredentialKey) {
        for sub in &mut self.subscribers {
            if world.dead(sub.inst, sub.era) {
                continue;
            }
            if world.store_reachable(sub.inst) {
                let _ = sub.tx.try_send(StoreEvent::Changed(key.clone()));
            } else {
                sub.missed = true;
            }
        }
    }
}

/// After a heal: every reachable subscriber that missed events resubscribes, which
/// tells it to read everything again.
pub fn resubscribe(world: &World) {
    let mut store = lock(&world.store);
    for sub in &mut store.subscribers {
        if sub.missed && !world.dead(sub.inst, sub.era) && world.store_reachable(sub.inst) {
            sub.missed = false;
            let _ = sub.tx.try_send(StoreEvent::Resynchronise);
        }
    }
}

/// Sleeps `d`, or yields once when it is zero (so that other tasks may run between
/// an operation's steps, as they would with a real connection).
async fn pause(d: Duration) {
    if d.is_zero() {
        tokio::task::yield_now().await;
    } else {
        tokio::time::sleep(d).await;
    }
}

/// One instance's connection to the store.
pub struct StoreHandle {
    world: Arc<World>,
    inst: usize,
    era: u64,
}

fn unreachable_error(what: &str) -> Error {
    Error::Task(format!("simulated Redis: {what}"))
}

impl StoreHandle {
    pub fn new(world: Arc<World>, inst: usize, era: u64) -> Self {
        Self { world, inst, era }
    }

    fn latency(&self) -> Duration {
        let w = &self.world;
        if lock(&w.faults).store_slow {
            w.between(Duration::ZERO, Duration::from_millis(600))
        } else if w.chance(0.3) {
            w.between(Duration::from_millis(1), Duration::from_millis(3))
        } else {
            Duration::ZERO
        }
    }

    /// Runs `apply` on the shared state as instance `inst` would: with latency, the
    /// instance's faults and crash points.
    async fn op<T>(
        &self,
        name: &str,
        crash_weight: f64,
        apply: impl FnOnce(&mut StoreState, &World) -> T,
    ) -> Result<T, Error> {
        let (w, i, era) = (&self.world, self.inst, self.era);
        if w.crash_point(i, era, crash_weight, name) {
            return Err(unreachable_error("process is dead"));
        }
        if !w.store_reachable(i) {
            tokio::time::sleep(STORE_TIMEOUT).await;
            return Err(unreachable_error("timed out"));
        }
        let before = self.latency();
        pause(before).await;
        if w.dead(i, era) {
            return Err(unreachable_error("process is dead"));
        }
        if !w.store_reachable(i) {
            tokio::time::sleep(STORE_TIMEOUT.saturating_sub(before)).await;
            return Err(unreachable_error("timed out"));
        }
        let result = {
            let mut state = lock(&w.store);
            apply(&mut state, w)
        };
        pause(self.latency()).await;
        if w.crash_point(i, era, crash_weight, name) {
            return Err(unreachable_error("process is dead"));
        }
        if !w.store_reachable(i) {
            w.log(|l| {
                let _ = write!(l, "store {name} by i{i}.{era}: applied, answer lost");
            });
            return Err(unreachable_error("timed out (the command may have run)"));
        }
        Ok(result)
    }
}

impl StoreHandle {
    /// A save with Redis's semantics: over any older version, or (`expected`) over
    /// exactly that version.
    async fn store(
        &self,
        token: &StoredToken,
        expected: Option<u64>,
    ) -> Result<SaveOutcome, Error> {
        let (i, era) = (self.inst, self.era);
        self.op("save", 1.0, |s, w| {
            let key = token.key();
            let current = s.records.get(&key).map_or(0, |t| t.version);
            if current >= token.version || expected.is_some_and(|e| e != current) {
                w.log(|l| {
                    let _ = write!(l, "store save by i{i}.{era}: {key} v{} {} outdated", token.version, token.value);
                });
                return SaveOutcome::Outdated;
            }
            let mut record = token.clone();
            record.pending_since_ms = None;
            s.records.insert(key.clone(), record);
            s.saves += 1;
            s.saved_values.insert(token.value.clone());
            let seq = lock(&w.wechat).seq_of(&token.value).unwrap_or(0);
            let previous = s.last_saved_seq.insert(key.clone(), seq);
            w.log(|l| {
                let _ = write!(
                    l,
                    "store save by i{i}.{era}: {key} v{} {} (seq {seq}, announced {}) saved",
                    token.version, token.value, token.announced
                );
            });
            if let Some(previous) = previous
                && seq <= previous
            {
                let t = w.t();
                lock(&w.checker).violation(
                    t,
                    format!(
                        "(c) the store went back: {key} saved {} (issue seq {seq}, v{}) by i{i}.{era} over a token of issue seq {previous}",
                        token.value, token.version
                    ),
                );
            }
            s.publish(w, &key);
            SaveOutcome::Saved
        })
        .await
    }
}

#[async_trait]
impl TokenStore for StoreHandle {
    fn backend(&self) -> &'static str {
        "sim-redis"
    }

    async fn load_all(&self) -> Result<Vec<StoredToken>, Error> {
        self.op("load_all", 0.02, |s, _| {
            s.records.values().cloned().collect()
        })
        .await
    }

    async fn load(&self, key: &CredentialKey) -> Result<Option<StoredToken>, Error> {
        self.op("load", 0.2, |s, _| s.records.get(key).cloned())
            .await
    }

    async fn save(&self, token: &StoredToken) -> Result<SaveOutcome, Error> {
        self.store(token, None).await
    }

    async fn save_over(&self, token: &StoredToken, expected: u64) -> Result<SaveOutcome, Error> {
        self.store(token, Some(expected)).await
    }

    async fn mark_pending(&self, key: &CredentialKey, since_ms: u64) -> Result<(), Error> {
        let (i, era) = (self.inst, self.era);
        self.op("mark_pending", 1.0, |s, w| {
            let Some(record) = s.records.get_mut(key) else {
                return;
            };
            if record.pending_since_ms.is_none() {
                record.pending_since_ms = Some(since_ms);
                w.log(|l| {
                    let _ = write!(
                        l,
                        "store mark_pending by i{i}.{era}: {key} since {since_ms}"
                    );
                });
                s.publish(w, key);
            }
        })
        .await
    }

    async fn clear_pending(&self, key: &CredentialKey, since_ms: u64) -> Result<(), Error> {
        let (i, era) = (self.inst, self.era);
        self.op("clear_pending", 1.0, |s, w| {
            let Some(record) = s.records.get_mut(key) else {
                return;
            };
            if record.pending_since_ms == Some(since_ms) {
                record.pending_since_ms = None;
                w.log(|l| {
                    let _ = write!(l, "store clear_pending by i{i}.{era}: {key}");
                });
                s.publish(w, key);
            }
        })
        .await
    }

    // The simulation has no registry: its apps are the scenario's, fixed.
    async fn delete(&self, _key: &CredentialKey) -> Result<(), Error> {
        unreachable!("the simulation never removes an app")
    }

    async fn load_apps(&self) -> Result<Vec<StoredApp>, Error> {
        Ok(Vec::new())
    }

    async fn save_app(&self, _app: &StoredApp) -> Result<(), Error> {
        unreachable!("the simulation never registers an app")
    }

    async fn delete_app(&self, _name: &str) -> Result<bool, Error> {
        unreachable!("the simulation never removes an app")
    }

    async fn add_quota_use(&self, app: &str, endpoint: &str, day: u64) -> Result<u64, Error> {
        self.op("add_quota_use", 0.5, |s, _| {
            let entry = s
                .quota
                .entry((app.to_owned(), endpoint.to_owned()))
                .or_insert((day, 0));
            if entry.0 != day {
                *entry = (day, 0);
            }
            entry.1 += 1;
            entry.1
        })
        .await
    }

    async fn load_quota(&self, app: &str, day: u64) -> Result<QuotaCounts, Error> {
        self.op("load_quota", 0.2, |s, _| {
            s.quota
                .iter()
                .filter(|((a, _), (d, _))| a == app && *d == day)
                .map(|((_, endpoint), (_, calls))| (endpoint.clone(), *calls))
                .collect()
        })
        .await
    }

    async fn ping(&self) -> Result<(), Error> {
        self.op("ping", 0.0, |_, _| ()).await
    }

    fn is_shared(&self) -> bool {
        self.world.p.shared
    }

    async fn try_lease(
        &self,
        key: &CredentialKey,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, Error> {
        let (i, era) = (self.inst, self.era);
        self.op("try_lease", 1.0, |s, w| {
            let now = Instant::now();
            let owner = wechat_token_server::store::lease_owner(holder);
            if s.leases.get(key).is_some_and(|(current, until)| {
                *until > now && wechat_token_server::store::lease_owner(current) != owner
            }) {
                return false;
            }
            s.leases.insert(key.clone(), (holder.to_owned(), now + ttl));
            w.log(|l| {
                let _ = write!(l, "store lease {key} taken by i{i}.{era}");
            });
            true
        })
        .await
    }

    async fn renew_lease(
        &self,
        key: &CredentialKey,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, Error> {
        self.op("renew_lease", 0.5, |s, _| {
            let now = Instant::now();
            match s.leases.get_mut(key) {
                Some((h, until)) if h == holder && *until > now => {
                    *until = now + ttl;
                    true
                }
                _ => false,
            }
        })
        .await
    }

    async fn release_lease(&self, key: &CredentialKey, holder: &str) -> Result<(), Error> {
        self.op("release_lease", 0.5, |s, _| {
            let now = Instant::now();
            if s.leases
                .get(key)
                .is_some_and(|(h, until)| h == holder && *until > now)
            {
                s.leases.remove(key);
            }
        })
        .await
    }

    fn watch(&self) -> Option<mpsc::Receiver<StoreEvent>> {
        if !self.world.p.shared {
            return None;
        }
        let (tx, rx) = mpsc::channel(1024);
        let _ = tx.try_send(StoreEvent::Resynchronise);
        lock(&self.world.store).subscribers.push(Subscriber {
            inst: self.inst,
            era: self.era,
            tx,
            missed: false,
        });
        Some(rx)
    }
}

//! The simulated world: the shared WeChat and Redis models, the instances with their
//! crashes and restarts, the fault switches, the trace and the checker.

use std::collections::{BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wechat_token_server::config::Config;
use wechat_token_server::metrics::Metrics;
use wechat_token_server::refresh::{Clock, Parts, Refresher};

use crate::checker::Checker;
use crate::scenario::Params;
use crate::store::{StoreHandle, StoreState};
use crate::wechat::{ApiHandle, WeChat};

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every event of a run: hashed whole (for the determinism test), the last lines kept
/// (for a failure report), everything printed when verbose.
pub struct Trace {
    pub hash: u64,
    pub events: u64,
    pub tail: VecDeque<String>,
    pub verbose: bool,
}

const TAIL: usize = 300;

impl Trace {
    fn new(verbose: bool) -> Self {
        Self {
            hash: 0xcbf2_9ce4_8422_2325,
            events: 0,
            tail: VecDeque::with_capacity(TAIL),
            verbose,
        }
    }

    fn push(&mut self, line: String) {
        for b in line.as_bytes() {
            self.hash ^= u64::from(*b);
            self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.hash ^= 0xff;
        self.events += 1;
        if self.verbose {
            eprintln!("{line}");
        }
        if self.tail.len() == TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }
}

/// The fault switches, flipped by the scenario's episodes.
#[derive(Default)]
pub struct Faults {
    /// Every store operation of every instance fails after 2 s (a Redis timeout).
    pub store_outage: bool,
    /// The store operations of these instances fail after 2 s.
    pub partitioned: BTreeSet<usize>,
    /// Store answers are slow (up to 1.2 s).
    pub store_slow: bool,
    /// WeChat misbehaves on some calls (see `wechat::Fault`).
    pub wechat_flaky: bool,
}

/// One instance: a process that may crash and be restarted as a new refresher.
pub struct Slot {
    /// Incremented at each start: handles of an earlier generation are dead.
    pub era: u64,
    pub alive: bool,
    /// Restored and spawned.
    pub ready: bool,
    pub up_since: Instant,
    pub refresher: Option<Arc<Refresher>>,
    pub cancel: CancellationToken,
}

pub struct World {
    pub seed: u64,
    pub p: Params,
    pub config: Config,
    pub start: Instant,
    pub start_wall: SystemTime,
    pub rng: Mutex<StdRng>,
    pub trace: Mutex<Trace>,
    pub wechat: Mutex<WeChat>,
    pub store: Mutex<StoreState>,
    pub faults: Mutex<Faults>,
    pub slots: Mutex<Vec<Slot>>,
    pub checker: Mutex<Checker>,
}

impl World {
    pub fn new(seed: u64, p: Params, config: Config, checker: Checker, verbose: bool) -> Arc<Self> {
        let start_wall = SystemTime::UNIX_EPOCH + Duration::from_secs(p.start_unix);
        let wechat = WeChat::new(&p, start_wall);
        let slots = (0..p.instances)
            .map(|_| Slot {
                era: 0,
                alive: false,
                ready: false,
                up_since: Instant::now(),
                refresher: None,
                cancel: CancellationToken::new(),
            })
            .collect();
        Arc::new(Self {
            seed,
            config,
            start: Instant::now(),
            start_wall,
            rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0x5eed_0ff4_u64)),
            trace: Mutex::new(Trace::new(verbose)),
            wechat: Mutex::new(wechat),
            store: Mutex::new(StoreState::default()),
            faults: Mutex::new(Faults::default()),
            slots: Mutex::new(slots),
            checker: Mutex::new(checker),
            p,
        })
    }

    /// Simulated time since the start.
    pub fn t(&self) -> Duration {
        Instant::now() - self.start
    }

    /// The wall time now (every instance's clock agrees with it).
    pub fn now_wall(&self) -> SystemTime {
        self.start_wall + self.t()
    }

    pub fn log(&self, what: impl FnOnce(&mut String)) {
        let t = self.t();
        let mut line = format!("[{:>9}.{:03}] ", t.as_secs(), t.subsec_millis());
        what(&mut line);
        lock(&self.trace).push(line);
    }

    pub fn logs(&self, text: &str) {
        self.log(|l| l.push_str(text));
    }

    pub fn chance(&self, p: f64) -> bool {
        p > 0.0 && lock(&self.rng).random_bool(p.min(1.0))
    }

    pub fn between(&self, lo: Duration, hi: Duration) -> Duration {
        if hi <= lo {
            return lo;
        }
        let ms = lock(&self.rng).random_range(lo.as_millis() as u64..=hi.as_millis() as u64);
        Duration::from_millis(ms)
    }

    pub fn pick(&self, n: usize) -> usize {
        lock(&self.rng).random_range(0..n)
    }

    /// Is the handle of generation `era` of instance `i` dead?
    pub fn dead(&self, i: usize, era: u64) -> bool {
        let slots = lock(&self.slots);
        !slots[i].alive || slots[i].era != era
    }

    /// Can instance `i` reach the store now?
    pub fn store_reachable(&self, i: usize) -> bool {
        let f = lock(&self.faults);
        !f.store_outage && !f.partitioned.contains(&i)
    }

    /// A point where instance `i` may crash (before or after one of its store or
    /// WeChat operations); `weight` scales the scenario's crash probability. True if
    /// the instance is dead now.
    pub fn crash_point(self: &Arc<Self>, i: usize, era: u64, weight: f64, what: &str) -> bool {
        if self.dead(i, era) {
            return true;
        }
        if self.t() < self.p.duration && self.chance(self.p.crash_at_await * weight) {
            self.crash(i, what);
            return true;
        }
        false
    }

    /// Kills instance `i`: its handles fail from now on and have no effect, its tasks
    /// are cancelled (they may linger, doing nothing), and it is restarted later.
    pub fn crash(self: &Arc<Self>, i: usize, what: &str) {
        let era = {
            let mut slots = lock(&self.slots);
            let slot = &mut slots[i];
            if !slot.alive {
                return;
            }
            slot.alive = false;
            slot.ready = false;
            slot.cancel.cancel();
            slot.refresher = None;
            slot.era
        };
        let delay = self.between(self.p.restart_min, self.p.restart_max);
        self.log(|l| {
            let _ = write!(l, "CRASH i{i}.{era} at {what}; restart in {delay:?}");
        });
        let t = self.t();
        lock(&self.checker).crashed(t);
        let world = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            world.start_instance(i).await;
        });
    }

    /// Starts (or restarts) instance `i` as a new refresher: restore, then spawn.
    pub async fn start_instance(self: &Arc<Self>, i: usize) {
        let (era, cancel) = {
            let mut slots = lock(&self.slots);
            let slot = &mut slots[i];
            slot.era += 1;
            slot.alive = true;
            slot.ready = false;
            slot.cancel = CancellationToken::new();
            (slot.era, slot.cancel.clone())
        };
        let parts = Parts {
            store: Arc::new(StoreHandle::new(self.clone(), i, era)),
            api: Arc::new(ApiHandle::new(self.clone(), i, era)),
            metrics: Arc::new(Metrics::new()),
            clock: Clock::simulated(self.now_wall()),
            seed: Some(
                self.seed
                    .wrapping_mul(31)
                    .wrapping_add(i as u64 * 1009 + era),
            ),
            instance_id: format!("i{i}.{era}"),
        };
        let refresher = Arc::new(Refresher::from_parts(&self.config, parts));
        let restored = refresher.restore().await;
        if self.dead(i, era) {
            return; // crashed while restoring; the crash restarts it
        }
        self.log(|l| {
            let _ = write!(l, "START i{i}.{era}: restore {restored:?}");
        });
        refresher.spawn(&TaskTracker::new(), &cancel);
        let mut slots = lock(&self.slots);
        let slot = &mut slots[i];
        slot.ready = true;
        slot.up_since = Instant::now();
        slot.refresher = Some(refresher);
    }

    /// A random instance that is up, with its generation.
    pub fn pick_ready(&self) -> Option<(usize, u64, Arc<Refresher>)> {
        let ready: Vec<(usize, u64, Arc<Refresher>)> = lock(&self.slots)
            .iter()
            .enumerate()
            .filter(|(_, s)| s.ready && s.alive)
            .filter_map(|(i, s)| s.refresher.clone().map(|r| (i, s.era, r)))
            .collect();
        if ready.is_empty() {
            return None;
        }
        let at = self.pick(ready.len());
        ready.into_iter().nth(at)
    }

    /// When instance `i` became ready, if it is.
    pub fn up_since(&self, i: usize, era: u64) -> Option<Instant> {
        let slots = lock(&self.slots);
        (slots[i].ready && slots[i].alive && slots[i].era == era).then_some(slots[i].up_since)
    }

    /// Breaks the reference cycles (world -> refresher -> handles -> world) at the end.
    pub fn shutdown(&self) {
        for slot in lock(&self.slots).iter_mut() {
            slot.alive = false;
            slot.cancel.cancel();
            slot.refresher = None;
        }
        lock(&self.store).subscribers.clear();
    }
}

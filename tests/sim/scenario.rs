//! Scenarios: what one seed sets up (tempo, instances, apps, fault episodes, crashes,
//! clients) and the run itself, on a current-thread tokio runtime with a paused
//! clock.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use wechat_token_server::config::Config;
use wechat_token_server::domain::{CredentialKey, unix_millis};
use wechat_token_server::refresh::{Decision, LookupError};
use wechat_token_server::store::StoredToken;

use crate::checker::Checker;
use crate::store::resubscribe;
use crate::wechat::Kind;
use crate::world::{World, lock};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tempo {
    /// WeChat's real numbers: 7200 s tokens, 300 s grace, default retry settings.
    Realistic,
    /// 12 s tokens, 4 s grace: many refresh cycles per simulated minute.
    Short,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpisodeKind {
    WeChatFlaky,
    StoreOutage,
    Partition(usize),
    StoreSlow,
}

#[derive(Debug, Clone, Copy)]
pub struct Episode {
    pub kind: EpisodeKind,
    pub start: Duration,
    pub end: Duration,
}

#[derive(Debug, Clone)]
pub struct Params {
    pub kind: &'static str,
    pub tempo: Tempo,
    pub lifetime: Duration,
    pub grace: Duration,
    pub timeout: Duration,
    pub min_retry: Duration,
    pub max_retry: Duration,
    pub instances: usize,
    pub apps: usize,
    pub duration: Duration,
    pub start_unix: u64,
    /// The store and WeChat hold a token of this age at the start (else a cold start).
    pub warm_age: Option<Duration>,
    pub daily_quota: u64,
    /// Probability of a crash at each await point of a store or WeChat operation.
    pub crash_at_await: f64,
    pub crash_times: Vec<(Duration, usize)>,
    pub restart_min: Duration,
    pub restart_max: Duration,
    pub wechat_fault_rate: f64,
    pub episodes: Vec<Episode>,
    pub read_every: Duration,
    pub report_every: Duration,
    pub storm_every: Duration,
    pub storm_max: usize,
    /// The store is shared (Redis: leases and the change feed); with one instance,
    /// sometimes not (like the embedded store: no lease, no feed).
    pub shared: bool,
}

/// One credential of the config: app name, token name, app index, kind.
#[derive(Debug, Clone)]
struct Cred {
    app: String,
    name: String,
    index: usize,
    kind: Kind,
}

fn creds(apps: usize) -> Vec<Cred> {
    let mut v = vec![
        Cred {
            app: "default".into(),
            name: "access_token".into(),
            index: 0,
            kind: Kind::Token,
        },
        Cred {
            app: "default".into(),
            name: "ticket".into(),
            index: 0,
            kind: Kind::Ticket,
        },
    ];
    if apps > 1 {
        v.push(Cred {
            app: "shop".into(),
            name: "access_token".into(),
            index: 1,
            kind: Kind::Token,
        });
        v.push(Cred {
            app: "shop".into(),
            name: "jsapi_ticket".into(),
            index: 1,
            kind: Kind::Ticket,
        });
    }
    v
}

fn config_text(p: &Params) -> String {
    let mut text = format!(
        r#"
[server]
request_secret = "sim-request-secret-0123"

[store]
backend = "memory"

[refresh]
upstream_grace = {grace}
upstream_timeout = {timeout}
min_retry_delay = {min}
max_retry_delay = {max}

[sources.access_token]
url = "http://wechat.sim/cgi-bin/token"
args = {{ grant_type = "client_credential", appid = "wxsim0", secret = "secret0" }}

[sources.ticket]
url = "http://wechat.sim/cgi-bin/ticket/getticket"
args = {{ type = "jsapi", access_token = "{{{{access_token}}}}" }}
"#,
        grace = p.grace.as_secs_f64(),
        timeout = p.timeout.as_secs_f64(),
        min = p.min_retry.as_secs_f64(),
        max = p.max_retry.as_secs_f64(),
    );
    if p.apps > 1 {
        text.push_str(
            r#"
[apps.shop]
platform = "mp"
appid = "wxsim1"
secret = "secret1"
tickets = ["jsapi"]
api_base = ["http://wechat.sim"]
"#,
        );
    }
    text
}

pub struct Outcome {
    pub seed: u64,
    pub scenario: String,
    pub params: String,
    pub violations: Vec<String>,
    pub tail: Vec<String>,
    pub events: u64,
    pub trace_hash: u64,
    stats: String,
}

impl Outcome {
    pub fn summary(&self) -> String {
        format!(
            "seed {} ({}): {} events, trace hash {:016x}; {}; {} violations",
            self.seed,
            self.scenario,
            self.events,
            self.trace_hash,
            self.stats,
            self.violations.len()
        )
    }
}

pub struct Scenario {
    pub seed: u64,
    pub p: Params,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// A random duration in [lo, hi] seconds.
fn span(rng: &mut StdRng, lo: f64, hi: f64) -> Duration {
    secs(rng.random_range(lo..=hi))
}

impl Scenario {
    pub fn from_seed(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let kind =
            ["calm", "wechat-faults", "store-faults", "chaos", "crashes"][(seed % 5) as usize];
        let tempo = if rng.random_bool(0.5) {
            Tempo::Realistic
        } else {
            Tempo::Short
        };
        let (lifetime, grace, timeout, min_retry, max_retry, duration) = match tempo {
            Tempo::Realistic => (
                7200.0,
                300.0,
                10.0,
                1.0,
                60.0,
                rng.random_range(2.5..4.0) * 3600.0,
            ),
            Tempo::Short => (
                12.0,
                4.0,
                1.0,
                0.25,
                3.0,
                rng.random_range(6.0..12.0) * 60.0,
            ),
        };
        let duration = secs(duration);
        let scale = |realistic: f64, short: f64| match tempo {
            Tempo::Realistic => realistic,
            Tempo::Short => short,
        };
        let instances = rng.random_range(1..=3);
        let apps = rng.random_range(1..=2);
        let crashes = kind != "calm";
        let crash_at_await = if crashes {
            scale(0.01, 0.002) * rng.random_range(0.0..2.0)
        } else {
            0.0
        };
        let mut crash_times = Vec::new();
        if crashes {
            let n = rng.random_range(0..=scale(4.0, 5.0) as usize);
            for _ in 0..n {
                let at = duration.mul_f64(rng.random_range(0.02..0.95));
                crash_times.push((at, rng.random_range(0..instances)));
            }
            crash_times.sort_by_key(|c| c.0);
        }
        let mut episodes = Vec::new();
        let wechat = matches!(kind, "wechat-faults" | "chaos");
        let store = matches!(kind, "store-faults" | "chaos");
        let n = if wechat || store {
            rng.random_range(1..=4)
        } else {
            0
        };
        for _ in 0..n {
            let mut choices = Vec::new();
            if wechat {
                choices.push(0);
            }
            if store {
                choices.extend([1, 2, 3]);
            }
            let choice = choices[rng.random_range(0..choices.len())];
            let (kind, length) = match choice {
                0 => (
                    EpisodeKind::WeChatFlaky,
                    scale(
                        span(&mut rng, 60.0, 1800.0).as_secs_f64(),
                        span(&mut rng, 2.0, 40.0).as_secs_f64(),
                    ),
                ),
                1 => (
                    EpisodeKind::StoreOutage,
                    scale(
                        span(&mut rng, 5.0, 900.0).as_secs_f64(),
                        span(&mut rng, 0.5, 30.0).as_secs_f64(),
                    ),
                ),
                2 => (
                    EpisodeKind::Partition(rng.random_range(0..instances)),
                    scale(
                        span(&mut rng, 5.0, 900.0).as_secs_f64(),
                        span(&mut rng, 0.5, 30.0).as_secs_f64(),
                    ),
                ),
                _ => (
                    EpisodeKind::StoreSlow,
                    scale(
                        span(&mut rng, 30.0, 600.0).as_secs_f64(),
                        span(&mut rng, 2.0, 30.0).as_secs_f64(),
                    ),
                ),
            };
            let start = duration.mul_f64(rng.random_range(0.05..0.85));
            episodes.push(Episode {
                kind,
                start,
                end: start + secs(length),
            });
        }
        episodes.sort_by_key(|e| e.start);
        let warm_age = rng
            .random_bool(0.7)
            .then(|| secs(lifetime).mul_f64(rng.random_range(0.0..0.95)));
        let p = Params {
            kind,
            tempo,
            lifetime: secs(lifetime),
            grace: secs(grace),
            timeout: secs(timeout),
            min_retry: secs(min_retry),
            max_retry: secs(max_retry),
            instances,
            apps,
            duration,
            // Around 2023-11: some runs cross WeChat's midnight (16:00 UTC).
            start_unix: 1_700_000_000 + rng.random_range(0..86_400),
            warm_age,
            daily_quota: 2000,
            crash_at_await,
            crash_times,
            restart_min: secs(scale(1.0, 0.5)),
            restart_max: secs(scale(30.0, 5.0)),
            wechat_fault_rate: rng.random_range(0.2..0.8),
            episodes,
            read_every: secs(scale(20.0, 0.5)),
            report_every: secs(scale(600.0, 10.0)),
            storm_every: secs(scale(1800.0, 45.0)),
            storm_max: rng.random_range(2..=40),
            shared: true,
        };
        // Drawn last, so that the draws above stay as they were.
        let p = Params {
            shared: p.instances > 1 || rng.random_bool(0.5),
            ..p
        };
        Self { seed, p }
    }

    pub fn run(&self, verbose: bool) -> Outcome {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a current-thread runtime");
        rt.block_on(self.simulate(verbose))
    }

    async fn simulate(&self, verbose: bool) -> Outcome {
        let p = self.p.clone();
        let config = Config::parse(&config_text(&p), &|_| None).expect("the sim config is valid");
        let mut checker = Checker::new(p.episodes.clone(), p.grace);
        match p.tempo {
            Tempo::Realistic => {
                checker.recovery = p.max_retry + p.timeout + secs(5.0);
                checker.crash_recovery = checker.recovery;
            }
            Tempo::Short => {
                checker.warmup = secs(3.0);
                // A dead lease holder keeps the lease for its TTL (8 s), longer than a
                // short token's lead: the others may run dry meanwhile.
                checker.recovery = p.max_retry + p.timeout + secs(10.0);
                checker.crash_recovery = secs(25.0);
            }
        }
        let world = World::new(self.seed, p.clone(), config, checker, verbose);
        world.log(|l| {
            let _ = write!(l, "seed {} scenario {}: {:?}", self.seed, p.kind, p);
        });
        let creds = creds(p.apps);
        if let Some(age) = p.warm_age {
            self.warm_start(&world, &creds, age);
        }
        for i in 0..p.instances {
            let world = world.clone();
            tokio::spawn(async move { world.start_instance(i).await });
        }
        self.drive(&world, &creds).await;
        let c = lock(&world.checker);
        let stats = {
            let wx = lock(&world.wechat);
            let calls: Vec<String> = wx
                .apps
                .iter()
                .map(|a| {
                    format!(
                        "{}: {} token / {} ticket calls",
                        a.appid, a.token.calls, a.ticket.calls
                    )
                })
                .collect();
            format!(
                "{}; {} probes; {} served ({} exempt invalid, {} lost unannounced), {} not ready, storms {} judged / {} skipped",
                calls.join(", "),
                wx.probes,
                c.served,
                c.exempt_invalid,
                c.lost_unannounced,
                c.not_ready,
                c.storms_judged,
                c.storms_skipped
            )
        };
        let violations = c.violations.clone();
        drop(c);
        world.logs(&format!("END: {stats}"));
        world.shutdown();
        let trace = lock(&world.trace);
        Outcome {
            seed: self.seed,
            scenario: format!(
                "{} {:?} {} instance(s) {} app(s)",
                p.kind, p.tempo, p.instances, p.apps
            ),
            params: format!("{p:?}"),
            violations,
            tail: trace.tail.iter().cloned().collect(),
            events: trace.events,
            trace_hash: trace.hash,
            stats,
        }
    }

    /// WeChat issued a token (and a ticket) `age` ago, and the store holds them.
    fn warm_start(&self, world: &World, creds: &[Cred], age: Duration) {
        let issued_at = world.now_wall() - age;
        for cred in creds {
            let (value, seq) = lock(&world.wechat).issue(cred.index, cred.kind, issued_at);
            let key = CredentialKey::new(&cred.app, &cred.name);
            let record = StoredToken {
                app: cred.app.clone(),
                name: cred.name.clone(),
                value,
                expires_at_ms: unix_millis(issued_at + self.p.lifetime),
                refreshed_at_ms: unix_millis(issued_at),
                version: 1,
                pending_since_ms: None,
                announced: true,
                generation: None,
            };
            let mut store = lock(&world.store);
            store.records.insert(key.clone(), record);
            store.last_saved_seq.insert(key, seq);
        }
    }

    /// The client side and the fault switches, until the end.
    async fn drive(&self, world: &Arc<World>, creds: &[Cred]) {
        let p = &self.p;
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x00c1_1e27);
        #[derive(Debug)]
        enum Ev {
            Read,
            Report,
            Storm,
            Crash(usize),
            Start(usize),
            End(usize),
        }
        let mut events: Vec<(Duration, u32, Ev)> = Vec::new();
        let mut order = 0u32;
        let mut push = |events: &mut Vec<(Duration, u32, Ev)>, at: Duration, ev: Ev| {
            order += 1;
            events.push((at, order, ev));
        };
        for (every, make) in [(p.read_every, 0u8), (p.report_every, 1), (p.storm_every, 2)] {
            let mut t = Duration::ZERO;
            loop {
                t += every.mul_f64(rng.random_range(0.0..2.0));
                if t >= p.duration {
                    break;
                }
                let ev = match make {
                    0 => Ev::Read,
                    1 => Ev::Report,
                    _ => Ev::Storm,
                };
                push(&mut events, t, ev);
            }
        }
        for (at, i) in &p.crash_times {
            push(&mut events, *at, Ev::Crash(*i));
        }
        for (n, e) in p.episodes.iter().enumerate() {
            push(&mut events, e.start, Ev::Start(n));
            push(&mut events, e.end, Ev::End(n));
        }
        events.sort_by_key(|(at, order, _)| (*at, *order));
        let last = events.last().map_or(p.duration, |e| e.0.max(p.duration));
        let client = Arc::new(Client {
            world: world.clone(),
            creds: creds.to_vec(),
            in_flight: AtomicU64::new(0),
            storms: AtomicU64::new(0),
        });
        for (at, _, ev) in events {
            tokio::time::sleep_until(world.start + at).await;
            match ev {
                Ev::Read => {
                    client.read(rng.random_range(0..creds.len()));
                }
                Ev::Report => {
                    let c = rng.random_range(0..creds.len());
                    let client = client.clone();
                    tokio::spawn(async move { client.report(c).await });
                }
                Ev::Storm => {
                    let c = rng.random_range(0..creds.len());
                    let size = rng.random_range(2..=p.storm_max);
                    let client = client.clone();
                    tokio::spawn(async move { client.storm(c, size).await });
                }
                Ev::Crash(i) => world.crash(i, "a random time"),
                Ev::Start(n) => set_episode(world, &p.episodes[n], true),
                Ev::End(n) => set_episode(world, &p.episodes[n], false),
            }
        }
        tokio::time::sleep_until(world.start + last + secs(1.0)).await;
    }
}

fn set_episode(world: &World, e: &Episode, on: bool) {
    {
        let mut f = lock(&world.faults);
        match e.kind {
            EpisodeKind::WeChatFlaky => f.wechat_flaky = on,
            EpisodeKind::StoreOutage => f.store_outage = on,
            EpisodeKind::Partition(i) => {
                if on {
                    f.partitioned.insert(i);
                } else {
                    f.partitioned.remove(&i);
                }
            }
            EpisodeKind::StoreSlow => f.store_slow = on,
        }
    }
    world.log(|l| {
        let _ = write!(
            l,
            "EPISODE {:?} {}",
            e.kind,
            if on { "begins" } else { "ends" }
        );
    });
    if !on {
        resubscribe(world);
    }
}

/// The business servers: read tokens, report them as rejected, alone or in storms.
struct Client {
    world: Arc<World>,
    creds: Vec<Cred>,
    /// Reports not answered yet.
    in_flight: AtomicU64,
    /// Storms under way.
    storms: AtomicU64,
}

impl Client {
    /// Judges a token served by instance `i` now.
    fn judge(&self, c: usize, i: usize, era: u64, value: &str, how: &str) {
        let w = &self.world;
        let now = w.now_wall();
        let (valid, about, lost) = {
            let wx = lock(&w.wechat);
            let valid = wx.valid(value, now);
            // The token that replaced this one was fetched by a call that could not be
            // announced, and its instance died before it could store it (see
            // checker, "lost unannounced token").
            let lost = !valid
                && wx.successor(value).is_some_and(|next| {
                    next.unannounced_by.is_some_and(|(j, era)| {
                        w.dead(j, era) && !lock(&w.store).saved_values.contains(&next.value)
                    })
                });
            (valid, wx.describe(value, now), lost)
        };
        let t = w.t();
        let cred = &self.creds[c];
        w.log(|l| {
            let _ = write!(
                l,
                "{how} {}/{} from i{i}.{era}: {value} valid={valid}",
                cred.app, cred.name
            );
        });
        lock(&w.checker).served(t, valid, lost, || {
            format!(
                "{how} {}/{} from i{i}.{era}: {value} ({about})",
                cred.app, cred.name
            )
        });
    }

    fn read(&self, c: usize) -> Option<String> {
        let w = &self.world;
        let (i, era, refresher) = w.pick_ready()?;
        let cred = &self.creds[c];
        match refresher.serve(&cred.app, &cred.name) {
            Ok(token) => {
                self.judge(c, i, era, &token.value, "read");
                Some(token.value.clone())
            }
            Err(LookupError::NotReady) => {
                let t = w.t();
                let up_for = w
                    .up_since(i, era)
                    .map_or(Duration::ZERO, |at| Instant::now() - at);
                w.log(|l| {
                    let _ = write!(
                        l,
                        "read {}/{} from i{i}.{era}: not ready",
                        cred.app, cred.name
                    );
                });
                lock(&w.checker).not_ready(t, up_for, || {
                    format!(
                        "read {}/{} from i{i}.{era} (up for {up_for:?})",
                        cred.app, cred.name
                    )
                });
                None
            }
            Err(LookupError::Unknown) => panic!("{}/{} is configured", cred.app, cred.name),
        }
    }

    /// One force refresh reporting the token just read as rejected.
    async fn report(&self, c: usize) {
        if self.storms.load(Ordering::SeqCst) > 0 {
            return;
        }
        let Some(stale) = self.read(c) else {
            return;
        };
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.force(c, &stale, "report").await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// A force refresh from a random instance; `Some(ok)` if that instance survived.
    async fn force(
        &self,
        c: usize,
        stale: &str,
        how: &str,
    ) -> Option<Result<(String, Decision), String>> {
        let w = &self.world;
        let (i, era, refresher) = w.pick_ready()?;
        let cred = &self.creds[c];
        let handle = refresher.credential(&cred.app, &cred.name)?.clone();
        let result = refresher.force_refresh(&handle, Some(stale)).await;
        if w.dead(i, era) {
            return None; // a dead process answers nobody
        }
        Some(match result {
            Ok((token, decision)) => {
                self.judge(c, i, era, &token.value, &format!("{how} ({decision:?})"));
                Ok((token.value.clone(), decision))
            }
            Err(error) => {
                w.log(|l| {
                    let _ = write!(
                        l,
                        "{how} {}/{} from i{i}.{era}: {error}",
                        cred.app, cred.name
                    );
                });
                Err(error.to_string())
            }
        })
    }

    /// Many reports of the same token at the same instant, spread over the instances.
    async fn storm(self: Arc<Self>, c: usize, size: usize) {
        let w = &self.world;
        let p = &w.p;
        if self.storms.load(Ordering::SeqCst) > 0 {
            return;
        }
        let Some(stale) = self.read(c) else {
            return;
        };
        let cred = &self.creds[c];
        let now = w.now_wall();
        let t = w.t();
        let window = p.timeout * 3;
        // Judged only when nothing else can call meanwhile: healthy, nobody crashing,
        // no other report out, and the token far from due.
        let far_from_due = {
            let wx = lock(&w.wechat);
            let series = wx.series_ref(cred.index, cred.kind);
            series.issued.last().is_some_and(|last| {
                last.expires
                    .duration_since(now)
                    .is_ok_and(|left| left > p.lifetime / 5 + window * 2)
            })
        };
        let judged = far_from_due
            && self.in_flight.load(Ordering::SeqCst) == 0
            && !lock(&w.checker).disturbed(t, window * 2)
            && lock(&w.slots).iter().all(|s| s.ready && s.alive);
        self.storms.fetch_add(1, Ordering::SeqCst);
        // Counted as tokens issued: a ticket call WeChat refuses because the access
        // token it carried was replaced, followed by the one retry with a new one, is
        // one refresh, and replaces the ticket once.
        let issued_before = lock(&w.wechat).issued(cred.index, cred.kind);
        let calls_before = lock(&w.wechat).calls(cred.index, cred.kind);
        let crashes_before = lock(&w.checker).crash_count();
        w.log(|l| {
            let _ = write!(
                l,
                "STORM of {size} on {}/{} with stale {stale} (judged: {judged})",
                cred.app, cred.name
            );
        });
        let mut tasks = Vec::with_capacity(size);
        for _ in 0..size {
            let client = self.clone();
            let stale = stale.clone();
            tasks.push(tokio::spawn(async move {
                client.force(c, &stale, "storm").await
            }));
        }
        let mut answers = Vec::with_capacity(size);
        for task in tasks {
            answers.push(task.await.expect("a storm request panicked"));
        }
        self.storms.fetch_sub(1, Ordering::SeqCst);
        let issued = lock(&w.wechat).issued(cred.index, cred.kind) - issued_before;
        let calls = lock(&w.wechat).calls(cred.index, cred.kind) - calls_before;
        let t_end = w.t();
        let mut checker = lock(&w.checker);
        if !judged || checker.crash_count() != crashes_before || checker.disturbed(t_end, window) {
            checker.storms_skipped += 1;
            return;
        }
        checker.storms_judged += 1;
        if issued > 1 || calls > 2 {
            checker.violation(
                t_end,
                format!(
                    "(b) a storm of {size} reports of {stale} on {}/{} cost {calls} upstream calls issuing {issued} tokens",
                    cred.app, cred.name
                ),
            );
        }
        for answer in answers.into_iter().flatten() {
            match answer {
                Ok((value, decision)) if value == stale && decision != Decision::StillValid => checker.violation(
                    t_end,
                    format!("(b) a storm report of {stale} on {}/{} was answered with the stale token", cred.app, cred.name),
                ),
                Ok(_) => {}
                Err(error) => checker.violation(
                    t_end,
                    format!("(b) a storm report on {}/{} failed while all is healthy: {error}", cred.app, cred.name),
                ),
            }
        }
    }
}

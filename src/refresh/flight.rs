//! One flight task per credential: the only place that changes a credential's state.
//!
//! Requests (a client's force refresh, a dependent token's need, a store record from
//! another instance) arrive in the credential's bounded mailbox; the task asks
//! `decide` what to do with each. When a call is needed it starts a flight (a task
//! running `executor::fly`) and every request that arrives meanwhile subscribes to
//! it: a storm of N requests costs one upstream call, and nothing queues on a lock.
//! The same task is the scheduler: between flights it sleeps until the token is due,
//! a retry is due, or a failed save is to be retried.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::decide::{self, Answer, Ask, Facts, Step, StoredAction, Unconfirmed};
use super::error::RefreshError;
use super::executor::{self, Report};
use super::stable::ForcedBudget;
use super::token::trust_bound;
use super::{Credential, Refresher, Token, Trigger};
use crate::domain::{from_unix_millis, unix_millis};
use crate::store::{SaveOutcome, StoredToken};

/// What a force refresh did, for the caller and for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// This call fetched a new token from WeChat (or tried to, and failed).
    Performed,
    /// Another call's refresh, in flight while this one waited, answered it.
    Shared,
    /// The `stale` token given is no longer the current one: the current one answers.
    Stale,
    /// No `stale` token given and the token was refreshed too recently, or WeChat failed
    /// a moment ago.
    RateLimited,
    /// The quota guard keeps the rest of today's quota for scheduled refreshes: the
    /// current token answers if it has life left, else an error.
    QuotaRefused,
    /// WeChat still accepts the `stale` token (a validity probe): it is answered, and
    /// nothing is spent.
    StillValid,
    /// No call was made: it could not be made safely now (see `RefreshError::Deferred`).
    Deferred,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Performed => "performed",
            Decision::Shared => "shared",
            Decision::Stale => "stale",
            Decision::RateLimited => "rate_limited",
            Decision::QuotaRefused => "quota_refused",
            Decision::StillValid => "still_valid",
            Decision::Deferred => "deferred",
        }
    }
}

/// The answer to a request: a token and how it was decided, or why there is none.
pub type Reply = Result<(Arc<Token>, Decision), RefreshError>;

/// A message to a credential's flight task.
pub enum Msg {
    /// A request for a token.
    Ask {
        trigger: Trigger,
        stale: Option<String>,
        reply: oneshot::Sender<Reply>,
    },
    /// The store's record of this credential (`None`: it holds none), read because
    /// another instance changed it or by a full read. Boxed: a message the size of a
    /// record would make every queued request that large.
    Stored(Option<Box<StoredToken>>),
}

/// Most requests that may wait for one flight. Past it they are refused at once
/// (`RefreshError::Busy`): the flight will answer them all alike anyway.
pub const MAX_WAITERS: usize = 4096;

/// First and longest wait before a failed save is tried again. Short: while a token
/// is not durably stored a crash would lose it, and a cluster converges only once
/// it is stored.
const SAVE_RETRY_MIN: Duration = Duration::from_millis(250);
const SAVE_RETRY_MAX: Duration = Duration::from_secs(2);

/// What only the flight task knows of its credential.
#[derive(Debug, Clone, Default)]
pub struct FlightState {
    /// The last flight's error and when it ended, shared during the cool-down.
    pub last_failure: Option<(RefreshError, Instant)>,
    pub unconfirmed: Option<Unconfirmed>,
    /// A conflict with another instance's token, and the store's version then.
    pub conflict: Option<u64>,
    /// stable_token's forced calls spent (see `stable`).
    pub budget: ForcedBudget,
    /// The version of the token a probe last found accepted, and when: later reports
    /// about it share that verdict for a moment (`stable::PROBE_REUSE`).
    pub accepted: Option<(u64, Instant)>,
    /// The token held is not durably stored; the store's version when it was fetched
    /// (a copy of the task's, for the flight's own reading of the store).
    pub unsaved_base: Option<u64>,
}

/// A token held but not durably stored, and when to try again.
#[derive(Debug, Clone, Copy)]
struct Unsaved {
    failures: u32,
    retry_at: Instant,
    /// The store's version when the token was fetched (or last found unchanged): the
    /// save is a compare-and-set on it, so that a token another instance stored since
    /// is never overwritten.
    base: u64,
}

struct Waiter {
    /// The request that started the running flight: its answer is the flight's own.
    leader: bool,
    trigger: Trigger,
    stale: Option<String>,
    reply: oneshot::Sender<Reply>,
}

/// What runs besides the task.
enum Running {
    Fetch(JoinHandle<Report>),
    Save(JoinHandle<(u64, Result<SaveOutcome, crate::store::Error>)>),
}

enum Done {
    Fetch(Result<Box<Report>, tokio::task::JoinError>),
    Save(Result<(u64, Result<SaveOutcome, crate::store::Error>), tokio::task::JoinError>),
}

async fn join(running: &mut Option<Running>) -> Done {
    match running {
        Some(Running::Fetch(handle)) => Done::Fetch(handle.await.map(Box::new)),
        Some(Running::Save(handle)) => Done::Save(handle.await),
        None => std::future::pending().await,
    }
}

/// The task of one credential.
pub(super) struct FlightTask {
    refresher: Arc<Refresher>,
    cred: Arc<Credential>,
    state: FlightState,
    unsaved: Option<Unsaved>,
    running: Option<Running>,
    waiters: Vec<Waiter>,
    /// The last wake-up found nothing to do: the next is at least a moment away, so
    /// that a rule disagreement can never spin.
    idle_wake: bool,
    /// This retry's jitter, drawn again after each flight: drawn at every wake-up, the
    /// retry time would move with every message that arrives.
    jitter: f64,
}

impl FlightTask {
    pub(super) fn new(refresher: Arc<Refresher>, cred: Arc<Credential>) -> Self {
        let mut state = FlightState::default();
        let restored = cred
            .restored_pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(since) = restored {
            // A call was out when the last process stopped: its outcome is unknown.
            state.unconfirmed = Some(Unconfirmed {
                since: from_unix_millis(since),
                announced: true,
            });
        }
        Self {
            cred,
            state,
            unsaved: None,
            running: None,
            waiters: Vec::new(),
            idle_wake: false,
            jitter: refresher.jitter(),
            refresher,
        }
    }

    /// Runs until `cancel`; a flight under way is finished first, so that a token
    /// WeChat issued is stored before the process exits.
    pub(super) async fn run(mut self, cancel: CancellationToken) {
        // However the task ends (even by a panic), its mailbox refuses new messages and
        // drops the queued ones, whose senders then learn that it ended.
        struct CloseOnDrop(Arc<Credential>);
        impl Drop for CloseOnDrop {
            fn drop(&mut self) {
                drop(self.0.mailbox.close());
            }
        }
        let cred = self.cred.clone();
        let _close = CloseOnDrop(cred.clone());
        loop {
            let wake = self.next_wake();
            tokio::select! {
                biased;
                () = cancel.cancelled(), if self.running.is_none() => break,
                done = join(&mut self.running) => {
                    self.running = None;
                    self.finished(done).await;
                }
                msg = cred.mailbox.recv() => match msg {
                    Msg::Ask { trigger, stale, reply } => self.on_ask(Waiter { leader: false, trigger, stale, reply }),
                    Msg::Stored(stored) => self.on_stored(stored.as_deref()).await,
                },
                () = tokio::time::sleep_until(wake), if self.running.is_none() => self.on_timer(),
            }
        }
        for waiter in self.waiters.drain(..) {
            let _ = waiter.reply.send(Err(RefreshError::Task(
                "the server is shutting down".into(),
            )));
        }
    }

    fn now(&self) -> SystemTime {
        self.refresher.clock.now()
    }

    fn facts<'a>(
        &'a self,
        token: Option<&'a Token>,
        now: SystemTime,
        trigger: Trigger,
    ) -> Facts<'a> {
        executor::facts(
            &self.refresher,
            &self.cred,
            &self.state,
            token,
            now,
            trigger,
        )
    }

    /// When to look again: a failed save's retry, or the scheduler's next due time.
    fn next_wake(&mut self) -> Instant {
        let now = self.now();
        let token = self.cred.current();
        let mut due = decide::next_due(
            &self.facts(token.as_deref(), now, Trigger::Scheduled),
            self.jitter,
        );
        if self.idle_wake {
            due = due.max(Duration::from_millis(100));
        }
        let mut wake = Instant::now() + due;
        if let Some(unsaved) = self.unsaved
            && self.state.conflict.is_none()
        {
            wake = wake.min(unsaved.retry_at);
        }
        wake
    }

    fn on_timer(&mut self) {
        if let Some(unsaved) = self.unsaved
            && self.state.conflict.is_none()
            && unsaved.retry_at <= Instant::now()
            && let Some(token) = self.cred.current()
        {
            self.idle_wake = false;
            let store = self.refresher.store.clone();
            let record = self.cred.record_of(&token);
            let expected = unsaved.base;
            self.running = Some(Running::Save(tokio::spawn(async move {
                let outcome = store.save_over(&record, expected).await;
                (record.version, outcome)
            })));
            return;
        }
        let now = self.now();
        let token = self.cred.current();
        let ask = Ask {
            trigger: Trigger::Scheduled,
            stale: None,
        };
        match decide::decide(&self.facts(token.as_deref(), now, Trigger::Scheduled), &ask) {
            Step::Answer(Answer::QuotaRefused(refusal)) => {
                let _ = executor::refused(
                    &self.refresher,
                    &self.cred,
                    Trigger::Scheduled,
                    None,
                    refusal,
                    now,
                );
                self.idle_wake = true;
            }
            Step::Answer(_) => self.idle_wake = true,
            _ => {
                self.idle_wake = false;
                self.start_fetch(Trigger::Scheduled, None, None);
            }
        }
    }

    /// The next step for `waiter`'s request, as things stand.
    fn step_for(&self, waiter: &Waiter) -> Step {
        let now = self.now();
        let token = self.cred.current();
        let ask = Ask {
            trigger: waiter.trigger,
            stale: waiter.stale.as_deref(),
        };
        decide::decide(&self.facts(token.as_deref(), now, waiter.trigger), &ask)
    }

    fn on_ask(&mut self, waiter: Waiter) {
        match (self.step_for(&waiter), &self.running) {
            (Step::Answer(answer), _) => self.answer(waiter, answer, false),
            (_, Some(_)) => {
                if self.waiters.len() >= MAX_WAITERS {
                    self.waiters.retain(|w| !w.reply.is_closed());
                }
                if self.waiters.len() >= MAX_WAITERS {
                    self.reply(waiter, Err(RefreshError::Busy));
                } else {
                    self.waiters.push(waiter);
                }
            }
            (_, None) => {
                let Waiter {
                    trigger,
                    stale,
                    reply,
                    ..
                } = waiter;
                self.start_fetch(trigger, stale, Some(reply));
            }
        }
    }

    /// Answers without a call. `shared`: the request waited for a flight that
    /// answered it.
    fn answer(&self, waiter: Waiter, answer: Answer, shared: bool) {
        let now = self.now();
        if let Answer::QuotaRefused(refusal) = answer {
            let reply = executor::refused(
                &self.refresher,
                &self.cred,
                waiter.trigger,
                waiter.stale.as_deref(),
                refusal,
                now,
            );
            return self.reply(waiter, reply);
        }
        let token = self.cred.live_token(now);
        let reply = match (answer, token) {
            (Answer::Serve(decision), Some(token)) => {
                let decision = if shared && decision == Decision::Stale {
                    Decision::Shared
                } else {
                    decision
                };
                Ok((token, decision))
            }
            (Answer::Serve(_), None) => {
                Err(RefreshError::Task("the token expired meanwhile".into()))
            }
            (Answer::LastFailure, _) => Err(self.state.last_failure.as_ref().map_or_else(
                || RefreshError::Task("no failure to share".into()),
                |(e, _)| e.clone(),
            )),
            (Answer::Deferred(why), _) => Err(RefreshError::Deferred(why.into())),
            (Answer::QuotaRefused(refusal), _) => Err(RefreshError::Quota(refusal)),
        };
        let reply = match reply {
            Err(error @ RefreshError::Quota(_)) => executor::quota_answer(
                waiter.trigger,
                waiter.stale.as_deref(),
                self.cred.live_token(now),
                error,
            ),
            other => other,
        };
        self.reply(waiter, reply);
    }

    fn reply(&self, waiter: Waiter, reply: Reply) {
        if waiter.trigger == Trigger::Forced {
            let decision = match &reply {
                Ok((_, decision)) => *decision,
                Err(RefreshError::Quota(_)) => Decision::QuotaRefused,
                Err(RefreshError::Deferred(_)) => Decision::Deferred,
                Err(_) if waiter.leader => Decision::Performed,
                Err(_) => Decision::Shared,
            };
            self.refresher
                .metrics
                .force_refresh(&self.cred.labels, decision.as_str());
        }
        let _ = waiter.reply.send(reply);
    }

    fn start_fetch(
        &mut self,
        trigger: Trigger,
        stale: Option<String>,
        reply: Option<oneshot::Sender<Reply>>,
    ) {
        let mut state = self.state.clone();
        state.unsaved_base = self.unsaved.map(|u| u.base);
        let flight = executor::fly(
            self.refresher.clone(),
            self.cred.clone(),
            state,
            trigger,
            stale.clone(),
        );
        self.running = Some(Running::Fetch(self.refresher.flights.spawn(flight)));
        if let Some(reply) = reply {
            // The leader waits like every other request; its answer is decided from
            // the flight's outcome, as theirs is.
            self.waiters.insert(
                0,
                Waiter {
                    leader: true,
                    trigger,
                    stale,
                    reply,
                },
            );
        }
    }

    async fn finished(&mut self, done: Done) {
        self.jitter = self.refresher.jitter();
        match done {
            Done::Fetch(Ok(mut report)) => {
                let reply = std::mem::replace(&mut report.reply, Err(RefreshError::Busy));
                self.apply(*report);
                if let Some(at) = self.waiters.iter().position(|w| w.leader) {
                    let leader = self.waiters.remove(at);
                    self.reply(leader, reply);
                }
            }
            Done::Fetch(Err(failed)) => {
                let error = RefreshError::Task(format!("refresh task failed: {failed}"));
                tracing::error!(key = %self.cred.key, %error, "refresh task failed");
                if let Some(base) = self.cred.unsaved_fetch() {
                    // It installed a token before it failed: keep trying to store it.
                    self.cred.note_unsaved_fetch(None);
                    self.mark_unsaved(error.to_string(), base);
                }
                self.state.last_failure = Some((error, Instant::now()));
                let waiters = std::mem::take(&mut self.waiters);
                for waiter in waiters {
                    self.answer(waiter, Answer::LastFailure, true);
                }
                return;
            }
            Done::Save(result) => {
                let (version, result) =
                    result.unwrap_or_else(|e| (0, Err(crate::store::Error::Task(e.to_string()))));
                self.saved(version, result).await;
            }
        }
        // Every request that waited is decided again with what the flight left: most
        // are answered by its token or its error; one that still needs a call starts
        // the next flight, and the others subscribe to that.
        let waiters = std::mem::take(&mut self.waiters);
        for mut waiter in waiters {
            waiter.leader = false;
            if waiter.reply.is_closed() {
                continue; // the caller gave up
            }
            match self.step_for(&waiter) {
                Step::Answer(answer) => self.answer(waiter, answer, true),
                _ if self.running.is_some() => self.waiters.push(waiter),
                _ => {
                    let Waiter {
                        trigger,
                        stale,
                        reply,
                        ..
                    } = waiter;
                    self.start_fetch(trigger, stale, Some(reply));
                }
            }
        }
    }

    /// Takes in what a flight learned.
    fn apply(&mut self, report: Report) {
        // The flight's note of a token it installed but has not stored is this task's
        // to keep from now on (as `unsaved`, below).
        self.cred.note_unsaved_fetch(None);
        // A conflict found while the flight was out stands, unless the flight fetched
        // a token of its own since (the newest, by construction).
        let found_meanwhile = self.state.conflict;
        self.state = report.state;
        if !report.fetched {
            self.state.conflict = self.state.conflict.or(found_meanwhile);
        }
        if let Some(error) = report.save_error {
            self.mark_unsaved(error, report.base);
        } else if report.saved {
            self.mark_saved();
        }
    }

    fn mark_unsaved(&mut self, error: String, base: u64) {
        let failures = self.unsaved.map_or(0, |u| u.failures) + 1;
        let wait = decide::backoff(failures, SAVE_RETRY_MIN, SAVE_RETRY_MAX);
        if failures == 1 {
            tracing::error!(key = %self.cred.key, backend = self.refresher.store.backend(), %error,
                "cannot store the token being served; retrying until it is stored");
        }
        self.unsaved = Some(Unsaved {
            failures,
            retry_at: Instant::now() + wait,
            base,
        });
        self.cred.record_unsaved(Some(format!(
            "not durably stored in the {} store: {error}",
            self.refresher.store.backend()
        )));
    }

    /// The base of the unsaved token, or what the store was last seen holding.
    fn base(&self) -> u64 {
        self.unsaved
            .map_or_else(|| self.cred.stored_version(), |u| u.base)
    }

    fn mark_saved(&mut self) {
        if self.unsaved.take().is_some() {
            tracing::info!(key = %self.cred.key, "the token being served is stored again");
        }
        self.cred.record_unsaved(None);
    }

    async fn saved(&mut self, version: u64, result: Result<SaveOutcome, crate::store::Error>) {
        match result {
            Ok(SaveOutcome::Saved) => {
                self.cred.saw_stored(version);
                self.mark_saved();
            }
            Ok(SaveOutcome::Outdated) => {
                // Someone stored a token of this version or newer meanwhile.
                match self.refresher.store.load(&self.cred.key).await {
                    Ok(stored) => self.on_stored(stored.as_ref()).await,
                    Err(error) => self.mark_unsaved(error.to_string(), self.base()),
                }
            }
            Err(error) => self.mark_unsaved(error.to_string(), self.base()),
        }
    }

    /// A record of this credential read from the store.
    async fn on_stored(&mut self, stored: Option<&StoredToken>) {
        let now = self.now();
        let now_ms = unix_millis(now);
        self.cred.saw_stored(stored.map_or(0, |s| s.version));
        // A record of another definition of the app is no token of ours: as if the
        // store held none, ours is written over it (a compare-and-set on its version).
        let stored = stored.filter(|s| self.cred.owns(s));
        if stored.is_some_and(|s| !s.is_sane(now_ms)) {
            tracing::warn!(key = %self.cred.key, "ignoring a stored token that may not be served (bad value, lifetime over 7 days or refreshed in the future)");
        }
        let ours = self.cred.current();
        // A flight under way may have installed a token it has not stored yet.
        let unsaved_base = self.unsaved.map(|u| u.base).or(self.cred.unsaved_fetch());
        let action = decide::on_stored(ours.as_deref(), unsaved_base, stored, now, now_ms);
        let grace = self.refresher.settings.upstream_grace;
        match (action, stored) {
            (StoredAction::Adopt, Some(stored)) => {
                let token = Token::from_stored(stored, Trigger::Peer, now, grace);
                tracing::debug!(key = %self.cred.key, version = stored.version, "adopted a token refreshed by another instance");
                self.cred.install(token);
                self.state.conflict = None;
                self.state.unconfirmed = None;
                self.mark_saved();
            }
            (StoredAction::Confirm, _) => self.mark_saved(),
            (StoredAction::Rebound(mark), _) => {
                // The bound the store's mark sets, tightened by our own unknown call.
                let bound = [mark, self.state.unconfirmed.map(|u| unix_millis(u.since))]
                    .into_iter()
                    .flatten()
                    .map(|since| trust_bound(since, grace, now))
                    .min();
                if let Some(ours) = ours
                    && ours.trusted_until() != bound
                {
                    self.cred.rebound(ours.with_trusted_until(bound));
                }
            }
            // Tried at the next wake-up, over what the store holds now.
            (StoredAction::WriteBack, _) => {
                let base = stored.map_or(0, |s| s.version);
                match &mut self.unsaved {
                    Some(unsaved) => unsaved.base = base,
                    None => {
                        self.unsaved = Some(Unsaved {
                            failures: 0,
                            retry_at: Instant::now(),
                            base,
                        })
                    }
                }
            }
            (StoredAction::Conflict { baseline }, _) => {
                if self.state.conflict.is_none() {
                    tracing::warn!(key = %self.cred.key, version = baseline,
                        "another instance stored a different token while this one could not: fetching one more so that every instance serves the newest");
                }
                self.state.conflict = Some(baseline);
            }
            _ => {}
        }
    }
}

//! Credentials that WeChat pushes instead of handing out on request: the Open
//! Platform's `component_verify_ticket` (see `SourceConfig::pushed`).
//!
//! They have no flight task. A push is stored with its `CreateTime` as the version, so
//! the store's own "never replace a newer version" rule makes the newest ticket win on
//! every instance, whatever order pushes (or WeChat's retries) arrive in; instances of
//! a cluster adopt each other's through the store's change feed like any record. When
//! a token that needs the value finds none, WeChat is asked to push one
//! (`api_start_push_ticket`), at most once per [`PUSH_REQUEST_SPACING`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Credential, Refresher, Trigger};
use crate::domain::{from_unix_millis, unix_millis};
use crate::store::{SaveOutcome, StoredToken};

/// How long a pushed component_verify_ticket may be used (WECHAT-API.md: 12 hours).
pub const PUSHED_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Least time between two requests to WeChat to push a value: WeChat pushes every ten
/// minutes on its own, and asking more often only spends its quota.
pub const PUSH_REQUEST_SPACING: Duration = Duration::from_secs(60);

/// Marks a pushed value stored sealed.
const SEALED_PREFIX: &str = "sealed:";

/// How far ahead of ours WeChat's clock (a push's CreateTime) is believed.
const MAX_PUSH_CLOCK_LEAD: Duration = Duration::from_secs(3600);

/// What became of a pushed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// It is the newest: stored and used from now on.
    Newest,
    /// A newer one is held already (a late or repeated push): nothing changed.
    Older,
}

/// Why a pushed value was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("no pushed credential {app}/{name}")]
    Unknown { app: String, name: String },
    #[error("the pushed value is not a usable token (empty, too long or with spaces)")]
    Unusable,
    #[error("the store failed: {0}")]
    Store(#[from] crate::store::Error),
}

impl Refresher {
    /// Accepts a value WeChat pushed for `app`/`name`, created at `created` by WeChat's
    /// clock: stored durably first (a value that is only in memory would be lost by a
    /// crash, and WeChat pushes the next only ten minutes later), then used if it is
    /// the newest. Tokens that were waiting for it are refreshed.
    ///
    /// # Errors
    /// [`PushError`]; on a store error nothing changed.
    pub async fn accept_pushed(
        self: &Arc<Self>,
        app: &str,
        name: &str,
        value: &str,
        created: SystemTime,
    ) -> Result<Accepted, PushError> {
        let Some(cred) = self.credential(app, name).filter(|c| c.source.pushed) else {
            return Err(PushError::Unknown {
                app: app.to_owned(),
                name: name.to_owned(),
            });
        };
        if !crate::domain::is_usable_token(value) {
            return Err(PushError::Unusable);
        }
        let now = self.clock.now();
        // The version is WeChat's CreateTime as sent, so that pushes keep their order
        // even when WeChat's clock runs ahead of ours; the record's times are capped
        // at our clock (a record that looks refreshed in the future is not served).
        // A CreateTime more than an hour ahead is taken as an hour ahead: one wrong
        // clock must not pin the ticket against every later push.
        let version = unix_millis(created.min(now + MAX_PUSH_CLOCK_LEAD));
        let created = created.min(now);
        let record = StoredToken {
            app: app.to_owned(),
            name: name.to_owned(),
            value: self.sealed_pushed(&cred, value),
            expires_at_ms: unix_millis(created + PUSHED_LIFETIME),
            refreshed_at_ms: unix_millis(created),
            version,
            pending_since_ms: None,
            announced: true,
            generation: cred.generation.clone(),
        };
        let outcome = match self.store.save(&record).await {
            Ok(outcome) => outcome,
            Err(error) => {
                // Used from memory meanwhile; WeChat pushes again when it is told the
                // push failed, and that push is stored.
                if self.adopt_pushed(&cred, Some(&record)) {
                    self.after_push(app);
                }
                return Err(error.into());
            }
        };
        let installed = self.adopt_pushed(&cred, Some(&record));
        let accepted = if outcome == SaveOutcome::Saved || installed {
            Accepted::Newest
        } else {
            Accepted::Older
        };
        if accepted == Accepted::Newest {
            tracing::info!(
                app,
                token = name,
                create_time_ms = version,
                "pushed value accepted"
            );
            self.after_push(app);
        } else {
            tracing::info!(
                app,
                token = name,
                create_time_ms = version,
                "an older pushed value arrived late; the newer one is kept"
            );
        }
        Ok(accepted)
    }

    /// Uses `stored` (read from the store, or just pushed) if it is newer than what
    /// `cred` holds and may be served; true if installed.
    pub(super) fn adopt_pushed(&self, cred: &Credential, stored: Option<&StoredToken>) -> bool {
        let Some(stored) = stored.and_then(|s| self.opened_pushed(cred, s.clone())) else {
            return false;
        };
        let stored = &stored;
        let now = self.clock.now();
        if !cred.owns(stored) || !stored.is_sane(unix_millis(now)) {
            return false;
        }
        if from_unix_millis(stored.expires_at_ms) <= now {
            return false;
        }
        let _one_at_a_time = self.pushes.lock().unwrap_or_else(|e| e.into_inner());
        if cred.current_version() >= stored.version {
            return false;
        }
        cred.saw_stored(stored.version);
        cred.install(super::Token::from_stored(
            stored,
            Trigger::Peer,
            now,
            self.settings.upstream_grace,
        ));
        cred.record_success(now);
        true
    }

    /// `value` as stored: sealed with `store.encryption_key` when one is set (a verify
    /// ticket and the platform's secret make a component token), for this credential
    /// only.
    fn sealed_pushed(&self, cred: &Credential, value: &str) -> String {
        match &self.pushed_sealer {
            Some(sealer) => format!(
                "{SEALED_PREFIX}{}",
                sealer.seal(&cred.key.to_string(), value.as_bytes())
            ),
            None => value.to_owned(),
        }
    }

    /// `stored` with its value opened: as it is when stored unsealed (before a key
    /// was set); `None`, with an error in the log, when it does not open.
    pub(super) fn opened_pushed(
        &self,
        cred: &Credential,
        mut stored: StoredToken,
    ) -> Option<StoredToken> {
        let Some(sealed) = stored.value.strip_prefix(SEALED_PREFIX) else {
            return Some(stored);
        };
        let opened = self
            .pushed_sealer
            .as_ref()
            .ok_or_else(|| "no store.encryption_key is set".to_owned())
            .and_then(|sealer| {
                sealer
                    .open(&cred.key.to_string(), sealed)
                    .map_err(|e| e.to_string())
            })
            .and_then(|plain| String::from_utf8(plain).map_err(|e| e.to_string()));
        match opened {
            Ok(value) => {
                stored.value = value;
                Some(stored)
            }
            Err(error) => {
                tracing::error!(key = %cred.key, %error, "a stored pushed value is sealed and cannot be opened; waiting for the next push");
                None
            }
        }
    }

    /// A pushed value of `app` arrived: the app's tokens that have none to serve
    /// (they were waiting for it) are fetched now rather than at their next retry.
    fn after_push(self: &Arc<Self>, app: &str) {
        let Some(entry) = self.app(app) else { return };
        let now = self.clock.now();
        for cred in entry.creds.iter().filter(|c| !c.source.pushed) {
            if cred.live_token(now).is_none() {
                let (refresher, cred) = (self.clone(), cred.clone());
                tokio::spawn(async move {
                    let _ = refresher.ask(&cred, Trigger::Dependency, None).await;
                });
            }
        }
    }

    /// [`request_push`](Self::request_push) in the background: the refresh that found
    /// the value missing fails at once instead of waiting for WeChat's answer.
    pub(super) fn spawn_request_push(self: &Arc<Self>, cred: Arc<Credential>) {
        let refresher = self.clone();
        tokio::spawn(async move { refresher.request_push(&cred).await });
    }

    /// Asks WeChat to push `cred`'s value now, unless asked within
    /// [`PUSH_REQUEST_SPACING`]. The answer comes later, at the event endpoint.
    pub(super) async fn request_push(&self, cred: &Credential) {
        let now = tokio::time::Instant::now();
        {
            let mut requested = self.pushes.lock().unwrap_or_else(|e| e.into_inner());
            if requested
                .get(&cred.key)
                .is_some_and(|at| now.duration_since(*at) < PUSH_REQUEST_SPACING)
            {
                return;
            }
            requested.insert(cred.key.clone(), now);
        }
        match self.api.request_push(&cred.source).await {
            Ok(()) => {
                tracing::info!(key = %cred.key, "asked WeChat to push the value now (api_start_push_ticket)")
            }
            Err(error) => {
                tracing::warn!(key = %cred.key, %error, "cannot ask WeChat to push the value (api_start_push_ticket)")
            }
        }
    }

    /// At start: for every pushed credential with nothing to serve, asks WeChat to
    /// push one (a fresh deployment would otherwise wait up to ten minutes).
    pub fn request_missing_pushes(self: &Arc<Self>) {
        let now = self.clock.now();
        for cred in self.credentials() {
            if cred.source.pushed && cred.live_token(now).is_none() {
                self.spawn_request_push(cred);
            }
        }
    }
}

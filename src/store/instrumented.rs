//! A store wrapper that counts operations and failures for `/metrics`, so that every
//! backend is measured the same way and none of them knows about metrics.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{Error, QuotaCounts, SaveOutcome, StoreEvent, StoredToken, TokenStore};
use crate::domain::CredentialKey;
use crate::metrics::Metrics;

/// The `op` label of each trait method that talks to the backend.
/// (`save_over` counts as `save`: both are the save of a token.)
const OPS: [&str; 11] = [
    "load_all",
    "load",
    "save",
    "mark_pending",
    "clear_pending",
    "add_quota_use",
    "load_quota",
    "ping",
    "try_lease",
    "renew_lease",
    "release_lease",
];

pub struct Instrumented {
    inner: Arc<dyn TokenStore>,
    metrics: Arc<Metrics>,
}

impl Instrumented {
    pub fn new(inner: Arc<dyn TokenStore>, metrics: Arc<Metrics>) -> Self {
        metrics.declare_store(inner.backend(), &OPS);
        Self { inner, metrics }
    }

    fn count<T>(&self, op: &'static str, result: Result<T, Error>) -> Result<T, Error> {
        self.metrics
            .store_operation(self.inner.backend(), op, result.is_ok());
        result
    }
}

#[async_trait]
impl TokenStore for Instrumented {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn load_all(&self) -> Result<Vec<StoredToken>, Error> {
        let result = self.inner.load_all().await;
        self.count("load_all", result)
    }

    async fn load(&self, key: &CredentialKey) -> Result<Option<StoredToken>, Error> {
        let result = self.inner.load(key).await;
        self.count("load", result)
    }

    async fn save(&self, token: &StoredToken) -> Result<SaveOutcome, Error> {
        let result = self.inner.save(token).await;
        self.count("save", result)
    }

    async fn save_over(&self, token: &StoredToken, expected: u64) -> Result<SaveOutcome, Error> {
        let result = self.inner.save_over(token, expected).await;
        self.count("save", result)
    }

    async fn mark_pending(&self, key: &CredentialKey, since_ms: u64) -> Result<(), Error> {
        let result = self.inner.mark_pending(key, since_ms).await;
        self.count("mark_pending", result)
    }

    async fn clear_pending(&self, key: &CredentialKey, since_ms: u64) -> Result<(), Error> {
        let result = self.inner.clear_pending(key, since_ms).await;
        self.count("clear_pending", result)
    }

    async fn add_quota_use(&self, app: &str, endpoint: &str, day: u64) -> Result<u64, Error> {
        let result = self.inner.add_quota_use(app, endpoint, day).await;
        self.count("add_quota_use", result)
    }

    async fn load_quota(&self, app: &str, day: u64) -> Result<QuotaCounts, Error> {
        let result = self.inner.load_quota(app, day).await;
        self.count("load_quota", result)
    }

    async fn load_quotas(&self, apps: &[&str], day: u64) -> Result<Vec<QuotaCounts>, Error> {
        let result = self.inner.load_quotas(apps, day).await;
        self.count("load_quota", result)
    }

    async fn ping(&self) -> Result<(), Error> {
        let result = self.inner.ping().await;
        self.count("ping", result)
    }

    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }

    async fn try_lease(
        &self,
        key: &CredentialKey,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, Error> {
        let result = self.inner.try_lease(key, holder, ttl).await;
        self.count("try_lease", result)
    }

    async fn renew_lease(
        &self,
        key: &CredentialKey,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, Error> {
        let result = self.inner.renew_lease(key, holder, ttl).await;
        self.count("renew_lease", result)
    }

    async fn release_lease(&self, key: &CredentialKey, holder: &str) -> Result<(), Error> {
        let result = self.inner.release_lease(key, holder).await;
        self.count("release_lease", result)
    }

    fn watch(&self) -> Option<tokio::sync::mpsc::Receiver<StoreEvent>> {
        self.inner.watch()
    }
}

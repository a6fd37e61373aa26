//! A store wrapper that counts operations and failures for `/metrics`, so that every
//! backend is measured the same way and none of them knows about metrics.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{Error, QuotaCounts, SaveOutcome, StoreEvent, StoredApp, StoredToken, TokenStore};
use crate::domain::CredentialKey;
use crate::metrics::Metrics;

/// The `op` label of each trait method that talks to the backend.
/// (`save_over` counts as `save`: both are the save of a token.)
const OPS: [&str; 17] = [
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
    "delete",
    "load_apps",
    "save_app",
    "delete_app",
    "apps_revision",
    "changes_since",
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

    async fn changes_since(&self, since: u64) -> Result<Option<(u64, Vec<CredentialKey>)>, Error> {
        let result = self.inner.changes_since(since).await;
        self.count("changes_since", result)
    }

    async fn delete(&self, key: &CredentialKey) -> Result<(), Error> {
        let result = self.inner.delete(key).await;
        self.count("delete", result)
    }

    async fn load_apps(&self) -> Result<Vec<StoredApp>, Error> {
        let result = self.inner.load_apps().await;
        self.count("load_apps", result)
    }

    async fn save_app(&self, app: &StoredApp) -> Result<(), Error> {
        let result = self.inner.save_app(app).await;
        self.count("save_app", result)
    }

    async fn delete_app(&self, name: &str) -> Result<bool, Error> {
        let result = self.inner.delete_app(name).await;
        self.count("delete_app", result)
    }

    async fn apps_revision(&self) -> Result<u64, Error> {
        let result = self.inner.apps_revision().await;
        self.count("apps_revision", result)
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

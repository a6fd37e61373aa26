//! A store wrapper that counts operations and failures for `/metrics`, so that every
//! backend is measured the same way and none of them knows about metrics.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Error, QuotaCounts, StoredToken, TokenStore};
use crate::metrics::Metrics;

/// The `op` label of each trait method.
const OPS: [&str; 5] = ["load_all", "save", "add_quota_use", "load_quota", "ping"];

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

    async fn save(&self, token: &StoredToken) -> Result<(), Error> {
        let result = self.inner.save(token).await;
        self.count("save", result)
    }

    async fn add_quota_use(&self, app: &str, endpoint: &str, day: u64) -> Result<u64, Error> {
        let result = self.inner.add_quota_use(app, endpoint, day).await;
        self.count("add_quota_use", result)
    }

    async fn load_quota(&self, app: &str, day: u64) -> Result<QuotaCounts, Error> {
        let result = self.inner.load_quota(app, day).await;
        self.count("load_quota", result)
    }

    async fn ping(&self) -> Result<(), Error> {
        let result = self.inner.ping().await;
        self.count("ping", result)
    }
}

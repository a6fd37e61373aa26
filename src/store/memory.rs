//! `backend = "memory"`: tokens in process memory, lost on restart. For tests and for
//! throwaway setups.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Error, QuotaCounts, SaveOutcome, StoredApp, StoredToken, TokenStore};
use crate::domain::CredentialKey;

#[derive(Default)]
pub struct MemoryStore {
    tokens: Mutex<HashMap<CredentialKey, StoredToken>>,
    /// Pending marks, apart from the tokens like the embedded store's.
    pending: Mutex<HashMap<CredentialKey, u64>>,
    /// (app, endpoint) -> (day, calls that day). Only the latest day is kept.
    quota: Mutex<HashMap<(String, String), (u64, u64)>>,
    apps: Mutex<HashMap<String, String>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A save: over any older version (`expected` None), or over exactly `expected`.
    fn store(&self, token: &StoredToken, expected: Option<u64>) -> Result<SaveOutcome, Error> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let current = tokens.get(&token.key()).map_or(0, |t| t.version);
        if current >= token.version || expected.is_some_and(|e| e != current) {
            return Ok(SaveOutcome::Outdated);
        }
        let mut token = token.clone();
        token.pending_since_ms = None;
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&token.key());
        tokens.insert(token.key(), token);
        Ok(SaveOutcome::Saved)
    }
}

fn with_pending(token: &StoredToken, pending: Option<&u64>) -> StoredToken {
    StoredToken {
        pending_since_ms: pending.copied(),
        ..token.clone()
    }
}

#[async_trait]
impl TokenStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn load_all(&self) -> Result<Vec<StoredToken>, Error> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        Ok(tokens
            .iter()
            .map(|(key, token)| with_pending(token, pending.get(key)))
            .collect())
    }

    async fn load(&self, key: &CredentialKey) -> Result<Option<StoredToken>, Error> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        Ok(tokens.get(key).map(|t| with_pending(t, pending.get(key))))
    }

    async fn save(&self, token: &StoredToken) -> Result<SaveOutcome, Error> {
        self.store(token, None)
    }

    async fn save_over(&self, token: &StoredToken, expected: u64) -> Result<SaveOutcome, Error> {
        self.store(token, Some(expected))
    }

    async fn mark_pending(&self, key: &CredentialKey, since_ms: u64) -> Result<(), Error> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.entry(key.clone()).or_insert(since_ms);
        Ok(())
    }

    async fn clear_pending(&self, key: &CredentialKey, since_ms: u64) -> Result<(), Error> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.get(key) == Some(&since_ms) {
            pending.remove(key);
        }
        Ok(())
    }

    async fn delete(&self, key: &CredentialKey) -> Result<(), Error> {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        Ok(())
    }

    async fn load_apps(&self) -> Result<Vec<StoredApp>, Error> {
        let apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        Ok(apps
            .iter()
            .map(|(name, record)| StoredApp {
                name: name.clone(),
                record: record.clone(),
            })
            .collect())
    }

    async fn save_app(&self, app: &StoredApp) -> Result<(), Error> {
        self.apps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(app.name.clone(), app.record.clone());
        Ok(())
    }

    async fn delete_app(&self, name: &str) -> Result<bool, Error> {
        Ok(self
            .apps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .is_some())
    }

    async fn add_quota_use(&self, app: &str, endpoint: &str, day: u64) -> Result<u64, Error> {
        let mut quota = self.quota.lock().unwrap_or_else(|e| e.into_inner());
        let entry = quota
            .entry((app.to_owned(), endpoint.to_owned()))
            .or_insert((day, 0));
        if entry.0 != day {
            *entry = (day, 0);
        }
        entry.1 += 1;
        Ok(entry.1)
    }

    async fn load_quota(&self, app: &str, day: u64) -> Result<QuotaCounts, Error> {
        let quota = self.quota.lock().unwrap_or_else(|e| e.into_inner());
        Ok(quota
            .iter()
            .filter(|((a, _), (d, _))| a == app && *d == day)
            .map(|((_, endpoint), (_, calls))| (endpoint.clone(), *calls))
            .collect())
    }

    async fn ping(&self) -> Result<(), Error> {
        Ok(())
    }
}

//! `backend = "memory"`: tokens in process memory, lost on restart. For tests and for
//! throwaway setups.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Error, QuotaCounts, SaveOutcome, StoredToken, TokenStore};
use crate::domain::CredentialKey;

#[derive(Default)]
pub struct MemoryStore {
    tokens: Mutex<HashMap<CredentialKey, StoredToken>>,
    /// (app, endpoint) -> (day, calls that day). Only the latest day is kept.
    quota: Mutex<HashMap<(String, String), (u64, u64)>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl TokenStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn load_all(&self) -> Result<Vec<StoredToken>, Error> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        Ok(tokens.values().cloned().collect())
    }

    async fn load(&self, key: &CredentialKey) -> Result<Option<StoredToken>, Error> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        Ok(tokens.get(key).cloned())
    }

    async fn save(&self, token: &StoredToken) -> Result<SaveOutcome, Error> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if tokens
            .get(&token.key())
            .is_some_and(|t| t.version >= token.version)
        {
            return Ok(SaveOutcome::Outdated);
        }
        tokens.insert(token.key(), token.clone());
        Ok(SaveOutcome::Saved)
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

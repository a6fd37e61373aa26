//! `backend = "memory"`: tokens in process memory, lost on restart. For tests and for
//! throwaway setups.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Error, SaveOutcome, StoredToken, TokenStore};
use crate::domain::CredentialKey;

#[derive(Default)]
pub struct MemoryStore {
    tokens: Mutex<HashMap<CredentialKey, StoredToken>>,
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
}

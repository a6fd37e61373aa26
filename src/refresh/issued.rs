//! Which credential a token value belongs to: the gateway and the facade's ticket
//! endpoints accept a token only if this server handed it out, and must find its app
//! without scanning 10,000 apps per request.
//!
//! Kept up to date by [`Credential::install`](super::Credential): each new value is
//! added and the value that stops being "current or previous" is removed, so the
//! index holds at most two entries per credential. Entries are keyed by a keyed hash
//! of the value (not the value itself: no copy of every token in a second place); a
//! lookup is always checked against the credential's own current and previous token,
//! so a hash collision or an entry of a removed app can only ever mean "not ours".

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, RwLock};

use crate::domain::CredentialKey;

/// Only these tokens are indexed: what WeChat's APIs take as `access_token=`.
pub const INDEXED_NAME: &str = "access_token";

/// Hard bound on entries, whatever happens (two per credential is the normal size).
const MAX_ENTRIES: usize = 1 << 20;

/// Token value (hashed) -> the credential that holds it.
#[derive(Default)]
pub struct IssuedTokens {
    hasher: RandomState,
    entries: RwLock<HashMap<u64, Arc<CredentialKey>>>,
}

impl IssuedTokens {
    fn hash(&self, value: &str) -> u64 {
        self.hasher.hash_one(value)
    }

    /// `key`'s token is now `value`; `dropped` (the value before the previous one, if
    /// any) is no longer accepted and leaves the index.
    pub(super) fn installed(&self, key: &Arc<CredentialKey>, value: &str, dropped: Option<&str>) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if let Some(dropped) = dropped {
            let hash = self.hash(dropped);
            if entries.get(&hash).is_some_and(|k| Arc::ptr_eq(k, key)) {
                entries.remove(&hash);
            }
        }
        if entries.len() < MAX_ENTRIES {
            entries.insert(self.hash(value), key.clone());
        }
    }

    /// Forgets `values` of `key` (its app was removed or replaced).
    pub(super) fn forget<'a>(
        &self,
        key: &Arc<CredentialKey>,
        values: impl Iterator<Item = &'a str>,
    ) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        for value in values {
            let hash = self.hash(value);
            if entries.get(&hash).is_some_and(|k| Arc::ptr_eq(k, key)) {
                entries.remove(&hash);
            }
        }
    }

    /// The credential that `value` may belong to (to be checked against it).
    pub fn candidate(&self, value: &str) -> Option<Arc<CredentialKey>> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(&self.hash(value)).cloned()
    }

    /// How many values are indexed.
    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_the_current_and_previous_value_only() {
        let index = IssuedTokens::default();
        let key = Arc::new(CredentialKey::new("shop", "access_token"));
        index.installed(&key, "t1", None);
        index.installed(&key, "t2", None);
        index.installed(&key, "t3", Some("t1"));
        assert!(index.candidate("t1").is_none());
        assert_eq!(index.candidate("t2").unwrap().app, "shop");
        assert!(index.candidate("t3").is_some());
        assert_eq!(index.len(), 2);
        index.forget(&key, ["t2", "t3"].into_iter());
        assert!(index.is_empty());
    }
}

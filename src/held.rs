//! Held values: secrets the server keeps for an app and that WeChat may replace, such as
//! an Open Platform authorizer's `authorizer_refresh_token`. They are not tokens (no
//! expiry, never served, never fetched on their own): templates refer to them by name
//! (`{{authorizer_refresh_token}}`), and a reply that carries a new one rotates it (see
//! `SourceConfig::rotates`).
//!
//! The value lives in a shared cell so that a rotation is seen by the next call at once,
//! while the durable copy (the registry record) is written beside it: the previous value
//! is kept until the new one is stored, so neither is lost in between.

use std::fmt;
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};

/// One held value of an app, shared by its definition and its credentials.
pub struct HeldValue {
    name: String,
    current: ArcSwap<String>,
    /// The value before the last rotation, tried when WeChat refuses the current one
    /// (another instance may have rotated it meanwhile, or the rotation was not stored).
    previous: ArcSwapOption<String>,
}

impl HeldValue {
    pub fn new(name: &str, current: String, previous: Option<String>) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            current: ArcSwap::from_pointee(current),
            previous: ArcSwapOption::from(previous.map(Arc::new)),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn current(&self) -> Arc<String> {
        self.current.load_full()
    }

    pub fn previous(&self) -> Option<Arc<String>> {
        self.previous.load_full()
    }

    /// Replaces the value with `new` (the old one becomes the previous); returns the
    /// old one, or `None` when `new` is what is held already.
    pub fn rotate(&self, new: &str) -> Option<Arc<String>> {
        let old = self.current.load_full();
        if *old == new {
            return None;
        }
        self.previous.store(Some(old.clone()));
        self.current.store(Arc::new(new.to_owned()));
        Some(old)
    }

    /// Sets both values, as read from the durable copy (another instance rotated it).
    pub fn set(&self, current: &str, previous: Option<&str>) {
        if *self.current.load_full() != current {
            self.current.store(Arc::new(current.to_owned()));
        }
        self.previous
            .store(previous.map(|p| Arc::new(p.to_owned())));
    }
}

impl fmt::Debug for HeldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The values are secrets.
        f.debug_struct("HeldValue")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_keeps_the_old_value_as_previous() {
        let held = HeldValue::new("authorizer_refresh_token", "r1".into(), None);
        assert_eq!(held.rotate("r1"), None, "the same value is no rotation");
        assert_eq!(held.rotate("r2").as_deref().map(String::as_str), Some("r1"));
        assert_eq!(*held.current(), "r2");
        assert_eq!(held.previous().as_deref().map(String::as_str), Some("r1"));
        held.set("r3", None);
        assert_eq!(*held.current(), "r3");
        assert!(held.previous().is_none());
        assert!(!format!("{held:?}").contains("r3"));
    }
}

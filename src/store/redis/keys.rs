//! The Redis key layout, in its two forms: plain (one server, Sentinel) and with hash
//! tags (Cluster).
//!
//! In a Redis Cluster a Lua script may touch only keys of one hash slot. Every key of
//! one token therefore carries the tag `{app:name}` (`Pwts:meta:{shop:access_token}`,
//! `Pwts:lease:{shop:access_token}`), so that each save, mark and lease is one script
//! on one slot; the registry's keys share the tag `{wts:apps}`, the change log's keys
//! the tag `{wts:changes}`. The seed's plain keys (`{app}:{name}`, `NAME`) are not
//! written in cluster mode: they would live in another slot than the record, and no
//! script could write both atomically.

use crate::config::DEFAULT_APP;
use crate::domain::CredentialKey;

#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
    cluster: bool,
}

impl Keys {
    pub fn new(prefix: &str, cluster: bool) -> Self {
        Self {
            prefix: prefix.to_owned(),
            cluster,
        }
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// `app:name`, the member of the change log and the payload of an update.
    pub fn member(key: &CredentialKey) -> String {
        format!("{}:{}", key.app, key.name)
    }

    /// `app:name`, tagged in cluster mode.
    fn token_part(&self, key: &CredentialKey) -> String {
        if self.cluster {
            format!("{{{}:{}}}", key.app, key.name)
        } else {
            Self::member(key)
        }
    }

    /// The seed-compatible key of a token; `None` in cluster mode (not written there).
    pub fn plain(&self, key: &CredentialKey) -> Option<String> {
        if self.cluster {
            None
        } else if key.app == DEFAULT_APP {
            Some(format!("{}{}", self.prefix, key.name))
        } else {
            Some(format!("{}{}:{}", self.prefix, key.app, key.name))
        }
    }

    pub fn meta_prefix(&self) -> String {
        format!("{}wts:meta:", self.prefix)
    }

    pub fn meta(&self, key: &CredentialKey) -> String {
        format!("{}{}", self.meta_prefix(), self.token_part(key))
    }

    /// The `(app, name)` of a meta key, in either form.
    pub fn parse_meta<'k>(&self, meta_key: &'k str) -> Option<(&'k str, &'k str)> {
        let rest = meta_key.strip_prefix(&self.meta_prefix())?;
        let rest = if self.cluster {
            rest.strip_prefix('{')?.strip_suffix('}')?
        } else {
            rest
        };
        rest.split_once(':')
    }

    pub fn lease(&self, key: &CredentialKey) -> String {
        format!("{}wts:lease:{}", self.prefix, self.token_part(key))
    }

    /// One key per app and day, touched alone: no tag needed.
    pub fn quota(&self, app: &str, day: u64) -> String {
        format!("{}wts:quota:{app}:{day}", self.prefix)
    }

    pub fn changes(&self) -> String {
        self.tagged("wts:changes", "")
    }

    pub fn rev(&self) -> String {
        if self.cluster {
            self.tagged("wts:changes", ":rev")
        } else {
            format!("{}wts:rev", self.prefix)
        }
    }

    pub fn apps(&self) -> String {
        self.tagged("wts:apps", "")
    }

    pub fn apps_rev(&self) -> String {
        self.tagged("wts:apps", ":rev")
    }

    /// Channels are not slotted (cluster pub/sub is broadcast to every node).
    pub fn channel(&self) -> String {
        format!("{}wts:updates", self.prefix)
    }

    /// `P` + `name` + `suffix`, with `name` as the hash tag in cluster mode.
    fn tagged(&self, name: &str, suffix: &str) -> String {
        if self.cluster {
            format!("{}{{{name}}}{suffix}", self.prefix)
        } else {
            format!("{}{name}{suffix}", self.prefix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_keys_follow_the_seed_layout() {
        let keys = Keys::new("", false);
        let default = CredentialKey::new("default", "access_token");
        assert_eq!(keys.plain(&default).unwrap(), "access_token");
        let shop = CredentialKey::new("shop", "jsapi_ticket");
        assert_eq!(keys.plain(&shop).unwrap(), "shop:jsapi_ticket");
        let keys = Keys::new("wx:", false);
        assert_eq!(
            keys.plain(&CredentialKey::new("default", "ticket"))
                .unwrap(),
            "wx:ticket"
        );
        assert_eq!(keys.meta(&shop), "wx:wts:meta:shop:jsapi_ticket");
        assert_eq!(keys.rev(), "wx:wts:rev");
        assert_eq!(keys.apps_rev(), "wx:wts:apps:rev");
        assert_eq!(
            keys.parse_meta("wx:wts:meta:shop:jsapi_ticket"),
            Some(("shop", "jsapi_ticket"))
        );
    }

    #[test]
    fn cluster_keys_of_one_token_share_its_hash_tag() {
        let keys = Keys::new("wx:", true);
        let shop = CredentialKey::new("shop", "access_token");
        assert_eq!(keys.plain(&shop), None);
        assert_eq!(keys.meta(&shop), "wx:wts:meta:{shop:access_token}");
        assert_eq!(keys.lease(&shop), "wx:wts:lease:{shop:access_token}");
        assert_eq!(
            keys.parse_meta("wx:wts:meta:{shop:access_token}"),
            Some(("shop", "access_token"))
        );
        assert_eq!(keys.changes(), "wx:{wts:changes}");
        assert_eq!(keys.rev(), "wx:{wts:changes}:rev");
        assert_eq!(keys.apps(), "wx:{wts:apps}");
        assert_eq!(keys.apps_rev(), "wx:{wts:apps}:rev");
    }
}

//! `backend = "redis"`: tokens in Redis, shared by a cluster of instances.
//!
//! Layout (with `P` = `store.key_prefix`, default ""):
//! - `P{name}` for the `default` app, `P{app}:{name}` for others: the token value as a
//!   plain string with a TTL equal to its remaining life. This is the Python original's
//!   layout, so programs that read Redis directly keep working.
//! - `Pwts:meta:{app}:{name}`: a hash `value`, `expires_at_ms`, `refreshed_at_ms`,
//!   `version`, `announced` (0 when fetched without the lease), `gen` (the definition
//!   of a registry app it was fetched for), and `pending_since_ms`
//!   while a call that may replace the token is out: what instances load and compare.
//!   No TTL: the version must survive.
//! - `Pwts:lease:{app}:{name}`: the id of the one instance refreshing that token now,
//!   with a short TTL that the holder renews while its call to WeChat is under way.
//! - channel `Pwts:updates`: `{app}:{name}` published after each save.
//! - `Pwts:quota:{app}:{day}`: a hash endpoint -> calls on that WeChat day, shared by
//!   every instance, expiring two days later.
//! - `Pwts:changes` (a sorted set `{app}:{name}` -> the revision of its last change) and
//!   `Pwts:rev` (the revision counter): every write of a token record bumps the counter
//!   and scores its member, so that an instance catches up on what it missed by reading
//!   only what changed since the revision it last saw (a few commands at idle, whatever
//!   the number of tokens), not every record.
//! - `Pwts:apps`: a hash app name -> the registry's record of that app (see
//!   `crate::registry`), and `Pwts:apps:rev`, bumped by every change of it.
//!
//! Every save is a Lua script that compares versions, so a writer that lost its lease
//! (or a race) can never replace a newer token.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use tokio::sync::mpsc;

use super::{Error, QuotaCounts, SaveOutcome, StoreEvent, StoredApp, StoredToken, TokenStore};
use crate::config::DEFAULT_APP;
use crate::domain::CredentialKey;

/// Redis calls fail after this, so that a dead Redis never stalls a refresh for long;
/// tokens keep being served from memory meanwhile.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// Quota counts outlive their WeChat day by a day, then Redis drops them.
const QUOTA_TTL_SECS: i64 = 2 * 24 * 3600;

/// Longest wait between attempts to resubscribe to the update channel.
const MAX_RESUBSCRIBE_DELAY: Duration = Duration::from_secs(5);

/// Saves a token unless a newer or equal version is stored, or (ARGV[9] >= 0) unless
/// the stored version is exactly ARGV[9].
const SAVE_SCRIPT: &str = r"
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if current >= tonumber(ARGV[1]) then return 0 end
local expected = tonumber(ARGV[9])
if expected >= 0 and current ~= expected then return 0 end
redis.call('HSET', KEYS[1], 'value', ARGV[2], 'expires_at_ms', ARGV[3], 'refreshed_at_ms', ARGV[4], 'version', ARGV[1], 'announced', ARGV[8])
redis.call('HDEL', KEYS[1], 'pending_since_ms')
if ARGV[10] == '' then
  redis.call('HDEL', KEYS[1], 'gen')
else
  redis.call('HSET', KEYS[1], 'gen', ARGV[10])
end
if tonumber(ARGV[5]) > 0 then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[5])
end
redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), ARGV[7])
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 1
";

/// Sets the pending mark of a stored token unless one is set, and tells the cluster
/// (every instance then trusts its copy only for the grace from the mark).
const MARK_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HSETNX', KEYS[1], 'pending_since_ms', ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[3])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return 1
";

/// Clears a pending mark if it is the one named, and tells the cluster (which lifts
/// the bound it put on the token).
const CLEAR_SCRIPT: &str = r"
if redis.call('HGET', KEYS[1], 'pending_since_ms') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'pending_since_ms')
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[3])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return 1
";

/// Deletes a token's records (its app was removed). Not published: an instance still
/// refreshing the app would take a record that vanished for a store that lost its data
/// and write its token back; instances learn of the removal from the registry.
const DELETE_SCRIPT: &str = r"
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), ARGV[2])
return 1
";

/// Stores a registry app and bumps the registry's revision.
const SAVE_APP_SCRIPT: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return redis.call('INCR', KEYS[2])
";

/// Deletes a registry app and, if there was one, bumps the registry's revision.
const DELETE_APP_SCRIPT: &str = r"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  redis.call('INCR', KEYS[2])
  return 1
end
return 0
";

/// Takes a lease that is free, or that the same instance (ARGV[3], the part of the
/// holder before '#') still holds from an earlier attempt.
const LEASE_SCRIPT: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, string.len(ARGV[3]) + 1) == ARGV[3] .. '#' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

const RENEW_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

pub struct RedisStore {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    save: Script,
    mark: Script,
    clear: Script,
    lease: Script,
    renew: Script,
    release: Script,
    delete: Script,
    save_app: Script,
    delete_app: Script,
    watching: AtomicBool,
}

impl RedisStore {
    /// Prepares a connection to `url`; the connection itself is made on first use and
    /// remade after failures, so a Redis that is down at start-up is not fatal.
    ///
    /// # Errors
    /// When the URL is not a valid Redis URL.
    pub fn open(url: &str, prefix: &str) -> Result<Self, Error> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Self {
            client,
            conn,
            prefix: prefix.to_owned(),
            save: Script::new(SAVE_SCRIPT),
            mark: Script::new(MARK_SCRIPT),
            clear: Script::new(CLEAR_SCRIPT),
            lease: Script::new(LEASE_SCRIPT),
            renew: Script::new(RENEW_SCRIPT),
            release: Script::new(RELEASE_SCRIPT),
            delete: Script::new(DELETE_SCRIPT),
            save_app: Script::new(SAVE_APP_SCRIPT),
            delete_app: Script::new(DELETE_APP_SCRIPT),
            watching: AtomicBool::new(false),
        })
    }

    /// A save: over any older version (`expected` None), or over exactly `expected`.
    async fn store(
        &self,
        token: &StoredToken,
        expected: Option<u64>,
    ) -> Result<SaveOutcome, Error> {
        let mut conn = self.conn.clone();
        let key = token.key();
        let now_ms = crate::domain::unix_millis(std::time::SystemTime::now());
        let ttl_ms = token.expires_at_ms.saturating_sub(now_ms);
        let saved: i64 = self
            .save
            .key(self.meta_key(&key))
            .key(self.plain_key(&key))
            .key(self.changes_key())
            .key(self.rev_key())
            .arg(token.version)
            .arg(&token.value)
            .arg(token.expires_at_ms)
            .arg(token.refreshed_at_ms)
            .arg(ttl_ms)
            .arg(self.channel())
            .arg(format!("{}:{}", key.app, key.name))
            .arg(if token.announced { "1" } else { "0" })
            .arg(expected.map_or(-1, |e| i64::try_from(e).unwrap_or(i64::MAX)))
            .arg(token.generation.as_deref().unwrap_or(""))
            .invoke_async(&mut conn)
            .await?;
        Ok(if saved == 1 {
            SaveOutcome::Saved
        } else {
            SaveOutcome::Outdated
        })
    }

    /// The plain, seed-compatible key of a token.
    pub fn plain_key(&self, key: &CredentialKey) -> String {
        if key.app == DEFAULT_APP {
            format!("{}{}", self.prefix, key.name)
        } else {
            format!("{}{}:{}", self.prefix, key.app, key.name)
        }
    }

    fn meta_prefix(&self) -> String {
        format!("{}wts:meta:", self.prefix)
    }

    fn meta_key(&self, key: &CredentialKey) -> String {
        format!("{}{}:{}", self.meta_prefix(), key.app, key.name)
    }

    fn lease_key(&self, key: &CredentialKey) -> String {
        format!("{}wts:lease:{}:{}", self.prefix, key.app, key.name)
    }

    fn quota_key(&self, app: &str, day: u64) -> String {
        format!("{}wts:quota:{app}:{day}", self.prefix)
    }

    fn changes_key(&self) -> String {
        format!("{}wts:changes", self.prefix)
    }

    fn rev_key(&self) -> String {
        format!("{}wts:rev", self.prefix)
    }

    fn apps_key(&self) -> String {
        format!("{}wts:apps", self.prefix)
    }

    fn apps_rev_key(&self) -> String {
        format!("{}wts:apps:rev", self.prefix)
    }

    fn channel(&self) -> String {
        format!("{}wts:updates", self.prefix)
    }

    fn parse_record(
        &self,
        meta_key: &str,
        fields: &std::collections::HashMap<String, String>,
    ) -> Result<StoredToken, Error> {
        let malformed = |message: &str| Error::Malformed {
            key: meta_key.to_owned(),
            message: message.to_owned(),
        };
        let (app, name) = meta_key
            .strip_prefix(&self.meta_prefix())
            .and_then(|rest| rest.split_once(':'))
            .ok_or_else(|| malformed("key is not wts:meta:{app}:{name}"))?;
        let number = |field: &str| -> Result<u64, Error> {
            fields
                .get(field)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| malformed(&format!("field {field} is missing or not a number")))
        };
        Ok(StoredToken {
            app: app.to_owned(),
            name: name.to_owned(),
            value: fields
                .get("value")
                .cloned()
                .ok_or_else(|| malformed("field value is missing"))?,
            expires_at_ms: number("expires_at_ms")?,
            refreshed_at_ms: number("refreshed_at_ms")?,
            version: number("version")?,
            // An unreadable mark distrusts the token, like the embedded store's.
            pending_since_ms: fields
                .get("pending_since_ms")
                .map(|v| v.parse().unwrap_or(0)),
            announced: fields.get("announced").is_none_or(|v| v != "0"),
            generation: fields.get("gen").cloned(),
        })
    }
}

/// Escapes Redis glob characters so that a key prefix matches only itself.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Commands per pipeline when reading many keys: one round trip each, replies of a
/// few hundred KB.
const PIPELINE_BATCH: usize = 500;

#[async_trait]
impl TokenStore for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn load_all(&self) -> Result<Vec<StoredToken>, Error> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}*", glob_escape(&self.meta_prefix()));
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(200)
                .query_async(&mut conn)
                .await?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut tokens = Vec::with_capacity(keys.len());
        // Pipelined: one round trip per batch, not per key (20,000 keys one by one
        // take seconds).
        for batch in keys.chunks(PIPELINE_BATCH) {
            let mut pipe = redis::pipe();
            for key in batch {
                pipe.hgetall(key);
            }
            let records: Vec<std::collections::HashMap<String, String>> =
                pipe.query_async(&mut conn).await?;
            for (key, fields) in batch.iter().zip(records) {
                if fields.is_empty() {
                    continue; // deleted between SCAN and HGETALL
                }
                match self.parse_record(key, &fields) {
                    Ok(token) => tokens.push(token),
                    Err(e) => tracing::warn!(error = %e, "skipping malformed token record"),
                }
            }
        }
        Ok(tokens)
    }

    async fn changes_since(&self, since: u64) -> Result<Option<(u64, Vec<CredentialKey>)>, Error> {
        let mut conn = self.conn.clone();
        let (rev, changed): (Option<u64>, Vec<String>) = redis::pipe()
            .get(self.rev_key())
            .cmd("ZRANGEBYSCORE")
            .arg(self.changes_key())
            .arg(format!("({since}"))
            .arg("+inf")
            .query_async(&mut conn)
            .await?;
        let keys = changed
            .iter()
            .filter_map(|member| member.split_once(':'))
            .map(|(app, name)| CredentialKey::new(app, name))
            .collect();
        Ok(Some((rev.unwrap_or(0), keys)))
    }

    async fn delete(&self, key: &CredentialKey) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .delete
            .key(self.meta_key(key))
            .key(self.plain_key(key))
            .key(self.changes_key())
            .key(self.rev_key())
            .arg(self.channel())
            .arg(format!("{}:{}", key.app, key.name))
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn load_apps(&self) -> Result<Vec<StoredApp>, Error> {
        let mut conn = self.conn.clone();
        let apps: std::collections::HashMap<String, String> = conn.hgetall(self.apps_key()).await?;
        Ok(apps
            .into_iter()
            .map(|(name, record)| StoredApp { name, record })
            .collect())
    }

    async fn save_app(&self, app: &StoredApp) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        let _: u64 = self
            .save_app
            .key(self.apps_key())
            .key(self.apps_rev_key())
            .arg(&app.name)
            .arg(&app.record)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn delete_app(&self, name: &str) -> Result<bool, Error> {
        let mut conn = self.conn.clone();
        let deleted: i64 = self
            .delete_app
            .key(self.apps_key())
            .key(self.apps_rev_key())
            .arg(name)
            .invoke_async(&mut conn)
            .await?;
        Ok(deleted == 1)
    }

    async fn apps_revision(&self) -> Result<u64, Error> {
        let mut conn = self.conn.clone();
        let rev: Option<u64> = conn.get(self.apps_rev_key()).await?;
        Ok(rev.unwrap_or(0))
    }

    async fn load(&self, key: &CredentialKey) -> Result<Option<StoredToken>, Error> {
        let mut conn = self.conn.clone();
        let meta_key = self.meta_key(key);
        let fields: std::collections::HashMap<String, String> = conn.hgetall(&meta_key).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        self.parse_record(&meta_key, &fields).map(Some)
    }

    async fn save(&self, token: &StoredToken) -> Result<SaveOutcome, Error> {
        self.store(token, None).await
    }

    async fn save_over(&self, token: &StoredToken, expected: u64) -> Result<SaveOutcome, Error> {
        self.store(token, Some(expected)).await
    }

    async fn mark_pending(&self, key: &CredentialKey, since_ms: u64) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .mark
            .key(self.meta_key(key))
            .key(self.changes_key())
            .key(self.rev_key())
            .arg(since_ms)
            .arg(self.channel())
            .arg(format!("{}:{}", key.app, key.name))
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn clear_pending(&self, key: &CredentialKey, since_ms: u64) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .clear
            .key(self.meta_key(key))
            .key(self.changes_key())
            .key(self.rev_key())
            .arg(since_ms)
            .arg(self.channel())
            .arg(format!("{}:{}", key.app, key.name))
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn try_lease(
        &self,
        key: &CredentialKey,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, Error> {
        let mut conn = self.conn.clone();
        let taken: i64 = self
            .lease
            .key(self.lease_key(key))
            .arg(holder)
            .arg(ttl.as_millis().max(1) as u64)
            .arg(super::lease_owner(holder))
            .invoke_async(&mut conn)
            .await?;
        Ok(taken == 1)
    }

    async fn renew_lease(
        &self,
        key: &CredentialKey,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, Error> {
        let mut conn = self.conn.clone();
        let renewed: i64 = self
            .renew
            .key(self.lease_key(key))
            .arg(holder)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(renewed == 1)
    }

    async fn release_lease(&self, key: &CredentialKey, holder: &str) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .release
            .key(self.lease_key(key))
            .arg(holder)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn add_quota_use(&self, app: &str, endpoint: &str, day: u64) -> Result<u64, Error> {
        let mut conn = self.conn.clone();
        let key = self.quota_key(app, day);
        let (calls,): (u64,) = redis::pipe()
            .atomic()
            .hincr(&key, endpoint, 1)
            .expire(&key, QUOTA_TTL_SECS)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(calls)
    }

    async fn load_quota(&self, app: &str, day: u64) -> Result<QuotaCounts, Error> {
        let mut conn = self.conn.clone();
        let counts: std::collections::HashMap<String, u64> =
            conn.hgetall(self.quota_key(app, day)).await?;
        Ok(counts.into_iter().collect())
    }

    async fn load_quotas(&self, apps: &[&str], day: u64) -> Result<Vec<QuotaCounts>, Error> {
        let mut conn = self.conn.clone();
        let mut all = Vec::with_capacity(apps.len());
        for batch in apps.chunks(PIPELINE_BATCH) {
            let mut pipe = redis::pipe();
            for app in batch {
                pipe.hgetall(self.quota_key(app, day));
            }
            let counts: Vec<std::collections::HashMap<String, u64>> =
                pipe.query_async(&mut conn).await?;
            all.extend(counts.into_iter().map(|c| c.into_iter().collect()));
        }
        Ok(all)
    }

    async fn ping(&self) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    fn watch(&self) -> Option<mpsc::Receiver<StoreEvent>> {
        if self.watching.swap(true, Ordering::SeqCst) {
            return None; // one watcher per store
        }
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(subscribe_loop(self.client.clone(), self.channel(), tx));
        Some(rx)
    }
}

/// Keeps a subscription to the update channel, resubscribing with backoff after any
/// loss, and forwards each update. Ends when the receiver is dropped.
async fn subscribe_loop(client: redis::Client, channel: String, tx: mpsc::Sender<StoreEvent>) {
    let mut delay = Duration::from_millis(100);
    loop {
        let session = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            tracing::info!(%channel, "subscribed to token updates");
            delay = Duration::from_millis(100);
            // Updates published while we were not listening are caught up by a full read.
            if tx.send(StoreEvent::Resynchronise).await.is_err() {
                return Ok(());
            }
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let payload: String = message.get_payload().unwrap_or_default();
                if let Some((app, name)) = payload.split_once(':')
                    && tx
                        .send(StoreEvent::Changed(CredentialKey::new(app, name)))
                        .await
                        .is_err()
                {
                    return Ok(());
                }
            }
            Err::<(), redis::RedisError>(redis::RedisError::from((
                redis::ErrorKind::Io,
                "subscription closed",
            )))
        };
        tokio::select! {
            () = tx.closed() => return,
            result = session => {
                if tx.is_closed() {
                    return;
                }
                if let Err(error) = result {
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "lost the Redis update subscription");
                }
            }
        }
        tokio::select! {
            () = tx.closed() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_RESUBSCRIBE_DELAY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_matched_literally() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[tokio::test]
    async fn keys_follow_the_seed_layout() {
        let store = RedisStore::open("redis://127.0.0.1:1/0", "").unwrap();
        assert_eq!(
            store.plain_key(&CredentialKey::new("default", "access_token")),
            "access_token"
        );
        assert_eq!(
            store.plain_key(&CredentialKey::new("shop", "jsapi_ticket")),
            "shop:jsapi_ticket"
        );
        let store = RedisStore::open("redis://127.0.0.1:1/0", "wx:").unwrap();
        assert_eq!(
            store.plain_key(&CredentialKey::new("default", "ticket")),
            "wx:ticket"
        );
        assert_eq!(
            store.meta_key(&CredentialKey::new("shop", "a")),
            "wx:wts:meta:shop:a"
        );
    }

    #[test]
    fn an_invalid_url_is_refused() {
        assert!(RedisStore::open("http://nope", "").is_err());
    }
}

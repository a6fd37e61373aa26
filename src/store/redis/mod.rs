//! `backend = "redis"`: tokens in Redis, shared by a cluster of instances. One server
//! (plain or TLS), a Sentinel-monitored master, or a Redis Cluster (see [`target`]).
//!
//! Layout (with `P` = `store.key_prefix`, default ""; in cluster mode the keys carry
//! hash tags, see [`keys`]):
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
//!
//! In cluster mode the change log cannot share a slot with every token, so it is
//! written by a second, separate script after the token's own (see
//! [`RedisStore::log_change`]): the log is only a catch-up hint (`refresh::sync`), the
//! token's record and its version check stay atomic. A log entry lost between the two
//! (the process died, the log's node is down) delays other instances' catch-up of that
//! one change until their next full read; the pushed update, published by the token's
//! script itself, usually has them informed already.

mod conn;
pub mod keys;
pub mod target;
mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use tokio::sync::mpsc;

use super::{Error, QuotaCounts, SaveOutcome, StoreEvent, StoredApp, StoredToken, TokenStore};
use crate::domain::CredentialKey;
use conn::Conn;
use keys::Keys;
use target::Target;

/// Redis calls fail after this, so that a dead Redis never stalls a refresh for long;
/// tokens keep being served from memory meanwhile.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// Quota counts outlive their WeChat day by a day, then Redis drops them.
const QUOTA_TTL_SECS: i64 = 2 * 24 * 3600;

/// Token records read per round trip by a full read.
const LOAD_BATCH: usize = 500;

/// Cluster mode reads token records this many at a time (each its own slot).
const CLUSTER_READS: usize = 32;

/// Saves a token unless a newer or equal version is stored, or (ARGV[9] >= 0) unless
/// the stored version is exactly ARGV[9]. KEYS: the record, then (not in cluster mode)
/// the plain key, the change log and its counter. Returns 1 when saved.
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
if #KEYS > 1 then
  if tonumber(ARGV[5]) > 0 then
    redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[5])
  end
  redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), ARGV[7])
end
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 1
";

/// Sets the pending mark of a stored token unless one is set, and tells the cluster
/// (every instance then trusts its copy only for the grace from the mark). KEYS: the
/// record, then (not in cluster mode) the change log and its counter. Returns 2 when
/// the mark was set.
const MARK_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HSETNX', KEYS[1], 'pending_since_ms', ARGV[1]) == 1 then
  if #KEYS > 1 then
    redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[3])
  end
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 2
end
return 1
";

/// Clears a pending mark if it is the one named, and tells the cluster (which lifts
/// the bound it put on the token).
/// Returns 1 when cleared. KEYS as for the mark.
const CLEAR_SCRIPT: &str = r"
if redis.call('HGET', KEYS[1], 'pending_since_ms') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'pending_since_ms')
  if #KEYS > 1 then
    redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[3])
  end
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0
";

/// Deletes a token's records (its app was removed). Not published: an instance still
/// refreshing the app would take a record that vanished for a store that lost its data
/// and write its token back; instances learn of the removal from the registry.
/// KEYS: the record, then (not in cluster mode) the plain key, the log and its counter.
const DELETE_SCRIPT: &str = r"
redis.call('DEL', KEYS[1])
if #KEYS > 1 then
  redis.call('DEL', KEYS[2])
  redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), ARGV[2])
end
return 1
";

/// Cluster mode: scores a change in the log (its two keys share one slot).
const LOG_SCRIPT: &str = r"
redis.call('ZADD', KEYS[1], redis.call('INCR', KEYS[2]), ARGV[1])
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
    conn: Conn,
    keys: Keys,
    watch: WatchSource,
    save: Script,
    mark: Script,
    clear: Script,
    lease: Script,
    renew: Script,
    release: Script,
    delete: Script,
    save_app: Script,
    delete_app: Script,
    log: Script,
    watching: AtomicBool,
}

/// Where the update subscription is made, per mode.
enum WatchSource {
    Single(Box<redis::Client>),
    Sentinel(Arc<conn::Master>),
    Cluster {
        nodes: Vec<redis::ConnectionInfo>,
        password: Option<String>,
    },
}

/// A `redis_url` the store cannot use, or a `store.redis_ca` that does not fit it.
fn invalid(message: impl Into<String>) -> Error {
    Error::Redis(redis::RedisError::from((
        redis::ErrorKind::InvalidClientConfig,
        "invalid Redis configuration",
        message.into(),
    )))
}

impl RedisStore {
    /// Prepares a connection to `url`; the connection itself is made on first use and
    /// remade after failures, so a Redis that is down at start-up is not fatal.
    ///
    /// # Errors
    /// When the URL is not a valid Redis URL.
    pub fn open(url: &str, prefix: &str) -> Result<Self, Error> {
        Self::open_with_ca(url, prefix, None)
    }

    /// Like [`open`](Self::open); `ca` (PEM) is the certificate authority a `rediss://`
    /// server's certificate is checked against instead of the system's (`store.redis_ca`).
    ///
    /// # Errors
    /// When the URL is not a valid Redis URL, the CA is not PEM, or a CA is given for a
    /// URL without TLS; in cluster mode, a key prefix with a brace (it would change
    /// the hash tags).
    pub fn open_with_ca(url: &str, prefix: &str, ca: Option<&[u8]>) -> Result<Self, Error> {
        let target = target::parse(url).map_err(invalid)?;
        if ca.is_some() && !matches!(target, Target::Single { tls: true, .. }) {
            return Err(invalid("store.redis_ca applies to rediss:// URLs only"));
        }
        let cluster = matches!(target, Target::Cluster { .. });
        if cluster && (prefix.contains('{') || prefix.contains('}')) {
            return Err(invalid(
                "store.key_prefix may not contain '{' or '}' with a Redis Cluster: the keys' hash tags would change",
            ));
        }
        let (conn, watch) = match target {
            Target::Single { url, .. } => {
                let client = match ca {
                    Some(pem) => redis::Client::build_with_tls(
                        url.as_str(),
                        redis::TlsCertificates {
                            client_tls: None,
                            root_cert: Some(pem.to_vec()),
                        },
                    )?,
                    None => redis::Client::open(url.as_str())?,
                };
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(REDIS_TIMEOUT))
                    .set_response_timeout(Some(REDIS_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(100))
                    .set_max_delay(Duration::from_secs(1));
                let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
                (Conn::Single(manager), WatchSource::Single(Box::new(client)))
            }
            Target::Sentinel {
                sentinels,
                master,
                password,
                db,
            } => {
                let addrs = sentinels
                    .into_iter()
                    .map(|(host, port)| redis::ConnectionAddr::Tcp(host, port));
                let mut builder = redis::sentinel::SentinelClientBuilder::new(
                    addrs,
                    master,
                    redis::sentinel::SentinelServerType::Master,
                )?
                .set_client_to_redis_db(db);
                if let Some(password) = password {
                    builder = builder.set_client_to_redis_password(password);
                }
                let master = Arc::new(conn::Master::new(builder.build()?, db, REDIS_TIMEOUT));
                (
                    Conn::Sentinel(master.clone()),
                    WatchSource::Sentinel(master),
                )
            }
            Target::Cluster { nodes, password } => {
                let nodes: Vec<redis::ConnectionInfo> = nodes
                    .into_iter()
                    .map(|(host, port)| {
                        redis::IntoConnectionInfo::into_connection_info(redis::ConnectionAddr::Tcp(
                            host, port,
                        ))
                    })
                    .collect::<Result<_, _>>()?;
                let mut builder = redis::cluster::ClusterClient::builder(nodes.clone())
                    .connection_timeout(REDIS_TIMEOUT)
                    .response_timeout(REDIS_TIMEOUT)
                    .retries(2)
                    .max_retry_wait(500);
                if let Some(password) = &password {
                    builder = builder.password(password.clone());
                }
                let client = builder.build()?;
                (
                    Conn::Cluster(Arc::new(conn::LazyCluster::new(client))),
                    WatchSource::Cluster { nodes, password },
                )
            }
        };
        Ok(Self {
            conn,
            keys: Keys::new(prefix, cluster),
            watch,
            save: Script::new(SAVE_SCRIPT),
            mark: Script::new(MARK_SCRIPT),
            clear: Script::new(CLEAR_SCRIPT),
            lease: Script::new(LEASE_SCRIPT),
            renew: Script::new(RENEW_SCRIPT),
            release: Script::new(RELEASE_SCRIPT),
            delete: Script::new(DELETE_SCRIPT),
            save_app: Script::new(SAVE_APP_SCRIPT),
            delete_app: Script::new(DELETE_APP_SCRIPT),
            log: Script::new(LOG_SCRIPT),
            watching: AtomicBool::new(false),
        })
    }

    /// The keys a token script touches besides the record: the plain key (when
    /// `plain`) and the change log, none in cluster mode.
    fn extra_keys(
        &self,
        invocation: &mut redis::ScriptInvocation<'_>,
        key: &CredentialKey,
        plain: bool,
    ) {
        if self.keys.is_cluster() {
            return;
        }
        if plain && let Some(plain) = self.keys.plain(key) {
            invocation.key(plain);
        }
        invocation.key(self.keys.changes()).key(self.keys.rev());
    }

    /// Cluster mode: scores `key`'s change in the log, after its token script changed
    /// it (one server and Sentinel do it inside that script). See the module's doc.
    async fn log_change(&self, key: &CredentialKey) -> Result<(), Error> {
        if !self.keys.is_cluster() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let _: i64 = self
            .log
            .key(self.keys.changes())
            .key(self.keys.rev())
            .arg(Keys::member(key))
            .invoke_async(&mut conn)
            .await?;
        Ok(())
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
        let mut invocation = self.save.key(self.keys.meta(&key));
        self.extra_keys(&mut invocation, &key, true);
        let saved: i64 = invocation
            .arg(token.version)
            .arg(&token.value)
            .arg(token.expires_at_ms)
            .arg(token.refreshed_at_ms)
            .arg(ttl_ms)
            .arg(self.keys.channel())
            .arg(Keys::member(&key))
            .arg(if token.announced { "1" } else { "0" })
            .arg(expected.map_or(-1, |e| i64::try_from(e).unwrap_or(i64::MAX)))
            .arg(token.generation.as_deref().unwrap_or(""))
            .invoke_async(&mut conn)
            .await?;
        if saved != 1 {
            return Ok(SaveOutcome::Outdated);
        }
        self.log_change(&key).await?;
        Ok(SaveOutcome::Saved)
    }

    /// The plain, seed-compatible key of a token (`None` in cluster mode).
    pub fn plain_key(&self, key: &CredentialKey) -> Option<String> {
        self.keys.plain(key)
    }

    /// Every key of a token record, on every master in cluster mode (a `SCAN` sees
    /// one node's keys only).
    async fn record_keys(&self) -> Result<Vec<String>, Error> {
        let pattern = format!("{}*", glob_escape(&self.keys.meta_prefix()));
        let Conn::Cluster(cluster) = &self.conn else {
            let mut conn = self.conn.clone();
            return scan(&mut conn, &pattern, None).await;
        };
        let slots = cluster
            .connection()
            .await?
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                redis::cluster_routing::RoutingInfo::SingleNode(
                    redis::cluster_routing::SingleNodeRoutingInfo::Random,
                ),
            )
            .await?;
        let mut conn = self.conn.clone();
        let mut keys = Vec::new();
        for (host, port) in cluster_masters(&slots) {
            keys.extend(scan(&mut conn, &pattern, Some((host, port))).await?);
        }
        Ok(keys)
    }

    /// Reads the records at `keys`: pipelined in batches on one server; in cluster mode
    /// each key is its own slot, so they are read concurrently instead.
    async fn read_records(
        &self,
        keys: &[String],
    ) -> Result<Vec<std::collections::HashMap<String, String>>, Error> {
        let mut conn = self.conn.clone();
        if self.keys.is_cluster() {
            let reads = keys.iter().cloned().map(|key| {
                let mut conn = conn.clone();
                async move {
                    conn.hgetall::<_, std::collections::HashMap<String, String>>(key)
                        .await
                }
            });
            let records: Vec<_> = futures_util::stream::iter(reads)
                .buffered(CLUSTER_READS)
                .collect()
                .await;
            return Ok(records.into_iter().collect::<Result<_, _>>()?);
        }
        let mut records = Vec::with_capacity(keys.len());
        // One round trip per batch, not per token, so that a restart with thousands
        // of tokens is served within a second.
        for batch in keys.chunks(LOAD_BATCH) {
            let mut pipe = redis::pipe();
            for key in batch {
                pipe.hgetall(key);
            }
            let batch: Vec<std::collections::HashMap<String, String>> =
                pipe.query_async(&mut conn).await?;
            records.extend(batch);
        }
        Ok(records)
    }

    /// Runs the mark or clear script on `key`'s pending mark, and logs the change when
    /// the script answers `changed` (it changed the record).
    async fn pending_script(
        &self,
        script: &Script,
        key: &CredentialKey,
        since_ms: u64,
        changed: i64,
    ) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        let mut invocation = script.key(self.keys.meta(key));
        self.extra_keys(&mut invocation, key, false);
        let answer: i64 = invocation
            .arg(since_ms)
            .arg(self.keys.channel())
            .arg(Keys::member(key))
            .invoke_async(&mut conn)
            .await?;
        if answer == changed {
            self.log_change(key).await?;
        }
        Ok(())
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
        let (app, name) = self
            .keys
            .parse_meta(meta_key)
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

/// Every key matching `pattern`, on the server (or, in cluster mode, the node at
/// `node`).
async fn scan(
    conn: &mut Conn,
    pattern: &str,
    node: Option<(String, u16)>,
) -> Result<Vec<String>, Error> {
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(200);
        let (next, batch): (u64, Vec<String>) = match (&node, &*conn) {
            (Some((host, port)), Conn::Cluster(cluster)) => {
                let value = cluster
                    .connection()
                    .await?
                    .route_command(
                        cmd,
                        redis::cluster_routing::RoutingInfo::SingleNode(
                            redis::cluster_routing::SingleNodeRoutingInfo::ByAddress {
                                host: host.clone(),
                                port: *port,
                            },
                        ),
                    )
                    .await?;
                redis::FromRedisValue::from_redis_value(value)
                    .map_err(|e| Error::Redis(redis::RedisError::from(e)))?
            }
            _ => cmd.query_async(conn).await?,
        };
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

/// The `(host, port)` of each master in a `CLUSTER SLOTS` reply: entries are
/// `[first slot, last slot, [host, port, id, ...], replicas...]`.
fn cluster_masters(slots: &redis::Value) -> Vec<(String, u16)> {
    use redis::Value;
    let mut masters: Vec<(String, u16)> = Vec::new();
    let Value::Array(ranges) = slots else {
        return masters;
    };
    for range in ranges {
        let Value::Array(range) = range else { continue };
        let Some(Value::Array(master)) = range.get(2) else {
            continue;
        };
        let host = match master.first() {
            Some(Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
            Some(Value::SimpleString(host)) => host.clone(),
            _ => continue,
        };
        let Some(Value::Int(port)) = master.get(1) else {
            continue;
        };
        if let Ok(port) = u16::try_from(*port)
            && !masters.contains(&(host.clone(), port))
        {
            masters.push((host, port));
        }
    }
    masters
}

#[async_trait]
impl TokenStore for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn load_all(&self) -> Result<Vec<StoredToken>, Error> {
        let keys = self.record_keys().await?;
        let records = self.read_records(&keys).await?;
        let mut tokens = Vec::with_capacity(keys.len());
        for (key, fields) in keys.iter().zip(records) {
            if fields.is_empty() {
                continue; // deleted between SCAN and HGETALL
            }
            match self.parse_record(key, &fields) {
                Ok(token) => tokens.push(token),
                Err(e) => tracing::warn!(error = %e, "skipping malformed token record"),
            }
        }
        Ok(tokens)
    }

    async fn changes_since(&self, since: u64) -> Result<Option<(u64, Vec<CredentialKey>)>, Error> {
        let mut conn = self.conn.clone();
        let (rev, changed): (Option<u64>, Vec<String>) = redis::pipe()
            .get(self.keys.rev())
            .cmd("ZRANGEBYSCORE")
            .arg(self.keys.changes())
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
        let mut invocation = self.delete.key(self.keys.meta(key));
        self.extra_keys(&mut invocation, key, true);
        let _: i64 = invocation
            .arg(self.keys.channel())
            .arg(Keys::member(key))
            .invoke_async(&mut conn)
            .await?;
        self.log_change(key).await
    }

    async fn load_apps(&self) -> Result<Vec<StoredApp>, Error> {
        let mut conn = self.conn.clone();
        let apps: std::collections::HashMap<String, String> =
            conn.hgetall(self.keys.apps()).await?;
        Ok(apps
            .into_iter()
            .map(|(name, record)| StoredApp { name, record })
            .collect())
    }

    async fn save_app(&self, app: &StoredApp) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        let _: u64 = self
            .save_app
            .key(self.keys.apps())
            .key(self.keys.apps_rev())
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
            .key(self.keys.apps())
            .key(self.keys.apps_rev())
            .arg(name)
            .invoke_async(&mut conn)
            .await?;
        Ok(deleted == 1)
    }

    async fn apps_revision(&self) -> Result<u64, Error> {
        let mut conn = self.conn.clone();
        let rev: Option<u64> = conn.get(self.keys.apps_rev()).await?;
        Ok(rev.unwrap_or(0))
    }

    async fn load(&self, key: &CredentialKey) -> Result<Option<StoredToken>, Error> {
        let mut conn = self.conn.clone();
        let meta_key = self.keys.meta(key);
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
        // 2: a mark was set (1: one was set already, 0: no stored token).
        self.pending_script(&self.mark, key, since_ms, 2).await
    }

    async fn clear_pending(&self, key: &CredentialKey, since_ms: u64) -> Result<(), Error> {
        self.pending_script(&self.clear, key, since_ms, 1).await
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
            .key(self.keys.lease(key))
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
            .key(self.keys.lease(key))
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
            .key(self.keys.lease(key))
            .arg(holder)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn add_quota_use(&self, app: &str, endpoint: &str, day: u64) -> Result<u64, Error> {
        let mut conn = self.conn.clone();
        let key = self.keys.quota(app, day);
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
            conn.hgetall(self.keys.quota(app, day)).await?;
        Ok(counts.into_iter().collect())
    }

    async fn load_quotas(&self, apps: &[&str], day: u64) -> Result<Vec<QuotaCounts>, Error> {
        // Read like the token records: pipelined on one server, concurrent on a cluster.
        let keys: Vec<String> = apps.iter().map(|app| self.keys.quota(app, day)).collect();
        let records = self.read_records(&keys).await?;
        Ok(records
            .into_iter()
            .map(|fields| {
                fields
                    .into_iter()
                    .filter_map(|(endpoint, calls)| Some((endpoint, calls.parse().ok()?)))
                    .collect()
            })
            .collect())
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
        let channel = self.keys.channel();
        match &self.watch {
            WatchSource::Single(client) => {
                let source = watch::Source::Single(client.clone());
                tokio::spawn(watch::subscribe_loop(source, channel, tx));
            }
            WatchSource::Sentinel(master) => {
                let source = watch::Source::Sentinel(master.clone());
                tokio::spawn(watch::subscribe_loop(source, channel, tx));
            }
            WatchSource::Cluster { nodes, password } => {
                tokio::spawn(watch::cluster_loop(
                    nodes.clone(),
                    password.clone(),
                    channel,
                    tx,
                ));
            }
        }
        Some(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_matched_literally() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn an_invalid_url_is_refused() {
        assert!(RedisStore::open("http://nope", "").is_err());
    }
}

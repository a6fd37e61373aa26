//! One connection type for the three modes, so that the store's commands and scripts
//! are written once: the crate's `ConnectionManager` for one server (it reconnects by
//! itself), a connection that follows the Sentinel's master across failovers, and the
//! crate's cluster connection (it follows slot moves and failovers by itself).

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::SentinelClient;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use tokio::sync::Mutex;

/// A connection to the store's Redis, whatever the mode. Cheap to clone.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Sentinel(Arc<Master>),
    Cluster(Arc<LazyCluster>),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Sentinel(master) => async move {
                let (generation, mut conn) = master.connection().await?;
                let result = conn.req_packed_command(cmd).await;
                master.after(generation, result).await
            }
            .boxed(),
            Conn::Cluster(cluster) => async move {
                let mut conn = cluster.connection().await?;
                conn.req_packed_command(cmd).await
            }
            .boxed(),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(master) => async move {
                let (generation, mut conn) = master.connection().await?;
                let result = conn.req_packed_commands(pipeline, offset, count).await;
                master.after(generation, result).await
            }
            .boxed(),
            Conn::Cluster(cluster) => async move {
                let mut conn = cluster.connection().await?;
                conn.req_packed_commands(pipeline, offset, count).await
            }
            .boxed(),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Sentinel(master) => master.db,
            Conn::Cluster(_) => 0,
        }
    }
}

/// Is this the error of a connection that will not work again (the server died, or
/// is a replica now)? Then the master is looked up again through the sentinels.
fn needs_new_master(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || matches!(
            error.kind(),
            redis::ErrorKind::Server(
                redis::ServerErrorKind::ReadOnly | redis::ServerErrorKind::MasterDown
            )
        )
}

/// The master of a Sentinel-monitored set: looked up through the sentinels when first
/// needed and again after any error that says it is gone or demoted, so that a
/// failover is followed within a lookup of the promoted master (the crate checks with
/// `ROLE` that the address it returns is a master). Requests between the error and the
/// new master fail fast, and the refresher retries them; tokens are served from memory
/// meanwhile.
pub struct Master {
    sentinel: Mutex<SentinelClient>,
    /// The connection in use and its generation: an error invalidates only the
    /// connection it came from, not one made meanwhile by another request.
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    config: AsyncConnectionConfig,
    timeout: Duration,
    db: i64,
}

impl Master {
    pub fn new(sentinel: SentinelClient, db: i64, timeout: Duration) -> Self {
        Self {
            sentinel: Mutex::new(sentinel),
            current: Mutex::new(None),
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout)),
            timeout,
            db,
        }
    }

    /// The client of the master the sentinels name now (for the update subscription).
    pub async fn client(&self) -> RedisResult<redis::Client> {
        let lookup = async { self.sentinel.lock().await.async_get_client().await };
        // A sentinel that hangs (SIGSTOP, a partition) must not stall the store.
        tokio::time::timeout(self.timeout * 2, lookup)
            .await
            .unwrap_or_else(|_| {
                Err(RedisError::from((
                    redis::ErrorKind::Io,
                    "no sentinel answered in time",
                )))
            })
    }

    async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        // Held while looking up: concurrent requests wait for one lookup, not many.
        let mut current = self.current.lock().await;
        if let Some((generation, conn)) = current.as_ref() {
            return Ok((*generation, conn.clone()));
        }
        let client = self.client().await?;
        let conn = client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        let generation = NEXT_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            master = %client.get_connection_info().addr(),
            "connected to the Redis master named by the sentinels"
        );
        *current = Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    /// Forgets the connection `generation` if `result` says its server is gone.
    async fn after<T>(&self, generation: u64, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(error) = &result
            && needs_new_master(error)
        {
            let mut current = self.current.lock().await;
            if current.as_ref().is_some_and(|(g, _)| *g == generation) {
                tracing::warn!(%error, "lost the Redis master; asking the sentinels again");
                *current = None;
            }
        }
        result
    }
}

static NEXT_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The cluster connection, made when first needed (a cluster that is down at start-up
/// is not fatal) and then kept: the crate's connection refreshes its slot map and
/// reconnects to nodes by itself.
pub struct LazyCluster {
    client: ClusterClient,
    conn: Mutex<Option<ClusterConnection>>,
}

impl LazyCluster {
    pub fn new(client: ClusterClient) -> Self {
        Self {
            client,
            conn: Mutex::new(None),
        }
    }

    pub async fn connection(&self) -> RedisResult<ClusterConnection> {
        let mut conn = self.conn.lock().await;
        if let Some(conn) = conn.as_ref() {
            return Ok(conn.clone());
        }
        let made = self.client.get_async_connection().await?;
        *conn = Some(made.clone());
        Ok(made)
    }
}

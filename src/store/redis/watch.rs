//! The update channel: other instances' saves pushed to this one. Kept subscribed
//! across losses; each (re)subscription asks for a full read, since updates published
//! while not listening are lost.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::cluster::ClusterClient;
use redis::{FromRedisValue, PushInfo, PushKind};
use tokio::sync::mpsc;

use super::conn::Master;
use crate::domain::CredentialKey;
use crate::store::StoreEvent;

/// Longest wait between attempts to resubscribe: short enough that a Sentinel
/// failover (a few seconds) is followed within a couple of seconds of the promotion.
const MAX_RESUBSCRIBE_DELAY: Duration = Duration::from_secs(2);

/// Where the subscription of one server or of a Sentinel's master is made.
pub enum Source {
    Single(Box<redis::Client>),
    /// The master the sentinels name at each (re)subscription: after a failover the
    /// subscription ends with the old master's connection and is remade on the new one.
    Sentinel(Arc<Master>),
}

impl Source {
    async fn client(&self) -> redis::RedisResult<redis::Client> {
        match self {
            Source::Single(client) => Ok((**client).clone()),
            Source::Sentinel(master) => master.client().await,
        }
    }
}

/// `app:name` payloads become [`StoreEvent::Changed`].
fn changed(payload: &str) -> Option<StoreEvent> {
    let (app, name) = payload.split_once(':')?;
    Some(StoreEvent::Changed(CredentialKey::new(app, name)))
}

/// Keeps a subscription to `channel`, resubscribing with backoff after any loss, and
/// forwards each update. Ends when the receiver is dropped.
pub async fn subscribe_loop(source: Source, channel: String, tx: mpsc::Sender<StoreEvent>) {
    let mut delay = Duration::from_millis(100);
    loop {
        let session = async {
            let mut pubsub = source.client().await?.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            tracing::info!(%channel, "subscribed to token updates");
            delay = Duration::from_millis(100);
            if tx.send(StoreEvent::Resynchronise).await.is_err() {
                return Ok(());
            }
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let payload: String = message.get_payload().unwrap_or_default();
                if let Some(event) = changed(&payload)
                    && tx.send(event).await.is_err()
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

/// Cluster mode: the crate's cluster connection subscribes over RESP3 and resubscribes
/// by itself after a node is lost (cluster pub/sub is broadcast, so any node will do);
/// its pushes arrive on `pushes`. A `subscribe` push after the first means the
/// subscription was remade: read everything again. Until the first subscription
/// succeeds (the cluster is down at start-up) it is retried with backoff.
pub async fn cluster_loop(
    nodes: Vec<redis::ConnectionInfo>,
    password: Option<String>,
    channel: String,
    tx: mpsc::Sender<StoreEvent>,
) {
    let (push_tx, mut pushes) = mpsc::unbounded_channel::<PushInfo>();
    let mut builder = ClusterClient::builder(nodes)
        .use_protocol(redis::ProtocolVersion::RESP3)
        .connection_timeout(super::REDIS_TIMEOUT)
        .response_timeout(super::REDIS_TIMEOUT)
        .push_sender(push_tx);
    if let Some(password) = password {
        builder = builder.password(password);
    }
    let client = match builder.build() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build the Redis Cluster subscription; updates are caught up from the change log");
            return;
        }
    };
    let mut delay = Duration::from_millis(100);
    // Kept alive for the subscription's sake: dropping it would unsubscribe.
    let _conn = loop {
        let attempt = async {
            let mut conn = client.get_async_connection().await?;
            conn.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(conn)
        };
        tokio::select! {
            () = tx.closed() => return,
            result = attempt => match result {
                Ok(conn) => break conn,
                Err(error) => tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "cannot subscribe to token updates on the Redis Cluster"),
            }
        }
        tokio::select! {
            () = tx.closed() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_RESUBSCRIBE_DELAY);
    };
    tracing::info!(%channel, "subscribed to token updates on the Redis Cluster");
    if tx.send(StoreEvent::Resynchronise).await.is_err() {
        return;
    }
    let mut confirmed = false;
    loop {
        let push = tokio::select! {
            () = tx.closed() => return,
            push = pushes.recv() => match push {
                Some(push) => push,
                None => return,
            },
        };
        let event = match push.kind {
            PushKind::Message => push
                .data
                .get(1)
                .and_then(|payload| String::from_redis_value_ref(payload).ok())
                .and_then(|payload| changed(&payload)),
            // The first confirms the subscription just made; later ones, a remade one.
            PushKind::Subscribe if !confirmed => {
                confirmed = true;
                None
            }
            PushKind::Subscribe => Some(StoreEvent::Resynchronise),
            _ => None,
        };
        if let Some(event) = event
            && tx.send(event).await.is_err()
        {
            return;
        }
    }
}

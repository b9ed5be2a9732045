//! Redis pub/sub for the replicas: a `socketioxide-redis` driver on a [`ConnectionManager`], so
//! a Redis restart is survived (the manager reconnects and re-subscribes every channel) rather
//! than silently ending cross-replica traffic, as the stock driver's plain multiplexed
//! connection would. The cluster directory's own channel rides on the same connection.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands as _, IntoConnectionInfo as _, ProtocolVersion, PushInfo, PushKind};
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use tokio::sync::mpsc;

type Handlers = Arc<RwLock<HashMap<String, mpsc::Sender<ChanItem>>>>;

#[derive(Clone)]
pub(crate) struct ManagedDriver {
    conn: ConnectionManager,
    handlers: Handlers,
}

impl std::fmt::Debug for ManagedDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedDriver").finish_non_exhaustive()
    }
}

/// A Redis client speaking RESP3, which pub/sub on a shared connection needs (push messages).
pub(crate) fn resp3_client(url: &str) -> redis::RedisResult<redis::Client> {
    let info = url.into_connection_info()?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    redis::Client::open(info.set_redis_settings(settings))
}

impl ManagedDriver {
    /// Connects (the first connection must succeed; later outages are retried forever).
    pub(crate) async fn connect(client: redis::Client) -> redis::RedisResult<Self> {
        let handlers: Handlers = Arc::default();
        let routes = handlers.clone();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500))
            .set_push_sender(move |push: PushInfo| {
                route(push, &routes);
                Ok::<(), std::convert::Infallible>(())
            })
            .set_automatic_resubscription();
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self { conn, handlers })
    }

    /// A connection for plain commands (heartbeats, dedup), sharing the socket.
    pub(crate) fn commands(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

/// Hands a pushed pub/sub message to its channel's stream. A full stream drops the message
/// (logged): a slow consumer must not stall the shared connection.
fn route(push: PushInfo, handlers: &Handlers) {
    if !matches!(push.kind, PushKind::Message) || push.data.len() < 2 {
        return;
    }
    let mut data = push.data.into_iter();
    let (Some(channel), Some(payload)) = (data.next(), data.next()) else {
        return;
    };
    let (Ok(channel), Ok(payload)) = (
        redis::from_redis_value::<String>(channel),
        redis::from_redis_value::<Vec<u8>>(payload),
    ) else {
        return;
    };
    let handlers = handlers.read().expect("pub/sub handlers lock");
    if let Some(tx) = handlers.get(&channel)
        && let Err(err) = tx.try_send((channel, payload))
    {
        tracing::warn!(%err, "pub/sub consumer is behind; message dropped");
    }
}

impl Driver for ManagedDriver {
    type Error = redis::RedisError;

    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), Self::Error> {
        self.conn
            .clone()
            .publish::<_, _, redis::Value>(chan, val)
            .await?;
        Ok(())
    }

    async fn subscribe(
        &self,
        chan: String,
        size: usize,
    ) -> Result<MessageStream<ChanItem>, Self::Error> {
        let (tx, rx) = mpsc::channel(size);
        // Route first, so nothing published right after the SUBSCRIBE reply is missed.
        self.handlers
            .write()
            .expect("pub/sub handlers lock")
            .insert(chan.clone(), tx);
        if let Err(err) = self.conn.clone().subscribe(chan.as_str()).await {
            self.handlers
                .write()
                .expect("pub/sub handlers lock")
                .remove(&chan);
            return Err(err);
        }
        Ok(MessageStream::new(rx))
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), Self::Error> {
        self.handlers
            .write()
            .expect("pub/sub handlers lock")
            .remove(&chan);
        self.conn.clone().unsubscribe(chan).await
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, Self::Error> {
        let (_, count): (String, u16) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(chan)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(count)
    }
}

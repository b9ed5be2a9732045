//! Several replicas on one Redis (`--redis`): the cluster directory.
//!
//! Messages cross replicas through `socketioxide-redis` (rooms and acks); this module keeps
//! what the adapter does not: who is online and in which groups, for the whole team, on every
//! replica. Each replica ("node", a random id per process) applies its own changes to its
//! [`Registry`] and publishes them on one pub/sub channel; the others apply them too. A node
//! joining asks for everyone's snapshot, and every node re-sends its snapshot periodically, so
//! an event lost while Redis was away is repaired within [`SNAPSHOT_EVERY`].
//!
//! A node proves it is alive with a heartbeat key that expires after [`HEARTBEAT_TTL`]. A node
//! whose key expired (SIGKILL, a lost host) is reaped by whichever survivor removes it from the
//! node set first: its connections are dropped everywhere, and that survivor announces the
//! agents that went offline.
//!
//! It also carries what the durable delivery needs across replicas (wake a recipient's
//! deliverer on the node holding its connection; tell the sender's node it was delivered)
//! and a Redis-wide dedup of message ids, so a retry through another replica is still a
//! duplicate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use nsh_mesh_transport::wire::{self, PresenceChange, event};
use redis::AsyncCommands as _;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide_redis::drivers::Driver as _;
use tokio::sync::{mpsc, watch};

use crate::Mesh;
use crate::handlers::team_room;
use crate::pubsub::ManagedDriver;
use crate::registry::SocketEntry;

/// The pub/sub channel of directory events (the adapter's channels are `nsh-mesh-request#…`).
const CHANNEL: &str = "nsh-mesh#directory";
/// Every node id that has not been reaped.
const NODES: &str = "nsh:mesh:nodes";
pub(crate) const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// A node silent for this long is dead.
pub(crate) const HEARTBEAT_TTL: Duration = Duration::from_secs(6);
pub(crate) const SNAPSHOT_EVERY: Duration = Duration::from_secs(10);
/// Events waiting to be published; beyond this they are dropped (the next snapshot repairs).
const OUTBOX: usize = 16 * 1024;
/// Prefix of the socket.io adapter's channels, so several meshes can share a Redis by DB.
pub(crate) const ADAPTER_PREFIX: &str = "nsh-mesh";

fn heartbeat_key(node: &str) -> String {
    format!("nsh:mesh:node:{node}")
}

fn seen_key(team: &str, from: &str, id: &str) -> String {
    format!("nsh:{team}:seen:{from}:{id}")
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("bad Redis URL: {0}")]
    Url(redis::RedisError),
    #[error(
        "cannot reach Redis for the replicas (--redis): {0}; start Redis or fix the URL, or drop --redis to run one replica alone"
    )]
    Unreachable(redis::RedisError),
}

/// A directory change, as published by the node it happened on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum Event {
    Connected {
        node: String,
        entry: SocketEntry,
    },
    Disconnected {
        node: String,
        team: String,
        agent: String,
        sid: String,
    },
    Joined {
        node: String,
        team: String,
        agent: String,
        group: String,
    },
    Left {
        node: String,
        team: String,
        agent: String,
        group: String,
    },
    /// A node started: everyone answers with a snapshot.
    Hello {
        node: String,
    },
    /// All connections `node` holds (replaces what others knew of it).
    Snapshot {
        node: String,
        sockets: Vec<SocketEntry>,
    },
    /// `node` is dead (reaped by `by`) or stopping (by itself).
    Gone {
        node: String,
        by: String,
    },
    /// New stored mail for an agent: the node holding its connection delivers it.
    Wake {
        node: String,
        team: String,
        agent: String,
    },
    /// An agent's client acked stored entry `entry` (on `node`).
    Delivered {
        node: String,
        team: String,
        agent: String,
        entry: String,
    },
}

impl Event {
    fn origin(&self) -> &str {
        match self {
            Self::Connected { node, .. }
            | Self::Disconnected { node, .. }
            | Self::Joined { node, .. }
            | Self::Left { node, .. }
            | Self::Hello { node }
            | Self::Snapshot { node, .. }
            | Self::Wake { node, .. }
            | Self::Delivered { node, .. } => node,
            Self::Gone { by, .. } => by,
        }
    }
}

/// Newest acked stored entry per recipient, as `(ms, seq)`, for senders waiting on it.
type DeliveredWatches = HashMap<(String, String), watch::Sender<(u64, u64)>>;

pub(crate) struct Cluster {
    node: String,
    driver: ManagedDriver,
    commands: ConnectionManager,
    outbox: mpsc::Sender<Event>,
    outbox_rx: Mutex<Option<mpsc::Receiver<Event>>>,
    delivered: Mutex<DeliveredWatches>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to Redis (which must answer now; later outages are ridden out).
    pub(crate) async fn connect(url: &str, node: String) -> Result<Self, ClusterError> {
        let client = crate::pubsub::resp3_client(url).map_err(ClusterError::Url)?;
        let driver = ManagedDriver::connect(client)
            .await
            .map_err(ClusterError::Unreachable)?;
        let (outbox, outbox_rx) = mpsc::channel(OUTBOX);
        Ok(Self {
            node,
            commands: driver.commands(),
            driver,
            outbox,
            outbox_rx: Mutex::new(Some(outbox_rx)),
            delivered: Mutex::default(),
        })
    }

    pub(crate) fn driver(&self) -> ManagedDriver {
        self.driver.clone()
    }

    /// Queues an event for the other nodes (in order; never blocks the caller).
    pub(crate) fn publish(&self, event: Event) {
        if self.outbox.try_send(event).is_err() {
            tracing::warn!("cluster outbox full (is Redis away?); the next snapshot repairs it");
        }
    }

    pub(crate) fn connected(&self, entry: SocketEntry) {
        self.publish(Event::Connected {
            node: self.node.clone(),
            entry,
        });
    }

    pub(crate) fn disconnected(&self, team: &str, agent: &str, sid: &str) {
        self.publish(Event::Disconnected {
            node: self.node.clone(),
            team: team.to_owned(),
            agent: agent.to_owned(),
            sid: sid.to_owned(),
        });
    }

    pub(crate) fn joined(&self, team: &str, agent: &str, group: &str) {
        self.publish(Event::Joined {
            node: self.node.clone(),
            team: team.to_owned(),
            agent: agent.to_owned(),
            group: group.to_owned(),
        });
    }

    pub(crate) fn left(&self, team: &str, agent: &str, group: &str) {
        self.publish(Event::Left {
            node: self.node.clone(),
            team: team.to_owned(),
            agent: agent.to_owned(),
            group: group.to_owned(),
        });
    }

    pub(crate) fn wake(&self, team: &str, agent: &str) {
        self.publish(Event::Wake {
            node: self.node.clone(),
            team: team.to_owned(),
            agent: agent.to_owned(),
        });
    }

    pub(crate) fn delivered(&self, team: &str, agent: &str, entry: &str) {
        self.publish(Event::Delivered {
            node: self.node.clone(),
            team: team.to_owned(),
            agent: agent.to_owned(),
            entry: entry.to_owned(),
        });
    }

    /// Watches acks of `agent`'s stored mail reported by other nodes.
    pub(crate) fn watch_delivered(&self, team: &str, agent: &str) -> watch::Receiver<(u64, u64)> {
        let mut watches = self.delivered.lock().expect("delivered lock");
        watches
            .entry((team.to_owned(), agent.to_owned()))
            .or_insert_with(|| watch::channel((0, 0)).0)
            .subscribe()
    }

    /// Drops the watch once its last waiter is done.
    pub(crate) fn unwatch_delivered(&self, team: &str, agent: &str) {
        let mut watches = self.delivered.lock().expect("delivered lock");
        let key = (team.to_owned(), agent.to_owned());
        if watches.get(&key).is_some_and(|w| w.receiver_count() == 0) {
            watches.remove(&key);
        }
    }

    fn note_delivered(&self, team: String, agent: String, entry: &str) {
        let watches = self.delivered.lock().expect("delivered lock");
        if let Some(watch) = watches.get(&(team, agent)) {
            let order = crate::store::entry_order(entry);
            watch.send_if_modified(|newest| {
                let newer = order > *newest;
                if newer {
                    *newest = order;
                }
                newer
            });
        }
    }

    /// Whether Redis answers, for `/readyz`.
    pub(crate) async fn ping(&self) -> Result<(), String> {
        let mut conn = self.commands.clone();
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| format!("Redis (--redis) is unavailable: {e}"))
    }

    /// Whether no replica saw message `id` from `from` within `window`. Redis being away
    /// answers `true`: the replica's own window already said so, and live traffic goes on.
    pub(crate) async fn first_time(
        &self,
        team: &str,
        from: &str,
        id: &str,
        window: Duration,
    ) -> bool {
        let mut conn = self.commands.clone();
        let set: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(seen_key(team, from, id))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1))
            .query_async(&mut conn)
            .await;
        match set {
            Ok(reply) => reply.is_some(),
            Err(err) => {
                tracing::debug!(%err, "cluster dedup unavailable; trusting this replica's window");
                true
            }
        }
    }

    /// Forgets a message id that was not delivered, so a retry is tried again.
    pub(crate) async fn forget(&self, team: &str, from: &str, id: &str) {
        let mut conn = self.commands.clone();
        if let Err(err) = conn.del::<_, ()>(seen_key(team, from, id)).await {
            tracing::debug!(%err, "could not forget a message id");
        }
    }
}

/// Runs the directory: publishes queued events, applies everyone else's, heartbeats, re-sends
/// snapshots and reaps dead nodes. Returns when the subscription cannot be made at all.
pub(crate) async fn run<A: Adapter>(io: SocketIo<A>, mesh: Arc<Mesh>, cluster: Arc<Cluster>) {
    let Some(outbox) = cluster.outbox_rx.lock().expect("outbox lock").take() else {
        return;
    };
    tokio::spawn(publish_outbox(cluster.clone(), outbox));
    let mut events = loop {
        match cluster.driver.subscribe(CHANNEL.to_owned(), OUTBOX).await {
            Ok(events) => break events,
            Err(err) => {
                tracing::warn!(%err, "cannot subscribe to the cluster directory; retrying");
                tokio::time::sleep(HEARTBEAT_EVERY).await;
            }
        }
    };
    cluster.publish(Event::Hello {
        node: cluster.node.clone(),
    });
    let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut snapshot = tokio::time::interval(SNAPSHOT_EVERY);
    snapshot.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            received = events.next() => {
                let Some((_, payload)) = received else {
                    tracing::warn!("cluster directory subscription ended");
                    return;
                };
                match serde_json::from_slice::<Event>(&payload) {
                    Ok(event) => apply(&io, &mesh, &cluster, event).await,
                    Err(err) => tracing::warn!(%err, "unreadable cluster event ignored"),
                }
            }
            _ = heartbeat.tick() => {
                beat(&cluster).await;
                reap(&io, &mesh, &cluster).await;
            }
            _ = snapshot.tick() => publish_snapshot(&mesh, &cluster),
        }
    }
}

async fn publish_outbox(cluster: Arc<Cluster>, mut outbox: mpsc::Receiver<Event>) {
    let mut conn = cluster.commands.clone();
    while let Some(event) = outbox.recv().await {
        let payload = match serde_json::to_vec(&event) {
            Ok(payload) => payload,
            Err(err) => {
                tracing::error!(%err, "cluster event not serializable");
                continue;
            }
        };
        if let Err(err) = conn.publish::<_, _, ()>(CHANNEL, payload).await {
            tracing::debug!(%err, "cluster event not published; the next snapshot repairs it");
        }
    }
}

fn publish_snapshot(mesh: &Mesh, cluster: &Cluster) {
    cluster.publish(Event::Snapshot {
        node: cluster.node.clone(),
        sockets: mesh.registry.snapshot(&cluster.node),
    });
}

async fn beat(cluster: &Cluster) {
    let mut conn = cluster.commands.clone();
    let ttl = HEARTBEAT_TTL.as_secs();
    let result: redis::RedisResult<()> = redis::pipe()
        .set_ex(heartbeat_key(&cluster.node), 1, ttl)
        .ignore()
        .sadd(NODES, &cluster.node)
        .ignore()
        .query_async(&mut conn)
        .await;
    if let Err(err) = result {
        tracing::debug!(%err, "heartbeat not written");
    }
}

/// Finds nodes whose heartbeat expired; the node that removes one from the set handles it.
async fn reap<A: Adapter>(io: &SocketIo<A>, mesh: &Mesh, cluster: &Cluster) {
    let mut conn = cluster.commands.clone();
    let Ok(nodes) = conn.smembers::<_, Vec<String>>(NODES).await else {
        return;
    };
    for node in nodes.into_iter().filter(|n| *n != cluster.node) {
        if conn
            .exists::<_, bool>(heartbeat_key(&node))
            .await
            .unwrap_or(true)
        {
            continue;
        }
        if conn.srem::<_, _, u32>(NODES, &node).await.unwrap_or(0) != 1 {
            continue;
        }
        tracing::warn!(%node, "replica stopped answering; dropping its connections");
        cluster.publish(Event::Gone {
            node: node.clone(),
            by: cluster.node.clone(),
        });
        announce_offline(io, mesh.registry.drop_node(&node)).await;
    }
}

async fn announce_offline<A: Adapter>(io: &SocketIo<A>, offline: Vec<(String, String)>) {
    for (team, agent) in offline {
        let change = PresenceChange {
            agent,
            online: false,
            at: wire::now_rfc3339(),
        };
        crate::handlers::broadcast(io, |io| io.to(team_room(&team)), event::PRESENCE, &change)
            .await;
    }
}

async fn apply<A: Adapter>(io: &SocketIo<A>, mesh: &Arc<Mesh>, cluster: &Cluster, event: Event) {
    if event.origin() == cluster.node {
        return;
    }
    let registry = &mesh.registry;
    match event {
        Event::Connected { node, entry } => {
            let _ = registry.connect(
                &entry.team,
                &entry.agent,
                &entry.sid,
                &node,
                &entry.since,
                usize::MAX,
            );
        }
        Event::Disconnected {
            team, agent, sid, ..
        } => {
            registry.disconnect(&team, &agent, &sid);
        }
        Event::Joined {
            team, agent, group, ..
        } => {
            let _ = registry.join(&team, &agent, &group, usize::MAX);
        }
        Event::Left {
            team, agent, group, ..
        } => {
            registry.leave(&team, &agent, &group);
        }
        Event::Hello { .. } => publish_snapshot(mesh, cluster),
        Event::Snapshot { node, sockets } => registry.replace_node(&node, &sockets),
        Event::Gone { node, by } => {
            if node == cluster.node {
                // Reaped while alive (Redis was away longer than the heartbeat TTL): come back.
                tracing::warn!(%by, "this replica was reaped as dead; announcing it again");
                beat(cluster).await;
                publish_snapshot(mesh, cluster);
            } else {
                registry.drop_node(&node);
            }
        }
        Event::Wake { team, agent, .. } => {
            if let Some(store) = &mesh.store
                && registry.has_connection_on(&team, &agent, &cluster.node)
            {
                mesh.deliverers.wake(io, mesh, store, &team, &agent);
            }
        }
        Event::Delivered {
            team, agent, entry, ..
        } => cluster.note_delivered(team, agent, &entry),
    }
}

/// On graceful shutdown: tell the others at once rather than letting the heartbeat expire.
pub(crate) async fn leave(cluster: &Cluster) {
    let mut conn = cluster.commands.clone();
    let _: redis::RedisResult<()> = redis::pipe()
        .del(heartbeat_key(&cluster.node))
        .ignore()
        .srem(NODES, &cluster.node)
        .ignore()
        .query_async(&mut conn)
        .await;
    let gone = Event::Gone {
        node: cluster.node.clone(),
        by: cluster.node.clone(),
    };
    if let Ok(payload) = serde_json::to_vec(&gone) {
        let _: redis::RedisResult<()> = conn.publish(CHANNEL, payload).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_as_tagged_json() {
        let event = Event::Joined {
            node: "n1".into(),
            team: "alpha".into(),
            agent: "a".into(),
            group: "ops".into(),
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["event"], "joined");
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), event);
        let gone = Event::Gone {
            node: "dead".into(),
            by: "n2".into(),
        };
        // A reaped node's event comes from the reaper.
        assert_eq!(gone.origin(), "n2");
    }
}

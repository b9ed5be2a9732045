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
//!
//! Direct messages take a shorter road than the adapter's broadcast: when the directory says
//! one node holds the recipient, the sender's node publishes the envelope on that node's own
//! channel and the node answers on the sender's: two publishes per message instead of the
//! adapter's four commands (server count, request, ack count, ack), and the recipient's node
//! dedups (a retry through any replica reaches the same node). What queues up for one node
//! while a publish is in flight goes out as one batch, so under load a publish carries many
//! messages.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use nsh_mesh_transport::wire::{self, Envelope, PresenceChange, event};
use redis::AsyncCommands as _;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide_redis::drivers::Driver as _;
use tokio::sync::{mpsc, oneshot, watch};

use crate::Mesh;
use crate::dedup::{Checked, Seen};
use crate::maps::FastMap;
use crate::pubsub::ManagedDriver;
use crate::registry::SocketEntry;
use crate::rooms::team_room;
use crate::store::Publish;

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

fn node_channel(node: &str) -> String {
    format!("nsh-mesh#node#{node}")
}

fn heartbeat_key(node: &str) -> String {
    format!("nsh:mesh:node:{node}")
}

/// Values of a message id's record in the cross-replica dedup.
const IN_FLIGHT: &str = "in-flight";
const DONE: &str = "done";

fn seen_key(team: &str, from: &str, id: &str) -> String {
    // Joined, not `format!`ted: this is on every stored message's path (see `store`'s keys).
    ["nsh", team, "seen", from, id].join(":")
}

/// What a message id's record in Redis says of an earlier send of it.
pub(crate) fn seen(record_value: &str) -> Seen {
    if record_value == DONE {
        Seen::Done
    } else {
        // In flight, or gone between two commands: the sender retries either way.
        Seen::InFlight
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("--redis: `{url}` is not a Redis URL ({source}); expected redis://HOST:PORT/DB")]
    Url {
        url: String,
        source: redis::RedisError,
    },
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

/// What travels on a node's own channel: a direct message for a recipient it holds, and the
/// answer to one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "snake_case",
    try_from = "NodeMessageFields"
)]
enum NodeMessage {
    Deliver {
        reply_to: String,
        request: u64,
        team: String,
        to: String,
        envelope: Box<Envelope>,
    },
    Answer {
        request: u64,
        outcome: Outcome,
    },
    /// New stored mail for `to`, whose connection this node holds: published in the
    /// transaction that stored it (see [`Cluster::wake_with_append`]).
    Wake {
        team: String,
        to: String,
    },
}

/// [`NodeMessage`] as it is read: the same JSON, taken as one flat struct. serde reads an
/// internally tagged enum by buffering every field (the whole envelope) into a generic value
/// first and then reading that again; a struct reads straight from the bytes. Every message
/// crossing replicas is read this way, once on each side.
#[derive(Deserialize)]
struct NodeMessageFields {
    kind: NodeMessageKind,
    reply_to: Option<String>,
    request: Option<u64>,
    team: Option<String>,
    to: Option<String>,
    envelope: Option<Box<Envelope>>,
    outcome: Option<Outcome>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum NodeMessageKind {
    Deliver,
    Answer,
    Wake,
}

impl TryFrom<NodeMessageFields> for NodeMessage {
    type Error = &'static str;

    fn try_from(fields: NodeMessageFields) -> Result<Self, Self::Error> {
        let request = || fields.request.ok_or("missing field `request`");
        Ok(match fields.kind {
            NodeMessageKind::Deliver => Self::Deliver {
                reply_to: fields.reply_to.ok_or("missing field `reply_to`")?,
                request: request()?,
                team: fields.team.ok_or("missing field `team`")?,
                to: fields.to.ok_or("missing field `to`")?,
                envelope: fields.envelope.ok_or("missing field `envelope`")?,
            },
            NodeMessageKind::Answer => Self::Answer {
                request: request()?,
                outcome: fields.outcome.ok_or("missing field `outcome`")?,
            },
            NodeMessageKind::Wake => Self::Wake {
                team: fields.team.ok_or("missing field `team`")?,
                to: fields.to.ok_or("missing field `to`")?,
            },
        })
    }
}

/// How a direct message handed to another node ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    /// The recipient's client acked it.
    Delivered,
    /// That node already delivered this id from this sender.
    Duplicate,
    /// That node is still delivering an earlier send of this id.
    InFlight,
    /// No client there acked in time (or the node is gone).
    NotDelivered,
    /// Redis could not carry it (never sent over the wire).
    Unreachable,
}

/// A sender's watch on the reports of an agent's acks (from [`Cluster::watch_delivered`]).
pub(crate) struct DeliveredWatch<'a> {
    cluster: &'a Cluster,
    team: &'a str,
    agent: &'a str,
    /// `None` only while dropping.
    receiver: Option<watch::Receiver<(u64, u64)>>,
}

impl DeliveredWatch<'_> {
    /// The newest entry reported acked, as `(ms, seq)`.
    pub(crate) fn receiver(&self) -> watch::Receiver<(u64, u64)> {
        self.receiver
            .clone()
            .expect("a watch has its receiver until dropped")
    }
}

impl Drop for DeliveredWatch<'_> {
    fn drop(&mut self) {
        // This receiver first: the watch goes once no sender waits on it.
        self.receiver = None;
        self.cluster.unwatch_delivered(self.team, self.agent);
    }
}

/// Most node messages published as one batch.
const LINK_BATCH: usize = 256;

/// Newest acked stored entry per recipient, as `(ms, seq)`, for senders waiting on it.
type DeliveredWatches = FastMap<(String, String), watch::Sender<(u64, u64)>>;

pub(crate) struct Cluster {
    node: String,
    driver: ManagedDriver,
    commands: ConnectionManager,
    outbox: mpsc::Sender<Event>,
    outbox_rx: Mutex<Option<mpsc::Receiver<Event>>>,
    delivered: Mutex<DeliveredWatches>,
    next_request: AtomicU64,
    /// Direct messages handed to other nodes, waiting for their answer.
    waiting: Mutex<FastMap<u64, oneshot::Sender<Outcome>>>,
    /// One batching publisher per node this one talks to directly.
    links: Mutex<HashMap<String, mpsc::UnboundedSender<NodeMessage>>>,
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
        let client = crate::pubsub::resp3_client(url).map_err(|source| ClusterError::Url {
            url: url.to_owned(),
            source,
        })?;
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
            next_request: AtomicU64::new(1),
            waiting: Mutex::default(),
            links: Mutex::default(),
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

    /// The wake-up for `agent`'s deliverer that goes out in the transaction storing its new
    /// mail, when one other node holds its connection (`holders`, from the directory): on that
    /// node's own channel, so the node hears of the message as this one hears it was stored,
    /// instead of after this node's next publish. It cannot be lost to a full outbox either.
    /// `None` when the agent is offline, here, or on several nodes (then [`Self::wake`]).
    pub(crate) fn wake_with_append(
        &self,
        holders: &[String],
        team: &str,
        agent: &str,
    ) -> Option<Publish> {
        wake_on_holder(&self.node, holders, team, agent)
    }

    pub(crate) fn delivered(&self, team: &str, agent: &str, entry: &str) {
        self.publish(Event::Delivered {
            node: self.node.clone(),
            team: team.to_owned(),
            agent: agent.to_owned(),
            entry: entry.to_owned(),
        });
    }

    /// Watches acks of `agent`'s stored mail reported by other nodes, until the watch is
    /// dropped.
    pub(crate) fn watch_delivered<'a>(
        &'a self,
        team: &'a str,
        agent: &'a str,
    ) -> DeliveredWatch<'a> {
        let mut watches = self.delivered.lock().expect("delivered lock");
        let receiver = watches
            .entry((team.to_owned(), agent.to_owned()))
            .or_insert_with(|| watch::channel((0, 0)).0)
            .subscribe();
        DeliveredWatch {
            cluster: self,
            team,
            agent,
            receiver: Some(receiver),
        }
    }

    /// Drops the watch once its last waiter is done.
    fn unwatch_delivered(&self, team: &str, agent: &str) {
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

    /// Hands a direct message to `node`, which holds its recipient, and waits (up to
    /// `ack_timeout` and a margin for the trip through Redis) for the outcome.
    pub(crate) async fn deliver_on(
        self: &Arc<Self>,
        node: &str,
        team: &str,
        to: &str,
        envelope: &Envelope,
        ack_timeout: Duration,
    ) -> Outcome {
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        self.waiting
            .lock()
            .expect("waiting lock")
            .insert(request, answer);
        self.send_to_node(
            node,
            NodeMessage::Deliver {
                reply_to: self.node.clone(),
                request,
                team: team.to_owned(),
                to: to.to_owned(),
                envelope: Box::new(envelope.clone()),
            },
        );
        let wait = ack_timeout + Duration::from_secs(1);
        let outcome = match tokio::time::timeout(wait, answered).await {
            Ok(Ok(outcome)) => outcome,
            _ => Outcome::NotDelivered,
        };
        self.waiting.lock().expect("waiting lock").remove(&request);
        outcome
    }

    /// Queues `message` for `node`'s channel, starting its publisher if needed.
    fn send_to_node(self: &Arc<Self>, node: &str, message: NodeMessage) {
        let mut links = self.links.lock().expect("links lock");
        let link = links.entry(node.to_owned()).or_insert_with(|| {
            let (queue, queued) = mpsc::unbounded_channel();
            tokio::spawn(run_link(self.clone(), node.to_owned(), queued));
            queue
        });
        if let Err(unsent) = link.send(message) {
            self.fail(&[unsent.0], Outcome::Unreachable);
        }
    }

    /// Answers the local waiters of `messages` that could not be handed over.
    fn fail(&self, messages: &[NodeMessage], outcome: Outcome) {
        for message in messages {
            if let NodeMessage::Deliver { request, .. } = message {
                self.answered(*request, outcome);
            }
        }
    }

    /// Stops talking to a node that is gone.
    fn forget_node(&self, node: &str) {
        self.links.lock().expect("links lock").remove(node);
    }

    fn answered(&self, request: u64, outcome: Outcome) {
        if let Some(waiter) = self.waiting.lock().expect("waiting lock").remove(&request) {
            let _ = waiter.send(outcome);
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

    /// What the replicas know of message `id` from `from` within `window`; records it as in
    /// flight when new. Redis being away answers `First`: the replica's own window already
    /// decided, and live traffic goes on.
    pub(crate) async fn check(&self, team: &str, from: &str, id: &str, window: Duration) -> Seen {
        let mut conn = self.commands.clone();
        let key = seen_key(team, from, id);
        let set: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(&key)
            .arg(IN_FLIGHT)
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1))
            .query_async(&mut conn)
            .await;
        match set {
            Ok(Some(_)) => Seen::First,
            Ok(None) => match conn.get::<_, Option<String>>(&key).await {
                Ok(Some(state)) => seen(&state),
                // Gone between the two commands, or Redis failed: the sender retries.
                _ => Seen::InFlight,
            },
            Err(err) => {
                tracing::debug!(%err, "cluster dedup unavailable; trusting this replica's window");
                Seen::First
            }
        }
    }

    /// The record of a message id that the store writes with the message (persistence on): a
    /// kept message is done, so a resend through any replica is a duplicate.
    pub(crate) fn kept_record(
        &self,
        team: &str,
        from: &str,
        id: &str,
        window: Duration,
    ) -> crate::store::DedupRecord {
        crate::store::DedupRecord {
            key: seen_key(team, from, id),
            value: DONE,
            lifetime: window,
        }
    }

    /// The send of a message id recorded by [`check`](Self::check) succeeded: a resend
    /// through any replica is now a duplicate.
    pub(crate) async fn complete(&self, team: &str, from: &str, id: &str) {
        let mut conn = self.commands.clone();
        let done: redis::RedisResult<()> = redis::cmd("SET")
            .arg(seen_key(team, from, id))
            .arg(DONE)
            .arg("XX")
            .arg("KEEPTTL")
            .query_async(&mut conn)
            .await;
        if let Err(err) = done {
            // A resend is then told to retry until the record expires, never acked wrongly.
            tracing::debug!(%err, "could not record a completed send");
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
    let subscribe = |channel: String| {
        let cluster = cluster.clone();
        async move {
            loop {
                match cluster.driver.subscribe(channel.clone(), OUTBOX).await {
                    Ok(stream) => break stream,
                    Err(err) => {
                        tracing::warn!(%err, %channel, "cannot subscribe; retrying");
                        tokio::time::sleep(HEARTBEAT_EVERY).await;
                    }
                }
            }
        }
    };
    let mut events = subscribe(CHANNEL.to_owned()).await;
    let mut direct = subscribe(node_channel(&cluster.node)).await;
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
            received = direct.next() => {
                let Some((_, payload)) = received else {
                    tracing::warn!("this replica's channel subscription ended");
                    return;
                };
                match serde_json::from_slice::<Vec<NodeMessage>>(&payload) {
                    Ok(batch) => {
                        for message in batch {
                            match message {
                                NodeMessage::Answer { request, outcome } => cluster.answered(request, outcome),
                                NodeMessage::Deliver { reply_to, request, team, to, envelope } => {
                                    tokio::spawn(deliver_here(io.clone(), mesh.clone(), cluster.clone(), reply_to, request, team, to, envelope));
                                }
                                NodeMessage::Wake { team, to } => wake_here(&io, &mesh, &cluster, &team, &to),
                            }
                        }
                    }
                    Err(err) => tracing::warn!(%err, "unreadable message on this replica's channel ignored"),
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

/// Delivers a direct message another node handed over to this node's connections of `to`,
/// and answers it.
#[allow(clippy::too_many_arguments)]
async fn deliver_here<A: Adapter>(
    io: SocketIo<A>,
    mesh: Arc<Mesh>,
    cluster: Arc<Cluster>,
    reply_to: String,
    request: u64,
    team: String,
    to: String,
    envelope: Box<Envelope>,
) {
    // The sender's window by name: its connection is on another replica.
    let window = mesh.dedup.sender(&team, &envelope.from);
    let outcome = match mesh.dedup.check(&window, &envelope.id, Instant::now()) {
        Checked::First(ticket) => {
            if crate::emit::deliver_here(&io, &mesh, &team, &to, &envelope, mesh.limits.ack_timeout)
                .await
            {
                mesh.dedup.complete(&window, ticket);
                Outcome::Delivered
            } else {
                // Not delivered: a retry must be tried again, not called a duplicate.
                mesh.dedup.forget(&window, ticket);
                Outcome::NotDelivered
            }
        }
        Checked::InFlight => Outcome::InFlight,
        Checked::Done => Outcome::Duplicate,
    };
    cluster.send_to_node(&reply_to, NodeMessage::Answer { request, outcome });
}

/// Publishes what is queued for `node`, batch by batch: whatever queued up while one publish
/// was in flight goes out in the next.
async fn run_link(
    cluster: Arc<Cluster>,
    node: String,
    mut queue: mpsc::UnboundedReceiver<NodeMessage>,
) {
    let channel = node_channel(&node);
    let mut conn = cluster.commands.clone();
    let mut batch = Vec::with_capacity(LINK_BATCH);
    while queue.recv_many(&mut batch, LINK_BATCH).await > 0 {
        let published: redis::RedisResult<i64> = match serde_json::to_vec(&batch) {
            Ok(payload) => conn.publish(&channel, payload).await,
            Err(err) => {
                tracing::error!(%err, "node message not serializable");
                Ok(1)
            }
        };
        match published {
            Ok(0) => {
                // Nobody listens on that channel: the node is gone; the directory catches up.
                cluster.fail(&batch, Outcome::NotDelivered);
            }
            Ok(_) => {}
            Err(err) => {
                tracing::debug!(%err, %node, "could not reach a replica");
                cluster.fail(&batch, Outcome::Unreachable);
            }
        }
        batch.clear();
    }
}

/// Publishes queued events in order; whatever queued up meanwhile goes out as one pipeline, so
/// a busy replica is not held to one round trip per event.
async fn publish_outbox(cluster: Arc<Cluster>, mut outbox: mpsc::Receiver<Event>) {
    const BATCH: usize = 256;
    let mut conn = cluster.commands.clone();
    let mut events = Vec::with_capacity(BATCH);
    while outbox.recv_many(&mut events, BATCH).await > 0 {
        without_repeated_wakes(&mut events);
        let mut pipe = redis::pipe();
        for event in events.drain(..) {
            match serde_json::to_vec(&event) {
                Ok(payload) => {
                    pipe.publish(CHANNEL, payload).ignore();
                }
                Err(err) => tracing::error!(%err, "cluster event not serializable"),
            }
        }
        if let Err(err) = pipe.query_async::<()>(&mut conn).await {
            tracing::debug!(%err, "cluster events not published; the next snapshot repairs them");
        }
    }
}

/// Drops the wake-ups a batch repeats: the first wake of an agent goes out with the batch, so
/// after everything its repeats were queued for was stored.
fn without_repeated_wakes(events: &mut Vec<Event>) {
    let mut woken = std::collections::HashSet::new();
    events.retain(|event| match event {
        Event::Wake { team, agent, .. } => woken.insert((team.clone(), agent.clone())),
        _ => true,
    });
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
        cluster.forget_node(&node);
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
        crate::emit::broadcast(io, |io| io.to(team_room(&team)), event::PRESENCE, &change).await;
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
                cluster.forget_node(&node);
                registry.drop_node(&node);
            }
        }
        Event::Wake { team, agent, .. } => wake_here(io, mesh, cluster, &team, &agent),
        Event::Delivered {
            team, agent, entry, ..
        } => cluster.note_delivered(team, agent, &entry),
    }
}

/// [`Cluster::wake_with_append`] for node `here`.
fn wake_on_holder(here: &str, holders: &[String], team: &str, agent: &str) -> Option<Publish> {
    let [holder] = holders else { return None };
    if holder == here {
        return None;
    }
    let wake = NodeMessage::Wake {
        team: team.to_owned(),
        to: agent.to_owned(),
    };
    match serde_json::to_vec(&[wake]) {
        Ok(payload) => Some(Publish {
            channel: node_channel(holder),
            payload,
        }),
        Err(err) => {
            tracing::error!(%err, "node message not serializable");
            None
        }
    }
}

/// Wakes `agent`'s deliverer if its connection is here (stored mail arrived on another node).
fn wake_here<A: Adapter>(
    io: &SocketIo<A>,
    mesh: &Arc<Mesh>,
    cluster: &Cluster,
    team: &str,
    agent: &str,
) {
    if let Some(store) = &mesh.store
        && mesh.registry.has_connection_on(team, agent, &cluster.node)
    {
        mesh.deliverers.wake(io, mesh, store, team, agent);
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
    fn a_batch_wakes_each_agent_once_and_keeps_everything_else_in_order() {
        let wake = |agent: &str| Event::Wake {
            node: "n1".into(),
            team: "t".into(),
            agent: agent.into(),
        };
        let delivered = Event::Delivered {
            node: "n1".into(),
            team: "t".into(),
            agent: "bob".into(),
            entry: "1-0".into(),
        };
        let mut events = vec![
            wake("bob"),
            delivered.clone(),
            wake("carol"),
            wake("bob"),
            delivered.clone(),
            wake("carol"),
        ];
        without_repeated_wakes(&mut events);
        assert_eq!(
            events,
            [wake("bob"), delivered.clone(), wake("carol"), delivered]
        );
    }

    #[test]
    fn node_messages_read_back_as_written_and_missing_fields_are_named() {
        let deliver = NodeMessage::Deliver {
            reply_to: "n1".into(),
            request: 7,
            team: "t".into(),
            to: "bob".into(),
            envelope: Box::new(Envelope {
                id: "m1".into(),
                kind: wire::MessageKind::Direct,
                from: "alice".into(),
                to: Some("bob".into()),
                group: None,
                text: "hi \"bob\"".into(),
                metadata: Some(serde_json::json!({ "k": [1, 2] })),
                timestamp: "2026-12-04T00:00:00Z".into(),
                ttl: Some(60),
            }),
        };
        let answer = NodeMessage::Answer {
            request: 7,
            outcome: Outcome::Delivered,
        };
        let batch = serde_json::to_vec(&vec![deliver.clone(), answer.clone()]).unwrap();
        let read: Vec<NodeMessage> = serde_json::from_slice(&batch).unwrap();
        assert_eq!(read, [deliver, answer]);
        // The JSON is the tagged form replicas of earlier versions write and read.
        let json = serde_json::to_value(&read[1]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({ "kind": "answer", "request": 7, "outcome": "delivered" })
        );
        let err = serde_json::from_str::<NodeMessage>(r#"{"kind":"answer","request":7}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field `outcome`"), "{err}");
    }

    #[test]
    fn stored_mail_wakes_the_one_other_node_holding_the_recipient_on_its_channel() {
        let nodes = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let wake = wake_on_holder("n1", &nodes(&["n2"]), "t", "bob").expect("bob is on n2");
        assert_eq!(wake.channel, node_channel("n2"));
        let read: Vec<NodeMessage> = serde_json::from_slice(&wake.payload).unwrap();
        assert_eq!(
            read,
            [NodeMessage::Wake {
                team: "t".into(),
                to: "bob".into()
            }]
        );
        assert_eq!(
            serde_json::to_value(&read[0]).unwrap(),
            serde_json::json!({ "kind": "wake", "team": "t", "to": "bob" })
        );
        // Here, offline, or on several nodes: woken the other ways.
        assert_eq!(wake_on_holder("n1", &nodes(&["n1"]), "t", "bob"), None);
        assert_eq!(wake_on_holder("n1", &[], "t", "bob"), None);
        assert_eq!(
            wake_on_holder("n1", &nodes(&["n2", "n3"]), "t", "bob"),
            None
        );
        // A deliver or an answer still needs its request number.
        let err = serde_json::from_str::<NodeMessage>(r#"{"kind":"answer","outcome":"delivered"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field `request`"), "{err}");
    }

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

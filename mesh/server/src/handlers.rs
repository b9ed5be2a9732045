//! Socket.io handlers: the handshake, each client event, and disconnects. Each handler parses,
//! asks [`Registry`](crate::registry::Registry) and friends, and answers through the ack.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures_util::StreamExt as _;
use nsh_mesh_transport::token::{self, Claims, TokenError};
use nsh_mesh_transport::wire::{
    self, Envelope, ErrorCode, GroupAck, GroupList, GroupRequest, HistoryAnswer, HistoryEntry,
    HistoryRequest, MessageKind, PresenceChange, PresenceList, SendAck, SendRequest, SendStatus,
    Target, WireError, event,
};
use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler as _;
use socketioxide::operators::BroadcastOperators;
use socketioxide::{BroadcastError, EmitWithAckError, SocketIo};

use crate::Mesh;
use crate::dedup::Seen;
use crate::registry::{SocketEntry, TooManyConnections};

/// Who is behind a socket, from its verified token.
#[derive(Debug, Clone)]
pub(crate) struct Session(pub(crate) Arc<Claims>);

impl Session {
    fn team(&self) -> &str {
        &self.0.team
    }
    fn agent(&self) -> &str {
        &self.0.sub
    }
}

pub(crate) fn team_room(team: &str) -> String {
    format!("team:{team}")
}
pub(crate) fn agent_room(team: &str, agent: &str) -> String {
    format!("agent:{team}:{agent}")
}
pub(crate) fn group_room(team: &str, group: &str) -> String {
    format!("group:{team}:{group}")
}

/// Registers the namespace with its handshake middleware. The handlers are generic over the
/// adapter: one replica alone, or several over Redis (whose set-up the caller awaits).
pub(crate) fn register<A: Adapter + socketioxide_core::adapter::DefinedAdapter>(
    io: &SocketIo<A>,
) -> A::InitRes {
    io.ns("/", on_connect::<A>.with(authenticate::<A>))
}

/// Emits to the sockets `select` picks, on every replica. If the replicas' channel (Redis)
/// fails, this replica's own sockets still get it: local traffic goes on through an outage.
pub(crate) async fn broadcast<A: Adapter, T: serde::Serialize + ?Sized>(
    io: &SocketIo<A>,
    select: impl Fn(&SocketIo<A>) -> BroadcastOperators<A>,
    event: &str,
    data: &T,
) {
    match select(io).emit(event, data).await {
        Ok(()) => {}
        // The adapter fails before emitting locally, so nothing is sent twice.
        Err(BroadcastError::Adapter(err)) => {
            tracing::debug!(%err, "cross-replica broadcast failed; this replica's sockets only");
            let _ = select(io).local().emit(event, data).await;
        }
        Err(err) => tracing::debug!(%err, "broadcast failed for some sockets"),
    }
}

/// [`broadcast`] with acks: the acks of every replica's sockets, or (`true`: other replicas
/// unreachable) of this replica's alone.
async fn broadcast_with_ack<A: Adapter, T: serde::Serialize + ?Sized>(
    io: &SocketIo<A>,
    select: impl Fn(&SocketIo<A>) -> BroadcastOperators<A>,
    timeout: std::time::Duration,
    event: &str,
    data: &T,
) -> Result<(socketioxide::ack::AckStream<Value, A>, bool), EmitWithAckError> {
    match select(io).timeout(timeout).emit_with_ack(event, data).await {
        Ok(stream) => Ok((stream, false)),
        Err(EmitWithAckError::Adapter(err)) => {
            tracing::debug!(%err, "cross-replica emit failed; this replica's sockets only");
            let stream = select(io)
                .local()
                .timeout(timeout)
                .emit_with_ack(event, data)
                .await?;
            Ok((stream, true))
        }
        Err(err) => Err(err),
    }
}

/// Why a handshake was refused; the text is what the client's `connect_error` carries.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("{prefix} {0}", prefix = wire::UNAUTHORIZED_PREFIX)]
    Unauthorized(TokenError),
    #[error("refused: {0}")]
    Limit(TooManyConnections),
    #[error("refused: agent `{agent}` connects too often (over {rate}/s); retry in a few seconds")]
    ConnectRate { agent: String, rate: f64 },
}

async fn authenticate<A: Adapter>(
    socket: SocketRef<A>,
    State(mesh): State<Arc<Mesh>>,
    TryData(auth): TryData<Value>,
) -> Result<(), Refusal> {
    let token = auth
        .ok()
        .and_then(|a| a.get("token").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    let claims = token::verify_with(
        &token,
        mesh.keys.as_ref(),
        mesh.limits.max_token_ttl,
        token::now_unix(),
    )
    .map_err(|err| {
        mesh.metrics.refused(refusal_reason(&err));
        tracing::info!(sid = %socket.id, %err, "handshake refused");
        Refusal::Unauthorized(err)
    })?;
    // Only a check here: the reservation happens in `on_connect`, after the disconnect hook
    // exists, so a socket that fails between the two can never leak a connection slot.
    let max = mesh.limits.max_connections_per_agent;
    if mesh.registry.connections_of(&claims.team, &claims.sub) >= max {
        mesh.metrics.refused("too_many_connections");
        return Err(Refusal::Limit(TooManyConnections {
            agent: claims.sub,
            max,
        }));
    }
    // Reconnect churn costs the whole team presence traffic: bound connects per agent.
    let key = format!("{}/{}", claims.team, claims.sub);
    if mesh.connect_limiter.check_key(&key).is_err() {
        mesh.metrics.refused("connect_rate");
        return Err(Refusal::ConnectRate {
            agent: claims.sub,
            rate: mesh.limits.connect_rate.per_second,
        });
    }
    socket.extensions.insert(Session(Arc::new(claims)));
    Ok(())
}

fn refusal_reason(err: &TokenError) -> &'static str {
    match err {
        TokenError::Missing => "missing",
        TokenError::Expired => "expired",
        TokenError::BadSignature(_) => "bad_signature",
        TokenError::UnknownTeam(_) => "unknown_team",
        TokenError::TooLong { .. } => "too_long",
        TokenError::NotYetValid | TokenError::IssuedInFuture => "not_yet_valid",
        _ => "invalid",
    }
}

async fn on_connect<A: Adapter>(
    socket: SocketRef<A>,
    io: SocketIo<A>,
    State(mesh): State<Arc<Mesh>>,
) {
    let Some(session) = socket.extensions.get::<Session>() else {
        tracing::error!(sid = %socket.id, "connected without a session; closing");
        let _ = socket.disconnect();
        return;
    };
    let (team, agent) = (session.team().to_owned(), session.agent().to_owned());
    let sid = socket.id.to_string();
    // Hooks first (before any await, so no early event is missed), reserve second, then
    // re-check: whichever way a disconnect races this handler, the registry ends up without
    // the socket.
    socket.on_disconnect(on_disconnect::<A>);
    socket.on(event::MESSAGE, on_message::<A>);
    socket.on(event::PRESENCE, on_presence::<A>);
    socket.on(event::GROUP_JOIN, on_group_join::<A>);
    socket.on(event::GROUP_LEAVE, on_group_leave::<A>);
    socket.on(event::GROUP_LIST, on_group_list::<A>);
    socket.on(event::GROUP_MEMBERS, on_group_members::<A>);
    socket.on(event::HISTORY, on_history::<A>);
    socket.on_fallback(on_unknown_event::<A>);
    let now = wire::now_rfc3339();
    let connected = match mesh.registry.connect(
        &team,
        &agent,
        &sid,
        &mesh.node,
        &now,
        mesh.limits.max_connections_per_agent,
    ) {
        Ok(connected) => connected,
        Err(err) => {
            // Two handshakes raced past the middleware's check.
            tracing::info!(sid = %socket.id, %err, "closing connection over the limit");
            let _ = socket.disconnect();
            return;
        }
    };
    if !socket.connected() {
        mesh.registry.disconnect(&team, &agent, &sid);
        return;
    }
    socket.join(team_room(&team));
    socket.join(agent_room(&team, &agent));
    for group in &connected.groups {
        socket.join(group_room(&team, group));
    }
    if let Some(cluster) = &mesh.cluster {
        cluster.connected(SocketEntry {
            team: team.clone(),
            agent: agent.clone(),
            sid: sid.clone(),
            since: now,
            groups: connected.groups.clone(),
        });
    }
    mesh.metrics
        .connections
        .set(mesh.registry.connection_count(&mesh.node) as i64);
    tracing::info!(sid = %socket.id, %team, %agent, first = connected.first, "agent connected");
    // Stored mail first: the deliverer hands it over in order, then keeps up with new mail.
    if let Some(store) = &mesh.store {
        mesh.deliverers.wake(&io, &mesh, store, &team, &agent);
    }
    if connected.first {
        presence_changed(&io, &mesh, &team, &agent, true).await;
    }
}

async fn on_disconnect<A: Adapter>(
    socket: SocketRef<A>,
    io: SocketIo<A>,
    State(mesh): State<Arc<Mesh>>,
) {
    let Some(session) = socket.extensions.get::<Session>() else {
        return;
    };
    let (team, agent) = (session.team(), session.agent());
    let sid = socket.id.to_string();
    let last = mesh.registry.disconnect(team, agent, &sid);
    if let Some(cluster) = &mesh.cluster {
        cluster.disconnected(team, agent, &sid);
    }
    mesh.metrics
        .connections
        .set(mesh.registry.connection_count(&mesh.node) as i64);
    tracing::info!(sid = %socket.id, %team, %agent, last, "agent disconnected");
    if last {
        presence_changed(&io, &mesh, team, agent, false).await;
    }
}

/// Tells the team that `agent` came online or went offline, through the per-agent throttle.
async fn presence_changed<A: Adapter>(
    io: &SocketIo<A>,
    mesh: &Arc<Mesh>,
    team: &str,
    agent: &str,
    online: bool,
) {
    use crate::presence::Announce;
    if mesh.registry.online_count(team) > mesh.limits.presence_max_team {
        return;
    }
    match mesh.presence.changed(team, agent, online, Instant::now()) {
        Announce::Now(online) => announce_presence(io, team, agent, online).await,
        Announce::Later(delay) => {
            let (io, mesh) = (io.clone(), mesh.clone());
            let (team, agent) = (team.to_owned(), agent.to_owned());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let online = mesh.registry.is_online(&team, &agent);
                if let Some(online) = mesh.presence.settle(&team, &agent, online, Instant::now()) {
                    announce_presence(&io, &team, &agent, online).await;
                }
            });
        }
        Announce::Nothing => {}
    }
}

async fn announce_presence<A: Adapter>(io: &SocketIo<A>, team: &str, agent: &str, online: bool) {
    let change = PresenceChange {
        agent: agent.to_owned(),
        online,
        at: wire::now_rfc3339(),
    };
    if online {
        broadcast(
            io,
            |io| io.to(team_room(team)).except(agent_room(team, agent)),
            event::PRESENCE,
            &change,
        )
        .await;
    } else {
        broadcast(io, |io| io.to(team_room(team)), event::PRESENCE, &change).await;
    }
}

/// An event the protocol does not have: answered `invalid` (if the client asked for an answer)
/// and counted against the sender's rate limit like any other event.
async fn on_unknown_event<A: Adapter>(
    socketioxide::extract::Event(name): socketioxide::extract::Event,
    ack: AckSender<A>,
    State(mesh): State<Arc<Mesh>>,
    Extension(session): Extension<Session>,
) {
    let result: Result<(), WireError> = check_rate(&mesh, &session).and_then(|()| {
        Err(WireError::new(
            ErrorCode::Invalid,
            format!(
                "unknown event `{}`; the mesh's events are message, presence, history and group:join|leave|list|members",
                token::shown(&name)
            ),
        ))
    });
    answer(ack, Correlation::default(), result);
}

/// The request's `id` and `group`, kept (without cloning the payload) so an error ack can
/// name what it answers.
#[derive(Debug, Default)]
struct Correlation {
    id: Option<String>,
    group: Option<String>,
}

impl Correlation {
    fn of(data: &Result<Value, socketioxide::ParserError>) -> Self {
        let field = |key: &str| data.as_ref().ok()?.get(key)?.as_str().map(str::to_owned);
        Self {
            id: field("id"),
            group: field("group"),
        }
    }
}

/// The error ack every event uses: `{ ok: false, error }`, plus the request's `id` or `group`
/// so the client can match it.
fn error_ack(correlation: Correlation, error: WireError) -> Value {
    let mut ack = json!({ "ok": false, "error": error });
    if let Some(id) = correlation.id {
        ack["id"] = id.into();
    }
    if let Some(group) = correlation.group {
        ack["group"] = group.into();
    }
    ack
}

fn reply<A: Adapter>(ack: AckSender<A>, value: &impl serde::Serialize) {
    if let Err(err) = ack.send(value) {
        tracing::debug!(%err, "could not send ack");
    }
}

/// The per-agent token bucket; `Err` carries the `rate_limited` error.
fn check_rate(mesh: &Mesh, session: &Session) -> Result<(), WireError> {
    let key = format!("{}/{}", session.team(), session.agent());
    mesh.limiter.check_key(&key).map_err(|_| {
        WireError::new(
            ErrorCode::RateLimited,
            format!(
                "over {}/s (burst {}) for this agent; slow down and retry",
                mesh.limits.rate.per_second, mesh.limits.rate.burst
            ),
        )
    })
}

/// Parses the payload, mapping a missing one to `invalid`.
fn payload(data: Result<Value, socketioxide::ParserError>) -> Result<Value, WireError> {
    data.map_err(|e| WireError::new(ErrorCode::Invalid, format!("payload: {e}")))
}

async fn on_message<A: Adapter>(
    io: SocketIo<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
    State(mesh): State<Arc<Mesh>>,
    Extension(session): Extension<Session>,
) {
    let started = Instant::now();
    let correlation = Correlation::of(&data);
    let result = send(&io, &mesh, &session, data, started).await;
    let outcome = match &result {
        Ok(ack) => match ack.status {
            Some(SendStatus::Duplicate) => "duplicate",
            _ => "delivered",
        },
        Err(error) => error.code.as_str(),
    };
    mesh.metrics.message(outcome);
    mesh.metrics
        .send_seconds
        .observe(started.elapsed().as_secs_f64());
    if let Err(error) = &result {
        tracing::debug!(team = session.team(), from = session.agent(), code = error.code.as_str(), %error.message, "message refused");
    }
    answer(ack, correlation, result);
}

async fn send<A: Adapter>(
    io: &SocketIo<A>,
    mesh: &Arc<Mesh>,
    session: &Session,
    data: Result<Value, socketioxide::ParserError>,
    now: Instant,
) -> Result<SendAck, WireError> {
    check_rate(mesh, session)?;
    let request: SendRequest = wire::parse(payload(data)?)?;
    // What the recipient gets: the text and the metadata. Serializing only the metadata (rarely
    // present) keeps the common path free of a second pass over the payload.
    let size = request.text.len()
        + request
            .metadata
            .as_ref()
            .map_or(0, |m| serde_json::to_vec(m).map_or(usize::MAX, |b| b.len()));
    if size > mesh.limits.max_message_bytes {
        return Err(WireError::new(
            ErrorCode::TooLarge,
            format!(
                "text and metadata are {size} bytes; the limit is {} (send a reference, not the content)",
                mesh.limits.max_message_bytes
            ),
        ));
    }
    let target = request.validate()?;
    let (team, from) = (session.team(), session.agent());
    if let Target::Group(group) = &target
        && !mesh.registry.is_member(team, from, group)
    {
        return Err(WireError::new(
            ErrorCode::Forbidden,
            format!("join group `{group}` before sending to it"),
        ));
    }
    match mesh.dedup.check(team, from, &request.id, now) {
        Seen::First => {}
        Seen::Done => return Ok(SendAck::duplicate(request.id)),
        Seen::InFlight => return Err(in_flight()),
    }
    let envelope_id = request.id.clone();
    let envelope = Envelope {
        id: request.id.clone(),
        kind: if matches!(target, Target::Group(_)) {
            MessageKind::Group
        } else {
            MessageKind::Direct
        },
        from: from.to_owned(),
        to: request.to,
        group: request.group,
        text: request.text,
        metadata: request.metadata,
        timestamp: wire::now_rfc3339(),
        ttl: request.ttl,
    };
    let recorded = AtomicBool::new(false);
    let result = match &mesh.store {
        Some(store) => {
            deliver_stored(io, mesh, store, team, from, &target, &envelope, &recorded).await
        }
        None => {
            let dedup = CrossReplicaDedup::Pending(&recorded);
            deliver(io, mesh, team, from, &target, &envelope, dedup).await
        }
    };
    let recorded = recorded.load(Ordering::Relaxed);
    match &result {
        Err(_) => {
            // Not delivered: a retry with the same id must be tried again, not called a
            // duplicate.
            mesh.dedup.forget(team, from, &request.id);
            if let (Some(cluster), true) = (&mesh.cluster, recorded) {
                cluster.forget(team, from, &envelope_id).await;
            }
        }
        Ok(_) => {
            // Stored or delivered: only now is a resend a duplicate.
            mesh.dedup.complete(team, from, &request.id);
            if let (Some(cluster), true) = (&mesh.cluster, recorded) {
                cluster.complete(team, from, &envelope_id).await;
            }
        }
    }
    result
}

/// The answer to a resend that arrives while the first send of its id is still in progress.
fn in_flight() -> WireError {
    WireError::new(
        ErrorCode::Unavailable,
        "a send with this id is still in progress; retry with the same id in a moment",
    )
}

/// Whether the message id is already recorded in the replicas' shared dedup (Redis). Each send
/// records it once: recording it a second time would find the first record and call the
/// message a duplicate of itself.
#[derive(Debug, Clone, Copy)]
enum CrossReplicaDedup<'a> {
    /// Not recorded yet: record it if the message may reach another replica, and say so here
    /// (the caller then completes or forgets the record).
    Pending(&'a AtomicBool),
    /// Recorded by the caller (the stored-delivery path records every message).
    Recorded,
}

/// Emits the envelope to its recipients and waits for their clients' acks.
async fn deliver<A: Adapter>(
    io: &SocketIo<A>,
    mesh: &Mesh,
    team: &str,
    from: &str,
    target: &Target,
    envelope: &Envelope,
    dedup: CrossReplicaDedup<'_>,
) -> Result<SendAck, WireError> {
    let offline = |message: String| WireError::new(ErrorCode::RecipientOffline, message);
    match target {
        Target::Agent(to) => {
            if !mesh.registry.is_online(team, to) && !connected_anywhere(io, mesh, team, to).await {
                return Err(offline(format!("agent `{to}` is not connected")));
            }
        }
        Target::Group(group) => {
            if mesh.registry.members(team, group).iter().all(|m| m == from) {
                return Err(offline(format!(
                    "no other member of `{group}` is connected"
                )));
            }
        }
    }
    // Several replicas: a direct message goes straight to the one replica holding its
    // recipient (whose own dedup window catches a retry through any replica), or stays here.
    let mut here_only = mesh.cluster.is_none();
    if let (Some(cluster), Target::Agent(to)) = (&mesh.cluster, target) {
        match mesh.registry.holders(team, to).as_slice() {
            [node] if *node == mesh.node => here_only = true,
            [node] => return deliver_on_replica(mesh, cluster, node, team, to, envelope).await,
            _ => {}
        }
    }
    // Otherwise every replica may hold a recipient: a retry through another replica is caught
    // by the ids recorded in Redis.
    if let (false, CrossReplicaDedup::Pending(recorded)) = (here_only, dedup)
        && let Some(duplicate) = record_in_cluster(mesh, team, from, &envelope.id, recorded).await?
    {
        return Ok(duplicate);
    }
    let select = |io: &SocketIo<A>| {
        let operators = match target {
            Target::Agent(to) => io.to(agent_room(team, to)),
            Target::Group(group) => io
                .to(group_room(team, group))
                .except(agent_room(team, from)),
        };
        if here_only {
            operators.local()
        } else {
            operators
        }
    };
    let (acks, local_only) = broadcast_with_ack(
        io,
        select,
        mesh.limits.ack_timeout,
        event::MESSAGE,
        envelope,
    )
    .await
    .map_err(|e| offline(format!("could not emit: {e}")))?;
    let acked: Vec<String> = acks
        .filter_map(|(sid, result)| async move { result.ok().map(|_| sid.to_string()) })
        .collect()
        .await;
    // Who acked, by name (a connection the directory does not know yet is not named).
    let mut delivered_to: Vec<String> = acked
        .iter()
        .filter_map(|sid| mesh.registry.agent_of(team, sid))
        .collect();
    delivered_to.sort();
    delivered_to.dedup();
    if acked.is_empty() {
        let who = match target {
            Target::Agent(to) => format!("agent `{to}`"),
            Target::Group(group) => format!("members of `{group}`"),
        };
        if local_only {
            return Err(WireError::new(
                ErrorCode::Unavailable,
                format!(
                    "{who} may be on another replica, and the replicas cannot reach each other (Redis is unavailable); retry with the same id"
                ),
            ));
        }
        return Err(offline(format!(
            "{who} did not acknowledge within {:?}",
            mesh.limits.ack_timeout
        )));
    }
    Ok(SendAck::delivered(
        envelope.id.clone(),
        matches!(target, Target::Group(_)).then_some(delivered_to),
    ))
}

/// Emits `envelope` to this replica's connections of `agent`; whether one acked in `timeout`.
pub(crate) async fn deliver_here<A: Adapter>(
    io: &SocketIo<A>,
    team: &str,
    agent: &str,
    envelope: &Envelope,
    timeout: std::time::Duration,
) -> bool {
    let acks = io
        .local()
        .to(agent_room(team, agent))
        .timeout(timeout)
        .emit_with_ack::<_, Value>(event::MESSAGE, envelope)
        .await;
    match acks {
        Ok(stream) => {
            stream
                .filter(|(_, r)| futures_util::future::ready(r.is_ok()))
                .count()
                .await
                > 0
        }
        Err(_) => false,
    }
}

/// With several replicas the directory may lag a connection made a moment ago on another
/// replica: before calling an agent the directory does not know offline, ask every replica.
async fn connected_anywhere<A: Adapter>(
    io: &SocketIo<A>,
    mesh: &Mesh,
    team: &str,
    agent: &str,
) -> bool {
    mesh.cluster.is_some()
        && io
            .to(agent_room(team, agent))
            .fetch_sockets()
            .await
            .is_ok_and(|sockets| !sockets.is_empty())
}

/// Records this message id in the replicas' shared dedup (nothing to do with one replica:
/// the local window decided). `Ok(None)`: go on and send; `Ok(Some(ack))`: an earlier send
/// succeeded, answer `duplicate`; `Err`: an earlier send is still in flight. `recorded` says
/// whether the record is this send's own, to complete or forget when it ends.
async fn record_in_cluster(
    mesh: &Mesh,
    team: &str,
    from: &str,
    id: &str,
    recorded: &AtomicBool,
) -> Result<Option<SendAck>, WireError> {
    let Some(cluster) = &mesh.cluster else {
        return Ok(None);
    };
    match cluster
        .check(team, from, id, mesh.limits.dedup_window)
        .await
    {
        Seen::First => {
            recorded.store(true, Ordering::Relaxed);
            Ok(None)
        }
        Seen::Done => Ok(Some(SendAck::duplicate(id.to_owned()))),
        // Not ours to complete or forget: the record belongs to the send in flight.
        Seen::InFlight => Err(in_flight()),
    }
}

/// Hands a direct message to the replica holding its recipient and waits for its answer.
async fn deliver_on_replica(
    mesh: &Mesh,
    cluster: &Arc<crate::cluster::Cluster>,
    node: &str,
    team: &str,
    to: &str,
    envelope: &Envelope,
) -> Result<SendAck, WireError> {
    use crate::cluster::Outcome;
    let timeout = mesh.limits.ack_timeout;
    match cluster.deliver_on(node, team, to, envelope, timeout).await {
        Outcome::Delivered => Ok(SendAck::delivered(envelope.id.clone(), None)),
        Outcome::Duplicate => Ok(SendAck::duplicate(envelope.id.clone())),
        Outcome::InFlight => Err(in_flight()),
        Outcome::NotDelivered => Err(WireError::new(
            ErrorCode::RecipientOffline,
            format!("agent `{to}` did not acknowledge within {timeout:?}"),
        )),
        Outcome::Unreachable => Err(WireError::new(
            ErrorCode::Unavailable,
            format!(
                "agent `{to}` is on another replica, and the replicas cannot reach each other (Redis is unavailable); retry with the same id"
            ),
        )),
    }
}

/// Persistence on: keep the message, then deliver it. A direct message goes through the
/// recipient's deliverer (in order after anything stored before it) and is `delivered` once
/// acked, `stored` when the recipient is away; a group message is kept for `history` and
/// delivered live. With the store down, live delivery still works; what cannot be kept or
/// delivered is `unavailable`.
// One send's whole context; a struct for it would only be unpacked again here.
#[allow(clippy::too_many_arguments)]
async fn deliver_stored<A: Adapter>(
    io: &SocketIo<A>,
    mesh: &Arc<Mesh>,
    store: &crate::store::Store,
    team: &str,
    from: &str,
    target: &Target,
    envelope: &Envelope,
    recorded: &AtomicBool,
) -> Result<SendAck, WireError> {
    let unavailable = |err: &crate::store::StoreError, live: &WireError| {
        WireError::new(
            ErrorCode::Unavailable,
            format!(
                "{err}, and live delivery failed ({}); retry with the same id",
                live.message
            ),
        )
    };
    // Stored mail may be delivered by any replica: a retry through another one is caught by
    // the ids recorded in Redis.
    if let Some(duplicate) = record_in_cluster(mesh, team, from, &envelope.id, recorded).await? {
        return Ok(duplicate);
    }
    // Live delivery, after the store kept the message or when it could not.
    let deliver_live = || {
        deliver(
            io,
            mesh,
            team,
            from,
            target,
            envelope,
            CrossReplicaDedup::Recorded,
        )
    };
    match target {
        Target::Agent(to) => match store.append_direct(team, to, envelope).await {
            Ok(entry) => {
                if !mesh.registry.is_online(team, to) {
                    return Ok(stored(envelope));
                }
                let timeout = mesh.limits.ack_timeout;
                // The recipient's deliverer runs where its connection is: here, or on another
                // replica, which is woken and reports the ack back.
                let delivered = if mesh.registry.has_connection_on(team, to, &mesh.node) {
                    let acked = mesh.deliverers.wake(io, mesh, store, team, to);
                    crate::durable::Deliverers::acked(acked, &entry, timeout).await
                } else if let Some(cluster) = &mesh.cluster {
                    let acked = cluster.watch_delivered(team, to);
                    cluster.wake(team, to);
                    let delivered = crate::durable::Deliverers::acked(acked, &entry, timeout).await;
                    cluster.unwatch_delivered(team, to);
                    delivered
                } else {
                    false
                };
                Ok(if delivered {
                    SendAck::delivered(envelope.id.clone(), None)
                } else {
                    stored(envelope)
                })
            }
            Err(err) => deliver_live()
                .await
                .map_err(|live| unavailable(&err, &live)),
        },
        Target::Group(group) => {
            let kept = store.append_group(team, group, envelope).await;
            match (deliver_live().await, kept) {
                (Ok(ack), _) => Ok(ack),
                (Err(_), Ok(_)) => Ok(stored(envelope)),
                (Err(live), Err(err)) => Err(unavailable(&err, &live)),
            }
        }
    }
}

fn stored(envelope: &Envelope) -> SendAck {
    SendAck {
        status: Some(SendStatus::Stored),
        ..SendAck::delivered(envelope.id.clone(), None)
    }
}

async fn on_history<A: Adapter>(
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
    State(mesh): State<Arc<Mesh>>,
    Extension(session): Extension<Session>,
) {
    let correlation = Correlation::of(&data);
    let result = history(&mesh, &session, data).await;
    answer(ack, correlation, result);
}

async fn history(
    mesh: &Mesh,
    session: &Session,
    data: Result<Value, socketioxide::ParserError>,
) -> Result<HistoryAnswer, WireError> {
    check_rate(mesh, session)?;
    let request: HistoryRequest = wire::parse(payload(data)?)?;
    let (target, limit) = request.validate()?;
    let Some(store) = &mesh.store else {
        return Err(WireError::new(
            ErrorCode::Unavailable,
            "this mesh keeps no history: it runs without persistence (--redis and --persistence)",
        ));
    };
    let conversation = match target {
        // Only what the caller may see: a group its token allows, its own conversations.
        Target::Group(group) => {
            if !session.0.may_join(&group) {
                return Err(WireError::new(
                    ErrorCode::Forbidden,
                    format!("this agent's token does not allow group `{group}`"),
                ));
            }
            crate::store::Conversation::Group(group)
        }
        Target::Agent(with) => crate::store::Conversation::Direct(session.agent().to_owned(), with),
    };
    let messages = store
        .history(
            session.team(),
            &conversation,
            limit,
            request.before.as_deref(),
        )
        .await
        .map_err(|e| WireError::new(ErrorCode::Unavailable, e.to_string()))?;
    Ok(HistoryAnswer {
        ok: true,
        messages: messages
            .into_iter()
            .map(|m| HistoryEntry {
                envelope: m.envelope,
                seq: m.entry,
            })
            .collect(),
    })
}

/// Answers a request: the value, or the error ack naming the request.
fn answer<A: Adapter, T: serde::Serialize>(
    ack: AckSender<A>,
    correlation: Correlation,
    result: Result<T, WireError>,
) {
    match result {
        Ok(value) => reply(ack, &value),
        Err(error) => reply(ack, &error_ack(correlation, error)),
    }
}

async fn on_presence<A: Adapter>(
    ack: AckSender<A>,
    State(mesh): State<Arc<Mesh>>,
    Extension(session): Extension<Session>,
) {
    let result = check_rate(&mesh, &session).map(|()| PresenceList {
        agents: mesh.registry.presence(session.team()),
    });
    answer(ack, Correlation::default(), result);
}

/// Parses a `{ group }` request and checks the name.
fn group_request(data: Result<Value, socketioxide::ParserError>) -> Result<String, WireError> {
    let request: GroupRequest = wire::parse(payload(data)?)?;
    if let Some(why) = nsh_contract::names::check(&request.group) {
        return Err(WireError::new(ErrorCode::Invalid, format!("group: {why}")));
    }
    Ok(request.group)
}

async fn on_group_join<A: Adapter>(
    io: SocketIo<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
    State(mesh): State<Arc<Mesh>>,
    Extension(session): Extension<Session>,
) {
    let correlation = Correlation::of(&data);
    let result = async {
        check_rate(&mesh, &session)?;
        let group = group_request(data)?;
        if !session.0.may_join(&group) {
            return Err(WireError::new(
                ErrorCode::Forbidden,
                format!("this agent's token does not allow group `{group}`; ask for a token whose `groups` claim lists it"),
            ));
        }
        let (team, agent) = (session.team(), session.agent());
        let members = mesh
            .registry
            .join(team, agent, &group, mesh.limits.max_groups_per_agent)
            .map_err(|e| WireError::new(ErrorCode::Forbidden, e.to_string()))?;
        if let Some(cluster) = &mesh.cluster {
            cluster.joined(team, agent, &group);
        }
        // Every connection of the agent joins, on every replica, not only this one.
        let room = group_room(team, &group);
        if io.to(agent_room(team, agent)).join(room.clone()).await.is_err() {
            let _ = io.to(agent_room(team, agent)).local().join(room).await;
        }
        Ok(GroupAck::members(group, members))
    }
    .await;
    answer(ack, correlation, result);
}

async fn on_group_leave<A: Adapter>(
    io: SocketIo<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
    State(mesh): State<Arc<Mesh>>,
    Extension(session): Extension<Session>,
) {
    let correlation = Correlation::of(&data);
    let result = async {
        check_rate(&mesh, &session)?;
        let group = group_request(data)?;
        let (team, agent) = (session.team(), session.agent());
        let members = mesh.registry.leave(team, agent, &group);
        if let Some(cluster) = &mesh.cluster {
            cluster.left(team, agent, &group);
        }
        let room = group_room(team, &group);
        if io
            .to(agent_room(team, agent))
            .leave(room.clone())
            .await
            .is_err()
        {
            let _ = io.to(agent_room(team, agent)).local().leave(room).await;
        }
        Ok(GroupAck::members(group, members))
    }
    .await;
    answer(ack, correlation, result);
}

async fn on_group_list<A: Adapter>(
    ack: AckSender<A>,
    State(mesh): State<Arc<Mesh>>,
    Extension(session): Extension<Session>,
) {
    let result = check_rate(&mesh, &session).map(|()| GroupList {
        groups: mesh.registry.groups(session.team()),
    });
    answer(ack, Correlation::default(), result);
}

async fn on_group_members<A: Adapter>(
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
    State(mesh): State<Arc<Mesh>>,
    Extension(session): Extension<Session>,
) {
    let correlation = Correlation::of(&data);
    let result = check_rate(&mesh, &session)
        .and_then(|()| group_request(data))
        .map(|group| {
            let members = mesh.registry.members(session.team(), &group);
            GroupAck::members(group, members)
        });
    answer(ack, correlation, result);
}

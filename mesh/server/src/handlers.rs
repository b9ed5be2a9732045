//! Socket.io handlers: the handshake, each client event, and disconnects. Each handler parses,
//! asks [`Registry`](crate::registry::Registry), [`routing`](crate::routing) and friends, and
//! answers through the ack.

use std::sync::Arc;
use std::time::Instant;

use nsh_mesh_transport::token::{self, TokenError};
use nsh_mesh_transport::wire::{
    self, ErrorAck, ErrorCode, GroupAck, GroupList, GroupRequest, HistoryRequest, PresenceChange,
    PresenceList, SendRequest, SendStatus, WireError, event,
};
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler as _;
use tracing::Instrument as _;

use crate::Mesh;
use crate::args::{FirstArg, Payload};
use crate::emit::broadcast;
use crate::registry::{SocketEntry, TooManyConnections};
use crate::rooms::{agent_room, group_room, team_room};
use crate::routing;
use crate::session::Session;

/// Registers the namespace with its handshake middleware. The handlers are generic over the
/// adapter: one replica alone, or several over Redis (whose set-up the caller awaits).
pub(crate) fn register<A: Adapter + socketioxide_core::adapter::DefinedAdapter>(
    io: &SocketIo<A>,
) -> A::InitRes {
    io.ns("/", on_connect::<A>.with(authenticate::<A>))
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
    let key = crate::session::agent_key(&claims.team, &claims.sub);
    if mesh.connect_limiter.check_key(&key).is_err() {
        mesh.metrics.refused("connect_rate");
        return Err(Refusal::ConnectRate {
            agent: claims.sub,
            rate: mesh.limits.connect_rate.per_second,
        });
    }
    socket
        .extensions
        .insert(Session::new(claims, &socket.id.to_string()));
    // The event handlers go on here, before the connect packet: socketioxide sends it before
    // it spawns `on_connect`, and an event a client emits at once would find no handler and be
    // dropped without an ack. They wait for `on_connect` (`Session::connected`).
    socket.on(event::MESSAGE, on_message::<A>);
    socket.on(event::PRESENCE, on_presence::<A>);
    socket.on(event::GROUP_JOIN, on_group_join::<A>);
    socket.on(event::GROUP_LEAVE, on_group_leave::<A>);
    socket.on(event::GROUP_LIST, on_group_list::<A>);
    socket.on(event::GROUP_MEMBERS, on_group_members::<A>);
    socket.on(event::HISTORY, on_history::<A>);
    socket.on_fallback(on_unknown_event::<A>);
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

/// Sets the session connected when dropped: on every return of `on_connect`.
struct ConnectedOnDrop(Session);

impl Drop for ConnectedOnDrop {
    fn drop(&mut self) {
        self.0.set_connected();
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
    // However this handler ends, the events waiting for it go on (to find the socket
    // connected, or gone).
    let release = ConnectedOnDrop(session.clone());
    let (team, agent) = (session.team().to_owned(), session.agent().to_owned());
    let sid = socket.id.to_string();
    // The disconnect hook first (before any await), reserve second, then re-check: whichever
    // way a disconnect races this handler, the registry ends up without the socket. (The
    // event handlers were put on at the handshake.)
    socket.on_disconnect(on_disconnect::<A>);
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
    drop(release);
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
    session.connected().await;
    let span = session.span.clone();
    async move {
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
    .instrument(span)
    .await;
}

/// The request's `id` and `group`, kept (without cloning the payload) so an error ack can
/// name what it answers.
#[derive(Debug, Default)]
struct Correlation {
    id: Option<String>,
    group: Option<String>,
}

impl Correlation {
    fn of(data: &Result<Value, WireError>) -> Self {
        let field = |key: &str| data.as_ref().ok()?.get(key)?.as_str().map(str::to_owned);
        Self {
            id: field("id"),
            group: field("group"),
        }
    }
}

/// The error ack every event uses, matched to its request.
fn error_ack(correlation: Correlation, error: WireError) -> ErrorAck {
    ErrorAck::new(error, correlation.id, correlation.group)
}

fn reply<A: Adapter>(ack: AckSender<A>, value: &impl serde::Serialize) {
    if let Err(err) = ack.send(value) {
        tracing::debug!(%err, "could not send ack");
    }
}

/// The per-agent token bucket; `Err` carries the `rate_limited` error.
fn check_rate(mesh: &Mesh, session: &Session) -> Result<(), WireError> {
    mesh.limiter.check_key(&session.key).map_err(|_| {
        WireError::new(
            ErrorCode::RateLimited,
            format!(
                "over {}/s (burst {}) for this agent; slow down and retry",
                mesh.limits.rate.per_second, mesh.limits.rate.burst
            ),
        )
    })
}

/// The event's payload (its first argument), a missing or unreadable one as `invalid`.
fn payload(args: Result<FirstArg<Value>, socketioxide::ParserError>) -> Result<Value, WireError> {
    let invalid = |why: String| WireError::new(ErrorCode::Invalid, format!("payload: {why}"));
    match args {
        Ok(FirstArg(Some(value))) => Ok(value),
        Ok(FirstArg(None)) => Err(invalid("missing; send one JSON object".into())),
        Err(err) => Err(invalid(err.to_string())),
    }
}

/// A `message` event. socketioxide spawns a task per event, and tokio moves the task's future
/// into its cell and out again; the message's whole state in flight (about 1.4 KB) is boxed
/// once here, so only a pointer and the span move (2-3% of the relay's CPU went to those
/// copies).
fn on_message<A: Adapter>(
    io: SocketIo<A>,
    Payload(args): Payload<SendRequest>,
    ack: AckSender<A>,
    State(mesh): State<Arc<Mesh>>,
    Extension(session): Extension<Session>,
) -> impl Future<Output = ()> + Send {
    let span = session.span.clone();
    Box::pin(send_message(io, args, ack, mesh, session)).instrument(span)
}

async fn send_message<A: Adapter>(
    io: SocketIo<A>,
    args: Result<SendRequest, Result<FirstArg<Value>, socketioxide::ParserError>>,
    ack: AckSender<A>,
    mesh: Arc<Mesh>,
    session: Session,
) {
    nsh_admin::shards::note_message();
    let (request, correlation) = match args {
        Ok(request) => {
            let correlation = Correlation {
                id: Some(request.id.clone()),
                group: request.group.clone(),
            };
            (Ok(request), correlation)
        }
        // Read again as JSON: the error names the field, the error ack the request's id.
        Err(args) => {
            let data = payload(args);
            let correlation = Correlation::of(&data);
            (data.and_then(wire::parse::<SendRequest>), correlation)
        }
    };
    session.connected().await;
    let started = Instant::now();
    let result = async {
        check_rate(&mesh, &session)?;
        routing::send(&io, &mesh, &session, request?, started).await
    }
    .await;
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
    // The ack of every message: written directly, as the envelope is (`encoded`).
    answer(ack, correlation, result.map(|ack| ack.to_json()));
}

async fn on_history<A: Adapter>(
    TryData(args): TryData<FirstArg<Value>>,
    ack: AckSender<A>,
    State(mesh): State<Arc<Mesh>>,
    Extension(session): Extension<Session>,
) {
    let data = payload(args);
    session.connected().await;
    let span = session.span.clone();
    async move {
        let correlation = Correlation::of(&data);
        let result = async {
            check_rate(&mesh, &session)?;
            let request: HistoryRequest = wire::parse(data?)?;
            routing::history(&mesh, &session, request).await
        }
        .await;
        answer(ack, correlation, result);
    }
    .instrument(span)
    .await;
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
    session.connected().await;
    let span = session.span.clone();
    async move {
        let result = check_rate(&mesh, &session).map(|()| PresenceList {
            agents: mesh.registry.presence(session.team()),
        });
        answer(ack, Correlation::default(), result);
    }
    .instrument(span)
    .await;
}

/// Parses a `{ group }` request and checks the name.
fn group_request(data: Result<Value, WireError>) -> Result<String, WireError> {
    let request: GroupRequest = wire::parse(data?)?;
    if let Some(why) = nsh_contract::names::check(&request.group) {
        return Err(WireError::new(ErrorCode::Invalid, format!("group: {why}")));
    }
    Ok(request.group)
}

async fn on_group_join<A: Adapter>(
    io: SocketIo<A>,
    TryData(args): TryData<FirstArg<Value>>,
    ack: AckSender<A>,
    State(mesh): State<Arc<Mesh>>,
    Extension(session): Extension<Session>,
) {
    let data = payload(args);
    session.connected().await;
    let span = session.span.clone();
    async move {
        let correlation = Correlation::of(&data);
        let result = async {
            check_rate(&mesh, &session)?;
            let group = group_request(data)?;
            if !session.claims.may_join(&group) {
                return Err(WireError::new(
                    ErrorCode::Forbidden,
                    format!(
                        "this agent's {} `{group}`; ask for a token whose `groups` claim lists it",
                        wire::TOKEN_FORBIDS_GROUP
                    ),
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
            if io
                .to(agent_room(team, agent))
                .join(room.clone())
                .await
                .is_err()
            {
                let _ = io.to(agent_room(team, agent)).local().join(room).await;
            }
            Ok(GroupAck::members(group, members))
        }
        .await;
        answer(ack, correlation, result);
    }
    .instrument(span)
    .await;
}

async fn on_group_leave<A: Adapter>(
    io: SocketIo<A>,
    TryData(args): TryData<FirstArg<Value>>,
    ack: AckSender<A>,
    State(mesh): State<Arc<Mesh>>,
    Extension(session): Extension<Session>,
) {
    let data = payload(args);
    session.connected().await;
    let span = session.span.clone();
    async move {
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
    .instrument(span)
    .await;
}

async fn on_group_list<A: Adapter>(
    ack: AckSender<A>,
    State(mesh): State<Arc<Mesh>>,
    Extension(session): Extension<Session>,
) {
    session.connected().await;
    let span = session.span.clone();
    async move {
        let result = check_rate(&mesh, &session).map(|()| GroupList {
            groups: mesh.registry.groups(session.team()),
        });
        answer(ack, Correlation::default(), result);
    }
    .instrument(span)
    .await;
}

async fn on_group_members<A: Adapter>(
    TryData(args): TryData<FirstArg<Value>>,
    ack: AckSender<A>,
    State(mesh): State<Arc<Mesh>>,
    Extension(session): Extension<Session>,
) {
    let data = payload(args);
    session.connected().await;
    let span = session.span.clone();
    async move {
        let correlation = Correlation::of(&data);
        let result = check_rate(&mesh, &session)
            .and_then(|()| group_request(data))
            .map(|group| {
                let members = mesh.registry.members(session.team(), &group);
                GroupAck::members(group, members)
            });
        answer(ack, correlation, result);
    }
    .instrument(span)
    .await;
}

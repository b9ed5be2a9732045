//! The mesh-client's one Socket.io connection to the mesh, kept up with backoff.
//!
//! A background task connects, re-joins the agent's groups, hands every server event to
//! [`Events`], and when the connection drops waits (exponential backoff with jitter) and tries
//! again, re-reading the token file each time so a token the operator rotated is picked up.
//! Tools talk to the mesh through [`Link::client`], which fails fast with the connection state
//! instead of hanging while the mesh is away.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};
use nsh_mesh_transport::client::{Client, ClientConfig, ClientError, Incoming};
use nsh_mesh_transport::token::{Claims, now_unix, peek_claims};
use nsh_mesh_transport::wire::{Envelope, GroupAck, GroupRequest, PresenceChange, event};
use serde::Serialize;
use tokio::sync::{Notify, watch};

/// Where the agent's token comes from. A file is re-read on every connection attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Inline(String),
    File(PathBuf),
}

/// Clock skew the mesh allows on `exp` (its one leeway): a token expired for longer is
/// refused before dialing.
const EXPIRY_SKEW_SECS: u64 = nsh_mesh_transport::token::LEEWAY.as_secs();

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TokenProblem {
    #[error("cannot read the token file {path}: {why} (pass --token-file with the agent's JWT)")]
    Unreadable { path: PathBuf, why: String },
    #[error("the token is not a JWT: {0} (mint one with `nsh mesh token`)")]
    Malformed(String),
    #[error(
        "the token expired {ago} s ago (exp {exp}); mint a new one with `nsh mesh token`, or let the operator rotate it"
    )]
    Expired { exp: u64, ago: u64 },
}

impl TokenSource {
    /// The token text and its (unverified) claims, expired or not: for saying whose token it
    /// is (`nsh mesh token decode`, which inbox a hook reads), never for connecting.
    pub fn peek(&self) -> Result<(String, Claims), TokenProblem> {
        let token = match self {
            Self::Inline(token) => token.trim().to_owned(),
            Self::File(path) => std::fs::read_to_string(path)
                .map_err(|e| TokenProblem::Unreadable {
                    path: path.clone(),
                    why: e.to_string(),
                })?
                .trim()
                .to_owned(),
        };
        let claims = peek_claims(&token).map_err(|e| TokenProblem::Malformed(e.to_string()))?;
        Ok((token, claims))
    }

    /// The token text and its (unverified) claims; an expired token is refused here.
    pub fn load(&self) -> Result<(String, Claims), TokenProblem> {
        let (token, claims) = self.peek()?;
        let now = now_unix();
        if claims.exp + EXPIRY_SKEW_SECS < now {
            return Err(TokenProblem::Expired {
                exp: claims.exp,
                ago: now - claims.exp,
            });
        }
        Ok((token, claims))
    }
}

/// What the link is doing, as `mesh_presence` and the logs report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ConnectionState {
    Connecting {
        server: String,
        attempt: u64,
    },
    Connected {
        server: String,
        since: String,
        attempt: u64,
    },
    Disconnected {
        server: String,
        since: String,
        reason: String,
        retry_in_ms: u64,
        attempt: u64,
    },
}

impl ConnectionState {
    fn attempt(&self) -> u64 {
        match self {
            Self::Connecting { attempt, .. }
            | Self::Connected { attempt, .. }
            | Self::Disconnected { attempt, .. } => *attempt,
        }
    }

    pub fn is_connected(&self) -> bool {
        matches!(self, Self::Connected { .. })
    }
}

/// What the link hands to the rest of the mesh-client. `message` must store the envelope
/// durably before it returns `Ok`: only then is the mesh told the message was received.
pub trait Events: Send + Sync + 'static {
    fn message(
        &self,
        envelope: Envelope,
    ) -> impl Future<Output = Result<(), crate::StoreMessageError>> + Send;
    fn presence(&self, change: PresenceChange);
    fn state(&self, state: &ConnectionState);
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    #[error("not connected to the mesh ({0})")]
    NotConnected(String),
    #[error("{0}")]
    Token(#[from] TokenProblem),
    #[error(
        "the token is for agent `{got}`, but this mesh-client serves `{expected}` (team/agent); start another mesh-client for that agent"
    )]
    OtherAgent { expected: String, got: String },
    /// The mesh refused or did not answer (shared: one failure may answer several callers).
    #[error("{0}")]
    Mesh(Arc<ClientError>),
}

impl From<ClientError> for LinkError {
    fn from(err: ClientError) -> Self {
        match err {
            ClientError::Closed => Self::NotConnected("the connection closed".into()),
            other => Self::Mesh(Arc::new(other)),
        }
    }
}

#[derive(Debug, Clone)]
struct Target {
    server: String,
    token: TokenSource,
}

#[derive(Debug)]
struct Shared {
    target: Mutex<Target>,
    identity: Identity,
    client: watch::Sender<Option<Client>>,
    state: watch::Sender<ConnectionState>,
    groups: Mutex<BTreeSet<String>>,
    reconnect: Notify,
}

/// Aborts the connection task when the last [`Link`] clone goes away.
#[derive(Debug)]
struct TaskGuard(tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Who a mesh-client speaks for, from its token's claims: every token it later uses (a
/// rotated file, `mesh_connect`) must name the same team and agent, since mail is stored in
/// that agent's inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub agent: String,
    pub team: String,
}

impl Identity {
    pub fn of(claims: &Claims) -> Self {
        Self {
            agent: claims.sub.clone(),
            team: claims.team.clone(),
        }
    }

    fn check(&self, claims: &Claims) -> Result<(), LinkError> {
        let got = Self::of(claims);
        if got == *self {
            return Ok(());
        }
        Err(LinkError::OtherAgent {
            expected: format!("{}/{}", self.team, self.agent),
            got: format!("{}/{}", got.team, got.agent),
        })
    }
}

/// Handle to the connection; cheap to clone.
#[derive(Debug, Clone)]
pub struct Link {
    shared: Arc<Shared>,
    _task: Arc<TaskGuard>,
}

/// Backoff between attempts: 200 ms doubling to 10 s, with jitter so a restarted mesh is not
/// hit by every agent at the same instant.
fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

impl Link {
    /// Starts connecting to `server` as `identity` (the token's team and subject).
    pub fn start(
        server: String,
        token: TokenSource,
        identity: Identity,
        events: impl Events,
    ) -> Self {
        let initial = ConnectionState::Connecting {
            server: server.clone(),
            attempt: 0,
        };
        let shared = Arc::new(Shared {
            target: Mutex::new(Target { server, token }),
            identity,
            client: watch::channel(None).0,
            state: watch::channel(initial).0,
            groups: Mutex::new(BTreeSet::new()),
            reconnect: Notify::new(),
        });
        let task = tokio::spawn(run(shared.clone(), Arc::new(events)));
        Self {
            shared,
            _task: Arc::new(TaskGuard(task)),
        }
    }

    pub fn state(&self) -> ConnectionState {
        self.shared.state.borrow().clone()
    }

    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.subscribe()
    }

    /// The live connection, or why there is none.
    pub fn client(&self) -> Result<Client, LinkError> {
        if let Some(client) = self.shared.client.borrow().as_ref()
            && client.is_connected()
        {
            return Ok(client.clone());
        }
        Err(LinkError::NotConnected(describe(&self.state())))
    }

    /// Groups the agent has joined (re-joined after every reconnect).
    pub fn groups(&self) -> Vec<String> {
        self.shared
            .groups
            .lock()
            .expect("groups lock")
            .iter()
            .cloned()
            .collect()
    }

    /// Switches server and/or token (when given) and reconnects now; waits up to `wait` for
    /// the outcome of that attempt.
    pub async fn reconnect(
        &self,
        server: Option<String>,
        token: Option<TokenSource>,
        wait: Duration,
    ) -> Result<ConnectionState, LinkError> {
        if let Some(token) = &token {
            let (_, claims) = token.load()?;
            self.shared.identity.check(&claims)?;
        }
        {
            let mut target = self.shared.target.lock().expect("target lock");
            if let Some(server) = server {
                target.server = server;
            }
            if let Some(token) = token {
                target.token = token;
            }
        }
        let mut states = self.shared.state.subscribe();
        let before = states.borrow_and_update().attempt();
        self.shared.reconnect.notify_one();
        let settled = tokio::time::timeout(
            wait,
            states.wait_for(|s| {
                s.attempt() > before && !matches!(s, ConnectionState::Connecting { .. })
            }),
        )
        .await;
        Ok(match settled {
            Ok(Ok(state)) => state.clone(),
            _ => self.state(),
        })
    }

    /// Joins `group` and remembers it for reconnects.
    pub async fn join(&self, group: &str) -> Result<GroupAck, LinkError> {
        let ack = self.group_request(event::GROUP_JOIN, group).await?;
        if ack.ok {
            self.shared
                .groups
                .lock()
                .expect("groups lock")
                .insert(group.to_owned());
        }
        Ok(ack)
    }

    /// Leaves `group` and forgets it.
    pub async fn leave(&self, group: &str) -> Result<GroupAck, LinkError> {
        let ack = self.group_request(event::GROUP_LEAVE, group).await?;
        self.shared
            .groups
            .lock()
            .expect("groups lock")
            .remove(group);
        Ok(ack)
    }

    async fn group_request(&self, event: &str, group: &str) -> Result<GroupAck, LinkError> {
        let request = GroupRequest {
            group: group.to_owned(),
        };
        Ok(self.client()?.request(event, &request).await?)
    }
}

/// A one-line account of a state, for errors and logs.
pub fn describe(state: &ConnectionState) -> String {
    match state {
        ConnectionState::Connecting { server, .. } => format!("connecting to {server}"),
        ConnectionState::Connected { server, since, .. } => {
            format!("connected to {server} since {since}")
        }
        ConnectionState::Disconnected {
            server,
            reason,
            retry_in_ms,
            ..
        } => format!("{server}: {reason}; retrying in {retry_in_ms} ms"),
    }
}

async fn run(shared: Arc<Shared>, events: Arc<impl Events>) {
    let mut delays = backoff();
    let mut attempt = 0u64;
    loop {
        attempt += 1;
        let target = shared.target.lock().expect("target lock").clone();
        publish(
            &shared,
            &*events,
            ConnectionState::Connecting {
                server: target.server.clone(),
                attempt,
            },
        );
        let reason = match connect(&target, &shared.identity).await {
            Ok((client, incoming)) => {
                delays = backoff();
                publish(
                    &shared,
                    &*events,
                    ConnectionState::Connected {
                        server: target.server.clone(),
                        since: nsh_mesh_transport::wire::now_rfc3339(),
                        attempt,
                    },
                );
                rejoin(&shared, &client).await;
                shared.client.send_replace(Some(client.clone()));
                let reason = tokio::select! {
                    () = pump(&client, incoming, &*events) => "the mesh closed the connection".to_owned(),
                    () = shared.reconnect.notified() => {
                        client.disconnect().await;
                        shared.client.send_replace(None);
                        // Asked to reconnect: dial again at once.
                        continue;
                    }
                };
                shared.client.send_replace(None);
                reason
            }
            Err(reason) => reason,
        };
        let delay = delays.next().unwrap_or(Duration::from_secs(10));
        tracing::warn!(server = %target.server, %reason, retry_in = ?delay, "mesh connection down");
        publish(
            &shared,
            &*events,
            ConnectionState::Disconnected {
                server: target.server,
                since: nsh_mesh_transport::wire::now_rfc3339(),
                reason,
                retry_in_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                attempt,
            },
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shared.reconnect.notified() => {}
        }
    }
}

fn publish(shared: &Shared, events: &impl Events, state: ConnectionState) {
    if state.is_connected() {
        tracing::info!(state = %describe(&state), "mesh connection up");
    }
    events.state(&state);
    shared.state.send_replace(state);
}

async fn connect(
    target: &Target,
    identity: &Identity,
) -> Result<(Client, tokio::sync::mpsc::UnboundedReceiver<Incoming>), String> {
    let (token, claims) = target.token.load().map_err(|e| e.to_string())?;
    // A token file rewritten for another agent or team: its mail would land in this inbox.
    identity.check(&claims).map_err(|e| e.to_string())?;
    Client::connect(ClientConfig::new(target.server.clone()).with_token(token))
        .await
        .map_err(|e| e.to_string())
}

/// Re-joins every remembered group; a group the (new) token no longer allows is forgotten.
async fn rejoin(shared: &Shared, client: &Client) {
    let groups: Vec<String> = shared
        .groups
        .lock()
        .expect("groups lock")
        .iter()
        .cloned()
        .collect();
    for group in groups {
        let request = GroupRequest {
            group: group.clone(),
        };
        match client
            .request::<_, GroupAck>(event::GROUP_JOIN, &request)
            .await
        {
            Ok(ack) if ack.ok => tracing::info!(%group, "re-joined group"),
            Ok(ack) => {
                tracing::warn!(%group, error = ?ack.error, "could not re-join group; forgetting it");
                shared.groups.lock().expect("groups lock").remove(&group);
            }
            Err(err) => tracing::warn!(%group, %err, "could not re-join group"),
        }
    }
}

/// Hands server events to `events` until the connection ends. Messages are handled one at a
/// time, in order, and acked only once `events` has stored them.
async fn pump(
    client: &Client,
    mut incoming: tokio::sync::mpsc::UnboundedReceiver<Incoming>,
    events: &impl Events,
) {
    loop {
        let next = tokio::select! {
            next = incoming.recv() => next,
            () = client.closed() => None,
        };
        let Some(mut event) = next else { return };
        match event.event.as_str() {
            event::MESSAGE => match event.parse::<Envelope>() {
                Ok(envelope) => {
                    let id = envelope.id.clone();
                    match events.message(envelope).await {
                        Ok(()) => event.ack(vec![serde_json::json!({ "ok": true })]),
                        // No ack: the sender hears `recipient_offline` and may retry.
                        Err(why) => tracing::error!(%id, %why, "could not store a message"),
                    }
                }
                Err(err) => tracing::warn!(%err, "ignoring a malformed message event"),
            },
            event::PRESENCE => match event.parse::<PresenceChange>() {
                Ok(change) => events.presence(change),
                Err(err) => tracing::warn!(%err, "ignoring a malformed presence event"),
            },
            other => tracing::debug!(event = other, "ignoring an unknown event"),
        }
    }
}

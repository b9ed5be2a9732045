//! The daemon's event loop: owns the [`Mux`], the server's input and every client's output.
//! One task, no locks; fronts (the Unix socket, HTTP) talk to it through a [`Hub`] handle.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

use crate::identity::Identity;
use crate::mux::{ClientId, Mux, Out};
use crate::upstream::{self, Event, Launch};
use crate::wire::Status;

/// When the daemon stops by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// After this long with no clients.
    Idle(Duration),
    /// Only when told (`nsh mcp daemon stop`) or signalled.
    Persistent,
}

/// What a front asks of the hub.
#[derive(Debug)]
enum Command {
    Join {
        sender: mpsc::UnboundedSender<Value>,
        joined: oneshot::Sender<ClientId>,
    },
    Message(ClientId, Value),
    Leave(ClientId),
    Status(oneshot::Sender<Status>),
    Stop,
}

/// A front's handle on the hub.
#[derive(Debug, Clone)]
pub struct Hub {
    commands: mpsc::UnboundedSender<Command>,
}

/// Why a client could not join.
#[derive(Debug, thiserror::Error)]
#[error("the daemon is stopping")]
pub struct Stopping;

impl Hub {
    /// A new client; what the server says to it arrives on the returned receiver.
    pub async fn join(&self) -> Result<(ClientId, mpsc::UnboundedReceiver<Value>), Stopping> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let (joined, answer) = oneshot::channel();
        self.commands
            .send(Command::Join { sender, joined })
            .map_err(|_| Stopping)?;
        // A hub that stopped drops the question unanswered.
        let id = answer.await.map_err(|_| Stopping)?;
        Ok((id, receiver))
    }

    /// A message from a client.
    pub fn send(&self, client: ClientId, message: Value) {
        let _ = self.commands.send(Command::Message(client, message));
    }

    /// A client is gone.
    pub fn leave(&self, client: ClientId) {
        let _ = self.commands.send(Command::Leave(client));
    }

    pub async fn status(&self) -> Option<Status> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Status(tx)).ok()?;
        rx.await.ok()
    }

    /// Stop the daemon (its server too).
    pub fn stop(&self) {
        let _ = self.commands.send(Command::Stop);
    }
}

/// The running hub: its handle, a signal that it stopped taking clients, and the end of all
/// (the server stopped too).
#[derive(Debug)]
pub struct Running {
    pub hub: Hub,
    pub stopping: oneshot::Receiver<()>,
    pub done: tokio::task::JoinHandle<()>,
}

/// Starts the server and the hub.
pub fn start(identity: Identity, launch: Launch, lifetime: Lifetime) -> Running {
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let (input_tx, input) = mpsc::unbounded_channel();
    let (events_tx, events) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let command = std::iter::once(launch.spec.command.clone())
        .chain(launch.spec.args.iter().cloned())
        .collect();
    let cwd = launch.spec.cwd.to_string_lossy().into_owned();
    let supervisor = tokio::spawn(upstream::supervise(launch, input, events_tx, stop_rx));
    let state = State {
        identity,
        lifetime,
        command,
        cwd,
        mux: Mux::new(),
        clients: HashMap::new(),
        next_client: 1,
        input: input_tx,
        server_pid: None,
        starts: 0,
        started: Instant::now(),
        idle_since: Some(Instant::now()),
        out: Vec::new(),
    };
    let (stopping_tx, stopping) = oneshot::channel();
    let done = tokio::spawn(async move {
        state.run(commands, events).await;
        let _ = stopping_tx.send(());
        let _ = stop_tx.send(true);
        let _ = supervisor.await;
    });
    Running {
        hub: Hub {
            commands: commands_tx,
        },
        stopping,
        done,
    }
}

struct State {
    identity: Identity,
    lifetime: Lifetime,
    command: Vec<String>,
    cwd: String,
    mux: Mux,
    clients: HashMap<ClientId, mpsc::UnboundedSender<Value>>,
    next_client: ClientId,
    input: mpsc::UnboundedSender<Vec<u8>>,
    server_pid: Option<u32>,
    starts: u32,
    started: Instant,
    idle_since: Option<Instant>,
    out: Vec<Out>,
}

impl State {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let idle_deadline = match (self.lifetime, self.idle_since) {
                (Lifetime::Idle(after), Some(since)) => Some(since + after),
                _ => None,
            };
            tokio::select! {
                command = commands.recv() => {
                    let going_on = command.is_some_and(|command| self.command(command));
                    if !going_on {
                        break;
                    }
                }
                event = events.recv() => match event {
                    Some(event) => self.event(event),
                    None => break,
                },
                _ = tick.tick() => self.mux.expire(Instant::now(), &mut self.out),
                () = sleep_until(idle_deadline), if idle_deadline.is_some() => {
                    tracing::info!("no clients for the idle timeout; stopping");
                    break;
                }
            }
            self.deliver();
        }
        // Clients still connected (a stop) learn it from their connection closing.
        self.clients.clear();
    }

    /// Handles one command; `false` when it is to stop.
    fn command(&mut self, command: Command) -> bool {
        match command {
            Command::Join { sender, joined } => {
                let id = self.next_client;
                self.next_client += 1;
                self.clients.insert(id, sender);
                self.mux.join(id);
                self.idle_since = None;
                let _ = joined.send(id);
                tracing::debug!(client = id, clients = self.clients.len(), "client joined");
            }
            Command::Message(client, message) => {
                if self.clients.contains_key(&client) {
                    self.mux.from_client(client, message, &mut self.out);
                }
            }
            Command::Leave(client) => {
                if self.clients.remove(&client).is_some() {
                    self.mux.leave(client, &mut self.out);
                    tracing::debug!(client, clients = self.clients.len(), "client left");
                    if self.clients.is_empty() {
                        self.idle_since = Some(Instant::now());
                    }
                }
            }
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Stop => return false,
        }
        true
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Started { pid } => {
                self.server_pid = Some(pid);
                self.starts += 1;
                self.mux.upstream_started(&mut self.out);
            }
            Event::Message(message) => self.mux.from_upstream(message, &mut self.out),
            Event::Exited { why } => {
                self.server_pid = None;
                self.mux.upstream_exited(&why, &mut self.out);
            }
        }
    }

    fn deliver(&mut self) {
        for out in self.out.drain(..) {
            match out {
                Out::Upstream(message) => {
                    let mut line = serde_json::to_vec(&message).unwrap_or_default();
                    line.push(b'\n');
                    let _ = self.input.send(line);
                }
                Out::Client(client, message) => {
                    if let Some(sender) = self.clients.get(&client) {
                        let _ = sender.send(message);
                    }
                }
            }
        }
    }

    fn status(&self) -> Status {
        let daemon = crate::procfs::rss_bytes(std::process::id()).unwrap_or(0);
        let server = self.server_pid.map_or(0, crate::procfs::group_rss_bytes);
        Status {
            name: self.identity.name.clone(),
            key: self.identity.key.clone(),
            pid: std::process::id(),
            server_pid: self.server_pid,
            clients: self.clients.len(),
            in_flight: self.mux.in_flight(),
            restarts: self.starts.saturating_sub(1),
            uptime_secs: self.started.elapsed().as_secs(),
            memory_bytes: daemon + server,
            persistent: self.lifetime == Lifetime::Persistent,
            idle_timeout_secs: match self.lifetime {
                Lifetime::Idle(after) => Some(after.as_secs()),
                Lifetime::Persistent => None,
            },
            command: self.command.clone(),
            cwd: self.cwd.clone(),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

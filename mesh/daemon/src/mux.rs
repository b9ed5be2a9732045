//! The multiplexer: many MCP clients, one MCP server, as pure logic over JSON-RPC messages.
//!
//! Every message in returns the messages out ([`Out`]); the daemon's event loop does the I/O.
//! The rules (docs/daemon.md has them for users):
//!
//! - **Requests** get a fresh upstream id; the answer goes back with the client's own id to that
//!   client only. Clients may all use `id: 1` at once. A progress token is rewritten the same
//!   way (it is the upstream id), so progress reaches only the caller; a client's
//!   `notifications/cancelled` is translated to the upstream id.
//! - **`initialize`** reaches the server once. Later clients get the cached result, with the
//!   protocol version they asked for when it is not newer than the server's, else the server's.
//!   Clients' `notifications/initialized` are absorbed (the daemon sent its own).
//! - **Server-to-client requests** (sampling, elicitation, roots) go to the one client with
//!   requests in flight, when there is exactly one and it declared the capability; otherwise
//!   the server gets an error saying why. `ping` from the server is answered here.
//! - **Other notifications** from the server (`list_changed`, logging, resource updates) go to
//!   every client that has spoken.
//! - While the server is down, requests wait (up to [`QUEUE_LIMIT`]); requests in flight when it
//!   exits are answered with an error at once. After a restart the daemon initializes it again
//!   with the first client's parameters and tells every client its lists changed.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A client of the daemon: one bridge connection or one HTTP session.
pub type ClientId = u64;

/// How long a request waits for a server that is restarting before it is answered with an error.
pub const QUEUE_LIMIT: Duration = Duration::from_secs(30);

/// JSON-RPC's "internal error": what a client gets when the server cannot answer.
pub const UPSTREAM_UNAVAILABLE: i64 = -32603;
/// JSON-RPC's "parse error": a line that is not a JSON object.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC's "invalid request".
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC's "method not found": a server request no client can take.
pub const NO_CLIENT_FOR_REQUEST: i64 = -32601;

/// A message to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// To the MCP server.
    Upstream(Value),
    /// To one client.
    Client(ClientId, Value),
}

#[derive(Debug)]
struct Pending {
    client: ClientId,
    /// The id the client chose.
    id: Value,
    /// The progress token the client chose, if it asked for progress.
    progress: Option<Value>,
}

#[derive(Debug, Default)]
struct Client {
    /// What the client declared in `initialize` (sampling, elicitation, roots).
    capabilities: Option<Value>,
    /// Sent anything besides `initialize`: broadcasts reach it from then on.
    active: bool,
}

#[derive(Debug)]
struct Waiter {
    client: ClientId,
    id: Value,
    version: Option<String>,
}

#[derive(Debug)]
enum Init {
    /// Nobody has initialized the server yet.
    NotYet,
    /// The first `initialize` is at the server; these clients wait for its answer.
    Asked {
        upstream_id: u64,
        params: Value,
        waiters: Vec<Waiter>,
    },
    /// The server's answer, kept for every later client and for restarts.
    Done { params: Value, result: Value },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upstream {
    Down,
    /// Restarted; the daemon's own `initialize` (this id) is at the server.
    Reinitializing(u64),
    Up,
}

/// The state of one shared server and its clients.
#[derive(Debug)]
pub struct Mux {
    next_id: u64,
    pending: HashMap<u64, Pending>,
    /// (client, its id as JSON text) → upstream id, to translate cancellations.
    by_client: HashMap<(ClientId, String), u64>,
    clients: HashMap<ClientId, Client>,
    /// Server-to-client requests in flight: the server's id as JSON text → the client asked.
    server_requests: HashMap<String, ClientId>,
    init: Init,
    upstream: Upstream,
    queue: VecDeque<(Instant, ClientId, Value)>,
}

impl Default for Mux {
    fn default() -> Self {
        Self::new()
    }
}

impl Mux {
    /// A multiplexer whose server is not running yet.
    pub fn new() -> Self {
        Self {
            next_id: 1,
            pending: HashMap::new(),
            by_client: HashMap::new(),
            clients: HashMap::new(),
            server_requests: HashMap::new(),
            init: Init::NotYet,
            upstream: Upstream::Down,
            queue: VecDeque::new(),
        }
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Requests at the server now (the daemon's own included).
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Requests waiting for the server to come back.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// A client connected.
    pub fn join(&mut self, client: ClientId) {
        self.clients.entry(client).or_default();
    }

    /// A client went away: its requests are cancelled at the server, server requests it held
    /// are answered with an error, and nothing of it is kept.
    pub fn leave(&mut self, client: ClientId, out: &mut Vec<Out>) {
        self.clients.remove(&client);
        self.queue.retain(|(_, c, _)| *c != client);
        if let Init::Asked { waiters, .. } = &mut self.init {
            waiters.retain(|w| w.client != client);
        }
        let mine: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.client == client)
            .map(|(id, _)| *id)
            .collect();
        for upstream_id in mine {
            self.pending.remove(&upstream_id);
            if self.upstream != Upstream::Down {
                out.push(Out::Upstream(cancelled(
                    &json!(upstream_id),
                    "the client disconnected",
                )));
            }
        }
        self.by_client.retain(|(c, _), _| *c != client);
        let held: Vec<String> = self
            .server_requests
            .iter()
            .filter(|(_, c)| **c == client)
            .map(|(id, _)| id.clone())
            .collect();
        for id in held {
            self.server_requests.remove(&id);
            if let Ok(id) = serde_json::from_str::<Value>(&id) {
                out.push(Out::Upstream(error(
                    &id,
                    UPSTREAM_UNAVAILABLE,
                    "the client this request went to disconnected",
                )));
            }
        }
    }

    /// The server process started and is reading its input.
    pub fn upstream_started(&mut self, out: &mut Vec<Out>) {
        match &self.init {
            Init::Done { params, .. } => {
                let params = params.clone();
                let id = self.fresh_id();
                out.push(Out::Upstream(request(id, "initialize", params)));
                self.upstream = Upstream::Reinitializing(id);
            }
            Init::NotYet | Init::Asked { .. } => {
                self.upstream = Upstream::Up;
                self.flush(out);
            }
        }
    }

    /// The server process exited: whoever waits on it gets an error now, not a hang.
    pub fn upstream_exited(&mut self, why: &str, out: &mut Vec<Out>) {
        self.upstream = Upstream::Down;
        let message = format!("the MCP server exited ({why}); nsh is restarting it");
        for (_, pending) in self.pending.drain() {
            out.push(Out::Client(
                pending.client,
                error(&pending.id, UPSTREAM_UNAVAILABLE, &message),
            ));
        }
        self.by_client.clear();
        self.server_requests.clear();
        if matches!(self.init, Init::Asked { .. })
            && let Init::Asked { waiters, .. } = std::mem::replace(&mut self.init, Init::NotYet)
        {
            for waiter in waiters {
                out.push(Out::Client(
                    waiter.client,
                    error(&waiter.id, UPSTREAM_UNAVAILABLE, &message),
                ));
            }
        }
        if matches!(self.init, Init::NotYet) {
            // A server that never got through `initialize` (a typo in its command, a crash at
            // start): waiting for the next attempt would only delay the same error.
            for (_, client, queued) in std::mem::take(&mut self.queue) {
                if let Some(id) = queued.get("id") {
                    out.push(Out::Client(
                        client,
                        error(id, UPSTREAM_UNAVAILABLE, &message),
                    ));
                }
            }
        }
        // `Init::Done` is kept: the restarted server is initialized with the same parameters.
    }

    /// Requests that waited too long for a restarting server are answered with an error.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Out>) {
        while let Some((at, _, _)) = self.queue.front() {
            if now.duration_since(*at) < QUEUE_LIMIT {
                break;
            }
            let Some((_, client, message)) = self.queue.pop_front() else {
                break;
            };
            if let Some(id) = message.get("id") {
                out.push(Out::Client(
                    client,
                    error(
                        id,
                        UPSTREAM_UNAVAILABLE,
                        "the MCP server did not come back in time; see `nsh mcp daemon list`",
                    ),
                ));
            }
        }
    }

    /// One message (or batch) from a client.
    pub fn from_client(&mut self, client: ClientId, message: Value, out: &mut Vec<Out>) {
        if let Value::Array(batch) = message {
            // Batches (2025-03-26 only) are taken apart; each answer comes back on its own.
            for message in batch {
                self.from_client(client, message, out);
            }
            return;
        }
        if !message.is_object() {
            out.push(Out::Client(
                client,
                error(
                    &Value::Null,
                    PARSE_ERROR,
                    "parse error: expected a JSON-RPC object",
                ),
            ));
            return;
        }
        let has_id = message.get("id").is_some();
        let method = message.get("method").and_then(Value::as_str);
        match (method, has_id) {
            (Some(_), true) => self.client_request(client, message, out),
            (Some(_), false) => self.client_notification(client, message, out),
            (None, true) if message.get("result").is_some() || message.get("error").is_some() => {
                self.client_response(client, message, out);
            }
            _ => out.push(Out::Client(
                client,
                error(
                    message.get("id").unwrap_or(&Value::Null),
                    INVALID_REQUEST,
                    "not a JSON-RPC request, notification or response",
                ),
            )),
        }
    }

    /// One message (or batch) from the server.
    pub fn from_upstream(&mut self, message: Value, out: &mut Vec<Out>) {
        if let Value::Array(batch) = message {
            for message in batch {
                self.from_upstream(message, out);
            }
            return;
        }
        let has_id = message.get("id").is_some();
        let method = message.get("method").and_then(Value::as_str);
        match (method, has_id) {
            (Some(_), true) => self.server_request(message, out),
            (Some(_), false) => self.server_notification(message, out),
            (None, true) => self.server_response(message, out),
            (None, false) => {
                tracing::debug!("the server sent a message that is none of JSON-RPC's");
            }
        }
    }

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn flush(&mut self, out: &mut Vec<Out>) {
        for (_, client, message) in std::mem::take(&mut self.queue) {
            self.client_request(client, message, out);
        }
    }

    fn client_request(&mut self, client: ClientId, mut message: Value, out: &mut Vec<Out>) {
        let Some(id) = message.get("id").cloned() else {
            return;
        };
        if message.get("method").and_then(Value::as_str) == Some("initialize") {
            self.initialize(client, id, message, out);
            return;
        }
        if let Some(state) = self.clients.get_mut(&client) {
            state.active = true;
        }
        if self.upstream != Upstream::Up {
            self.queue.push_back((Instant::now(), client, message));
            return;
        }
        let upstream_id = self.fresh_id();
        message["id"] = json!(upstream_id);
        let progress = message
            .get_mut("params")
            .and_then(|p| p.get_mut("_meta"))
            .and_then(|m| m.get_mut("progressToken"))
            .map(|token| std::mem::replace(token, json!(upstream_id)));
        self.by_client.insert((client, id.to_string()), upstream_id);
        self.pending.insert(
            upstream_id,
            Pending {
                client,
                id,
                progress,
            },
        );
        out.push(Out::Upstream(message));
    }

    fn initialize(&mut self, client: ClientId, id: Value, message: Value, out: &mut Vec<Out>) {
        let params = message.get("params").cloned().unwrap_or(Value::Null);
        let version = params
            .get("protocolVersion")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let Some(state) = self.clients.get_mut(&client) {
            state.capabilities = params.get("capabilities").cloned();
        }
        match &mut self.init {
            Init::Done { result, .. } => {
                out.push(Out::Client(
                    client,
                    answer(&id, for_version(result, version.as_deref())),
                ));
            }
            Init::Asked { waiters, .. } => waiters.push(Waiter {
                client,
                id,
                version,
            }),
            Init::NotYet if self.upstream != Upstream::Up => {
                self.queue.push_back((Instant::now(), client, message));
            }
            Init::NotYet => {
                let upstream_id = self.fresh_id();
                out.push(Out::Upstream(request(
                    upstream_id,
                    "initialize",
                    params.clone(),
                )));
                self.init = Init::Asked {
                    upstream_id,
                    params,
                    waiters: vec![Waiter {
                        client,
                        id,
                        version,
                    }],
                };
            }
        }
    }

    fn client_notification(&mut self, client: ClientId, mut message: Value, out: &mut Vec<Out>) {
        let method = message.get("method").and_then(Value::as_str).unwrap_or("");
        match method {
            // The server had one from the daemon; the client's would be a second.
            "notifications/initialized" => {
                if let Some(state) = self.clients.get_mut(&client) {
                    state.active = true;
                }
            }
            "notifications/cancelled" => {
                let Some(request_id) = message.get("params").and_then(|p| p.get("requestId"))
                else {
                    return;
                };
                let Some(upstream_id) = self.by_client.remove(&(client, request_id.to_string()))
                else {
                    return; // answered already, or never sent: nothing to cancel.
                };
                self.pending.remove(&upstream_id);
                message["params"]["requestId"] = json!(upstream_id);
                if self.upstream != Upstream::Down {
                    out.push(Out::Upstream(message));
                }
            }
            _ => {
                if self.upstream == Upstream::Up {
                    out.push(Out::Upstream(message));
                }
            }
        }
    }

    fn client_response(&mut self, client: ClientId, message: Value, out: &mut Vec<Out>) {
        let Some(id) = message.get("id") else { return };
        let key = id.to_string();
        match self.server_requests.get(&key) {
            Some(holder) if *holder == client => {
                self.server_requests.remove(&key);
                out.push(Out::Upstream(message));
            }
            // An answer to a request this client was never sent: never let it reach the server.
            _ => {
                tracing::debug!(client, id = %key, "dropped a response to no request of this client");
            }
        }
    }

    fn server_response(&mut self, mut message: Value, out: &mut Vec<Out>) {
        let Some(upstream_id) = message.get("id").and_then(Value::as_u64) else {
            return;
        };
        if self.upstream == Upstream::Reinitializing(upstream_id) {
            self.reinitialized(message, out);
            return;
        }
        if let Init::Asked {
            upstream_id: asked, ..
        } = &self.init
            && *asked == upstream_id
        {
            self.initialized(message, out);
            return;
        }
        // Unknown: answered already (cancelled, or its client left).
        let Some(pending) = self.pending.remove(&upstream_id) else {
            return;
        };
        self.by_client
            .remove(&(pending.client, pending.id.to_string()));
        message["id"] = pending.id;
        out.push(Out::Client(pending.client, message));
    }

    fn initialized(&mut self, message: Value, out: &mut Vec<Out>) {
        let Init::Asked {
            params, waiters, ..
        } = std::mem::replace(&mut self.init, Init::NotYet)
        else {
            return;
        };
        match message.get("result") {
            Some(result) => {
                for waiter in &waiters {
                    out.push(Out::Client(
                        waiter.client,
                        answer(&waiter.id, for_version(result, waiter.version.as_deref())),
                    ));
                }
                out.push(Out::Upstream(notification("notifications/initialized")));
                self.init = Init::Done {
                    params,
                    result: result.clone(),
                };
            }
            None => {
                // Refused: each waiter sees the server's own error; the next client tries again.
                for waiter in waiters {
                    let mut refusal = message.clone();
                    refusal["id"] = waiter.id;
                    out.push(Out::Client(waiter.client, refusal));
                }
            }
        }
    }

    fn reinitialized(&mut self, message: Value, out: &mut Vec<Out>) {
        let Some(result) = message.get("result") else {
            tracing::warn!("the restarted MCP server refused initialize");
            self.upstream = Upstream::Down;
            return;
        };
        if let Init::Done { result: kept, .. } = &mut self.init {
            *kept = result.clone();
        }
        out.push(Out::Upstream(notification("notifications/initialized")));
        self.upstream = Upstream::Up;
        // Tools may differ after a restart: every client re-reads what the server offers.
        let capabilities = result.get("capabilities").cloned().unwrap_or(Value::Null);
        for (list, method) in [
            ("tools", "notifications/tools/list_changed"),
            ("prompts", "notifications/prompts/list_changed"),
            ("resources", "notifications/resources/list_changed"),
        ] {
            if list == "tools" || capabilities.get(list).is_some() {
                self.broadcast(&notification(method), out);
            }
        }
        self.flush(out);
    }

    fn server_request(&mut self, message: Value, out: &mut Vec<Out>) {
        let id = message.get("id").cloned().unwrap_or(Value::Null);
        let method = message.get("method").and_then(Value::as_str).unwrap_or("");
        if method == "ping" {
            out.push(Out::Upstream(answer(&id, json!({}))));
            return;
        }
        // Clients with requests at the server, from the requests themselves.
        let busy: Vec<ClientId> = self
            .pending
            .values()
            .map(|p| p.client)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let target = match busy.as_slice() {
            [one] => *one,
            [] => {
                out.push(Out::Upstream(error(
                    &id,
                    NO_CLIENT_FOR_REQUEST,
                    &format!(
                        "nsh mcp daemon: no client has a request in flight, so nobody can take `{method}` (a shared server may ask a client only while that client's request runs)"
                    ),
                )));
                return;
            }
            many => {
                out.push(Out::Upstream(error(
                    &id,
                    NO_CLIENT_FOR_REQUEST,
                    &format!(
                        "nsh mcp daemon: {} clients have requests in flight, so `{method}` cannot be tied to one; retry when one caller is left",
                        many.len()
                    ),
                )));
                return;
            }
        };
        if let Some(capability) = capability_for(method) {
            let declared = self
                .clients
                .get(&target)
                .and_then(|c| c.capabilities.as_ref())
                .is_some_and(|caps| caps.get(capability).is_some());
            if !declared {
                out.push(Out::Upstream(error(
                    &id,
                    NO_CLIENT_FOR_REQUEST,
                    &format!(
                        "nsh mcp daemon: the client whose request is in flight did not declare `{capability}`"
                    ),
                )));
                return;
            }
        }
        self.server_requests.insert(id.to_string(), target);
        out.push(Out::Client(target, message));
    }

    fn server_notification(&mut self, mut message: Value, out: &mut Vec<Out>) {
        let method = message.get("method").and_then(Value::as_str).unwrap_or("");
        match method {
            "notifications/progress" => {
                let Some(token) = message
                    .get("params")
                    .and_then(|p| p.get("progressToken"))
                    .and_then(Value::as_u64)
                else {
                    return;
                };
                let Some(pending) = self.pending.get(&token) else {
                    return; // its request was answered or cancelled.
                };
                let Some(original) = pending.progress.clone() else {
                    return;
                };
                message["params"]["progressToken"] = original;
                out.push(Out::Client(pending.client, message));
            }
            "notifications/cancelled" => {
                // The server gave up one of its own requests: only its holder hears of it.
                let Some(key) = message
                    .get("params")
                    .and_then(|p| p.get("requestId"))
                    .map(Value::to_string)
                else {
                    return;
                };
                if let Some(client) = self.server_requests.remove(&key) {
                    out.push(Out::Client(client, message));
                }
            }
            _ => self.broadcast(&message, out),
        }
    }

    fn broadcast(&self, message: &Value, out: &mut Vec<Out>) {
        for (id, client) in &self.clients {
            if client.active {
                out.push(Out::Client(*id, message.clone()));
            }
        }
    }
}

/// The capability a client must have declared to be sent a server request of this method.
fn capability_for(method: &str) -> Option<&'static str> {
    match method {
        "sampling/createMessage" => Some("sampling"),
        "elicitation/create" => Some("elicitation"),
        "roots/list" => Some("roots"),
        _ => None,
    }
}

/// The cached `initialize` result as one client should see it: the version it asked for when
/// the server's is the same or newer (SDKs speak every older revision), else the server's.
fn for_version(result: &Value, requested: Option<&str>) -> Value {
    let mut result = result.clone();
    let server = result
        .get("protocolVersion")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let (Some(requested), Some(server)) = (requested, server)
        && is_revision(requested)
        && is_revision(&server)
        && requested < server.as_str()
    {
        result["protocolVersion"] = json!(requested);
    }
    result
}

/// MCP revisions are dates, `YYYY-MM-DD`, so they order as text.
fn is_revision(text: &str) -> bool {
    text.len() == 10
        && text.chars().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        })
}

fn request(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

fn notification(method: &str) -> Value {
    json!({"jsonrpc": "2.0", "method": method})
}

fn answer(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// A JSON-RPC error response.
pub fn error(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn cancelled(request_id: &Value, reason: &str) -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": request_id, "reason": reason}})
}

#[cfg(test)]
mod tests;

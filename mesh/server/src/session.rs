//! Who is behind a socket.

use std::sync::{Arc, OnceLock};

use nsh_mesh_transport::token::Claims;

use crate::dedup::{Dedup, SenderWindow};

/// Who is behind a socket, from its verified token, and the socket's tracing span (team,
/// agent, sid) that its events' logs are recorded in. Every event's handler gets a copy, so it
/// is one `Arc`: a copy is one count, not one per field and a span's.
#[derive(Debug, Clone)]
pub(crate) struct Session(Arc<SessionState>);

#[derive(Debug)]
pub(crate) struct SessionState {
    pub(crate) claims: Claims,
    pub(crate) span: tracing::Span,
    /// `team/agent`, made once: the per-agent rate limit is looked up by it on every event (and
    /// keeps a count of it).
    pub(crate) key: Arc<str>,
    /// Set once `on_connect` has reserved the connection (or given up on it). The event
    /// handlers exist from the handshake on, since socketioxide sends the connect packet
    /// before its connect handler runs, and a client may emit at once; they wait for this.
    connected: tokio::sync::SetOnce<()>,
    /// The agent's dedup window, taken on its first send (an idle connection keeps none).
    dedup: OnceLock<SenderWindow>,
}

impl std::ops::Deref for Session {
    type Target = SessionState;

    fn deref(&self) -> &SessionState {
        &self.0
    }
}

impl Session {
    pub(crate) fn new(claims: Claims, sid: &str) -> Self {
        let span = tracing::info_span!("socket", team = %claims.team, agent = %claims.sub, sid);
        Self(Arc::new(SessionState {
            key: agent_key(&claims.team, &claims.sub).into(),
            claims,
            span,
            connected: tokio::sync::SetOnce::new(),
            dedup: OnceLock::new(),
        }))
    }
}

impl SessionState {
    /// Returns once the connection is set up (at once, after the first few microseconds).
    pub(crate) async fn connected(&self) {
        self.connected.wait().await;
    }

    /// Lets the waiting events through; called on every way out of `on_connect`.
    pub(crate) fn set_connected(&self) {
        let _ = self.connected.set(());
    }

    pub(crate) fn team(&self) -> &str {
        &self.claims.team
    }

    pub(crate) fn agent(&self) -> &str {
        &self.claims.sub
    }

    /// This agent's window in `dedup`, shared with its other connections.
    pub(crate) fn dedup_window(&self, dedup: &Dedup) -> &SenderWindow {
        self.dedup
            .get_or_init(|| dedup.sender(self.team(), self.agent()))
    }
}

/// The key of an agent's per-agent limits: `team/agent` (neither name may contain `/`).
pub(crate) fn agent_key(team: &str, agent: &str) -> String {
    format!("{team}/{agent}")
}

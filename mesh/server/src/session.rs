//! Who is behind a socket.

use std::sync::Arc;

use nsh_mesh_transport::token::Claims;

/// Who is behind a socket, from its verified token, and the socket's tracing span (team,
/// agent, sid) that its events' logs are recorded in.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) claims: Arc<Claims>,
    pub(crate) span: tracing::Span,
    /// `team/agent`, made once: the per-agent rate limit is looked up by it on every event.
    pub(crate) key: Arc<str>,
    /// Set once `on_connect` has reserved the connection (or given up on it). The event
    /// handlers exist from the handshake on, since socketioxide sends the connect packet
    /// before its connect handler runs, and a client may emit at once; they wait for this.
    connected: Arc<tokio::sync::SetOnce<()>>,
}

impl Session {
    pub(crate) fn new(claims: Claims, sid: &str) -> Self {
        let span = tracing::info_span!("socket", team = %claims.team, agent = %claims.sub, sid);
        Self {
            key: agent_key(&claims.team, &claims.sub).into(),
            claims: Arc::new(claims),
            span,
            connected: Arc::new(tokio::sync::SetOnce::new()),
        }
    }

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
}

/// The key of an agent's per-agent limits: `team/agent` (neither name may contain `/`).
pub(crate) fn agent_key(team: &str, agent: &str) -> String {
    format!("{team}/{agent}")
}

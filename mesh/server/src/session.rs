//! Who is behind a socket.

use std::sync::Arc;

use nsh_mesh_transport::token::Claims;

/// Who is behind a socket, from its verified token, and the socket's tracing span (team,
/// agent, sid) that its events' logs are recorded in.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) claims: Arc<Claims>,
    pub(crate) span: tracing::Span,
}

impl Session {
    pub(crate) fn new(claims: Claims, sid: &str) -> Self {
        let span = tracing::info_span!("socket", team = %claims.team, agent = %claims.sub, sid);
        Self {
            claims: Arc::new(claims),
            span,
        }
    }

    pub(crate) fn team(&self) -> &str {
        &self.claims.team
    }

    pub(crate) fn agent(&self) -> &str {
        &self.claims.sub
    }
}

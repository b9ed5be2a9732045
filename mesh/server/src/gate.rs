//! The door before authentication: how many new Engine.IO sessions a client address, and all
//! clients together, may open. A session costs memory from its first request, before any token
//! is checked, and is closed if it does not connect to the namespace within the connect
//! timeout; bounding how many start per timeout bounds how many unauthenticated sessions can
//! exist at once.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::HttpLimits;

#[derive(Debug)]
pub(crate) struct SessionGate {
    per_peer: DefaultKeyedRateLimiter<IpAddr>,
    all: DefaultDirectRateLimiter,
    retry_after_secs: u64,
}

/// `count` per `window`, all of it available at once.
fn quota(count: u32, window: Duration) -> Quota {
    let count = NonZeroU32::new(count.max(1)).expect("at least one");
    Quota::with_period(window / count.get())
        .unwrap_or_else(|| Quota::per_second(count))
        .allow_burst(count)
}

impl SessionGate {
    pub(crate) fn new(limits: &HttpLimits) -> Self {
        Self {
            per_peer: RateLimiter::keyed(quota(
                limits.new_sessions_per_peer,
                limits.connect_timeout,
            )),
            all: RateLimiter::direct(quota(limits.new_sessions, limits.connect_timeout)),
            retry_after_secs: limits.connect_timeout.as_secs().max(1),
        }
    }

    /// Whether `peer` may open one more session now.
    fn admit(&self, peer: IpAddr) -> Result<(), &'static str> {
        self.per_peer
            .check_key(&peer)
            .map_err(|_| "too many new sessions from this address")?;
        self.all
            .check()
            .map_err(|_| "too many new sessions on this server")
    }

    /// Forgets addresses that have not opened a session for a while.
    pub(crate) fn prune(&self) {
        self.per_peer.retain_recent();
    }
}

/// A request that starts an Engine.IO session: a Socket.IO request carrying no `sid` yet.
fn starts_a_session(request: &Request) -> bool {
    request.uri().path().starts_with("/socket.io")
        && !request
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .any(|pair| pair.starts_with("sid="))
}

/// Middleware: answers 429 to a new session over the limits, before Engine.IO allocates it.
pub(crate) async fn admit_new_sessions(
    State(gate): State<Arc<SessionGate>>,
    request: Request,
    next: Next,
) -> Response {
    if starts_a_session(&request) {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        if let Some(peer) = peer
            && let Err(why) = gate.admit(peer)
        {
            tracing::debug!(%peer, why, "new session refused");
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, gate.retry_after_secs.to_string())],
                format!("{why}; retry later"),
            )
                .into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_without_a_sid_start_sessions() {
        let request = |uri: &str| {
            Request::builder()
                .uri(uri)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        assert!(starts_a_session(&request(
            "/socket.io/?EIO=4&transport=polling"
        )));
        assert!(starts_a_session(&request(
            "/socket.io/?EIO=4&transport=websocket"
        )));
        assert!(!starts_a_session(&request(
            "/socket.io/?EIO=4&transport=polling&sid=abc"
        )));
        assert!(!starts_a_session(&request("/healthz")));
    }

    #[test]
    fn each_address_has_its_own_budget_under_a_global_one() {
        let gate = SessionGate::new(&HttpLimits {
            new_sessions_per_peer: 3,
            new_sessions: 5,
            ..HttpLimits::default()
        });
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
            "127.0.0.1".parse().unwrap(),
            "127.0.0.2".parse().unwrap(),
            "127.0.0.3".parse().unwrap(),
        );
        assert!((0..3).all(|_| gate.admit(a).is_ok()));
        assert_eq!(
            gate.admit(a),
            Err("too many new sessions from this address")
        );
        assert!((0..2).all(|_| gate.admit(b).is_ok()));
        assert_eq!(gate.admit(c), Err("too many new sessions on this server"));
    }
}

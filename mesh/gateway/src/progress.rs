//! Progress from an upstream back to the one caller that asked. rmcp gives every upstream
//! request a progress token of its own, so two callers that both chose token `1` never see
//! each other's progress: the route maps the upstream's token back to the caller and the
//! token the caller chose.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::RoleServer;
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::Peer;

/// An upstream and the progress token rmcp gave the request sent to it.
type UpstreamToken = (String, ProgressToken);
/// The caller that asked, the token it chose, and how many forwards are under way.
type CallerToken = (Peer<RoleServer>, ProgressToken, Arc<AtomicUsize>);
type Table = HashMap<UpstreamToken, CallerToken>;

#[derive(Debug, Default)]
pub struct ProgressRoutes {
    routes: Mutex<Table>,
}

/// Removes its route when the call ends, however it ends.
#[derive(Debug)]
pub struct Route<'a> {
    routes: &'a ProgressRoutes,
    key: UpstreamToken,
    in_flight: Arc<AtomicUsize>,
}

impl Route<'_> {
    /// Lets progress that arrived before the response reach the caller before it: rmcp hands
    /// each notification to a task of its own, so the last one can still be on its way when
    /// the response is. Waits briefly, never long (progress after a response is dropped).
    pub async fn settle(&self) {
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(50);
        while self.in_flight.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

impl Drop for Route<'_> {
    fn drop(&mut self) {
        self.routes.lock().remove(&self.key);
    }
}

impl ProgressRoutes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Routes progress of `upstream`'s `token` to `caller` as `caller_token`.
    pub fn open(
        &self,
        upstream: &str,
        token: ProgressToken,
        caller: Peer<RoleServer>,
        caller_token: ProgressToken,
    ) -> Route<'_> {
        let key = (upstream.to_owned(), token);
        let in_flight = Arc::new(AtomicUsize::new(0));
        self.lock()
            .insert(key.clone(), (caller, caller_token, in_flight.clone()));
        Route {
            routes: self,
            key,
            in_flight,
        }
    }

    /// Sends `params` to the caller its token belongs to; progress nobody waits for is dropped.
    pub async fn forward(&self, upstream: &str, mut params: ProgressNotificationParam) {
        let route = self
            .lock()
            .get(&(upstream.to_owned(), params.progress_token.clone()))
            .cloned();
        if let Some((caller, caller_token, in_flight)) = route {
            in_flight.fetch_add(1, Ordering::AcqRel);
            params.progress_token = caller_token;
            if let Err(err) = caller.notify_progress(params).await {
                tracing::debug!(%err, "progress not delivered: the caller left");
            }
            in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

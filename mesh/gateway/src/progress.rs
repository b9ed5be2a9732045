//! Progress from an upstream back to the one caller that asked. rmcp gives every upstream
//! request a progress token of its own, so two callers that both chose token `1` never see
//! each other's progress: the route maps the upstream's token back to the caller and the
//! token the caller chose.

use std::collections::HashMap;
use std::sync::Mutex;

use rmcp::RoleServer;
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::Peer;

/// An upstream and the progress token rmcp gave the request sent to it.
type UpstreamToken = (String, ProgressToken);
/// The caller that asked and the token it chose.
type CallerToken = (Peer<RoleServer>, ProgressToken);
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
        self.lock().insert(key.clone(), (caller, caller_token));
        Route { routes: self, key }
    }

    /// Sends `params` to the caller its token belongs to; progress nobody waits for is dropped.
    pub async fn forward(&self, upstream: &str, mut params: ProgressNotificationParam) {
        let route = self
            .lock()
            .get(&(upstream.to_owned(), params.progress_token.clone()))
            .cloned();
        if let Some((caller, caller_token)) = route {
            params.progress_token = caller_token;
            if let Err(err) = caller.notify_progress(params).await {
                tracing::debug!(%err, "progress not delivered: the caller left");
            }
        }
    }
}

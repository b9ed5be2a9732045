//! Delivery of stored direct messages (persistence on): one deliverer task per online
//! recipient hands it its inbox stream in order, waits for its client's ack of each message,
//! and moves the recipient's cursor. Live sends go through the same task, so a reconnecting
//! agent never sees a new message before an older stored one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use tokio::sync::{Notify, watch};

use crate::Mesh;
use crate::store::{Store, entry_order};

/// Messages read from the stream per round.
const BATCH: usize = 64;
/// How long a deliverer waits before trying again after its recipient did not ack.
const RETRY: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Deliverer {
    wake: Notify,
    /// The newest entry the recipient acked, as `(ms, seq)`.
    acked: watch::Sender<(u64, u64)>,
}

/// The running deliverers, by (team, agent).
#[derive(Debug, Default)]
pub(crate) struct Deliverers {
    running: Mutex<HashMap<(String, String), Arc<Deliverer>>>,
}

impl Deliverers {
    /// Wakes the recipient's deliverer, starting it if needed.
    pub(crate) fn wake<A: Adapter>(
        &self,
        io: &SocketIo<A>,
        mesh: &Arc<Mesh>,
        store: &Store,
        team: &str,
        agent: &str,
    ) -> watch::Receiver<(u64, u64)> {
        let key = (team.to_owned(), agent.to_owned());
        let mut running = self.running.lock().expect("deliverers lock");
        let deliverer = running.entry(key.clone()).or_insert_with(|| {
            let deliverer = Arc::new(Deliverer {
                wake: Notify::new(),
                acked: watch::channel((0, 0)).0,
            });
            tokio::spawn(run(
                io.clone(),
                mesh.clone(),
                store.clone(),
                key,
                deliverer.clone(),
            ));
            deliverer
        });
        deliverer.wake.notify_one();
        deliverer.acked.subscribe()
    }

    /// Waits until the recipient acked `entry`, up to `timeout`.
    pub(crate) async fn acked(
        mut acked: watch::Receiver<(u64, u64)>,
        entry: &str,
        timeout: Duration,
    ) -> bool {
        let wanted = entry_order(entry);
        tokio::time::timeout(timeout, acked.wait_for(|done| *done >= wanted))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

async fn run<A: Adapter>(
    io: SocketIo<A>,
    mesh: Arc<Mesh>,
    store: Store,
    key: (String, String),
    deliverer: Arc<Deliverer>,
) {
    let (team, agent) = (&key.0, &key.1);
    loop {
        // Stop once the agent is gone; the check and the removal hold the map's lock, so a
        // reconnect either sees this task or starts a new one.
        {
            let mut running = mesh.deliverers.running.lock().expect("deliverers lock");
            if !mesh.registry.has_connection_on(team, agent, &mesh.node) {
                running.remove(&key);
                return;
            }
        }
        let pending = match store.pending(team, agent, BATCH).await {
            Ok(pending) => pending,
            Err(err) => {
                tracing::debug!(%team, %agent, %err, "cannot read the inbox stream; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        if pending.is_empty() {
            // New mail wakes us; the timeout notices a disconnect even when none comes.
            let _ = tokio::time::timeout(Duration::from_secs(5), deliverer.wake.notified()).await;
            continue;
        }
        for stored in pending {
            // This replica's connections only: each replica holding one runs its own deliverer.
            let acked = crate::emit::deliver_here(
                &io,
                team,
                agent,
                &stored.envelope,
                mesh.limits.ack_timeout,
            )
            .await;
            if !acked {
                tokio::time::sleep(RETRY).await;
                break;
            }
            if let Err(err) = store.mark_delivered(team, agent, &stored.entry).await {
                // Acked but not recorded: it may be delivered again; the client drops repeats.
                tracing::warn!(%team, %agent, %err, "could not record a delivery");
            }
            deliverer.acked.send_replace(entry_order(&stored.entry));
            if let Some(cluster) = &mesh.cluster {
                cluster.delivered(team, agent, &stored.entry);
            }
        }
    }
}

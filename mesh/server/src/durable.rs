//! Delivery of stored direct messages (persistence on): one deliverer task per online
//! recipient hands it its inbox stream in order, a batch at a time (sent together, acks taken
//! in order), and moves the recipient's cursor past what was acked. Live sends go through the
//! same task, so a reconnecting agent never sees a new message before an older stored one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use tokio::sync::{Notify, watch};

use crate::Mesh;
use crate::maps::FastMap;
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
    running: Mutex<FastMap<(String, String), Arc<Deliverer>>>,
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
    // The newest entry acked (or expired) and not yet recorded as the cursor: recorded with
    // the next read, in the same round trip.
    let mut unrecorded: Option<String> = None;
    // What this task knows of the recipient's cursor in Redis.
    let mut cursor: Option<String> = None;
    loop {
        if !mesh.registry.has_connection_on(team, agent, &mesh.node) {
            // Going: record what was acked first, so a reconnect's deliverer starts after it.
            if let Some(entry) = unrecorded.take()
                && let Err(err) = store.mark_delivered(team, agent, &entry).await
            {
                // Acked but not recorded: it may be delivered again; the client drops repeats.
                tracing::warn!(%team, %agent, %err, "could not record a delivery");
            }
            // Stop once the agent is gone; the check and the removal hold the map's lock, so
            // a reconnect either sees this task or starts a new one.
            let mut running = mesh.deliverers.running.lock().expect("deliverers lock");
            if !mesh.registry.has_connection_on(team, agent, &mesh.node) {
                running.remove(&key);
                return;
            }
        }
        let inbox = match store
            .advance_and_read(team, agent, &mut cursor, unrecorded.as_deref(), BATCH)
            .await
        {
            Ok(inbox) => {
                unrecorded = None;
                inbox
            }
            Err(err) => {
                tracing::debug!(%team, %agent, %err, "cannot read the inbox stream; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let pending = inbox.messages;
        if pending.is_empty() {
            if let Some(expired) = inbox.newest_expired {
                // Only expired mail read: step past it and read on.
                unrecorded = Some(expired);
                continue;
            }
            if inbox.skipped_acked {
                continue;
            }
            // New mail wakes us; the timeout notices a disconnect even when none comes.
            let _ = tokio::time::timeout(Duration::from_secs(5), deliverer.wake.notified()).await;
            continue;
        }
        // The whole batch goes out in order (each connection keeps it), then the acks are
        // taken in order: they overlap instead of costing a round trip each, and the cursor
        // is moved once per batch. A gap (no ack) ends the batch; what follows it is sent
        // again later, and the client drops what it already has.
        let timeout = mesh.limits.ack_timeout;
        let mut sent = Vec::with_capacity(pending.len());
        for stored in &pending {
            sent.push(crate::emit::emit_here(
                &io,
                &mesh,
                team,
                agent,
                &stored.envelope,
                timeout,
            ));
        }
        let mut gap = false;
        for (stored, acks) in pending.iter().zip(sent) {
            if !crate::emit::acked(acks).await {
                gap = true;
                break;
            }
            // Senders waiting on this entry learn at once; the cursor follows below.
            deliverer.acked.send_replace(entry_order(&stored.entry));
            unrecorded = Some(stored.entry.clone());
        }
        // Senders on other replicas learn now too; the cursor is written with the next read.
        if let (Some(entry), Some(cluster)) = (&unrecorded, &mesh.cluster) {
            cluster.delivered(team, agent, entry);
        }
        if gap {
            tokio::time::sleep(RETRY).await;
        }
    }
}

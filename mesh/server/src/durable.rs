//! Delivery of stored direct messages (persistence on): one deliverer task per online
//! recipient hands it its inbox stream in order, a batch at a time, reading on while the acks
//! of what it sent are out (taken in order), and moves the recipient's cursor past what was
//! acked. Live sends go through the same task, so a reconnecting agent never sees a new
//! message before an older stored one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesOrdered;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use tokio::sync::{Notify, watch};

use crate::Mesh;
use crate::maps::FastMap;
use crate::store::{Store, entry_order};

/// Messages read from the stream per round.
const BATCH: usize = 64;
/// Most messages handed over whose acks are still out: beyond this, reading waits for acks.
const IN_FLIGHT: usize = 4 * BATCH;
/// How often an idle deliverer looks whether its recipient is still connected here.
const IDLE_CHECK: Duration = Duration::from_secs(5);
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

/// A message handed to the recipient, or an expired entry stepped over, in the order read.
struct HandedOver {
    entry: String,
    /// Whether the recipient acked it (an expired entry needs no ack).
    acked: bool,
    expired: bool,
}

async fn handed_over(entry: String, acks: Option<crate::emit::PendingAcks>) -> HandedOver {
    match acks {
        Some(acks) => HandedOver {
            acked: crate::emit::acked(acks).await,
            entry,
            expired: false,
        },
        None => HandedOver {
            entry,
            acked: true,
            expired: true,
        },
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
    let timeout = mesh.limits.ack_timeout;
    // The newest entry acked (or expired) and not yet recorded as the cursor: recorded with
    // the next read, in the same round trip.
    let mut unrecorded: Option<String> = None;
    // What this task knows of the recipient's cursor in Redis.
    let mut cursor: Option<String> = None;
    // The newest entry handed over whose ack is still out: reads go on after it.
    let mut sent: Option<String> = None;
    // What was handed over, in order: the cursor moves only over a prefix that was acked.
    let mut out = FuturesOrdered::new();
    // Whether a read may find something: at the start, after a wake-up, after a full batch.
    let mut read = true;
    loop {
        if out.is_empty() && !mesh.registry.has_connection_on(team, agent, &mesh.node) {
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
        if read && out.len() < IN_FLIGHT {
            // Read on while earlier messages' acks are out, instead of after them: a message
            // that arrives meanwhile is not held for the recipient's round trip. The batch
            // goes out in order behind them on each connection.
            let inbox = match store
                .advance_and_read(
                    team,
                    agent,
                    &mut cursor,
                    unrecorded.as_deref(),
                    sent.as_deref(),
                    BATCH,
                )
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
            let newest_message = inbox
                .messages
                .last()
                .map(|stored| entry_order(&stored.entry));
            // A full batch may have more behind it (expired entries count towards the batch but
            // are not in `messages`); otherwise new mail wakes this task. Entries acked through
            // another replica moved the cursor: read on from there.
            read = inbox.messages.len() >= BATCH
                || inbox.newest_expired.is_some()
                || inbox.skipped_acked;
            for stored in inbox.messages {
                let acks =
                    crate::emit::emit_here(&io, &mesh, team, agent, &stored.envelope, timeout);
                sent = Some(stored.entry.clone());
                out.push_back(handed_over(stored.entry, Some(acks)));
            }
            // Expired mail after the last message: stepped over once what precedes it is acked.
            if let Some(expired) = inbox.newest_expired
                && newest_message.is_none_or(|newest| entry_order(&expired) > newest)
            {
                sent = Some(expired.clone());
                out.push_back(handed_over(expired, None));
            }
            continue;
        }
        if out.is_empty() {
            // Nothing out, nothing to read: wait for new mail, and look again every 5 s
            // whether the agent is still here.
            let _ = tokio::time::timeout(IDLE_CHECK, deliverer.wake.notified()).await;
            read = true;
            continue;
        }
        tokio::select! {
            biased;
            Some(first) = out.next() => {
                // This ack and any others already in, then one report for all of them.
                let mut next = Some(first);
                let mut delivered = None;
                let mut gap = false;
                while let Some(done) = next.take() {
                    if !done.acked {
                        gap = true;
                        break;
                    }
                    if !done.expired {
                        // Senders waiting on this entry learn at once; the cursor follows.
                        deliverer.acked.send_replace(entry_order(&done.entry));
                        delivered = Some(done.entry.clone());
                    }
                    unrecorded = Some(done.entry);
                    next = out.next().now_or_never().flatten();
                }
                // Senders on other replicas learn now too; the cursor is written with the
                // next read.
                if let (Some(entry), Some(cluster)) = (&delivered, &mesh.cluster) {
                    cluster.delivered(team, agent, entry);
                }
                if gap {
                    // No ack: what follows it was sent too and is sent again from the gap
                    // later; the client drops what it already has.
                    out = FuturesOrdered::new();
                    sent = None;
                    tokio::time::sleep(RETRY).await;
                    read = true;
                } else if out.is_empty() {
                    // Everything acked: record it (and read on) at once.
                    read = true;
                }
            }
            () = deliverer.wake.notified(), if out.len() < IN_FLIGHT => read = true,
        }
    }
}

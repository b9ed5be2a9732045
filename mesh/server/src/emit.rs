//! Emitting to sockets: to every replica's (falling back to this replica's own when the
//! replicas' channel is down), and to this replica's connections of one agent with an ack.

use crate::args::AnyAck;
use futures_util::StreamExt as _;
use nsh_mesh_transport::wire::{Envelope, event};
use smallvec::SmallVec;
use socketioxide::adapter::Adapter;
use socketioxide::operators::BroadcastOperators;
use socketioxide::socket::Sid;
use socketioxide::{BroadcastError, EmitWithAckError, SocketIo};

use crate::Mesh;

/// Emits to the sockets `select` picks, on every replica. If the replicas' channel (Redis)
/// fails, this replica's own sockets still get it: local traffic goes on through an outage.
pub(crate) async fn broadcast<A: Adapter, T: serde::Serialize + ?Sized>(
    io: &SocketIo<A>,
    select: impl Fn(&SocketIo<A>) -> BroadcastOperators<A>,
    event: &str,
    data: &T,
) {
    match select(io).emit(event, data).await {
        Ok(()) => {}
        // The adapter fails before emitting locally, so nothing is sent twice.
        Err(BroadcastError::Adapter(err)) => {
            tracing::debug!(%err, "cross-replica broadcast failed; this replica's sockets only");
            let _ = select(io).local().emit(event, data).await;
        }
        Err(err) => tracing::debug!(%err, "broadcast failed for some sockets"),
    }
}

/// [`broadcast`] with acks: the acks of every replica's sockets, or (`true`: other replicas
/// unreachable) of this replica's alone. An ack's content is not looked at (that it came is
/// the delivery), so it is skipped rather than built into a `Value`; an ack without arguments
/// counts too.
pub(crate) async fn broadcast_with_ack<A: Adapter, T: serde::Serialize + ?Sized>(
    io: &SocketIo<A>,
    select: impl Fn(&SocketIo<A>) -> BroadcastOperators<A>,
    timeout: std::time::Duration,
    event: &str,
    data: &T,
) -> Result<(socketioxide::ack::AckStream<AnyAck, A>, bool), EmitWithAckError> {
    match select(io).timeout(timeout).emit_with_ack(event, data).await {
        Ok(stream) => Ok((stream, false)),
        Err(EmitWithAckError::Adapter(err)) => {
            tracing::debug!(%err, "cross-replica emit failed; this replica's sockets only");
            let stream = select(io)
                .local()
                .timeout(timeout)
                .emit_with_ack(event, data)
                .await?;
            Ok((stream, true))
        }
        Err(err) => Err(err),
    }
}

/// Emits `envelope` to this replica's connections of `agent`; whether one acked in `timeout`.
pub(crate) async fn deliver_here<A: Adapter>(
    io: &SocketIo<A>,
    mesh: &Mesh,
    team: &str,
    agent: &str,
    envelope: &Envelope,
    timeout: std::time::Duration,
) -> bool {
    acked(emit_here(io, mesh, team, agent, envelope, timeout)).await
}

/// The acks of one emit to this replica's connections of an agent, one per connection it
/// reached (none: nothing to wait for). An agent usually has one connection: no allocation.
pub(crate) type PendingAcks = SmallVec<[socketioxide::ack::AckStream<AnyAck>; 1]>;

/// The first half of [`deliver_here`]: emits, and returns what to wait on. Emitting several
/// messages before waiting on any keeps their order on each connection while their acks
/// overlap.
///
/// Each connection the directory knows here is emitted to itself, not through the agent's room:
/// one direct message to one connection skips the adapter's room lookup and its many-socket ack
/// stream, together about a tenth of the server's CPU per relayed message in a profile.
pub(crate) fn emit_here<A: Adapter>(
    io: &SocketIo<A>,
    mesh: &Mesh,
    team: &str,
    agent: &str,
    envelope: &Envelope,
    timeout: std::time::Duration,
) -> PendingAcks {
    let mut sids: SmallVec<[Sid; 2]> = SmallVec::new();
    mesh.registry.sockets_on(team, agent, &mesh.node, |sid| {
        sids.extend(sid.parse().ok());
    });
    if sids.is_empty() {
        return PendingAcks::new();
    }
    // Written once, for every connection, and copied as it is (`encoded`).
    let json = envelope.to_json();
    sids.into_iter()
        .filter_map(|sid| io.get_socket(sid))
        .filter_map(|socket| {
            socket
                .timeout(timeout)
                .emit_with_ack::<_, AnyAck>(event::MESSAGE, &json)
                .inspect_err(|err| tracing::debug!(sid = %socket.id, %err, "could not emit"))
                .ok()
        })
        .collect()
}

/// The second half of [`deliver_here`]: whether one connection acked.
pub(crate) async fn acked(mut acks: PendingAcks) -> bool {
    match acks.len() {
        0 => false,
        1 => match acks.pop() {
            Some(ack) => ack.await.is_ok(),
            None => false,
        },
        _ => {
            let mut acks: futures_util::stream::FuturesUnordered<_> = acks.into_iter().collect();
            while let Some(result) = acks.next().await {
                if result.is_ok() {
                    return true;
                }
            }
            false
        }
    }
}

//! Emitting to sockets: to every replica's (falling back to this replica's own when the
//! replicas' channel is down), and to this replica's connections of one agent with an ack.

use crate::args::AnyAck;
use futures_util::StreamExt as _;
use nsh_mesh_transport::wire::{Envelope, event};
use socketioxide::adapter::Adapter;
use socketioxide::operators::BroadcastOperators;
use socketioxide::{BroadcastError, EmitWithAckError, SocketIo};

use crate::rooms::agent_room;

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
    team: &str,
    agent: &str,
    envelope: &Envelope,
    timeout: std::time::Duration,
) -> bool {
    acked(emit_here(io, team, agent, envelope, timeout).await).await
}

/// The acks of one emit to this replica's connections of an agent (`None`: nothing to wait
/// for, the emit failed).
pub(crate) type PendingAcks<A> = Option<socketioxide::ack::AckStream<AnyAck, A>>;

/// The first half of [`deliver_here`]: emits, and returns what to wait on. Emitting several
/// messages before waiting on any keeps their order on each connection while their acks
/// overlap.
pub(crate) async fn emit_here<A: Adapter>(
    io: &SocketIo<A>,
    team: &str,
    agent: &str,
    envelope: &Envelope,
    timeout: std::time::Duration,
) -> PendingAcks<A> {
    io.local()
        .to(agent_room(team, agent))
        .timeout(timeout)
        .emit_with_ack::<_, AnyAck>(event::MESSAGE, envelope)
        .await
        .ok()
}

/// The second half of [`deliver_here`]: whether one connection acked.
pub(crate) async fn acked<A: Adapter>(acks: PendingAcks<A>) -> bool {
    match acks {
        Some(stream) => {
            stream
                .filter(|(_, r)| futures_util::future::ready(r.is_ok()))
                .count()
                .await
                > 0
        }
        None => false,
    }
}

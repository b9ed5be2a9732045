//! The nsh-mesh wire contract, shared by the mesh server, the mesh-client and the operator.
//!
//! - [`wire`]: the events agents exchange with the mesh and their acknowledgements
//!   (documented for other implementations in `docs/mesh-protocol.md`);
//! - [`encoded`]: a relayed message's envelope and ack written as JSON directly, once;
//! - [`token`]: team-scoped HS256 JWTs, minted by the operator and `nsh mesh token`, verified
//!   by the server;
//! - [`keys`]: the folder of team keys that verifiers (the mesh, the MCP gateway) re-read;
//! - [`socketio`]: the Socket.io v5 / Engine.IO v4 packet codec;
//! - [`client`]: a Socket.io client over WebSocket that can answer server acks;
//! - [`display`]: untrusted text made safe for logs, errors and an agent's context.
#![forbid(unsafe_code)]

pub mod client;
pub mod display;
pub mod encoded;
pub mod keys;
pub mod socketio;
pub mod token;
pub mod wire;

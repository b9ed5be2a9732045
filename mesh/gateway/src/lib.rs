//! The MCP gateway (`nsh gateway run`): one MCP endpoint in front of many MCP servers that
//! knows who is calling (team JWTs), what they may call (glob policy per team and agent, tool
//! pinning), and what they did (a JSON audit line per request), with per-agent rate limits and
//! per-upstream concurrency bounds.
//!
//! - [`upstream`]: one supervised connection per MCP server (stdio child or streamable HTTP);
//! - [`catalog`]: the merged, prefixed catalog, rebuilt when an upstream changes;
//! - [`front`]: the MCP face every caller talks to (rmcp `ServerHandler`);
//! - [`auth`], [`audit`], [`pins`], [`progress`], [`metrics`]: what the front relies on;
//! - [`serve`]: the HTTP and stdio fronts, config reload and readiness.
#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod catalog;
pub mod front;
pub mod gateway;
pub mod metrics;
pub mod pins;
pub mod progress;
pub mod serve;
pub mod upstream;

pub use serve::{GatewayError, run_http, run_shared_stdio, run_stdio};

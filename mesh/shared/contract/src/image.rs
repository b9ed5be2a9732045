//! Container images the operator puts into pods when nothing else names one. The Helm chart
//! passes its values' images to the operator explicitly; these defaults serve `nsh operator
//! run` outside the chart, and are the tags `scripts/images.sh` builds.

/// The nsh image (mesh server, gateway, MCP daemon, mesh-client sidecar, operator) of this
/// release.
pub fn nsh() -> String {
    format!("ghcr.io/nsh-dev/nsh:{}", env!("CARGO_PKG_VERSION"))
}

/// The agent image of this release (`agent-image/`).
pub fn agent() -> String {
    format!("ghcr.io/nsh-dev/nsh-agent:{}", env!("CARGO_PKG_VERSION"))
}

/// Redis for a MeshServer with `redis.managed`.
pub const REDIS: &str = "docker.io/library/redis:7.4-alpine";

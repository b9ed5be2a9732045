//! `McpGateway`: auth, tool policy, audit and rate limits in front of MCP servers.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use nsh_gateway_config::GatewayPolicy;

use crate::common::CommonStatus;

/// A gateway: Deployment, Service and the ConfigMap of its configuration.
#[derive(CustomResource, JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "nsh.dev",
    version = "v1alpha1",
    kind = "McpGateway",
    doc = "An MCP gateway: auth, tool policy, audit and rate limits in front of MCP servers.",
    namespaced,
    status = "McpGatewayStatus",
    shortname = "mcpgw",
    category = "nsh",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Upstreams", type_ = "integer", json_path = ".status.upstreams"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct McpGatewaySpec {
    /// Number of gateway pods. With more than one, callers on the 2025-11-25 revision need
    /// the same pod for a whole session: the Service pins each client IP to one pod.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: i32,
    /// Container image; the operator's default nsh image when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Teams whose agents may call the gateway; `*` allows every team in the namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub teams: Vec<String>,
    /// Upstreams, tool policy, rate limits, audit and tool pins: the same fields as the
    /// gateway's own config file (docs/gateway.md).
    #[serde(flatten)]
    pub policy: GatewayPolicy,
}

fn one() -> i32 {
    1
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct McpGatewayStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Upstreams that answered, as a gateway pod reports them on `/status` (unset while no
    /// pod answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstreams: Option<i32>,
    /// Pinned tools a gateway pod hides because their upstream changed them, with the new
    /// hash: copy it to `spec.pinnedTools` to approve the change.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub changed_tools: std::collections::BTreeMap<String, String>,
    /// In-cluster URL of the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

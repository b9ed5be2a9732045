//! `McpGateway`: auth, tool policy, audit and rate limits in front of MCP servers.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{CommandSpec, CommonStatus, RateLimitSpec};

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
    /// Number of gateway pods.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: i32,
    /// Container image; the operator's default nsh image when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// MCP servers behind the gateway.
    #[schemars(length(min = 1, max = 64))]
    pub upstreams: Vec<UpstreamSpec>,
    /// Which tools may be called.
    #[serde(default)]
    pub tool_policy: ToolPolicy,
    /// Teams whose agents may call the gateway; `*` allows every team in the namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub teams: Vec<String>,
    /// Per-agent rate limit.
    #[serde(default)]
    pub rate_limit: RateLimitSpec,
    /// Audit log of tool calls.
    #[serde(default)]
    pub audit: AuditSpec,
}

fn one() -> i32 {
    1
}

/// One upstream: exactly one of `url` or `command` (run by the MCP daemon).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.command)").message("each upstream needs exactly one of url or command"))]
pub struct UpstreamSpec {
    /// Name; tools are exposed as `<name>__<tool>`.
    #[schemars(regex(pattern = crate::common::NAME_PATTERN))]
    pub name: String,
    /// A remote MCP server (streamable HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://"))]
    pub url: Option<String>,
    /// A stdio MCP server the daemon runs once for every caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandSpec>,
}

/// Tool allow/deny lists of glob patterns (`github__*`); deny wins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ToolPolicy {
    /// Tools that may be called; empty allows all not denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Tools that may never be called.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditSpec {
    /// Log every tool call (caller, tool, outcome, duration).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Also log call arguments (may contain secrets).
    #[serde(default)]
    pub log_arguments: bool,
}

impl Default for AuditSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            log_arguments: false,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct McpGatewayStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Upstreams that answered the MCP handshake, as the gateway reports them (unset until the
    /// gateway process does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstreams: Option<i32>,
    /// In-cluster URL of the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

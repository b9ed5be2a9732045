//! `Agent`: one coding agent in a team, with its mesh-client sidecar.

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{CommandSpec, CommonStatus, ObjectRef};

/// An agent: one pod (stable identity) running the agent container and the `nsh mesh client`
/// sidecar, a Secret with its mesh token, and a ConfigMap with its `agent launch` config.
#[derive(CustomResource, JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "nsh.dev",
    version = "v1alpha1",
    kind = "Agent",
    doc = "A coding agent in a team, with its mesh-client sidecar and mesh token.",
    namespaced,
    status = "AgentStatus",
    shortname = "ag",
    category = "nsh",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Team", type_ = "string", json_path = ".spec.teamRef.name"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Pod",
        type_ = "string",
        json_path = ".status.pod",
        priority = 1
    ),
    printcolumn(
        name = "Token-Expiry",
        type_ = "date",
        json_path = ".status.tokenExpiry",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AgentSpec {
    /// The Team this agent belongs to.
    pub team_ref: ObjectRef,
    /// `agent launch` profile: `team-member`, `solo-developer`, or one defined in the config.
    #[serde(default = "default_profile")]
    pub profile: String,
    /// Agent container image; the default agent image when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// MCP servers the agent gets, besides the mesh client.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub mcp_servers: Vec<McpServerSpec>,
    /// Groups the agent's token allows (must be among the team's groups); `*` for all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub groups: Vec<String>,
    /// Extra environment variables for the agent container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Resources of the agent container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

fn default_profile() -> String {
    "team-member".to_owned()
}

/// One MCP server: exactly one of `preset`, `command`, `url` or `gatewayRef`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.preset) ? 1 : 0) + (has(self.command) ? 1 : 0) + (has(self.url) ? 1 : 0) + (has(self.gatewayRef) ? 1 : 0) == 1").message("each mcpServers entry needs exactly one of preset, command, url or gatewayRef"))]
pub struct McpServerSpec {
    /// Name the agent sees.
    #[schemars(regex(pattern = crate::common::NAME_PATTERN))]
    pub name: String,
    /// A server from the built-in catalogue (`filesystem`, `github`, `git`, `fetch`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// A stdio server run in the agent's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandSpec>,
    /// A remote server (streamable HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://"))]
    pub url: Option<String>,
    /// An McpGateway in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_ref: Option<ObjectRef>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
    /// The agent's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// When the current mesh token expires (it is rotated before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expiry: Option<Time>,
    /// Where the agent's pod is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<AgentPhase>,
}

/// The two phases the operator reports; `Ready`'s reason and message say more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AgentPhase {
    /// The pod is not ready yet, or cannot be made yet (its mesh or a gateway is missing, the
    /// spec is invalid).
    Pending,
    /// The pod is ready: the agent and its mesh-client sidecar pass their probes.
    Running,
}

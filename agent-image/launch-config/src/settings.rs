//! The schema of `.agent.yaml` (and of `~/.config/nsh/agent.yaml`, and of each profile).
//!
//! Every field is optional: a file says only what it changes. The JSON Schema editors use is
//! generated from these types (`nsh agent schema`, committed as `docs/agent-config.schema.json`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One layer of agent settings: a config file, a profile, or the command line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "nsh agent settings (.agent.yaml)")]
pub struct Settings {
    /// Profile to start from: `solo-developer`, `team-member`, or one under `profiles`. In a
    /// profile's own definition, the profile it extends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Profiles this file defines, by name (only in a config file, not inside a profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profiles: Option<BTreeMap<String, Settings>>,
    /// The agent program to run (default `claude`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Model name or alias passed as `--model` (e.g. `opus`, `sonnet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Claude Code permission mode, passed as `--permission-mode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<PermissionMode>,
    /// Text appended to the system prompt (`--append-system-prompt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append_system_prompt: Option<String>,
    /// Extra arguments for the agent program; every layer's arguments are kept, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Environment variables for the agent program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// How the agent joins an nsh mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<MeshSettings>,
    /// MCP servers the agent gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpSettings>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PermissionMode {
    Default,
    AcceptEdits,
    Plan,
    BypassPermissions,
    DontAsk,
}

impl PermissionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::AcceptEdits => "acceptEdits",
            Self::Plan => "plan",
            Self::BypassPermissions => "bypassPermissions",
            Self::DontAsk => "dontAsk",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshSettings {
    /// The mesh server, e.g. `ws://127.0.0.1:3456` or `ws://mesh.team.svc:3456`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// File with this agent's mesh JWT (`nsh mesh token`, or the operator's Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// Folder of the inbox files (default `~/.claude/mesh`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbox_dir: Option<String>,
    /// Add the Claude Code hooks that inject unread mesh messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<bool>,
    /// URL of a running mesh-client (`nsh mesh client --listen`, the sidecar in an agent
    /// pod): the `mesh` preset connects to it instead of starting its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_url: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct McpSettings {
    /// Named servers from the built-in catalogue (`nsh agent presets` lists them); every
    /// layer's presets are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presets: Option<Vec<String>>,
    /// URL of an MCP gateway (an McpGateway's Service), for the `gateway` preset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Run shareable presets (filesystem, git, fetch, memory) through `nsh mcp run-once`: one
    /// process serves every agent on this machine that runs the same server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<bool>,
    /// MCP servers by name; a name that is also a preset changes that preset's fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub servers: Option<BTreeMap<String, McpServer>>,
}

/// One MCP server: a command (stdio) or a URL (streamable HTTP or SSE).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct McpServer {
    /// `stdio` (with `command`), `http` or `sse` (with `url`); inferred when omitted.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// A command whose stdout is a JSON object of headers, run each time the client connects
    /// (Claude Code's `headersHelper`): how an agent pod sends its current, rotated token.
    #[serde(
        default,
        rename = "headersHelper",
        skip_serializing_if = "Option::is_none"
    )]
    pub headers_helper: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Stdio,
    Http,
    Sse,
}

/// The JSON Schema of `.agent.yaml`, for editors (yaml-language-server) and `nsh agent schema`.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Settings)).expect("a schema serializes")
}

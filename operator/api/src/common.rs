//! Pieces several kinds share.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Go-style duration such as `30s`, `15m`, `24h` or `1h30m`.
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";
/// Team, agent and group names (also mesh wire names): 1-63 of `[A-Za-z0-9._-]`; the mesh
/// checks them with [`nsh_contract::names::check`], which a test holds to this pattern.
pub const NAME_PATTERN: &str = nsh_contract::names::PATTERN;

/// Another object of the given kind in the same namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ObjectRef {
    /// Name of the object, in this object's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A key of a Secret in the same namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// Requests per client (agent or team), as a token bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// Sustained rate as COUNT/UNIT, unit `s`, `m` or `h` (e.g. `50/s`).
    #[serde(default = "default_rate")]
    #[schemars(regex(pattern = nsh_contract::rate::PATTERN))]
    pub rate: String,
    /// Events allowed at once above the sustained rate.
    #[serde(default = "default_burst")]
    #[schemars(range(min = 1))]
    pub burst: i32,
}

impl Default for RateLimitSpec {
    fn default() -> Self {
        Self {
            rate: default_rate(),
            burst: default_burst(),
        }
    }
}

fn default_rate() -> String {
    "50/s".to_owned()
}
fn default_burst() -> i32 {
    100
}

/// A command the MCP daemon runs (stdio MCP server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CommandSpec {
    /// Executable, e.g. `npx`.
    #[schemars(length(min = 1))]
    pub command: String,
    /// Arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables for the process.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, String>,
}

/// Status fields every kind has.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommonStatus {
    /// Standard conditions: `Ready`, plus the kind's specific ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

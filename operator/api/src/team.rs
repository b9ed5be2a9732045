//! `Team`: agents that share a mesh and a signing key.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{CommonStatus, ObjectRef};

/// A team on a mesh. The operator mints its signing key into a Secret it owns (never logged,
/// never in status) and issues each agent's token with it.
#[derive(CustomResource, JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "nsh.dev",
    version = "v1alpha1",
    kind = "Team",
    doc = "A team of agents on a mesh, with its own signing key.",
    namespaced,
    status = "TeamStatus",
    shortname = "tm",
    category = "nsh",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Mesh", type_ = "string", json_path = ".spec.meshRef.name"),
    printcolumn(name = "Members", type_ = "integer", json_path = ".status.members"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TeamSpec {
    /// The MeshServer this team uses.
    pub mesh_ref: ObjectRef,
    /// Groups agents of this team may join (an agent may be limited further).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(regex(pattern = crate::common::NAME_PATTERN))
    )]
    pub groups: Vec<String>,
    /// Lifetime of agent tokens; they are rotated before they expire.
    #[serde(default = "default_ttl")]
    #[schemars(regex(pattern = crate::common::DURATION_PATTERN))]
    pub token_ttl: String,
}

fn default_ttl() -> String {
    "24h".to_owned()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeamStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
    /// Agents that reference this team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<i32>,
    /// Name of the Secret holding the team's signing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret_name: Option<String>,
    /// Which key it is: its Secret's uid, new with every rotation. Agents' tokens are re-minted
    /// when it changes (the key itself never leaves its Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

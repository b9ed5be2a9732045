//! `MeshServer`: a mesh (Socket.io server) for the teams that point at it.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{CommonStatus, RateLimitSpec, SecretKeyRef};

/// A mesh server: Deployment, Service, ConfigMap, the team keys Secret, and a
/// PodDisruptionBudget when it runs more than one replica.
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "nsh.dev",
    version = "v1alpha1",
    kind = "MeshServer",
    doc = "A mesh (Socket.io server) that the Teams pointing at it share.",
    namespaced,
    status = "MeshServerStatus",
    shortname = "mesh",
    category = "nsh",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(
        name = "Available",
        type_ = "integer",
        json_path = ".status.readyReplicas"
    ),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.replicas <= 1 || has(self.redis)").message("spec.replicas above 1 needs spec.redis (url, secretRef or managed: true) so the replicas form one mesh"))]
#[x_kube(validation = Rule::new("!self.persistence.enabled || has(self.redis)").message("spec.persistence.enabled needs spec.redis (url, secretRef or managed: true)"))]
pub struct MeshServerSpec {
    /// Number of mesh server pods.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: i32,
    /// Container image; the operator's default nsh image when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// How the Socket.io port is exposed.
    #[serde(default)]
    pub service: MeshServiceSpec,
    /// Redis for several replicas (adapter) and persistence (streams).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSpec>,
    /// Message history and offline delivery (needs Redis).
    #[serde(default)]
    pub persistence: PersistenceSpec,
    /// Per-agent rate limit.
    #[serde(default)]
    pub rate_limit: RateLimitSpec,
}

fn one() -> i32 {
    1
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshServiceSpec {
    /// Kubernetes Service type.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Socket.io port (also /healthz, /readyz, /metrics).
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

impl Default for MeshServiceSpec {
    fn default() -> Self {
        Self {
            type_: ServiceType::default(),
            port: default_port(),
        }
    }
}

fn default_port() -> i32 {
    3456
}

/// Where Redis is: exactly one of `url`, `secretRef`, or `managed: true`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.url) ? 1 : 0) + (has(self.secretRef) ? 1 : 0) + (has(self.managed) && self.managed ? 1 : 0) == 1").message("spec.redis: set exactly one of url, secretRef or managed: true"))]
pub struct RedisSpec {
    /// `redis://host:port/db`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^rediss?://"))]
    pub url: Option<String>,
    /// A Secret key holding the URL (when it carries a password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// Let the operator run a single Redis for this mesh (one pod, data in an emptyDir: for
    /// development and small teams; bring your own Redis for durability).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<bool>,
    /// Image of the operator-run Redis (with `managed: true`); the operator's `--redis-image`
    /// (the chart's `images.redis`) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PersistenceSpec {
    /// Store messages in Redis Streams for history and offline delivery.
    #[serde(default)]
    pub enabled: bool,
    /// How long messages are kept, e.g. `168h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::common::DURATION_PATTERN))]
    pub retention: Option<String>,
    /// Approximate maximum messages kept per stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_length: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshServerStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
    /// Pods that pass their readiness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// In-cluster URL agents connect to, e.g. `ws://mesh.team-a.svc:3456`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

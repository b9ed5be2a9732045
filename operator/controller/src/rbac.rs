//! The least RBAC the operator needs, as data: `nsh operator rbac` prints it and a test runs
//! the operator as a ServiceAccount bound to exactly this role, so the list cannot drift from
//! what the controllers do.

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::api::ObjectMeta;

/// Name of the ClusterRole (and of the operator's ServiceAccount in charts).
pub const NAME: &str = "nsh-operator";

/// (API group, resources, verbs).
const RULES: &[(&str, &[&str], &[&str])] = &[
    // The CRDs: watched, and their status written with server-side apply.
    (
        "nsh.dev",
        &["meshservers", "teams", "agents", "mcpgateways"],
        &["get", "list", "watch"],
    ),
    (
        "nsh.dev",
        &[
            "meshservers/status",
            "teams/status",
            "agents/status",
            "mcpgateways/status",
        ],
        &["get", "patch"],
    ),
    // What they own, written with server-side apply: an apply that creates the object needs
    // `create` as well as `patch`. `delete` only where the spec can stop asking for an object
    // (a MeshServer's PDB and its managed Redis Deployment and Service).
    (
        "",
        &["secrets", "configmaps"],
        &["get", "list", "watch", "create", "patch"],
    ),
    (
        "",
        &["services"],
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    (
        "apps",
        &["deployments"],
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    (
        "apps",
        &["statefulsets"],
        &["get", "list", "watch", "create", "patch"],
    ),
    (
        "policy",
        &["poddisruptionbudgets"],
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    // Leader election.
    (
        "coordination.k8s.io",
        &["leases"],
        &["get", "create", "update"],
    ),
    // Events about the objects it reconciles.
    ("events.k8s.io", &["events"], &["create", "patch"]),
];

pub fn cluster_role() -> ClusterRole {
    let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(NAME.to_owned()),
            ..ObjectMeta::default()
        },
        rules: Some(
            RULES
                .iter()
                .map(|(group, resources, verbs)| PolicyRule {
                    api_groups: Some(vec![(*group).to_owned()]),
                    resources: Some(strings(resources)),
                    verbs: strings(verbs),
                    ..PolicyRule::default()
                })
                .collect(),
        ),
        ..ClusterRole::default()
    }
}

/// The ClusterRole as YAML, for charts and `kubectl apply`.
pub fn cluster_role_yaml() -> Result<String, serde_saphyr::ser::Error> {
    serde_saphyr::to_string(&cluster_role())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_wildcards_and_no_cluster_wide_power() {
        let role = cluster_role();
        for rule in role.rules.unwrap() {
            assert!(
                !rule
                    .verbs
                    .iter()
                    .any(|v| v == "*" || v == "escalate" || v == "bind" || v == "impersonate"),
                "{rule:?}"
            );
            assert!(
                !rule
                    .resources
                    .unwrap()
                    .iter()
                    .any(|r| r == "*" || r == "pods" || r == "nodes" || r == "namespaces")
            );
        }
    }
}

//! What every pod the operator builds shares: restricted Pod Security, HTTP probes, and the
//! hash that rolls pods when their settings change.

use std::hash::Hasher as _;

use k8s_openapi::api::core::v1::{
    Capabilities, HTTPGetAction, PodSecurityContext, Probe, SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

/// The user every container runs as (the distroless `nonroot` user).
const NONROOT: i64 = 65532;

/// Restricted Pod Security for a container.
pub fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(NONROOT),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..SecurityContext::default()
    }
}

/// Restricted Pod Security for a pod: non-root, files owned by its group, default seccomp.
pub fn restricted_pod() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(NONROOT),
        fs_group: Some(NONROOT),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// An HTTP probe of `path` on the container port named `port`, every 5 s.
/// A volume mount of volume `name` at `path`.
pub fn mount(name: &str, path: &str, read_only: bool) -> k8s_openapi::api::core::v1::VolumeMount {
    k8s_openapi::api::core::v1::VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..Default::default()
    }
}

pub fn http_probe(path: &str, port: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(port.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(5),
        ..Probe::default()
    }
}

/// A short hash of `settings` (as written to the pod's ConfigMap) for a pod template
/// annotation: settings that apply only at start roll the pods when they change. FNV-1a over
/// the bytes, which no Rust release changes: an operator upgrade rolls no pod by itself.
pub fn config_hash(settings: &[u8]) -> String {
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(settings);
    format!("{:016x}", hasher.finish())
}

/// [`config_hash`] of a map of settings (sorted, so the order they were built in is moot).
pub fn config_hash_of_map(settings: &std::collections::BTreeMap<String, String>) -> String {
    let mut text = String::new();
    for (key, value) in settings {
        // NUL cannot occur in environment variables: the pairs cannot run together.
        text.extend([key.as_str(), "\0", value.as_str(), "\0"]);
    }
    config_hash(text.as_bytes())
}

/// The metadata of a pod template: our labels for `component`/`instance`, and the settings
/// hash (see [`config_hash`]) that rolls the pods when the settings change.
pub fn template_meta(component: &str, instance: &str, config_hash: String) -> ObjectMeta {
    ObjectMeta {
        labels: Some(crate::apply::labels(component, instance)),
        annotations: Some(std::collections::BTreeMap::from([(
            "nsh.dev/config-hash".to_owned(),
            config_hash,
        )])),
        ..ObjectMeta::default()
    }
}

/// One Deployment of the operator's: restricted pods of `component`/`instance` running
/// `container` with `volumes`, no service-account token, rolled when `config_hash` changes.
pub fn restricted_deployment(
    metadata: ObjectMeta,
    component: &str,
    instance: &str,
    replicas: i32,
    config_hash: String,
    container: k8s_openapi::api::core::v1::Container,
    volumes: Vec<k8s_openapi::api::core::v1::Volume>,
) -> k8s_openapi::api::apps::v1::Deployment {
    use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
    use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(crate::apply::selector(component, instance)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(template_meta(component, instance, config_hash)),
                spec: Some(PodSpec {
                    containers: vec![container],
                    security_context: Some(restricted_pod()),
                    volumes: Some(volumes),
                    automount_service_account_token: Some(false),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_hash_is_fixed_across_builds() {
        // FNV-1a 64 of "settings": a changed value here means every pod rolls on upgrade.
        assert_eq!(config_hash(b"settings"), "ee5f6d7b48b44de8");
        let map = |v: &str| std::collections::BTreeMap::from([("A".to_owned(), v.to_owned())]);
        assert_ne!(config_hash_of_map(&map("1")), config_hash_of_map(&map("2")));
    }
}

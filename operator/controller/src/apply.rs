//! The API edge: server-side apply with one field manager, owner references, status patches
//! and conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt as _};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Result;

/// The one field manager for everything the operator writes.
pub const FIELD_MANAGER: &str = "nsh-operator";

/// Labels on every object the operator creates.
pub fn labels(kind: &str, name: &str) -> std::collections::BTreeMap<String, String> {
    [
        ("app.kubernetes.io/managed-by", FIELD_MANAGER),
        ("app.kubernetes.io/part-of", "nsh-mesh"),
        ("app.kubernetes.io/component", kind),
        ("app.kubernetes.io/instance", name),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The labels a workload's pods are selected by: its component and instance.
pub fn selector(component: &str, instance: &str) -> std::collections::BTreeMap<String, String> {
    [
        ("app.kubernetes.io/component", component),
        ("app.kubernetes.io/instance", instance),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Metadata of an object `owner` owns: its name, the owner's namespace, our labels, and a
/// controller owner reference so garbage collection removes it with the owner.
pub fn owned_meta<K: Resource<DynamicType = ()>>(
    owner: &K,
    component: &str,
    name: String,
) -> kube::api::ObjectMeta {
    kube::api::ObjectMeta {
        name: Some(name),
        namespace: owner.meta().namespace.clone(),
        labels: Some(labels(
            component,
            owner.meta().name.as_deref().unwrap_or_default(),
        )),
        owner_references: Some(vec![owner_reference(owner)]),
        ..kube::api::ObjectMeta::default()
    }
}

/// A controller owner reference to `owner`, so deleting it deletes what it owns.
pub fn owner_reference<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    owner
        .controller_owner_ref(&())
        .expect("objects from the API have a name and uid")
}

/// Server-side applies `object` (create or update the fields we own).
pub async fn apply<K>(client: &kube::Client, namespace: &str, object: &K) -> Result<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(client.clone(), namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Ok(api
        .patch(&object.name_any(), &params, &Patch::Apply(object))
        .await?)
}

/// Deletes `name` if `owner` owns it (something the spec no longer asks for); leaves objects
/// of the same name that someone else made.
pub async fn delete_owned<K, O>(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    owner: &O,
) -> Result<()>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    O: Resource<DynamicType = ()>,
{
    let api = Api::<K>::namespaced(client.clone(), namespace);
    let owner_uid = owner.meta().uid.clone().unwrap_or_default();
    let owned = api.get_opt(name).await?.is_some_and(|object| {
        object
            .meta()
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == owner_uid)
    });
    if owned {
        api.delete(name, &kube::api::DeleteParams::default())
            .await?;
    }
    Ok(())
}

/// Server-side applies `status` to the status subresource of `object`.
pub async fn apply_status<K>(
    client: &kube::Client,
    object: &K,
    status: serde_json::Value,
) -> Result<()>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(client.clone(), &object.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &object.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// A condition, keeping `lastTransitionTime` from `previous` when the status did not change.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(
            || Time(k8s_openapi::jiff::Timestamp::now()),
            |c| c.last_transition_time.clone(),
        );
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// Reports `Ready=False` with `reason` and `message` (keeping the transition time when it was
/// already false) and the generation it describes.
pub async fn set_not_ready<K>(
    client: &kube::Client,
    object: &K,
    reason: &str,
    message: String,
) -> Result<()>
where
    K: nsh_operator_api::HasConditions
        + Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let generation = object.meta().generation;
    let ready = condition(
        object.conditions(),
        nsh_operator_api::conditions::READY,
        false,
        reason,
        message,
        generation,
    );
    apply_status(
        client,
        object,
        serde_json::json!({ "conditions": [ready], "observedGeneration": generation }),
    )
    .await
}

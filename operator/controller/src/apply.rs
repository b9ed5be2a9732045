//! The API edge: server-side apply with one field manager of every object a controller owns
//! (one list, [`Desired`], that also deletes what the spec no longer asks for), typed status,
//! owner references and conditions.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::object::HasStatus;
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

/// The kinds the operator creates. A controller's `OWNS` list says which of them it watches
/// (`run`) and may delete (`Desired::Absent`); a test holds its build to that list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ConfigMap,
    Secret,
    Service,
    Deployment,
    StatefulSet,
    PodDisruptionBudget,
}

/// An object of one of the [`Kind`]s.
#[derive(Debug, Clone)]
pub enum Object {
    ConfigMap(ConfigMap),
    Secret(Secret),
    Service(Service),
    Deployment(Deployment),
    StatefulSet(StatefulSet),
    PodDisruptionBudget(PodDisruptionBudget),
}

macro_rules! objects {
    ($($kind:ident),*) => {
        $(impl From<$kind> for Object {
            fn from(object: $kind) -> Self {
                Self::$kind(object)
            }
        })*

        impl Object {
            pub fn kind(&self) -> Kind {
                match self { $(Self::$kind(_) => Kind::$kind),* }
            }

            async fn apply(&self, client: &kube::Client, namespace: &str) -> Result<Self> {
                match self { $(Self::$kind(o) => Ok(Self::$kind(apply(client, namespace, o).await?))),* }
            }
        }

        impl Kind {
            async fn delete_owned<O: Resource<DynamicType = ()>>(
                self,
                client: &kube::Client,
                namespace: &str,
                name: &str,
                owner: &O,
            ) -> Result<()> {
                match self { $(Self::$kind => delete_owned::<$kind, O>(client, namespace, name, owner).await),* }
            }
        }
    };
}
objects!(
    ConfigMap,
    Secret,
    Service,
    Deployment,
    StatefulSet,
    PodDisruptionBudget
);

/// One owned object as the spec wants it: there, or gone.
#[derive(Debug, Clone)]
pub enum Desired {
    /// Boxed: objects are kilobytes, an absent one is a name.
    Present(Box<Object>),
    /// Deleted if the owner owns it (an object of that name someone else made stays).
    Absent { kind: Kind, name: String },
}

impl Desired {
    pub fn present(object: impl Into<Object>) -> Self {
        Self::Present(Box::new(object.into()))
    }

    pub fn kind(&self) -> Kind {
        match self {
            Self::Present(object) => object.kind(),
            Self::Absent { kind, .. } => *kind,
        }
    }
}

/// What [`owned`] applied, as the API returned it (with its current status).
#[derive(Debug, Clone, Default)]
pub struct Applied(Vec<Object>);

impl Applied {
    /// The Deployment `name`, as applied.
    pub fn deployment(&self, name: &str) -> Option<&Deployment> {
        self.0.iter().find_map(|o| match o {
            Object::Deployment(d) if d.name_any() == name => Some(d),
            _ => None,
        })
    }

    /// The StatefulSet `name`, as applied.
    pub fn stateful_set(&self, name: &str) -> Option<&StatefulSet> {
        self.0.iter().find_map(|o| match o {
            Object::StatefulSet(s) if s.name_any() == name => Some(s),
            _ => None,
        })
    }
}

/// The one place a controller writes what it owns: applies every present object in order and
/// deletes the absent ones `owner` owns.
pub async fn owned<O: Resource<DynamicType = ()>>(
    client: &kube::Client,
    owner: &O,
    desired: Vec<Desired>,
) -> Result<Applied> {
    let namespace = owner.meta().namespace.clone().unwrap_or_default();
    let mut applied = Vec::new();
    for want in desired {
        match want {
            Desired::Present(object) => applied.push(object.apply(client, &namespace).await?),
            Desired::Absent { kind, name } => {
                kind.delete_owned(client, &namespace, &name, owner).await?;
            }
        }
    }
    Ok(Applied(applied))
}

/// Server-side applies `object` (create or update the fields we own).
pub async fn apply<K>(client: &kube::Client, namespace: &str, object: &K) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
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

/// Deletes `name` if `owner` owns it; leaves objects of the same name that someone else made.
async fn delete_owned<K, O>(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    owner: &O,
) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
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
        api.delete(name, &DeleteParams::default()).await?;
    }
    Ok(())
}

/// Server-side applies `status` (the kind's own typed status) to `object`'s status
/// subresource. Fields it leaves out that the operator set before are removed.
pub async fn status<K>(client: &kube::Client, object: &K, status: &K::Status) -> Result<()>
where
    K: HasStatus
        + Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    K::Status: Serialize + std::fmt::Debug,
{
    /// The apply patch: the object's type and its status, nothing else.
    #[derive(Debug, Serialize)]
    #[serde(rename_all = "camelCase")]
    struct StatusPatch<'a, S> {
        api_version: &'a str,
        kind: &'a str,
        status: &'a S,
    }
    let api = Api::<K>::namespaced(client.clone(), &object.namespace().unwrap_or_default());
    let patch = StatusPatch {
        api_version: &K::api_version(&()),
        kind: &K::kind(&()),
        status,
    };
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

/// The common status of a reconcile that failed with `error` before it could say more:
/// `Ready=False` with the error's reason; `None` as in [`not_ready`].
pub fn failed(
    previous: &[Condition],
    error: &crate::Error,
    generation: Option<i64>,
) -> Option<nsh_operator_api::common::CommonStatus> {
    Some(nsh_operator_api::common::CommonStatus {
        conditions: vec![not_ready(previous, error, generation)?],
        observed_generation: generation,
    })
}

/// Deployment `name`'s ready pods (as applied) and the `Ready` condition they make: true
/// once one serves; `detail` writes the message from the count.
pub fn serving(
    applied: &Applied,
    name: &str,
    previous: &[Condition],
    generation: Option<i64>,
    detail: impl FnOnce(i32) -> String,
) -> (i32, Condition) {
    use nsh_operator_api::conditions::{self, reason};
    let ready_replicas = applied
        .deployment(name)
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let serving = ready_replicas > 0;
    let why = if serving {
        reason::RECONCILED
    } else {
        reason::WAITING_FOR_PODS
    };
    let ready = condition(
        previous,
        conditions::READY,
        serving,
        why,
        detail(ready_replicas),
        generation,
    );
    (ready_replicas, ready)
}

/// The `Ready` condition of a reconcile that failed with `error`, or `None` when the failure
/// says nothing about the object (an API call failed) and the status should stay as it is.
pub fn not_ready(
    previous: &[Condition],
    error: &crate::Error,
    generation: Option<i64>,
) -> Option<Condition> {
    let reason = error.not_ready_reason()?;
    Some(condition(
        previous,
        nsh_operator_api::conditions::READY,
        false,
        reason,
        error.to_string(),
        generation,
    ))
}

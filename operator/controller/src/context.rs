use kube::runtime::events::{Recorder, Reporter};

/// The images the operator puts into pods when a spec names none (the chart passes its
/// values' images; `nsh operator run` defaults to this release's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    pub mesh: String,
    pub sidecar: String,
    pub gateway: String,
    pub agent: String,
    pub redis: String,
}

impl Images {
    /// `nsh` for every nsh component, `agent` for agent containers, `redis` for managed Redis.
    pub fn new(nsh: &str, agent: &str, redis: &str) -> Self {
        Self {
            mesh: nsh.to_owned(),
            sidecar: nsh.to_owned(),
            gateway: nsh.to_owned(),
            agent: agent.to_owned(),
            redis: redis.to_owned(),
        }
    }
}

impl Default for Images {
    /// This release's images.
    fn default() -> Self {
        Self::new(
            &nsh_contract::image::nsh(),
            &nsh_contract::image::agent(),
            nsh_contract::image::REDIS,
        )
    }
}

/// One image for every nsh component, the release's defaults for the rest (tests).
impl From<&str> for Images {
    fn from(nsh: &str) -> Self {
        let defaults = Self::default();
        Self::new(nsh, &defaults.agent, &defaults.redis)
    }
}

/// What every reconcile gets: the client, an event recorder, metrics, and settings.
#[derive(Clone)]
pub struct Context {
    pub client: kube::Client,
    pub recorder: Recorder,
    pub metrics: crate::metrics::Metrics,
    /// Images for pods whose spec names none.
    pub images: Images,
    /// Watch only this namespace (`None`: every namespace).
    pub watch_namespace: Option<String>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("images", &self.images)
            .field("watch_namespace", &self.watch_namespace)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(client: kube::Client, images: impl Into<Images>) -> Self {
        let reporter = Reporter {
            controller: crate::apply::FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics: crate::metrics::Metrics::default(),
            images: images.into(),
            watch_namespace: None,
        }
    }

    /// Watches and reconciles only `namespace` (a namespaced install, or one test's objects).
    #[must_use]
    pub fn watching_only(mut self, namespace: impl Into<String>) -> Self {
        self.watch_namespace = Some(namespace.into());
        self
    }

    /// An API of `K` over what this operator watches: one namespace or all.
    pub fn api<K>(&self) -> kube::Api<K>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match &self.watch_namespace {
            Some(namespace) => kube::Api::namespaced(self.client.clone(), namespace),
            None => kube::Api::all(self.client.clone()),
        }
    }
}

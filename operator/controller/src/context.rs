use kube::runtime::events::{Recorder, Reporter};

/// What every reconcile gets: the client, an event recorder, metrics, and settings.
#[derive(Clone)]
pub struct Context {
    pub client: kube::Client,
    pub recorder: Recorder,
    pub metrics: crate::metrics::Metrics,
    /// Image for mesh and gateway pods, and agents' mesh-client sidecars, when a spec does not
    /// name one.
    pub default_image: String,
    /// Image for agent containers when an Agent does not name one.
    pub agent_image: String,
    /// Watch only this namespace (`None`: every namespace).
    pub watch_namespace: Option<String>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("default_image", &self.default_image)
            .field("agent_image", &self.agent_image)
            .field("watch_namespace", &self.watch_namespace)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(client: kube::Client, default_image: impl Into<String>) -> Self {
        let reporter = Reporter {
            controller: crate::apply::FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics: crate::metrics::Metrics::default(),
            default_image: default_image.into(),
            agent_image: concat!("ghcr.io/nsh-dev/nsh-agent:", env!("CARGO_PKG_VERSION")).into(),
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

    /// Sets the default agent container image.
    #[must_use]
    pub fn with_agent_image(mut self, image: impl Into<String>) -> Self {
        self.agent_image = image.into();
        self
    }
}

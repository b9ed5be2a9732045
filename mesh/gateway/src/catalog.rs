//! The merged catalog every caller sees a filtered view of: each upstream's tools and prompts
//! under `<upstream>__<name>`, and its resources under their own URIs (the first upstream to
//! offer a URI serves it). Rebuilt whenever an upstream's catalog changes, so `tools/list`
//! never waits for an upstream.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use nsh_gateway_config::names;
use rmcp::model::{Prompt, Resource, ResourceTemplate, Tool};

use crate::audit::{AuditLog, Event};
use crate::metrics::{Metrics, ToolLabels};
use crate::pins::{self, Check, Pins};
use crate::upstream::UpstreamHandle;

/// An entry under its exposed name, with where it came from.
#[derive(Debug, Clone)]
pub struct Entry<T> {
    pub item: T,
    pub upstream: Arc<UpstreamHandle>,
    pub original: String,
}

#[derive(Debug, Default)]
pub struct Index {
    pub tools: Vec<Entry<Tool>>,
    pub tool_by_name: HashMap<String, usize>,
    /// Exposed names hidden because their upstream changed them after pinning, with the new
    /// hash.
    pub changed: HashMap<String, String>,
    pub prompts: Vec<Entry<Prompt>>,
    pub prompt_by_name: HashMap<String, usize>,
    pub resources: Vec<Entry<Resource>>,
    pub resource_by_uri: HashMap<String, Arc<UpstreamHandle>>,
    pub templates: Vec<Entry<ResourceTemplate>>,
}

/// How exposed names are made: prefixed (the gateway) or as the upstream named them (a
/// daemon in front of one server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    Prefixed,
    AsIs,
}

impl Naming {
    /// The exposed name of `original` of `upstream`.
    pub fn name(self, upstream: &str, original: &str) -> String {
        match self {
            Self::Prefixed => names::exposed(upstream, original),
            Self::AsIs => original.to_owned(),
        }
    }
}

/// Pinning, when the policy asks for it.
#[derive(Debug)]
pub struct Pinning<'a> {
    pub pins: &'a Pins,
    pub approved: &'a BTreeMap<String, String>,
    pub audit: &'a AuditLog,
    pub metrics: &'a Metrics,
}

pub fn build(
    upstreams: &[Arc<UpstreamHandle>],
    naming: Naming,
    pinning: Option<Pinning<'_>>,
) -> Index {
    let mut index = Index::default();
    for upstream in upstreams {
        let Some(live) = upstream.live() else {
            continue;
        };
        let up = upstream.name();
        for tool in &live.catalog.tools {
            let exposed = naming.name(up, &tool.name);
            if index.tool_by_name.contains_key(&exposed) {
                tracing::warn!(upstream = %up, tool = %tool.name, %exposed, "two tools map to one exposed name; the second is left out");
                continue;
            }
            if let Some(pinning) = &pinning {
                let hash = pins::hash(tool);
                match pinning.pins.check(&exposed, &hash, pinning.approved) {
                    Check::Same => {}
                    Check::New => pinning.audit.write(&Event {
                        event: "tool_pinned",
                        upstream: up,
                        tool: &exposed,
                        pinned: None,
                        hash: &hash,
                    }),
                    Check::Changed { pinned } => {
                        if pinning.pins.first_report(&exposed, &hash) {
                            tracing::warn!(upstream = %up, tool = %exposed, %pinned, %hash, "a pinned tool changed; hidden until approved");
                            pinning.audit.write(&Event {
                                event: "tool_changed",
                                upstream: up,
                                tool: &exposed,
                                pinned: Some(&pinned),
                                hash: &hash,
                            });
                            pinning
                                .metrics
                                .tools_changed
                                .get_or_create(&ToolLabels {
                                    tool: exposed.clone(),
                                })
                                .inc();
                        }
                        index.changed.insert(exposed, hash);
                        continue;
                    }
                }
            }
            let mut item = tool.clone();
            item.name = exposed.clone().into();
            index.tool_by_name.insert(exposed, index.tools.len());
            index.tools.push(Entry {
                item,
                upstream: upstream.clone(),
                original: tool.name.to_string(),
            });
        }
        for prompt in &live.catalog.prompts {
            let exposed = naming.name(up, &prompt.name);
            if index.prompt_by_name.contains_key(&exposed) {
                continue;
            }
            let mut item = prompt.clone();
            item.name = exposed.clone();
            index.prompt_by_name.insert(exposed, index.prompts.len());
            index.prompts.push(Entry {
                item,
                upstream: upstream.clone(),
                original: prompt.name.clone(),
            });
        }
        for resource in &live.catalog.resources {
            if index.resource_by_uri.contains_key(&resource.uri) {
                tracing::warn!(upstream = %up, uri = %resource.uri, "two upstreams offer one resource URI; the first serves it");
                continue;
            }
            let mut item = resource.clone();
            item.name = naming.name(up, &resource.name);
            index
                .resource_by_uri
                .insert(resource.uri.clone(), upstream.clone());
            index.resources.push(Entry {
                item,
                upstream: upstream.clone(),
                original: resource.uri.clone(),
            });
        }
        for template in &live.catalog.resource_templates {
            let mut item = template.clone();
            item.name = naming.name(up, &template.name);
            index.templates.push(Entry {
                item,
                upstream: upstream.clone(),
                original: template.uri_template.clone(),
            });
        }
    }
    index
}

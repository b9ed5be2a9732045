//! Layering: built-in defaults < base profile < MCP preset overlays < project config < user
//! config < command line, with where every value came from.
//!
//! Layers merge as JSON: objects merge key by key, a later scalar or list replaces an earlier
//! one, except `args` and `mcp.presets`, which every layer adds to (presets without repeats).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::catalog::{self, CatalogContext, PresetError};
use crate::settings::{McpServer, McpSettings, Settings};

/// Where a layer came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Defaults,
    Profile(String),
    Preset(String),
    File(PathBuf),
    CommandLine,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Defaults => f.write_str("built-in defaults"),
            Self::Profile(name) => write!(f, "profile {name}"),
            Self::Preset(name) => write!(f, "preset {name}"),
            Self::File(path) => write!(f, "{}", path.display()),
            Self::CommandLine => f.write_str("command line"),
        }
    }
}

/// A config file, already parsed.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub settings: Settings,
    /// The file's text, to point at the line of a value that fails later checks.
    pub text: String,
}

/// Everything that goes into the merge.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub project: Option<ConfigFile>,
    pub user: Option<ConfigFile>,
    /// `nsh agent launch --config FILE`: a file over the user's (e.g. one `nsh up` wrote).
    pub config: Option<ConfigFile>,
    pub command_line: Settings,
    /// Project folder and `nsh` path, which presets are filled in with.
    pub context: CatalogContext,
}

/// The merged settings, the servers they define, and where each value came from.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub profile: String,
    pub settings: Settings,
    /// Every MCP server, presets expanded, by name.
    pub servers: BTreeMap<String, McpServer>,
    /// Leaf path (`mesh.server`, `args[1]`) to the layer that set it.
    pub provenance: BTreeMap<String, Source>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayerError {
    #[error(
        "{origin}: profile `{name}` is not defined (built-in profiles: {}; define others under `profiles:` in .agent.yaml or ~/.config/nsh/agent.yaml)",
        catalog::BUILT_IN_PROFILES.join(", ")
    )]
    UnknownProfile { name: String, origin: Source },
    #[error("profiles extend each other in a circle: {0}")]
    ProfileCycle(String),
    #[error(
        "{origin}: `profiles` cannot be nested inside profile `{name}`; define every profile at the top level"
    )]
    NestedProfiles { name: String, origin: Source },
    #[error("{origin}{}: mcp.presets: {error}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Preset {
        origin: Source,
        line: Option<usize>,
        error: PresetError,
    },
    #[error(
        "{origin}: mcp.servers.{name}: {why} (give `command` for a stdio server or `url` for an http/sse one)"
    )]
    Server {
        name: String,
        origin: Source,
        why: &'static str,
    },
}

struct Layer {
    source: Source,
    settings: Settings,
}

/// Merges `inputs` into the settings an agent launches with.
pub fn resolve(inputs: &Inputs) -> Result<Resolved, LayerError> {
    let profile = inputs
        .command_line
        .profile
        .as_ref()
        .map(|p| (p.clone(), Source::CommandLine))
        .or_else(|| file_profile(inputs.config.as_ref()))
        .or_else(|| file_profile(inputs.user.as_ref()))
        .or_else(|| file_profile(inputs.project.as_ref()))
        .unwrap_or_else(|| ("solo-developer".to_owned(), Source::Defaults));
    let mut below = vec![Layer {
        source: Source::Defaults,
        settings: catalog::defaults(),
    }];
    below.extend(profile_chain(&profile.0, &profile.1, inputs)?);
    let mut above = Vec::new();
    for (file, source) in [
        (inputs.project.as_ref(), None),
        (inputs.user.as_ref(), None),
        (inputs.config.as_ref(), None),
        (None, Some(Source::CommandLine)),
    ] {
        match (file, source) {
            (Some(file), _) => above.push(Layer {
                source: Source::File(file.path.clone()),
                settings: file.settings.clone(),
            }),
            (None, Some(source)) => above.push(Layer {
                source,
                settings: inputs.command_line.clone(),
            }),
            (None, None) => {}
        }
    }

    // Presets come from every layer; expand them with the merged mesh and gateway settings.
    let without_presets = merge(below.iter().chain(&above));
    let first: Settings = from_merged(&without_presets.0);
    let mut context = inputs.context.clone();
    context.mesh = first.mesh.clone().unwrap_or_default();
    context.gateway = first.mcp.as_ref().and_then(|m| m.gateway.clone());
    context.share = first.mcp.as_ref().and_then(|m| m.share).unwrap_or(false);
    let mut overlays = Vec::new();
    for (index, name) in first
        .mcp
        .as_ref()
        .and_then(|m| m.presets.clone())
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let source = without_presets
            .1
            .get(&format!("mcp.presets[{index}]"))
            .cloned()
            .unwrap_or(Source::Defaults);
        let server = catalog::preset(&name, &context).map_err(|error| LayerError::Preset {
            line: line_in(inputs, &source, &name),
            origin: source,
            error,
        })?;
        overlays.push(Layer {
            source: Source::Preset(name.clone()),
            settings: Settings {
                mcp: Some(McpSettings {
                    servers: Some(BTreeMap::from([(name, server)])),
                    ..McpSettings::default()
                }),
                ..Settings::default()
            },
        });
    }
    let (merged, provenance) = merge(below.iter().chain(&overlays).chain(&above));
    let settings: Settings = from_merged(&merged);
    let servers = settings
        .mcp
        .as_ref()
        .and_then(|m| m.servers.clone())
        .unwrap_or_default();
    for (name, server) in &servers {
        let source = provenance
            .iter()
            .find(|(path, _)| path.starts_with(&format!("mcp.servers.{name}.")))
            .map(|(_, s)| s.clone())
            .unwrap_or(Source::Defaults);
        check_server(server).map_err(|why| LayerError::Server {
            name: name.clone(),
            origin: source,
            why,
        })?;
    }
    Ok(Resolved {
        profile: profile.0,
        settings,
        servers,
        provenance,
    })
}

/// The line of `word` in the file `source` names, if it is one of the inputs' files.
fn line_in(inputs: &Inputs, source: &Source, word: &str) -> Option<usize> {
    let Source::File(path) = source else {
        return None;
    };
    let file = [
        inputs.project.as_ref(),
        inputs.user.as_ref(),
        inputs.config.as_ref(),
    ]
    .into_iter()
    .flatten()
    .find(|f| &f.path == path)?;
    let is_word = |c: char| c.is_alphanumeric() || c == '-' || c == '_';
    file.text
        .lines()
        .position(|line| {
            line.match_indices(word).any(|(at, _)| {
                let before = line[..at].chars().next_back();
                let after = line[at + word.len()..].chars().next();
                !before.is_some_and(is_word) && !after.is_some_and(is_word)
            })
        })
        .map(|index| index + 1)
}

fn file_profile(file: Option<&ConfigFile>) -> Option<(String, Source)> {
    let file = file?;
    Some((
        file.settings.profile.clone()?,
        Source::File(file.path.clone()),
    ))
}

/// The profile and the ones it extends, base first. Files' profiles shadow built-in ones, the
/// user's shadow the project's.
fn profile_chain(name: &str, asked_by: &Source, inputs: &Inputs) -> Result<Vec<Layer>, LayerError> {
    let mut chain: Vec<Layer> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    let (mut name, mut asked_by) = (name.to_owned(), asked_by.clone());
    loop {
        if seen.contains(&name) {
            seen.push(name);
            return Err(LayerError::ProfileCycle(seen.join(" -> ")));
        }
        seen.push(name.clone());
        let defined = [
            inputs.config.as_ref(),
            inputs.user.as_ref(),
            inputs.project.as_ref(),
        ]
        .into_iter()
        .flatten()
        .find_map(|file| {
            let settings = file.settings.profiles.as_ref()?.get(&name)?;
            Some((settings.clone(), Source::File(file.path.clone())))
        });
        let (settings, source) = match defined {
            Some(found) => found,
            None => match catalog::built_in_profile(&name) {
                Some(settings) => (settings, Source::Profile(name.clone())),
                None => {
                    return Err(LayerError::UnknownProfile {
                        name,
                        origin: asked_by,
                    });
                }
            },
        };
        if settings.profiles.is_some() {
            return Err(LayerError::NestedProfiles {
                name,
                origin: source,
            });
        }
        let parent = settings.profile.clone();
        chain.push(Layer {
            source: Source::Profile(name.clone()),
            settings,
        });
        match parent {
            Some(parent) => {
                asked_by = source;
                name = parent;
            }
            None => break,
        }
    }
    chain.reverse();
    Ok(chain)
}

fn check_server(server: &McpServer) -> Result<(), &'static str> {
    use crate::settings::Transport;
    match (&server.command, &server.url, server.transport) {
        (Some(_), Some(_), _) => Err("has both `command` and `url`"),
        (None, None, _) => Err("has neither `command` nor `url`"),
        (Some(_), None, Some(Transport::Http | Transport::Sse)) => {
            Err("is an http/sse server but has a `command` instead of a `url`")
        }
        (None, Some(_), Some(Transport::Stdio)) => {
            Err("is a stdio server but has a `url` instead of a `command`")
        }
        _ => Ok(()),
    }
}

/// Paths whose lists every layer adds to instead of replacing.
const ACCUMULATE: [&str; 2] = ["args", "mcp.presets"];
/// Keys that choose layers rather than being settings.
const NOT_MERGED: [&str; 2] = ["profile", "profiles"];

fn merge<'a>(layers: impl Iterator<Item = &'a Layer>) -> (Value, BTreeMap<String, Source>) {
    let mut merged = Value::Object(Map::new());
    let mut provenance = BTreeMap::new();
    for layer in layers {
        let mut value = serde_json::to_value(&layer.settings).expect("settings serialize");
        if let Value::Object(map) = &mut value {
            for key in NOT_MERGED {
                map.remove(key);
            }
        }
        merge_into(&mut merged, value, "", &layer.source, &mut provenance);
    }
    (merged, provenance)
}

fn merge_into(
    target: &mut Value,
    value: Value,
    path: &str,
    source: &Source,
    provenance: &mut BTreeMap<String, Source>,
) {
    match (target, value) {
        (Value::Object(target), Value::Object(map)) => {
            for (key, value) in map {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                let slot = target.entry(key).or_insert(Value::Null);
                if slot.is_null() {
                    *slot = if value.is_object() {
                        Value::Object(Map::new())
                    } else {
                        Value::Null
                    };
                }
                merge_into(slot, value, &child, source, provenance);
            }
        }
        (target @ Value::Array(_), Value::Array(items)) if ACCUMULATE.contains(&path) => {
            let Value::Array(existing) = target else {
                unreachable!()
            };
            for item in items {
                if path == "mcp.presets" && existing.contains(&item) {
                    continue;
                }
                provenance.insert(format!("{path}[{}]", existing.len()), source.clone());
                existing.push(item);
            }
        }
        (target, value) => {
            provenance.retain(|p, _| {
                !(p == path
                    || p.starts_with(&format!("{path}."))
                    || p.starts_with(&format!("{path}[")))
            });
            record_leaves(&value, path, source, provenance);
            *target = value;
        }
    }
}

fn record_leaves(
    value: &Value,
    path: &str,
    source: &Source,
    provenance: &mut BTreeMap<String, Source>,
) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, value) in map {
                record_leaves(value, &format!("{path}.{key}"), source, provenance);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (index, value) in items.iter().enumerate() {
                record_leaves(value, &format!("{path}[{index}]"), source, provenance);
            }
        }
        _ => {
            provenance.insert(path.to_owned(), source.clone());
        }
    }
}

fn from_merged(value: &Value) -> Settings {
    // Every layer was a valid Settings, and merging keeps each field's type.
    serde_json::from_value(value.clone()).expect("merged settings are settings")
}

/// The merged settings as `path = value  # source` lines, for `nsh agent config --explain`.
pub fn explain(resolved: &Resolved) -> Vec<(String, String, String)> {
    let mut value = serde_json::to_value(&resolved.settings).expect("settings serialize");
    if let Value::Object(map) = &mut value {
        map.remove("profiles");
        map.insert("profile".into(), Value::String(resolved.profile.clone()));
    }
    let mut lines = Vec::new();
    collect(&value, "", &mut |path, leaf| {
        let source = if path == "profile" {
            "selected profile".to_owned()
        } else {
            resolved
                .provenance
                .get(path)
                .map_or_else(|| "built-in defaults".to_owned(), ToString::to_string)
        };
        lines.push((path.to_owned(), leaf.to_string(), source));
    });
    lines
}

fn collect(value: &Value, path: &str, out: &mut impl FnMut(&str, &Value)) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, value) in map {
                collect(value, &join(key), out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (index, value) in items.iter().enumerate() {
                collect(value, &format!("{path}[{index}]"), out);
            }
        }
        leaf => out(path, leaf),
    }
}

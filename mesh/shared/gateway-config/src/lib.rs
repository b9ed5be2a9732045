//! The MCP gateway's policy, as one Rust type for two homes: the `McpGateway` spec (which
//! flattens [`GatewayPolicy`]) and the gateway's own file (`gateway.yaml`, [`GatewayConfig`]),
//! which the operator writes from the spec and people write by hand for `nsh gateway run`.
//!
//! Everything here is pure: parsing, checking (errors name the field and the fix), the tool
//! policy's verdicts, `${ENV}` expansion and the mapping of upstream names to exposed names.
#![forbid(unsafe_code)]

mod check;
pub mod names;
mod policy;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use check::{ConfigError, check, check_policy};
pub use policy::{Caller, Verdict};

/// Go-style durations (`500ms`, `30s`, `5m`, `1h30m`), as the CRDs spell them.
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";
/// The audience a gateway accepts when its file names none (a local gateway).
pub const DEFAULT_AUDIENCE: &str = "nsh-gateway";

/// What a gateway does, wherever it is configured: the McpGateway spec and `gateway.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayPolicy {
    /// MCP servers behind the gateway; their tools are exposed as `<name>__<tool>`.
    #[schemars(length(min = 1, max = 64))]
    pub upstreams: Vec<Upstream>,
    /// Which tools each caller may list and call.
    #[serde(default)]
    pub tool_policy: ToolPolicy,
    /// Per-agent request rate and per-upstream concurrency.
    #[serde(default)]
    pub rate_limit: RateLimit,
    /// The audit log: one JSON line per request.
    #[serde(default)]
    pub audit: Audit,
    /// Record a hash of each tool (name, description, schemas) when first seen, and hide a
    /// tool whose upstream later changes it until the change is approved.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pin_tools: bool,
    /// Approved tool hashes by exposed name (`github__create_issue: sha256:…`), as
    /// `nsh gateway pins approve` prints them; they win over hashes the gateway recorded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pinned_tools: BTreeMap<String, String>,
}

fn is_false(value: &bool) -> bool {
    !value
}

/// One MCP server behind the gateway: exactly one of `url` or `command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.url) != has(self.command)",
    "message": "each upstream needs exactly one of url or command"
}]))]
pub struct Upstream {
    /// Name; its tools, prompts and resources are exposed as `<name>__<original>`. Letters,
    /// digits, `.`, `-` and single `_` (a double `_` would make exposed names ambiguous).
    #[schemars(
        regex(pattern = r"^[A-Za-z0-9]([A-Za-z0-9.-]|_[A-Za-z0-9.-]){0,30}$"),
        length(max = 31)
    )]
    pub name: String,
    /// A remote MCP server (streamable HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://"))]
    pub url: Option<String>,
    /// HTTP headers sent to a `url` upstream (never the caller's own token).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub headers: Vec<Header>,
    /// A stdio MCP server. Locally the gateway runs it as a child; in Kubernetes it runs in a
    /// container of its own in the gateway's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Command>,
    /// Whether the gateway is ready only once this upstream answered (default true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub required: bool,
    /// How long listing this upstream's tools may take before it is left out of a listing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub list_timeout: Option<String>,
    /// How long one call may take before the caller gets an error (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub call_timeout: Option<String>,
}

fn yes() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

impl Upstream {
    pub fn list_timeout(&self) -> Duration {
        duration(self.list_timeout.as_deref()).unwrap_or(Duration::from_secs(5))
    }

    pub fn call_timeout(&self) -> Duration {
        duration(self.call_timeout.as_deref()).unwrap_or(Duration::from_secs(300))
    }
}

fn duration(text: Option<&str>) -> Option<Duration> {
    text.and_then(|t| humantime::parse_duration(t).ok())
}

/// One header of a `url` upstream: `value` (with `${ENV}` expanded by the gateway) or
/// `valueFrom.secretKeyRef` (in Kubernetes: the operator passes the Secret's value in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.value) != has(self.valueFrom)",
    "message": "each header needs exactly one of value or valueFrom"
}]))]
pub struct Header {
    /// Header name, e.g. `Authorization`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"))]
    pub name: String,
    /// The value; `${NAME}` is replaced by the gateway's environment variable NAME.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Where the value comes from in Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ValueFrom>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValueFrom {
    /// A key of a Secret in the gateway's namespace.
    pub secret_key_ref: SecretKeyRef,
}

/// A key of a Secret in the same namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// A stdio MCP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Command {
    /// Executable, e.g. `npx`.
    #[schemars(length(min = 1))]
    pub command: String,
    /// Arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables for the process.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Kubernetes only: the image of the container that runs the command (any image: `nsh`
    /// is copied in to serve it); the gateway's image when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// Glob allow/deny lists of exposed tool names (`github__*`), for every caller, and rules for
/// some teams or agents. A tool is visible and callable only if every layer that applies to
/// the caller allows it: its `allow` is empty or matches, and its `deny` does not match. Deny
/// wins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ToolPolicy {
    /// Tools any caller may use; empty allows every tool not denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Tools no caller may use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// Further rules for some callers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub rules: Vec<PolicyRule>,
}

/// A policy layer for the callers it names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyRule {
    /// Teams this rule applies to (globs); empty means every team.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub teams: Vec<String>,
    /// Agents this rule applies to (globs); empty means every agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<String>,
    /// Tools these callers may use; empty allows every tool not denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Tools these callers may not use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// Requests per agent as a token bucket, and calls in flight per upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Sustained rate per agent as COUNT/UNIT, unit `s`, `m` or `h` (e.g. `50/s`).
    #[serde(default = "default_rate")]
    #[schemars(regex(pattern = nsh_contract::rate::PATTERN))]
    pub rate: String,
    /// Requests allowed at once above the sustained rate.
    #[serde(default = "default_burst")]
    #[schemars(range(min = 1))]
    pub burst: u32,
    /// Calls in flight to one upstream, across every caller.
    #[serde(default = "default_concurrency")]
    #[schemars(range(min = 1, max = 10000))]
    pub upstream_concurrency: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            rate: default_rate(),
            burst: default_burst(),
            upstream_concurrency: default_concurrency(),
        }
    }
}

fn default_rate() -> String {
    "50/s".to_owned()
}
fn default_burst() -> u32 {
    100
}
fn default_concurrency() -> u32 {
    64
}

/// The audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Audit {
    /// Write one JSON line per request (caller, method, tool, decision, latency, size, error).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Also log call arguments, with `redact` applied (they may contain secrets).
    #[serde(default)]
    pub log_arguments: bool,
    /// Where the lines go: `stdout` (the default; what a pod's log collector reads) or a file
    /// path, appended to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Argument keys (globs, any depth, case-insensitive) whose values are replaced by
    /// `[redacted]`; the default covers tokens, secrets, passwords, keys and authorization.
    #[serde(default = "default_redact")]
    pub redact: Vec<String>,
}

impl Default for Audit {
    fn default() -> Self {
        Self {
            enabled: true,
            log_arguments: false,
            file: None,
            redact: default_redact(),
        }
    }
}

fn default_redact() -> Vec<String> {
    [
        "*token*",
        "*secret*",
        "*password*",
        "*passwd*",
        "*apikey*",
        "*api_key*",
        "authorization",
        "cookie",
    ]
    .map(String::from)
    .to_vec()
}

/// The gateway's file (`nsh gateway run --config gateway.yaml`): where it listens, whom it
/// trusts, and the [`GatewayPolicy`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayConfig {
    /// Address of the MCP endpoint (`/mcp`) and of `/healthz`, `/readyz`, `/metrics`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The audience a token must name to be accepted here (`aud`); a mesh-only token does
    /// not. The operator sets `nsh-gateway/<namespace>/<name>`.
    #[serde(default = "default_audience")]
    pub audience: String,
    /// Folder of team keys, one file per team named after it (as `nsh mesh server --keys`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_keys_dir: Option<String>,
    /// Teams whose agents may call the gateway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub teams: Vec<String>,
    /// Where tool pins the gateway records are kept (JSON); next to this file when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pins_file: Option<String>,
    #[serde(flatten)]
    pub policy: GatewayPolicy,
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_owned()
}

fn default_audience() -> String {
    DEFAULT_AUDIENCE.to_owned()
}

impl GatewayConfig {
    /// Parses and checks a config file's text; errors name the file, the field and the fix.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: Self = serde_saphyr::from_str(text).map_err(|e| ConfigError {
            field: String::new(),
            why: e
                .to_string()
                .replace("<input>", &path.display().to_string()),
            fix: "see docs/gateway.md for the file's fields".into(),
        })?;
        // `flatten` rules out serde's deny_unknown_fields, and a misspelt `toolPolicy` must
        // not silently allow everything: hold every key to the schema.
        let value: serde_json::Value = serde_saphyr::from_str(text).unwrap_or_default();
        let schema = serde_json::to_value(schemars::schema_for!(GatewayConfig))
            .expect("a schema serializes");
        if let Some(field) = unknown_key(&value, &schema, &schema, "") {
            return Err(ConfigError {
                field,
                why: "is not a field of the gateway's config".into(),
                fix: "check its spelling against docs/gateway.md".into(),
            });
        }
        check(&config)?;
        Ok(config)
    }

    /// Reads, parses and checks `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            field: String::new(),
            why: format!("cannot read {}: {e}", path.display()),
            fix: "pass the gateway's config file with --config".into(),
        })?;
        Self::parse(path, &text).map_err(|e| e.in_file(path))
    }

    /// Where recorded pins live: `pinsFile`, else `<config>.pins.json` beside the config.
    pub fn pins_path(&self, config: &Path) -> PathBuf {
        match &self.pins_file {
            Some(file) => config
                .parent()
                .unwrap_or(Path::new("."))
                .join(expand_home(file)),
            None => config.with_extension("pins.json"),
        }
    }
}

/// The path of the first key of `value` that `schema` does not define.
fn unknown_key(
    value: &serde_json::Value,
    schema: &serde_json::Value,
    root: &serde_json::Value,
    at: &str,
) -> Option<String> {
    let schema = resolve(schema, root);
    match value {
        serde_json::Value::Object(map) => {
            let properties = schema.get("properties")?.as_object()?;
            for (key, item) in map {
                let field = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                match properties.get(key) {
                    None => return Some(field),
                    Some(inner) => {
                        if let Some(found) = unknown_key(item, inner, root, &field) {
                            return Some(found);
                        }
                    }
                }
            }
            None
        }
        serde_json::Value::Array(items) => {
            let inner = schema.get("items")?;
            items
                .iter()
                .enumerate()
                .find_map(|(index, item)| unknown_key(item, inner, root, &format!("{at}[{index}]")))
        }
        _ => None,
    }
}

/// Follows `$ref` and picks the object branch of `anyOf`/`oneOf` (an `Option` of a struct).
fn resolve<'a>(
    schema: &'a serde_json::Value,
    root: &'a serde_json::Value,
) -> &'a serde_json::Value {
    if let Some(reference) = schema.get("$ref").and_then(|r| r.as_str())
        && let Some(name) = reference.strip_prefix("#/$defs/")
        && let Some(found) = root.get("$defs").and_then(|d| d.get(name))
    {
        return resolve(found, root);
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(branches) = schema.get(key).and_then(|b| b.as_array())
            && let Some(object) = branches
                .iter()
                .map(|b| resolve(b, root))
                .find(|b| b.get("properties").is_some() || b.get("items").is_some())
        {
            return object;
        }
    }
    schema
}

fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// Replaces each `${NAME}` in `value` by `lookup(NAME)`; names the first variable not set.
pub fn expand_env(
    value: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, MissingVariable> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        out.push_str(&lookup(name).ok_or_else(|| MissingVariable(name.to_owned()))?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable `{0}` is not set")]
pub struct MissingVariable(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_references_expand_and_a_missing_one_is_named() {
        let env = |name: &str| (name == "TOKEN").then(|| "abc".to_owned());
        assert_eq!(expand_env("Bearer ${TOKEN}", env).unwrap(), "Bearer abc");
        assert_eq!(expand_env("plain", env).unwrap(), "plain");
        assert_eq!(expand_env("a ${TOKEN", env).unwrap(), "a ${TOKEN");
        assert_eq!(
            expand_env("${NOPE}", env).unwrap_err(),
            MissingVariable("NOPE".into())
        );
    }

    #[test]
    fn a_minimal_file_gets_the_documented_defaults() {
        let config = GatewayConfig::parse(
            Path::new("gw.yaml"),
            "teamKeysDir: keys\nteams: [alpha]\nupstreams:\n- name: echo\n  command: { command: echo-mcp }\n",
        )
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:8080");
        assert_eq!(config.audience, DEFAULT_AUDIENCE);
        assert!(config.policy.audit.enabled);
        assert!(!config.policy.audit.log_arguments);
        assert_eq!(config.policy.rate_limit.rate, "50/s");
        assert!(config.policy.upstreams[0].required);
        assert_eq!(
            config.policy.upstreams[0].call_timeout(),
            Duration::from_secs(300)
        );
        assert_eq!(
            config.pins_path(Path::new("/etc/gw.yaml")),
            Path::new("/etc/gw.pins.json")
        );
    }

    #[test]
    fn a_misspelt_key_is_refused_by_its_path() {
        let err = GatewayConfig::parse(
            Path::new("gw.yaml"),
            "upstreams:\n- name: a\n  url: http://x\n  header: []\ntoolpolicy: {}\n",
        )
        .unwrap_err();
        assert_eq!(err.field, "upstreams[0].header");
        let err = GatewayConfig::parse(
            Path::new("gw.yaml"),
            "upstreams:\n- name: a\n  url: http://x\ntoolpolicy: {}\n",
        )
        .unwrap_err();
        assert_eq!(err.field, "toolpolicy");
        let err = GatewayConfig::parse(
            Path::new("gw.yaml"),
            "upstreams:\n- name: a\n  url: http://x\n  headers: [ { name: A, value: b, valu: c } ]\n",
        )
        .unwrap_err();
        assert_eq!(err.field, "upstreams[0].headers[0].valu");
    }

    #[test]
    fn unknown_or_mistyped_keys_name_the_line() {
        let err = GatewayConfig::parse(Path::new("gw.yaml"), "upstreams: 3\n").unwrap_err();
        assert!(err.to_string().contains("gw.yaml"), "{err}");
    }
}

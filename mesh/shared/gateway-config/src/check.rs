//! What serde cannot check, with errors that name the field and say how to fix it. The same
//! checks run on the McpGateway spec (field prefix `spec`) and on `gateway.yaml` (no prefix).

use std::collections::BTreeSet;
use std::path::Path;

use crate::{GatewayConfig, GatewayPolicy, names};

/// A refused configuration: the field (`upstreams[1].name`), why, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{why}; {fix}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
pub struct ConfigError {
    pub field: String,
    pub why: String,
    pub fix: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, why: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            why: why.into(),
            fix: fix.into(),
        }
    }

    /// Names the file in front of the field.
    pub fn in_file(mut self, path: &Path) -> Self {
        let file = path.display().to_string();
        if !self.why.contains(&file) {
            self.field = if self.field.is_empty() {
                file
            } else {
                format!("{file}: {}", self.field)
            };
        }
        self
    }
}

/// Checks a whole config file.
pub fn check(config: &GatewayConfig) -> Result<(), ConfigError> {
    if config.listen.parse::<std::net::SocketAddr>().is_err() {
        return Err(ConfigError::new(
            "listen",
            format!("`{}` is not an address", config.listen),
            "use HOST:PORT with an IP address, e.g. 127.0.0.1:8080 or 0.0.0.0:8080",
        ));
    }
    if config.audience.trim().is_empty() {
        return Err(ConfigError::new(
            "audience",
            "is empty",
            "name this gateway, e.g. nsh-gateway (tokens must carry it in `aud`)",
        ));
    }
    if config.audience == "nsh-mesh" {
        return Err(ConfigError::new(
            "audience",
            "`nsh-mesh` is the mesh's audience: every mesh token would be accepted here",
            "give the gateway its own audience, e.g. nsh-gateway",
        ));
    }
    for (index, team) in config.teams.iter().enumerate() {
        if team != "*"
            && let Some(why) = nsh_contract::names::check(team)
        {
            return Err(ConfigError::new(
                format!("teams[{index}]"),
                format!("`{team}` {why}"),
                "use a team name as `nsh mesh keygen` names its key file",
            ));
        }
    }
    check_policy(&config.policy, "")
}

/// Checks the policy part; `prefix` is where it sits (`spec` in an McpGateway, empty in a
/// file).
pub fn check_policy(policy: &GatewayPolicy, prefix: &str) -> Result<(), ConfigError> {
    let at = |field: String| {
        if prefix.is_empty() {
            field
        } else {
            format!("{prefix}.{field}")
        }
    };
    if policy.upstreams.is_empty() {
        return Err(ConfigError::new(
            at("upstreams".into()),
            "no upstream",
            "list at least one MCP server (url or command)",
        ));
    }
    let mut seen = BTreeSet::new();
    for (index, upstream) in policy.upstreams.iter().enumerate() {
        let field = |name: &str| at(format!("upstreams[{index}].{name}"));
        if let Some(why) = names::check_upstream(&upstream.name) {
            return Err(ConfigError::new(
                field("name"),
                format!("`{}` {why}", upstream.name),
                "use letters, digits, '.', '-' and single '_' (tools are exposed as <name>__<tool>)",
            ));
        }
        if !seen.insert(upstream.name.as_str()) {
            return Err(ConfigError::new(
                field("name"),
                format!("`{}` is used twice", upstream.name),
                "give every upstream its own name (tools are exposed as <name>__<tool>)",
            ));
        }
        match (&upstream.url, &upstream.command) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(ConfigError::new(
                    field("url"),
                    "an upstream needs exactly one of url or command",
                    "keep url for a streamable HTTP server or command for a stdio server",
                ));
            }
            (Some(url), None) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(ConfigError::new(
                        field("url"),
                        format!("`{url}` is not an http(s) URL"),
                        "use the server's streamable HTTP endpoint, e.g. https://host/mcp",
                    ));
                }
            }
            (None, Some(command)) => {
                if command.command.trim().is_empty() {
                    return Err(ConfigError::new(
                        field("command.command"),
                        "is empty",
                        "name the program that runs the stdio MCP server",
                    ));
                }
                if !upstream.headers.is_empty() {
                    return Err(ConfigError::new(
                        field("headers"),
                        "headers are for url upstreams",
                        "pass a stdio server's secrets in command.env",
                    ));
                }
            }
        }
        for (h, header) in upstream.headers.iter().enumerate() {
            if header.value.is_some() == header.value_from.is_some() {
                return Err(ConfigError::new(
                    field(&format!("headers[{h}]")),
                    "a header needs exactly one of value or valueFrom",
                    "use value (with ${ENV} references) or valueFrom.secretKeyRef",
                ));
            }
        }
        for (name, text) in [
            ("listTimeout", &upstream.list_timeout),
            ("callTimeout", &upstream.call_timeout),
        ] {
            if let Some(text) = text
                && humantime::parse_duration(text).map_or(true, |d| d.is_zero())
            {
                return Err(ConfigError::new(
                    field(name),
                    format!("`{text}` is not a positive duration"),
                    "use e.g. 500ms, 30s or 5m",
                ));
            }
        }
    }
    let rules = &policy.tool_policy;
    for (list, patterns) in [("allow", &rules.allow), ("deny", &rules.deny)] {
        check_globs(&at(format!("toolPolicy.{list}")), patterns)?;
    }
    for (index, rule) in rules.rules.iter().enumerate() {
        for (list, patterns) in [
            ("teams", &rule.teams),
            ("agents", &rule.agents),
            ("allow", &rule.allow),
            ("deny", &rule.deny),
        ] {
            check_globs(&at(format!("toolPolicy.rules[{index}].{list}")), patterns)?;
        }
        if rule.allow.is_empty() && rule.deny.is_empty() {
            return Err(ConfigError::new(
                at(format!("toolPolicy.rules[{index}]")),
                "the rule neither allows nor denies anything",
                "give it allow or deny patterns, or remove it",
            ));
        }
    }
    if let Err(err) = policy.rate_limit.rate.parse::<nsh_contract::rate::Rate>() {
        return Err(ConfigError::new(
            at("rateLimit.rate".into()),
            err.to_string(),
            "e.g. 50/s",
        ));
    }
    if policy.rate_limit.burst == 0 || policy.rate_limit.upstream_concurrency == 0 {
        return Err(ConfigError::new(
            at("rateLimit".into()),
            "burst and upstreamConcurrency must be at least 1",
            "raise the one that is 0",
        ));
    }
    for (tool, hash) in &policy.pinned_tools {
        if !hash.starts_with("sha256:") || hash.len() != 7 + 64 {
            return Err(ConfigError::new(
                at(format!("pinnedTools.{tool}")),
                format!("`{hash}` is not a pin"),
                "copy the sha256:… value `nsh gateway pins list` prints",
            ));
        }
    }
    Ok(())
}

fn check_globs(field: &str, patterns: &[String]) -> Result<(), ConfigError> {
    for (index, pattern) in patterns.iter().enumerate() {
        if pattern.trim().is_empty() {
            return Err(ConfigError::new(
                format!("{field}[{index}]"),
                "is empty",
                "use a name or a glob such as github__*",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> Result<GatewayConfig, ConfigError> {
        GatewayConfig::parse(Path::new("gw.yaml"), text)
    }

    const BASE: &str = "teams: [alpha]\nupstreams:\n- name: echo\n  url: http://127.0.0.1:1/mcp\n";

    #[test]
    fn each_refusal_names_its_field() {
        for (extra, field) in [
            ("listen: nowhere\n", "listen:"),
            ("audience: nsh-mesh\n", "audience:"),
            ("teams: [bad/team]\n", "teams[0]:"),
            ("rateLimit: { rate: fast }\n", "rateLimit.rate:"),
            (
                "toolPolicy: { rules: [ { teams: [alpha] } ] }\n",
                "toolPolicy.rules[0]:",
            ),
            ("toolPolicy: { deny: [''] }\n", "toolPolicy.deny[0]:"),
            ("pinnedTools: { echo__x: abc }\n", "pinnedTools.echo__x:"),
        ] {
            let text = format!("{BASE}{extra}").replace("teams: [alpha]\n", "");
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.starts_with(field), "{extra:?} gave {err}");
        }
        for (upstreams, field) in [
            ("- { name: a__b, url: 'http://x' }", "upstreams[0].name:"),
            (
                "- { name: a, url: 'http://x' }\n- { name: a, url: 'http://y' }",
                "upstreams[1].name:",
            ),
            ("- { name: a }", "upstreams[0].url:"),
            ("- { name: a, url: 'ftp://x' }", "upstreams[0].url:"),
            (
                "- { name: a, command: { command: x }, headers: [ { name: A, value: b } ] }",
                "upstreams[0].headers:",
            ),
            (
                "- { name: a, url: 'http://x', headers: [ { name: A } ] }",
                "upstreams[0].headers[0]:",
            ),
            (
                "- { name: a, url: 'http://x', callTimeout: soon }",
                "upstreams[0].callTimeout:",
            ),
        ] {
            let err = parse(&format!("upstreams:\n{upstreams}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(field), "{upstreams:?} gave {err}");
        }
    }

    #[test]
    fn the_spec_prefix_is_named_for_the_operator() {
        let mut config = parse(BASE).unwrap();
        config.policy.upstreams[0].name = "x__y".into();
        let err = check_policy(&config.policy, "spec").unwrap_err();
        assert_eq!(err.field, "spec.upstreams[0].name");
    }
}

#[cfg(test)]
mod properties {
    use std::path::Path;

    use proptest::prelude::*;

    use crate::{Command, GatewayConfig, GatewayPolicy, PolicyRule, ToolPolicy, Upstream};

    fn upstream() -> impl Strategy<Value = Upstream> {
        (
            "[a-z][a-z0-9-]{0,10}",
            prop::bool::ANY,
            "[a-z0-9/._-]{1,20}",
            prop::collection::vec("[a-zA-Z0-9 _.-]{0,12}", 0..3),
        )
            .prop_map(|(name, is_url, target, args)| Upstream {
                name,
                url: is_url.then(|| format!("http://127.0.0.1:9/{target}")),
                headers: Vec::new(),
                command: (!is_url).then(|| Command {
                    command: target,
                    args,
                    env: Default::default(),
                    image: None,
                }),
                required: true,
                list_timeout: None,
                call_timeout: None,
            })
    }

    fn globs() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec("[a-z*_?]{1,12}", 0..3)
    }

    proptest! {
        /// Whatever the text, parsing answers (a config or an error naming a field), never
        /// panics.
        #[test]
        fn any_text_is_parsed_or_refused(text in "\\PC{0,300}") {
            let _ = GatewayConfig::parse(Path::new("gw.yaml"), &text);
        }

        /// A config the types can hold that passes the checks survives being written and read
        /// back (the operator writes what the gateway reads).
        #[test]
        fn valid_configs_round_trip(
            upstreams in prop::collection::vec(upstream(), 1..4),
            allow in globs(),
            deny in globs(),
            rules in prop::collection::vec((globs(), globs(), globs(), globs()), 0..3),
            log_arguments in prop::bool::ANY,
        ) {
            let mut config = GatewayConfig {
                listen: "0.0.0.0:8080".into(),
                audience: "nsh-gateway/ns/gw".into(),
                team_keys_dir: Some("/keys".into()),
                teams: vec!["alpha".into()],
                pins_file: None,
                policy: GatewayPolicy {
                    upstreams,
                    tool_policy: ToolPolicy {
                        allow,
                        deny,
                        rules: rules
                            .into_iter()
                            .map(|(teams, agents, allow, mut deny)| {
                                if allow.is_empty() && deny.is_empty() {
                                    deny.push("x".into());
                                }
                                PolicyRule { teams, agents, allow, deny }
                            })
                            .collect(),
                    },
                    ..GatewayPolicy::default()
                },
            };
            config.policy.audit.log_arguments = log_arguments;
            // Names must be unique; keep the first of each.
            let mut seen = std::collections::BTreeSet::new();
            config.policy.upstreams.retain(|u| seen.insert(u.name.clone()));
            prop_assume!(super::check(&config).is_ok());
            let text = serde_saphyr::to_string(&config).unwrap();
            let back = GatewayConfig::parse(Path::new("gw.yaml"), &text)
                .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert_eq!(back, config);
        }
    }
}

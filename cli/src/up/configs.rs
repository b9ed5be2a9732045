//! The files `nsh up` writes for its parts: the gateway's config (the built-in presets that
//! need no credentials as upstreams) and one `nsh agent launch` config per agent.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use nsh_agent_config::catalog::{self, CatalogContext};
use nsh_agent_config::settings::{McpServer, McpSettings, MeshSettings, Settings, Transport};

use super::LOCAL_TEAM;

/// The audience of the local gateway (the gateway's own default).
pub(crate) const GATEWAY_AUDIENCE: &str = "nsh-gateway";

/// Presets that work without an account or a token, in the order the gateway lists them.
const CREDENTIAL_FREE: [&str; 4] = ["filesystem", "memory", "git", "fetch"];

/// One upstream of the local gateway, or why a preset was left out.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Upstream {
    Included {
        name: String,
        server: McpServer,
    },
    /// Its launcher (`npx`, `uvx`) is not on PATH.
    LeftOut {
        name: String,
        missing: String,
    },
}

/// The credential-free presets for `project_dir`, each included when `on_path` finds its
/// launcher.
pub(crate) fn upstreams(project_dir: &Path, on_path: impl Fn(&str) -> bool) -> Vec<Upstream> {
    let context = CatalogContext {
        project_dir: project_dir.to_owned(),
        nsh: "nsh".to_owned(),
        ..CatalogContext::default()
    };
    CREDENTIAL_FREE
        .iter()
        .filter_map(|name| {
            let server = catalog::preset(name, &context).ok()?;
            let launcher = server.command.clone()?;
            Some(if on_path(&launcher) {
                Upstream::Included {
                    name: (*name).to_owned(),
                    server,
                }
            } else {
                Upstream::LeftOut {
                    name: (*name).to_owned(),
                    missing: launcher,
                }
            })
        })
        .collect()
}

/// Whether `program` is an executable file in one of PATH's folders.
pub(crate) fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// The gateway's config: team `local`'s key folder, the included upstreams (none of them
/// required, so a slow `npx` download does not hold readiness back).
pub(crate) fn gateway_config(listen: SocketAddr, upstreams: &[Upstream]) -> String {
    let mut text = format!(
        "# Written by `nsh up` at every start (edits are lost): the local stack's MCP gateway.\n\
         # For a gateway of your own, copy this file and run `nsh gateway run --config FILE`.\n\
         listen: {listen}\n\
         audience: {GATEWAY_AUDIENCE}\n\
         teamKeysDir: team-keys\n\
         teams: [{LOCAL_TEAM}]\n\
         upstreams:\n"
    );
    for upstream in upstreams {
        let Upstream::Included { name, server } = upstream else {
            continue;
        };
        let command = json(server.command.as_deref().unwrap_or_default());
        let args: Vec<String> = server.args.iter().flatten().map(|a| json(a)).collect();
        let _ = writeln!(
            text,
            "  - name: {name}\n    required: false\n    command: {{ command: {command}, args: [{}] }}",
            args.join(", ")
        );
    }
    text
}

/// A YAML flow scalar for any string (JSON's quoting is valid YAML).
fn json(value: &str) -> String {
    serde_json::Value::String(value.to_owned()).to_string()
}

/// An `nsh agent launch --config` file's settings: the mesh preset with its token, the mesh
/// hooks, and each gateway `(name, url)` (its header from the same token file, read at each
/// connect).
pub(crate) fn agent_settings(
    nsh: &str,
    mesh_url: &str,
    gateways: &[(String, String)],
    token_file: &Path,
) -> Settings {
    let token = token_file.display().to_string();
    let servers: BTreeMap<String, McpServer> = gateways
        .iter()
        .map(|(name, url)| {
            let server = McpServer {
                transport: Some(Transport::Http),
                url: Some(url.clone()),
                headers_helper: Some(format!(
                    "{nsh} mesh auth-header --token-file {}",
                    nsh_contract::quote::word(&token)
                )),
                ..McpServer::default()
            };
            (name.clone(), server)
        })
        .collect();
    Settings {
        mesh: Some(MeshSettings {
            server: Some(mesh_url.to_owned()),
            token_file: Some(token),
            hooks: Some(true),
            ..MeshSettings::default()
        }),
        mcp: Some(McpSettings {
            presets: Some(vec!["mesh".to_owned()]),
            servers: (!servers.is_empty()).then_some(servers),
            ..McpSettings::default()
        }),
        ..Settings::default()
    }
}

/// The file's text, under a comment that says who wrote it (`writer`) and how to run it.
pub(crate) fn agent_file(writer: &str, settings: &Settings) -> anyhow::Result<String> {
    let body = serde_saphyr::to_string(settings)?;
    Ok(format!(
        "# Written by {writer}.\n# Run it with: nsh agent launch --config THIS_FILE\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_whose_launcher_is_missing_are_left_out_with_the_reason() {
        let upstreams = upstreams(Path::new("/src/app"), |program| program == "npx");
        let names: Vec<String> = upstreams
            .iter()
            .map(|u| match u {
                Upstream::Included { name, .. } => format!("+{name}"),
                Upstream::LeftOut { name, missing } => format!("-{name}:{missing}"),
            })
            .collect();
        assert_eq!(
            names,
            ["+filesystem", "+memory", "-git:uvx", "-fetch:uvx"],
            "the credential-free presets, nothing that needs a token"
        );
    }

    #[test]
    fn the_gateway_config_is_one_the_gateway_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let upstreams = upstreams(Path::new("/src/my app"), |_| true);
        let text = gateway_config("127.0.0.1:8080".parse().unwrap(), &upstreams);
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, &text).unwrap();
        let config = nsh_gateway_config::GatewayConfig::load(&path).unwrap();
        assert_eq!(config.listen, "127.0.0.1:8080");
        let names: Vec<&str> = config
            .policy
            .upstreams
            .iter()
            .map(|u| u.name.as_str())
            .collect();
        assert_eq!(names, ["filesystem", "memory", "git", "fetch"]);
        assert!(text.contains("\"/src/my app\""), "{text}");
        assert!(config.policy.upstreams.iter().all(|u| !u.required));
    }

    #[test]
    fn the_agent_file_parses_as_a_launch_config() {
        let dir = tempfile::tempdir().unwrap();
        let settings = agent_settings(
            "nsh",
            "ws://127.0.0.1:3456",
            &[("nsh-gateway".into(), "http://127.0.0.1:8080/mcp".into())],
            &dir.path().join("alice.jwt"),
        );
        let text = agent_file("a test", &settings).unwrap();
        let parsed = nsh_agent_config::files::parse(&dir.path().join("alice.yaml"), &text)
            .unwrap()
            .settings;
        assert_eq!(parsed, settings);
    }
}

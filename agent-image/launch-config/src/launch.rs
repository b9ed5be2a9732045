//! What the merged settings turn into: the `claude` command line, its `--mcp-config` and
//! `--settings` files, and its environment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::layers::Resolved;
use crate::settings::{McpServer, Transport};

/// A file the command refers to, to be written before it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    pub path: PathBuf,
    pub contents: String,
    pub purpose: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub program: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub files: Vec<GeneratedFile>,
}

impl Launch {
    /// The command as one shell line: `K=V … program args…`, each word quoted as needed.
    pub fn shell_line(&self) -> String {
        use nsh_contract::quote;
        self.env
            .iter()
            .map(|(k, v)| format!("{k}={}", quote::word(v)))
            .chain(std::iter::once(quote::join(
                std::iter::once(self.program.as_str()).chain(self.args.iter().map(String::as_str)),
            )))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Builds the launch for `resolved`, with generated files in `out_dir`, `hook_command` the
/// prefix of the mesh hooks (e.g. `/usr/bin/nsh mesh hook`), and `extra` appended last.
pub fn assemble(
    resolved: &Resolved,
    out_dir: &Path,
    hook_command: &str,
    extra: &[String],
) -> Launch {
    let settings = &resolved.settings;
    let mut args = Vec::new();
    let mut files = Vec::new();
    if !resolved.servers.is_empty() {
        let path = out_dir.join("mcp.json");
        files.push(GeneratedFile {
            contents: pretty(&mcp_config(&resolved.servers)),
            path: path.clone(),
            purpose: "MCP servers (--mcp-config)",
        });
        args.extend(["--mcp-config".to_owned(), path.display().to_string()]);
    }
    let mesh = settings.mesh.clone().unwrap_or_default();
    if mesh.hooks == Some(true) {
        let path = out_dir.join("settings.json");
        let inbox = mesh
            .inbox_dir
            .as_ref()
            .map(|dir| format!(" --inbox-dir {}", nsh_contract::quote::word(dir)))
            .unwrap_or_default();
        // The hooks deliver this agent's mail only: its token names its team and agent.
        let owner = mesh
            .token_file
            .as_ref()
            .map(|file| format!(" --token-file {}", nsh_contract::quote::word(file)))
            .unwrap_or_default();
        let inbox = format!("{owner}{inbox}");
        files.push(GeneratedFile {
            contents: pretty(
                &json!({ "hooks": hooks(&|event| format!("{hook_command} {event}{inbox}")) }),
            ),
            path: path.clone(),
            purpose: "Claude Code settings with the mesh hooks (--settings)",
        });
        args.extend(["--settings".to_owned(), path.display().to_string()]);
    }
    if let Some(model) = &settings.model {
        args.extend(["--model".to_owned(), model.clone()]);
    }
    if let Some(mode) = settings.permission_mode {
        args.extend(["--permission-mode".to_owned(), mode.as_str().to_owned()]);
    }
    if let Some(prompt) = &settings.append_system_prompt {
        args.extend(["--append-system-prompt".to_owned(), prompt.clone()]);
    }
    args.extend(settings.args.clone().unwrap_or_default());
    args.extend(extra.iter().cloned());
    Launch {
        program: settings.command.clone().unwrap_or_else(|| "claude".into()),
        args,
        env: settings.env.clone().unwrap_or_default(),
        files,
    }
}

/// The hook events the mesh bridge answers, in Claude Code's names.
pub const HOOK_EVENTS: [&str; 4] = ["SessionStart", "UserPromptSubmit", "PostToolUse", "Stop"];

/// Claude Code's `hooks` settings object running `command(event)` for each mesh hook event.
pub fn hooks(command: &dyn Fn(&str) -> String) -> Value {
    let mut hooks = Map::new();
    for event in HOOK_EVENTS {
        let hook = json!({ "type": "command", "command": command(event), "timeout": 10 });
        let group = if event == "PostToolUse" {
            json!({ "matcher": "*", "hooks": [hook] })
        } else {
            json!({ "hooks": [hook] })
        };
        hooks.insert(event.to_owned(), json!([group]));
    }
    Value::Object(hooks)
}

/// `{ "mcpServers": { … } }` exactly as Claude Code's `--mcp-config` and `.mcp.json` take it.
pub fn mcp_config(servers: &BTreeMap<String, McpServer>) -> Value {
    let servers: Map<String, Value> = servers
        .iter()
        .map(|(name, server)| (name.clone(), claude_server(server)))
        .collect();
    json!({ "mcpServers": servers })
}

/// One server in Claude Code's shape: `{ command, args, env }` or
/// `{ type, url, headers, headersHelper }`.
pub fn claude_server(server: &McpServer) -> Value {
    let mut out = Map::new();
    match (&server.command, &server.url) {
        (Some(command), _) => {
            out.insert("type".into(), "stdio".into());
            out.insert("command".into(), command.clone().into());
            out.insert(
                "args".into(),
                json!(server.args.clone().unwrap_or_default()),
            );
            if let Some(env) = &server.env {
                out.insert("env".into(), json!(env));
            }
        }
        (None, Some(url)) => {
            let transport = match server.transport {
                Some(Transport::Sse) => "sse",
                _ => "http",
            };
            out.insert("type".into(), transport.into());
            out.insert("url".into(), url.clone().into());
            if let Some(headers) = &server.headers {
                out.insert("headers".into(), json!(headers));
            }
            if let Some(helper) = &server.headers_helper {
                out.insert("headersHelper".into(), helper.clone().into());
            }
        }
        (None, None) => {}
    }
    Value::Object(out)
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("JSON serializes");
    text.push('\n');
    text
}

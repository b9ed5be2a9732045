//! The one table of MCP clients: where each keeps its MCP servers, in which format, under which
//! key, and how it spells a remote server.

use std::path::{Path, PathBuf};

/// Which copy of a client's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every project of this user.
    User,
    /// This project, shared through the repository.
    Project,
    /// This project, this machine only (Claude Code's per-project entry in `~/.claude.json`).
    Local,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Project => "project",
            Self::Local => "local",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON, comments and trailing commas allowed (VS Code's files have them).
    Json,
    Toml,
}

/// How a client writes a server reached by URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remote {
    /// `{ "type": "http" | "sse", "url", "headers" }`.
    TypeAndUrl,
    /// `{ "url", "headers" }`, transport inferred.
    Url,
    /// Windsurf: `{ "serverUrl", "headers" }`.
    ServerUrl,
    /// Gemini CLI: `{ "httpUrl" }` for streamable HTTP, `{ "url" }` for SSE, `headers`.
    HttpUrl,
    /// Codex: `url` and `http_headers` in the server's TOML table.
    CodexUrl,
    /// The config file has no remote servers (Claude Desktop).
    Unsupported,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    Linux,
    MacOs,
    Windows,
}

/// What a client's paths depend on.
#[derive(Debug, Clone)]
pub struct Env {
    pub home: PathBuf,
    pub project_dir: PathBuf,
    pub os: Os,
    /// `%APPDATA%` on Windows.
    pub appdata: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME` on Linux.
    pub xdg_config_home: Option<PathBuf>,
    /// `$CODEX_HOME` (default `~/.codex`).
    pub codex_home: Option<PathBuf>,
}

impl Env {
    /// The environment of this process.
    pub fn current(home: PathBuf, project_dir: PathBuf) -> Self {
        let var = |name: &str| {
            std::env::var_os(name)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        Self {
            home,
            project_dir,
            os: if cfg!(target_os = "macos") {
                Os::MacOs
            } else if cfg!(windows) {
                Os::Windows
            } else {
                Os::Linux
            },
            appdata: var("APPDATA"),
            xdg_config_home: var("XDG_CONFIG_HOME"),
            codex_home: var("CODEX_HOME"),
        }
    }

    /// The per-user application config folder: `~/Library/Application Support`, `%APPDATA%`,
    /// or `$XDG_CONFIG_HOME` (`~/.config`).
    fn app_config(&self) -> PathBuf {
        match self.os {
            Os::MacOs => self.home.join("Library/Application Support"),
            Os::Windows => self
                .appdata
                .clone()
                .unwrap_or_else(|| self.home.join("AppData/Roaming")),
            Os::Linux => self
                .xdg_config_home
                .clone()
                .unwrap_or_else(|| self.home.join(".config")),
        }
    }
}

/// One place a client keeps MCP servers: a file, and the object inside it holding them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub scope: Scope,
    pub path: PathBuf,
    /// Keys from the top of the file to the servers object, e.g. `["mcpServers"]`, or
    /// `["projects", "/src/app", "mcpServers"]` for Claude Code's local scope.
    pub keys: Vec<String>,
}

/// An MCP client this tool knows.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub id: &'static str,
    pub name: &'static str,
    pub format: Format,
    pub remote: Remote,
    /// Whether stdio servers carry `"type": "stdio"` (VS Code requires it; Claude Code writes it).
    pub stdio_type: bool,
    locations: fn(&Env) -> Vec<Location>,
}

impl Client {
    pub fn locations(&self, env: &Env) -> Vec<Location> {
        (self.locations)(env)
    }

    pub fn location(&self, env: &Env, scope: Scope) -> Option<Location> {
        self.locations(env).into_iter().find(|l| l.scope == scope)
    }

    /// The scopes this client has, e.g. `user, project`.
    pub fn scopes(&self, env: &Env) -> Vec<Scope> {
        self.locations(env).iter().map(|l| l.scope).collect()
    }
}

fn at(scope: Scope, path: PathBuf, keys: &[&str]) -> Location {
    Location {
        scope,
        path,
        keys: keys.iter().map(|k| (*k).to_owned()).collect(),
    }
}

fn project_key(project: &Path) -> String {
    project.display().to_string()
}

pub const CLIENTS: &[Client] = &[
    Client {
        id: "claude-code",
        name: "Claude Code",
        format: Format::Json,
        remote: Remote::TypeAndUrl,
        stdio_type: true,
        locations: |env| {
            vec![
                at(Scope::User, env.home.join(".claude.json"), &["mcpServers"]),
                at(
                    Scope::Project,
                    env.project_dir.join(".mcp.json"),
                    &["mcpServers"],
                ),
                Location {
                    scope: Scope::Local,
                    path: env.home.join(".claude.json"),
                    keys: vec![
                        "projects".into(),
                        project_key(&env.project_dir),
                        "mcpServers".into(),
                    ],
                },
            ]
        },
    },
    Client {
        id: "claude-desktop",
        name: "Claude Desktop",
        format: Format::Json,
        remote: Remote::Unsupported,
        stdio_type: false,
        locations: |env| {
            vec![at(
                Scope::User,
                env.app_config().join("Claude/claude_desktop_config.json"),
                &["mcpServers"],
            )]
        },
    },
    Client {
        id: "cursor",
        name: "Cursor",
        format: Format::Json,
        remote: Remote::Url,
        stdio_type: false,
        locations: |env| {
            vec![
                at(
                    Scope::User,
                    env.home.join(".cursor/mcp.json"),
                    &["mcpServers"],
                ),
                at(
                    Scope::Project,
                    env.project_dir.join(".cursor/mcp.json"),
                    &["mcpServers"],
                ),
            ]
        },
    },
    Client {
        id: "vscode",
        name: "VS Code",
        format: Format::Json,
        remote: Remote::TypeAndUrl,
        stdio_type: true,
        locations: |env| {
            vec![
                at(
                    Scope::User,
                    env.app_config().join("Code/User/mcp.json"),
                    &["servers"],
                ),
                at(
                    Scope::Project,
                    env.project_dir.join(".vscode/mcp.json"),
                    &["servers"],
                ),
            ]
        },
    },
    Client {
        id: "windsurf",
        name: "Windsurf",
        format: Format::Json,
        remote: Remote::ServerUrl,
        stdio_type: false,
        locations: |env| {
            vec![at(
                Scope::User,
                env.home.join(".codeium/windsurf/mcp_config.json"),
                &["mcpServers"],
            )]
        },
    },
    Client {
        id: "codex",
        name: "Codex CLI",
        format: Format::Toml,
        remote: Remote::CodexUrl,
        stdio_type: false,
        locations: |env| {
            let home = env
                .codex_home
                .clone()
                .unwrap_or_else(|| env.home.join(".codex"));
            vec![at(Scope::User, home.join("config.toml"), &["mcp_servers"])]
        },
    },
    Client {
        id: "gemini",
        name: "Gemini CLI",
        format: Format::Json,
        remote: Remote::HttpUrl,
        stdio_type: false,
        locations: |env| {
            vec![
                at(
                    Scope::User,
                    env.home.join(".gemini/settings.json"),
                    &["mcpServers"],
                ),
                at(
                    Scope::Project,
                    env.project_dir.join(".gemini/settings.json"),
                    &["mcpServers"],
                ),
            ]
        },
    },
];

/// The client with id `id`.
pub fn client(id: &str) -> Option<&'static Client> {
    CLIENTS.iter().find(|c| c.id == id)
}

pub fn ids() -> Vec<&'static str> {
    CLIENTS.iter().map(|c| c.id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(os: Os) -> Env {
        Env {
            home: "/home/u".into(),
            project_dir: "/src/app".into(),
            os,
            appdata: Some("C:/Users/u/AppData/Roaming".into()),
            xdg_config_home: None,
            codex_home: None,
        }
    }

    #[test]
    fn paths_follow_each_clients_documentation() {
        let linux = env(Os::Linux);
        let path =
            |id: &str, scope, env: &Env| client(id).unwrap().location(env, scope).unwrap().path;
        assert_eq!(
            path("claude-code", Scope::User, &linux),
            Path::new("/home/u/.claude.json")
        );
        assert_eq!(
            path("claude-code", Scope::Project, &linux),
            Path::new("/src/app/.mcp.json")
        );
        assert_eq!(
            client("claude-code")
                .unwrap()
                .location(&linux, Scope::Local)
                .unwrap()
                .keys,
            ["projects", "/src/app", "mcpServers"]
        );
        assert_eq!(
            path("claude-desktop", Scope::User, &linux),
            Path::new("/home/u/.config/Claude/claude_desktop_config.json")
        );
        assert_eq!(
            path("claude-desktop", Scope::User, &env(Os::MacOs)),
            Path::new("/home/u/Library/Application Support/Claude/claude_desktop_config.json")
        );
        assert_eq!(
            path("claude-desktop", Scope::User, &env(Os::Windows)),
            Path::new("C:/Users/u/AppData/Roaming/Claude/claude_desktop_config.json")
        );
        assert_eq!(
            path("vscode", Scope::User, &linux),
            Path::new("/home/u/.config/Code/User/mcp.json")
        );
        assert_eq!(
            path("vscode", Scope::Project, &linux),
            Path::new("/src/app/.vscode/mcp.json")
        );
        assert_eq!(
            path("cursor", Scope::User, &linux),
            Path::new("/home/u/.cursor/mcp.json")
        );
        assert_eq!(
            path("windsurf", Scope::User, &linux),
            Path::new("/home/u/.codeium/windsurf/mcp_config.json")
        );
        assert_eq!(
            path("codex", Scope::User, &linux),
            Path::new("/home/u/.codex/config.toml")
        );
        assert_eq!(
            path("gemini", Scope::User, &linux),
            Path::new("/home/u/.gemini/settings.json")
        );
        assert_eq!(ids().len(), 7);
    }
}

//! MCP servers across MCP clients: which clients there are and where their configs live
//! ([`clients`]), how each spells a server ([`shape`]), and in-place edits of their files
//! ([`edit`]). `nsh mcp list-installed|install|uninstall|doctor` is built on these.
#![forbid(unsafe_code)]

pub mod clients;
pub mod edit;
pub mod shape;

use std::path::PathBuf;

use nsh_agent_config::settings::McpServer;
use serde_json::Value;

use crate::clients::{CLIENTS, Client, Env, Scope};
use crate::edit::{ConfigDoc, EditError};
use crate::shape::ShapeError;

/// One server found in one client's config.
#[derive(Debug, Clone)]
pub struct Installed {
    pub client: &'static Client,
    pub scope: Scope,
    pub path: PathBuf,
    pub name: String,
    pub server: McpServer,
}

/// A config file that exists but could not be read.
#[derive(Debug)]
pub struct FileProblem {
    pub client: &'static Client,
    pub scope: Scope,
    pub path: PathBuf,
    pub error: EditError,
}

/// Every server in every existing config file (of `only`, when given), and the files that
/// could not be read.
pub fn list_installed(env: &Env, only: Option<&Client>) -> (Vec<Installed>, Vec<FileProblem>) {
    let mut installed = Vec::new();
    let mut problems = Vec::new();
    for client in CLIENTS.iter().filter(|c| only.is_none_or(|o| o.id == c.id)) {
        for location in client.locations(env) {
            if !location.path.is_file() {
                continue;
            }
            let servers = ConfigDoc::load(&location.path, client.format)
                .and_then(|doc| doc.servers(&location.keys));
            match servers {
                Ok(servers) => {
                    installed.extend(servers.into_iter().map(|(name, value)| Installed {
                        client,
                        scope: location.scope,
                        path: location.path.clone(),
                        name,
                        server: shape::from_client(&value),
                    }));
                }
                Err(error) => problems.push(FileProblem {
                    client,
                    scope: location.scope,
                    path: location.path.clone(),
                    error,
                }),
            }
        }
    }
    (installed, problems)
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{client} has no {scope} scope (it has: {available})")]
    NoScope {
        client: &'static str,
        scope: &'static str,
        available: String,
    },
    #[error("{name}: {error}")]
    Shape { name: String, error: ShapeError },
    #[error(transparent)]
    Edit(#[from] EditError),
    #[error("`{name}` is not installed in {client}")]
    NotInstalled { name: String, client: &'static str },
    #[error(
        "`{name}` is not installed in {client}'s {scope} scope; it is in the {found} scope: pass --scope {found}"
    )]
    InOtherScope {
        name: String,
        client: &'static str,
        scope: &'static str,
        found: String,
    },
    #[error(
        "`{name}` is already in {path} ({client}) with other settings; nothing was written. The edit would be:\n{diff}pass --force to replace it, or install under another name"
    )]
    Exists {
        name: String,
        client: &'static str,
        path: PathBuf,
        diff: String,
    },
    #[error(
        "`{name}` is installed in {client} in several scopes ({scopes}); pick one with --scope"
    )]
    Ambiguous {
        name: String,
        client: &'static str,
        scopes: String,
    },
}

/// What an install or uninstall did to which file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: PathBuf,
    pub scope: Scope,
    pub changed: bool,
    pub backup: Option<PathBuf>,
    /// The edit as a unified diff (empty when nothing changes).
    pub diff: String,
    /// Whether the file was written (false for a dry run or no change).
    pub written: bool,
    /// Whether the file was deleted: an uninstall left it as empty as before the install.
    pub deleted: bool,
}

/// How [`install`] treats what is there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InstallOptions {
    /// Replace a server of the same name that differs (otherwise refused).
    pub force: bool,
    /// Compute the edit, write nothing.
    pub dry_run: bool,
}

fn location(
    client: &'static Client,
    env: &Env,
    scope: Scope,
) -> Result<clients::Location, InstallError> {
    client
        .location(env, scope)
        .ok_or_else(|| InstallError::NoScope {
            client: client.name,
            scope: scope.as_str(),
            available: client
                .scopes(env)
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Adds `server` as `name` to `client`'s config in `scope`. A different server already there
/// under that name is replaced only with `options.force`.
pub fn install(
    client: &'static Client,
    env: &Env,
    scope: Scope,
    name: &str,
    server: &McpServer,
    options: InstallOptions,
) -> Result<Change, InstallError> {
    let location = location(client, env, scope)?;
    let value: Value = shape::to_client(client, server).map_err(|error| InstallError::Shape {
        name: name.to_owned(),
        error,
    })?;
    let mut doc = ConfigDoc::load(&location.path, client.format)?;
    let existing = doc.server(&location.keys, name)?;
    let changed = doc.upsert(&location.keys, name, &value)?;
    let diff = doc.diff();
    if changed && existing.is_some() && !options.force {
        return Err(InstallError::Exists {
            name: name.to_owned(),
            client: client.name,
            path: location.path,
            diff,
        });
    }
    let written = changed && !options.dry_run;
    let backup = if written { doc.save()? } else { None };
    Ok(Change {
        path: location.path,
        scope,
        changed,
        backup,
        diff,
        written,
        deleted: false,
    })
}

/// Removes `name` from `client`'s config in `scope`, or wherever it is when `scope` is `None`.
pub fn uninstall(
    client: &'static Client,
    env: &Env,
    scope: Option<Scope>,
    name: &str,
) -> Result<Change, InstallError> {
    let scope = match scope {
        Some(scope) => scope,
        None => {
            let (installed, _) = list_installed(env, Some(client));
            let scopes: Vec<Scope> = installed
                .iter()
                .filter(|i| i.name == name)
                .map(|i| i.scope)
                .collect();
            match scopes.as_slice() {
                [] => {
                    return Err(InstallError::NotInstalled {
                        name: name.to_owned(),
                        client: client.name,
                    });
                }
                [one] => *one,
                many => {
                    return Err(InstallError::Ambiguous {
                        name: name.to_owned(),
                        client: client.name,
                        scopes: many
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
            }
        }
    };
    let location = location(client, env, scope)?;
    let mut doc = ConfigDoc::load(&location.path, client.format)?;
    if !doc.remove(&location.keys, name)? {
        let (installed, _) = list_installed(env, Some(client));
        let found: Vec<&str> = installed
            .iter()
            .filter(|i| i.name == name)
            .map(|i| i.scope.as_str())
            .collect();
        if found.is_empty() {
            return Err(InstallError::NotInstalled {
                name: name.to_owned(),
                client: client.name,
            });
        }
        return Err(InstallError::InOtherScope {
            name: name.to_owned(),
            client: client.name,
            scope: scope.as_str(),
            found: found.join(", "),
        });
    }
    let diff = doc.diff();
    let (backup, deleted) = doc.save_or_delete(&location.keys)?;
    Ok(Change {
        path: location.path,
        scope,
        changed: true,
        backup,
        diff,
        written: true,
        deleted,
    })
}

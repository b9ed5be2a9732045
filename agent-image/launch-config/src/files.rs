//! Finding and parsing config files: `.agent.yaml` walking up from the working directory, and
//! the user's `~/.config/nsh/agent.yaml`.

use std::path::{Path, PathBuf};

use crate::layers::ConfigFile;
use crate::settings::Settings;

pub const PROJECT_FILE: &str = ".agent.yaml";

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// serde-saphyr's message names the line, the column and the key.
    #[error("{path}: {why}")]
    Invalid { path: PathBuf, why: String },
}

/// Parses one config file's text; errors name the file, the line and the key.
pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, FileError> {
    let settings = if text.trim().is_empty() {
        Settings::default()
    } else {
        serde_saphyr::from_str::<Settings>(text).map_err(|e| FileError::Invalid {
            path: path.to_owned(),
            // The snippet says `<input>`; name the file instead.
            why: e
                .to_string()
                .replace("<input>", &path.display().to_string()),
        })?
    };
    Ok(ConfigFile {
        path: path.to_owned(),
        settings,
        text: text.to_owned(),
    })
}

/// Makes `mesh.tokenFile` (at the top level and in every profile) an absolute path: `~/…` is
/// under `home`, a relative path is under the config file's folder (not wherever `nsh` runs
/// from). Errors name the file, the line and the fix.
pub fn resolve_paths(file: &mut ConfigFile, home: Option<&Path>) -> Result<(), FileError> {
    let folder = file.path.parent().unwrap_or(Path::new("/")).to_owned();
    let (path, text) = (file.path.clone(), file.text.clone());
    each_token_file(&mut file.settings, &mut |token_file| {
        let resolved = if token_file == "~" || token_file.starts_with("~/") {
            let home = home.ok_or_else(|| FileError::Invalid {
                path: path.clone(),
                why: format!(
                    "{}mesh.tokenFile: `{token_file}` starts with `~` but HOME is not set; give an absolute path",
                    line_of(&text, "tokenFile")
                ),
            })?;
            home.join(token_file.trim_start_matches('~').trim_start_matches('/'))
        } else if token_file.starts_with('~') {
            return Err(FileError::Invalid {
                path: path.clone(),
                why: format!(
                    "{}mesh.tokenFile: `{token_file}`: only `~/` (your own home) is expanded; give an absolute path",
                    line_of(&text, "tokenFile")
                ),
            });
        } else {
            folder.join(&*token_file)
        };
        *token_file = resolved.display().to_string();
        Ok(())
    })
}

/// Calls `change` on `mesh.tokenFile` of `settings` and of every profile in it.
fn each_token_file(
    settings: &mut Settings,
    change: &mut impl FnMut(&mut String) -> Result<(), FileError>,
) -> Result<(), FileError> {
    if let Some(token_file) = settings.mesh.as_mut().and_then(|m| m.token_file.as_mut()) {
        change(token_file)?;
    }
    for profile in settings.profiles.iter_mut().flat_map(|p| p.values_mut()) {
        each_token_file(profile, change)?;
    }
    Ok(())
}

/// Checks that the files the settings name exist, so a missing token is reported at the line
/// that names it rather than by the mesh client after the agent started.
pub fn check_files(file: &ConfigFile) -> Result<(), FileError> {
    let token_file = file
        .settings
        .mesh
        .as_ref()
        .and_then(|m| m.token_file.as_deref());
    if let Some(token_file) = token_file
        && !Path::new(token_file).is_file()
    {
        return Err(FileError::Invalid {
            path: file.path.clone(),
            why: format!(
                "{}mesh.tokenFile: {token_file} does not exist; mint it with `nsh mesh token --team TEAM --agent NAME --key-file KEY --out {token_file}`",
                line_of(&file.text, "tokenFile")
            ),
        });
    }
    Ok(())
}

/// `line N: ` for the first line with `key:`, or nothing.
fn line_of(text: &str, key: &str) -> String {
    text.lines()
        .position(|line| line.trim_start().starts_with(&format!("{key}:")))
        .map(|index| format!("line {}: ", index + 1))
        .unwrap_or_default()
}

/// Reads and parses `path` and resolves its paths (see [`resolve_paths`] and [`check_files`]);
/// `None` when there is no such file.
pub fn load(path: &Path) -> Result<Option<ConfigFile>, FileError> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from);
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mut file = parse(path, &text)?;
            resolve_paths(&mut file, home.as_deref())?;
            check_files(&file)?;
            Ok(Some(file))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FileError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The nearest `.agent.yaml` in `start` or a folder above it.
pub fn find_project_file(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join(PROJECT_FILE))
        .find(|path| path.is_file())
}

/// `$XDG_CONFIG_HOME/nsh/agent.yaml`, else `~/.config/nsh/agent.yaml`.
pub fn user_file(xdg_config_home: Option<&Path>, home: &Path) -> PathBuf {
    xdg_config_home
        .filter(|p| p.is_absolute())
        .map_or_else(|| home.join(".config"), Path::to_path_buf)
        .join("nsh/agent.yaml")
}

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

/// Reads and parses `path`; `None` when there is no such file.
pub fn load(path: &Path) -> Result<Option<ConfigFile>, FileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(path, &text).map(Some),
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

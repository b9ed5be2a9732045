//! Team keys from `--team-keys-dir`: one file per team, file name = team name. Re-read on a
//! timer, so added, changed and removed keys apply while the server runs. Polling (rather than
//! inotify) also sees Kubernetes Secret volumes, which swap a symlink instead of writing files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use crate::token::{KeyLookup, TeamKey};

#[derive(Debug)]
pub struct KeyDir {
    dir: PathBuf,
    keys: RwLock<HashMap<String, TeamKey>>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read team keys dir {} (create it and put one key file per team in it, e.g. `nsh mesh keygen --out {}/TEAM`)", dir.display(), dir.display())]
pub struct KeyDirError {
    dir: PathBuf,
    source: std::io::Error,
}

/// What one reload changed, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reload {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    /// Files skipped, with the reason (bad name, weak key, unreadable).
    pub skipped: Vec<String>,
}

impl KeyDir {
    /// Loads the directory; fails if it cannot be read at all.
    pub fn load(dir: impl Into<PathBuf>) -> Result<Self, KeyDirError> {
        let dir = dir.into();
        let keys = RwLock::default();
        let key_dir = Self { dir, keys };
        let report = key_dir.reload()?;
        for skipped in &report.skipped {
            tracing::warn!(%skipped, "team key skipped");
        }
        Ok(key_dir)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn teams(&self) -> Vec<String> {
        let mut teams: Vec<String> = self
            .keys
            .read()
            .expect("keys lock")
            .keys()
            .cloned()
            .collect();
        teams.sort();
        teams
    }

    /// Re-reads every key file and swaps the set in one step.
    pub fn reload(&self) -> Result<Reload, KeyDirError> {
        let read_error = |source| KeyDirError {
            dir: self.dir.clone(),
            source,
        };
        let mut fresh = HashMap::new();
        let mut report = Reload::default();
        for entry in std::fs::read_dir(&self.dir).map_err(read_error)? {
            let entry = entry.map_err(read_error)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Kubernetes Secret volumes hold `..data` and `..2026_...` entries beside the keys.
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            if !path.is_file() {
                continue;
            }
            if let Some(why) = nsh_contract::names::check(&name) {
                report.skipped.push(format!(
                    "{name}: file name is not a valid team name ({why})"
                ));
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| TeamKey::from_file_contents(&b).map_err(|e| e.to_string()))
            {
                Ok(key) => {
                    fresh.insert(name, key);
                }
                Err(why) => report.skipped.push(format!("{name}: {why}")),
            }
        }
        let mut keys = self.keys.write().expect("keys lock");
        for (team, key) in &fresh {
            match keys.get(team) {
                None => report.added.push(team.clone()),
                Some(old) if old != key => report.changed.push(team.clone()),
                Some(_) => {}
            }
        }
        report.removed = keys
            .keys()
            .filter(|team| !fresh.contains_key(*team))
            .cloned()
            .collect();
        *keys = fresh;
        for list in [&mut report.added, &mut report.changed, &mut report.removed] {
            list.sort();
        }
        Ok(report)
    }
}

impl KeyLookup for KeyDir {
    fn key(&self, team: &str) -> Option<TeamKey> {
        self.keys.read().expect("keys lock").get(team).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_reports_added_changed_removed_and_skips_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("alpha"), "alpha-key-0123456789\n").unwrap();
        std::fs::write(dir.path().join("bad:name"), "0123456789abcdef").unwrap();
        std::fs::write(dir.path().join("weak"), "short").unwrap();
        std::fs::write(dir.path().join("..data"), "ignored-0123456789").unwrap();
        let keys = KeyDir::load(dir.path()).unwrap();
        assert_eq!(keys.teams(), ["alpha"]);

        std::fs::write(dir.path().join("alpha"), "alpha-key-rotated-0123").unwrap();
        std::fs::write(dir.path().join("beta"), "beta-key-0123456789").unwrap();
        let report = keys.reload().unwrap();
        assert_eq!(
            (report.added, report.changed),
            (vec!["beta".to_owned()], vec!["alpha".to_owned()])
        );
        assert_eq!(report.skipped.len(), 2, "{:?}", report.skipped);

        std::fs::remove_file(dir.path().join("alpha")).unwrap();
        assert_eq!(keys.reload().unwrap().removed, ["alpha"]);
        assert!(keys.key("alpha").is_none());
    }

    #[test]
    fn a_missing_dir_names_the_fix() {
        let err = KeyDir::load("/nonexistent/keys").unwrap_err().to_string();
        assert!(err.contains("nsh mesh keygen"), "{err}");
    }
}

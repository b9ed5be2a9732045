//! `nsh mesh hook install`: adds the bridge's hooks to a Claude Code settings file, leaving
//! everything else in it as it was (order, other hooks, unknown keys), atomically, with a backup.

use std::path::{Path, PathBuf};

use nsh_config_files::{EditError, JsonEdit, edit_json};
use serde_json::{Map, Value, json};

use crate::hooks::HookEvent;

/// Where a settings file lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `~/.claude/settings.json`: every project of this user.
    User,
    /// `.claude/settings.json` in the project: shared with the team through git.
    Project,
    /// `.claude/settings.local.json` in the project: this machine only.
    Local,
}

impl Scope {
    pub fn settings_path(self, home: &Path, project: &Path) -> PathBuf {
        match self {
            Self::User => home.join(".claude/settings.json"),
            Self::Project => project.join(".claude/settings.json"),
            Self::Local => project.join(".claude/settings.local.json"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    File(#[from] EditError),
    #[error("{path}: `{key}` {why}; the file was left untouched")]
    Shape {
        path: PathBuf,
        key: String,
        why: &'static str,
    },
}

/// Seconds Claude Code waits for the hook; reading a local file takes milliseconds.
const HOOK_TIMEOUT_SECS: u64 = 10;

/// Adds (or updates) one hook per event in `settings`, running `command(event)` (e.g.
/// `/usr/local/bin/nsh mesh hook Stop`). An existing nsh hook for the same event is recognised
/// by its `mesh hook <Event>` and replaced, so installing twice changes nothing.
pub fn install(
    settings: &Path,
    command: impl Fn(HookEvent) -> String,
) -> Result<JsonEdit, InstallError> {
    let shape = |key: &str, why| InstallError::Shape {
        path: settings.to_owned(),
        key: key.to_owned(),
        why,
    };
    edit_json(settings, |root| {
        let hooks = root
            .entry("hooks")
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .ok_or_else(|| shape("hooks", "is not an object"))?;
        let mut changed = false;
        for event in HookEvent::ALL {
            let wanted = command(event);
            let groups = hooks
                .entry(event.name())
                .or_insert_with(|| Value::Array(Vec::new()))
                .as_array_mut()
                .ok_or_else(|| shape(&format!("hooks.{}", event.name()), "is not an array"))?;
            changed |= upsert(groups, event, &wanted);
        }
        Ok(changed)
    })?
}

/// Removes the nsh hooks (commands running `mesh hook <Event>`) from `settings`, with the
/// matcher groups and event lists they leave empty; everything else stays as it was.
pub fn uninstall(settings: &Path) -> Result<JsonEdit, InstallError> {
    edit_json(settings, |root| {
        let Some(hooks) = root.get_mut("hooks").and_then(Value::as_object_mut) else {
            return Ok::<_, InstallError>(false);
        };
        let mut changed = false;
        for event in HookEvent::ALL {
            let marker = format!("mesh hook {}", event.name());
            let Some(groups) = hooks.get_mut(event.name()).and_then(Value::as_array_mut) else {
                continue;
            };
            for group in groups.iter_mut() {
                if let Some(list) = group.get_mut("hooks").and_then(Value::as_array_mut) {
                    let before = list.len();
                    list.retain(|hook| {
                        !hook
                            .get("command")
                            .and_then(Value::as_str)
                            .is_some_and(|c| c.contains(&marker))
                    });
                    changed |= list.len() != before;
                }
            }
            groups.retain(|group| {
                group
                    .get("hooks")
                    .and_then(Value::as_array)
                    .is_none_or(|list| !list.is_empty())
            });
            if groups.is_empty() {
                hooks.remove(event.name());
            }
        }
        if hooks.is_empty() {
            root.remove("hooks");
        }
        Ok(changed)
    })?
}

/// Updates our hook in `groups` if there is one, else appends a matcher group for it.
fn upsert(groups: &mut Vec<Value>, event: HookEvent, wanted: &str) -> bool {
    let marker = format!("mesh hook {}", event.name());
    for group in groups.iter_mut() {
        let Some(hooks) = group.get_mut("hooks").and_then(Value::as_array_mut) else {
            continue;
        };
        for hook in hooks.iter_mut() {
            let Some(command) = hook.get("command").and_then(Value::as_str) else {
                continue;
            };
            if command.contains(&marker) {
                if command == wanted {
                    return false;
                }
                hook["command"] = Value::String(wanted.to_owned());
                return true;
            }
        }
    }
    let entry = json!({ "type": "command", "command": wanted, "timeout": HOOK_TIMEOUT_SECS });
    let group = match event {
        // Tool events filter by tool name: match every tool.
        HookEvent::PostToolUse => json!({ "matcher": "*", "hooks": [entry] }),
        _ => json!({ "hooks": [entry] }),
    };
    groups.push(group);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXISTING: &str = r#"{
  "model": "opus",
  "permissions": { "allow": ["Bash(git status)"] },
  "hooks": {
    "PostToolUse": [
      { "matcher": "Write", "hooks": [{ "type": "command", "command": "prettier --write" }] }
    ]
  },
  "zzUnknown": [1, 2, 3]
}
"#;

    #[test]
    fn adds_four_hooks_keeps_the_rest_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        std::fs::write(&path, EXISTING).unwrap();
        let edit = install(&path, |e| format!("/bin/nsh mesh hook {}", e.name())).unwrap();
        assert!(edit.changed);
        assert_eq!(
            std::fs::read_to_string(edit.backup.unwrap()).unwrap(),
            EXISTING
        );
        let after: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let keys: Vec<&String> = after.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["model", "permissions", "hooks", "zzUnknown"]);
        assert_eq!(after["permissions"]["allow"][0], "Bash(git status)");
        let post = after["hooks"]["PostToolUse"].as_array().unwrap();
        assert_eq!(post[0]["hooks"][0]["command"], "prettier --write");
        assert_eq!(post[1]["matcher"], "*");
        assert_eq!(
            post[1]["hooks"][0]["command"],
            "/bin/nsh mesh hook PostToolUse"
        );
        for event in ["SessionStart", "UserPromptSubmit", "Stop"] {
            assert_eq!(
                after["hooks"][event][0]["hooks"][0]["command"],
                format!("/bin/nsh mesh hook {event}")
            );
        }

        let again = install(&path, |e| format!("/bin/nsh mesh hook {}", e.name())).unwrap();
        assert!(!again.changed && again.backup.is_none());

        // A moved binary updates the commands in place instead of adding a second set.
        install(&path, |e| format!("/opt/nsh mesh hook {}", e.name())).unwrap();
        let moved: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(moved["hooks"]["Stop"].as_array().unwrap().len(), 1);
        assert_eq!(
            moved["hooks"]["Stop"][0]["hooks"][0]["command"],
            "/opt/nsh mesh hook Stop"
        );
    }

    #[test]
    fn a_hooks_key_of_the_wrong_type_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        std::fs::write(&path, r#"{ "hooks": "nope" }"#).unwrap();
        let err = install(&path, |e| format!("nsh mesh hook {}", e.name())).unwrap_err();
        assert!(
            err.to_string().contains("`hooks` is not an object"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            r#"{ "hooks": "nope" }"#
        );
    }

    #[test]
    fn scopes_name_claude_codes_files() {
        let (home, project) = (Path::new("/home/u"), Path::new("/src/p"));
        assert_eq!(
            Scope::User.settings_path(home, project),
            Path::new("/home/u/.claude/settings.json")
        );
        assert_eq!(
            Scope::Project.settings_path(home, project),
            Path::new("/src/p/.claude/settings.json")
        );
        assert_eq!(
            Scope::Local.settings_path(home, project),
            Path::new("/src/p/.claude/settings.local.json")
        );
    }

    #[test]
    fn uninstall_removes_only_ours_and_keeps_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        std::fs::write(&path, EXISTING).unwrap();
        install(&path, |e| {
            format!("/bin/nsh mesh hook {} --team t --agent a", e.name())
        })
        .unwrap();
        let installed = std::fs::read_to_string(&path).unwrap();
        assert!(
            installed.contains(r#""zzUnknown": [1, 2, 3]"#)
                && installed.contains(r#""permissions": { "allow": ["Bash(git status)"] },"#),
            "compact arrays stay compact: {installed}"
        );
        let edit = uninstall(&path).unwrap();
        assert!(edit.changed);
        let after: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let before: Value = serde_json::from_str(EXISTING).unwrap();
        assert_eq!(after, before, "back to what it was");
        assert!(!uninstall(&path).unwrap().changed, "nothing left to remove");
    }
}

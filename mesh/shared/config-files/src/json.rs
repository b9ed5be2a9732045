use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{EditError, backup, write_atomic};

/// What an [`edit_json`] call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonEdit {
    pub changed: bool,
    /// Where the previous contents were copied, when the file existed and changed.
    pub backup: Option<PathBuf>,
}

/// Reads the JSON object at `path` (a missing or empty file is `{}`), lets `change` edit it,
/// and writes it back atomically with a backup when `change` returns `true`. Key order and
/// unknown fields survive (serde_json's `preserve_order`); the output is two-space indented.
/// A file that is not a JSON object is refused and never written.
pub fn edit_json<E>(
    path: &Path,
    change: impl FnOnce(&mut serde_json::Map<String, Value>) -> Result<bool, E>,
) -> Result<Result<JsonEdit, E>, EditError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(EditError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let mut root = if text.trim().is_empty() {
        serde_json::Map::new()
    } else {
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => {
                return Err(EditError::Shape {
                    path: path.to_owned(),
                    why: "expected a JSON object at the top level".into(),
                });
            }
            Err(err) => {
                return Err(EditError::Parse {
                    path: path.to_owned(),
                    line: err.line(),
                    column: err.column(),
                    why: err.to_string(),
                });
            }
        }
    };
    let changed = match change(&mut root) {
        Ok(changed) => changed,
        Err(err) => return Ok(Err(err)),
    };
    if !changed {
        return Ok(Ok(JsonEdit {
            changed,
            backup: None,
        }));
    }
    let saved = backup(path)?;
    write_atomic(path, to_pretty_json(&Value::Object(root)).as_bytes())?;
    Ok(Ok(JsonEdit {
        changed,
        backup: saved,
    }))
}

/// Two-space indented JSON with a trailing newline, the layout most tools write.
pub fn to_pretty_json(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    #[test]
    fn keeps_order_and_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let before = "{\n  \"zeta\": 1,\n  \"alpha\": { \"keep\": [1, 2] },\n  \"mid\": null\n}\n";
        std::fs::write(&path, before).unwrap();
        let edit = edit_json(&path, |root| {
            root.insert("added".into(), Value::Bool(true));
            Ok::<_, Infallible>(true)
        })
        .unwrap()
        .unwrap();
        let after = std::fs::read_to_string(&path).unwrap();
        let keys: Vec<String> = serde_json::from_str::<serde_json::Map<String, Value>>(&after)
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, ["zeta", "alpha", "mid", "added"]);
        assert!(after.contains("\"keep\": [\n"));
        assert_eq!(
            std::fs::read_to_string(edit.backup.unwrap()).unwrap(),
            before
        );
    }

    #[test]
    fn refuses_a_corrupt_file_and_leaves_it_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        std::fs::write(&path, "{\n  \"a\": 1,\n  oops\n}").unwrap();
        let err = edit_json(&path, |_| Ok::<_, Infallible>(true)).unwrap_err();
        assert!(matches!(err, EditError::Parse { line: 3, .. }), "{err}");
        assert!(err.to_string().contains("s.json:3:"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\n  \"a\": 1,\n  oops\n}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        std::fs::write(&path, "[1]").unwrap();
        let err = edit_json(&path, |_| Ok::<_, Infallible>(true)).unwrap_err();
        assert!(matches!(err, EditError::Shape { .. }), "{err}");
    }

    #[test]
    fn an_unchanged_edit_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let edit = edit_json(&path, |_| Ok::<_, Infallible>(false))
            .unwrap()
            .unwrap();
        assert!(!edit.changed);
        assert!(!path.exists());
    }
}

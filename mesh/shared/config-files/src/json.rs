use std::path::{Path, PathBuf};

use jsonc_parser::cst::{CstArray, CstInputValue, CstObject, CstRootNode};
use serde_json::{Map, Value};

use crate::{EditError, backup, write_atomic};

/// What an [`edit_json`] call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonEdit {
    pub changed: bool,
    /// Where the previous contents were copied, when the file existed and changed.
    pub backup: Option<PathBuf>,
}

/// Reads the JSON object at `path` (a missing or empty file is `{}`), lets `change` edit it,
/// and writes it back atomically with a backup when `change` returns `true`. Only what
/// `change` changed is rewritten: everything else (key order, layout such as one-line arrays,
/// unknown fields) stays byte for byte, through the file's concrete syntax tree. A file that
/// is not a JSON object is refused and never written.
pub fn edit_json<E>(
    path: &Path,
    change: impl FnOnce(&mut Map<String, Value>) -> Result<bool, E>,
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
    let before = if text.trim().is_empty() {
        Map::new()
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
    let mut after = before.clone();
    let changed = match change(&mut after) {
        Ok(changed) => changed,
        Err(err) => return Ok(Err(err)),
    };
    if !changed || after == before {
        return Ok(Ok(JsonEdit {
            changed: false,
            backup: None,
        }));
    }
    let contents = if text.trim().is_empty() {
        to_pretty_json(&Value::Object(after))
    } else {
        let root =
            CstRootNode::parse(&text, &jsonc_parser::ParseOptions::default()).map_err(|e| {
                EditError::Parse {
                    path: path.to_owned(),
                    line: e.line_display(),
                    column: e.column_display(),
                    why: e.kind().to_string(),
                }
            })?;
        let object = root.object_value().ok_or_else(|| EditError::Shape {
            path: path.to_owned(),
            why: "expected a JSON object at the top level".into(),
        })?;
        patch_object(&object, &before, &after);
        root.to_string()
    };
    let saved = backup(path)?;
    write_atomic(path, contents.as_bytes())?;
    Ok(Ok(JsonEdit {
        changed: true,
        backup: saved,
    }))
}

/// Makes the syntax tree of `old` say `new`, touching only what differs.
fn patch_object(object: &CstObject, old: &Map<String, Value>, new: &Map<String, Value>) {
    for key in old.keys().filter(|key| !new.contains_key(*key)) {
        if let Some(prop) = object.get(key) {
            prop.remove();
        }
    }
    for (key, wanted) in new {
        let Some(prop) = object.get(key) else {
            object.append(key, to_cst(wanted));
            continue;
        };
        match (old.get(key), wanted) {
            (Some(was), _) if was == wanted => {}
            (Some(Value::Object(was)), Value::Object(wanted)) if prop.object_value().is_some() => {
                patch_object(&prop.object_value().expect("checked"), was, wanted);
            }
            (Some(Value::Array(was)), Value::Array(wanted)) if prop.array_value().is_some() => {
                patch_array(&prop.array_value().expect("checked"), was, wanted);
            }
            _ => prop.set_value(to_cst(wanted)),
        }
    }
}

/// Element by element: changed elements are patched, extra ones appended, missing ones removed.
fn patch_array(array: &CstArray, old: &[Value], new: &[Value]) {
    let elements = array.elements();
    for (index, wanted) in new.iter().enumerate() {
        match (old.get(index), elements.get(index)) {
            (Some(was), Some(_)) if was == wanted => {}
            (Some(Value::Object(was)), Some(node)) if node.as_object().is_some() => {
                if let Value::Object(wanted) = wanted {
                    patch_object(&node.as_object().expect("checked"), was, wanted);
                } else {
                    node.clone().remove();
                    array.insert(index, to_cst(wanted));
                }
            }
            (_, Some(node)) => {
                node.clone().remove();
                array.insert(index, to_cst(wanted));
            }
            (_, None) => {
                array.append(to_cst(wanted));
            }
        }
    }
    for node in elements.into_iter().skip(new.len()) {
        node.remove();
    }
}

/// A JSON value as input to the syntax tree.
pub fn to_cst(value: &Value) -> CstInputValue {
    match value {
        Value::Null => CstInputValue::Null,
        Value::Bool(b) => CstInputValue::Bool(*b),
        Value::Number(n) => CstInputValue::Number(n.to_string()),
        Value::String(s) => CstInputValue::String(s.clone()),
        Value::Array(items) => CstInputValue::Array(items.iter().map(to_cst).collect()),
        Value::Object(map) => {
            CstInputValue::Object(map.iter().map(|(k, v)| (k.clone(), to_cst(v))).collect())
        }
    }
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
        let keys: Vec<String> = serde_json::from_str::<Map<String, Value>>(&after)
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, ["zeta", "alpha", "mid", "added"]);
        // Untouched parts keep their layout, one-line arrays included.
        assert!(
            after.contains("\"alpha\": { \"keep\": [1, 2] },"),
            "{after}"
        );
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

//! Reading and editing a client's config file in place: only the server being added or removed
//! changes; comments, key order, formatting and every other setting stay byte for byte (a
//! concrete syntax tree for JSON with comments, toml_edit for TOML). A file that does not parse
//! is refused and never written; a changed file is backed up, then replaced atomically.

use std::path::{Path, PathBuf};

use jsonc_parser::cst::{CstObject, CstRootNode};
use nsh_config_files::to_cst;
use serde_json::Value;

use crate::clients::Format;

/// The same errors as every other config-file edit: read, parse (with line and column),
/// shape, write.
pub use nsh_config_files::EditError;

#[derive(Debug)]
enum Tree {
    Json(CstRootNode),
    Toml(toml_edit::DocumentMut),
}

/// A client's config file, parsed for editing.
#[derive(Debug)]
pub struct ConfigDoc {
    path: PathBuf,
    original: Option<String>,
    tree: Tree,
}

impl ConfigDoc {
    /// Reads and parses `path`; a missing file is an empty document.
    pub fn load(path: &Path, format: Format) -> Result<Self, EditError> {
        let original = match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(EditError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let text = original.as_deref().unwrap_or("");
        let tree = match format {
            Format::Json => Tree::Json(
                CstRootNode::parse(text, &jsonc_parser::ParseOptions::default()).map_err(|e| {
                    EditError::Parse {
                        path: path.to_owned(),
                        line: e.line_display(),
                        column: e.column_display(),
                        why: e.kind().to_string(),
                    }
                })?,
            ),
            Format::Toml => Tree::Toml(text.parse::<toml_edit::DocumentMut>().map_err(|e| {
                let (line, column) = e
                    .span()
                    .map(|span| line_and_column(text, span.start))
                    .unwrap_or((1, 1));
                EditError::Parse {
                    path: path.to_owned(),
                    line,
                    column,
                    why: e.message().to_owned(),
                }
            })?),
        };
        let doc = Self {
            path: path.to_owned(),
            original,
            tree,
        };
        if let Tree::Json(root) = &doc.tree
            && root.value().is_some()
            && root.object_value().is_none()
        {
            return Err(doc.shape("(top level)", "an object"));
        }
        Ok(doc)
    }

    pub fn exists(&self) -> bool {
        self.original.is_some()
    }

    fn shape(&self, key: &str, expected: &'static str) -> EditError {
        EditError::Shape {
            path: self.path.clone(),
            why: format!("`{key}` is not {expected}"),
        }
    }

    /// The servers under `keys`, in file order.
    pub fn servers(&self, keys: &[String]) -> Result<Vec<(String, Value)>, EditError> {
        match &self.tree {
            Tree::Json(root) => {
                let Some(mut object) = root.object_value() else {
                    return Ok(Vec::new());
                };
                for (depth, key) in keys.iter().enumerate() {
                    match object.get(key) {
                        None => return Ok(Vec::new()),
                        Some(prop) => {
                            object = prop.object_value().ok_or_else(|| {
                                self.shape(&keys[..=depth].join("."), "an object")
                            })?;
                        }
                    }
                }
                Ok(object
                    .properties()
                    .into_iter()
                    .filter_map(|prop| {
                        let name = prop.name()?.decoded_value().ok()?;
                        let value = prop.value()?.to_serde_value()?;
                        Some((name, value))
                    })
                    .collect())
            }
            Tree::Toml(doc) => {
                let mut item = doc.as_item();
                for (depth, key) in keys.iter().enumerate() {
                    match item.get(key) {
                        None => return Ok(Vec::new()),
                        Some(next) if next.is_table_like() => item = next,
                        Some(_) => return Err(self.shape(&keys[..=depth].join("."), "a table")),
                    }
                }
                let table = item.as_table_like().expect("checked above");
                Ok(table
                    .iter()
                    .map(|(name, value)| (name.to_owned(), toml_to_json(value)))
                    .collect())
            }
        }
    }

    /// The server `name` under `keys`, if there is one.
    pub fn server(&self, keys: &[String], name: &str) -> Result<Option<Value>, EditError> {
        Ok(self
            .servers(keys)?
            .into_iter()
            .find_map(|(n, v)| (n == name).then_some(v)))
    }

    /// Adds `name` under `keys`, or replaces it; `false` when it was already exactly that.
    pub fn upsert(
        &mut self,
        keys: &[String],
        name: &str,
        server: &Value,
    ) -> Result<bool, EditError> {
        let existing = self.servers(keys)?;
        if existing.iter().any(|(n, v)| n == name && v == server) {
            return Ok(false);
        }
        match &mut self.tree {
            Tree::Json(root) => {
                let mut object = root.object_value_or_create().expect("checked at load");
                for key in keys {
                    object = object_child(&object, key).expect("checked by servers()");
                }
                match object.get(name) {
                    Some(prop) => prop.set_value(to_cst(server)),
                    None => {
                        object.append(name, to_cst(server));
                    }
                }
            }
            Tree::Toml(doc) => {
                let mut table = doc.as_table_mut();
                for key in keys {
                    let entry = table.entry(key).or_insert_with(|| {
                        let mut t = toml_edit::Table::new();
                        t.set_implicit(true);
                        toml_edit::Item::Table(t)
                    });
                    table = entry.as_table_mut().expect("checked by servers()");
                }
                table.insert(name, json_to_toml_table(server));
            }
        }
        Ok(true)
    }

    /// Removes `name` under `keys`; `false` when it was not there.
    pub fn remove(&mut self, keys: &[String], name: &str) -> Result<bool, EditError> {
        if !self.servers(keys)?.iter().any(|(n, _)| n == name) {
            return Ok(false);
        }
        match &mut self.tree {
            Tree::Json(root) => {
                let mut object = root.object_value().expect("has the server");
                for key in keys {
                    object = object.object_value(key).expect("has the server");
                }
                if let Some(prop) = object.get(name) {
                    prop.remove();
                }
            }
            Tree::Toml(doc) => {
                let mut table = doc.as_table_mut();
                for key in keys {
                    table = table
                        .get_mut(key)
                        .and_then(toml_edit::Item::as_table_mut)
                        .expect("has the server");
                }
                table.remove(name);
            }
        }
        Ok(true)
    }

    /// The document as text now.
    pub fn text(&self) -> String {
        match &self.tree {
            Tree::Json(root) => {
                let mut text = root.to_string();
                if self.original.is_none() && !text.ends_with('\n') {
                    text.push('\n');
                }
                text
            }
            Tree::Toml(doc) => doc.to_string(),
        }
    }

    /// Whether the file holds nothing but the empty containers `keys` leads to (`{"servers":
    /// {}}`): what a file that did not exist before our install comes back to on uninstall.
    /// Such a file is deleted rather than left behind. A comment anywhere keeps it.
    fn is_skeleton(&self, keys: &[String]) -> bool {
        let text = self.text();
        if text.contains("//") || text.contains("/*") || text.contains('#') {
            return false;
        }
        let value = match &self.tree {
            Tree::Json(root) => root.to_serde_value().unwrap_or(Value::Null),
            Tree::Toml(doc) => toml_to_json(doc.as_item()),
        };
        let mut skeleton = Value::Object(serde_json::Map::new());
        for key in keys.iter().rev() {
            skeleton = Value::Object(serde_json::Map::from_iter([(key.clone(), skeleton)]));
        }
        value.is_null() || value == skeleton || value == Value::Object(serde_json::Map::new())
    }

    /// The change [`save`](Self::save) would make, as a unified diff (empty when none).
    pub fn diff(&self) -> String {
        let before = self.original.as_deref().unwrap_or("");
        let after = self.text();
        if before == after {
            return String::new();
        }
        let path = self.path.display().to_string();
        let old = if self.original.is_some() {
            path.clone()
        } else {
            "/dev/null".to_owned()
        };
        similar::TextDiff::from_lines(before, &after)
            .unified_diff()
            .header(&old, &path)
            .to_string()
    }

    /// Writes the document when it changed: backup first, then an atomic replace. Returns the
    /// backup's path (`None` for a new file or no change).
    pub fn save(&self) -> Result<Option<PathBuf>, EditError> {
        let text = self.text();
        if self.original.as_deref() == Some(text.as_str()) {
            return Ok(None);
        }
        let backup = nsh_config_files::backup(&self.path)?;
        nsh_config_files::write_atomic(&self.path, text.as_bytes())?;
        Ok(backup)
    }

    /// Like [`save`](Self::save), but a file left holding only the empty containers under
    /// `keys` is deleted (after the backup): an uninstall leaves no `{"servers": {}}` where
    /// there was no file. Returns the backup and whether the file was deleted.
    pub fn save_or_delete(&self, keys: &[String]) -> Result<(Option<PathBuf>, bool), EditError> {
        if !self.is_skeleton(keys) || self.original.is_none() {
            return Ok((self.save()?, false));
        }
        let backup = nsh_config_files::backup(&self.path)?;
        std::fs::remove_file(&self.path).map_err(|source| EditError::Write {
            path: self.path.clone(),
            source,
        })?;
        Ok((backup, true))
    }
}

/// The object under `key`, created when missing; `None` when `key` holds something else.
fn object_child(object: &CstObject, key: &str) -> Option<CstObject> {
    object.object_value_or_create(key)
}

fn toml_to_json(item: &toml_edit::Item) -> Value {
    match item {
        toml_edit::Item::None => Value::Null,
        toml_edit::Item::Value(value) => toml_value_to_json(value),
        toml_edit::Item::Table(table) => Value::Object(
            table
                .iter()
                .map(|(k, v)| (k.to_owned(), toml_to_json(v)))
                .collect(),
        ),
        toml_edit::Item::ArrayOfTables(tables) => Value::Array(
            tables
                .iter()
                .map(|t| toml_to_json(&toml_edit::Item::Table(t.clone())))
                .collect(),
        ),
    }
}

fn toml_value_to_json(value: &toml_edit::Value) -> Value {
    use toml_edit::Value as T;
    match value {
        T::String(s) => Value::String(s.value().clone()),
        T::Integer(i) => Value::from(*i.value()),
        T::Float(f) => serde_json::Number::from_f64(*f.value()).map_or(Value::Null, Value::Number),
        T::Boolean(b) => Value::Bool(*b.value()),
        T::Datetime(d) => Value::String(d.value().to_string()),
        T::Array(items) => Value::Array(items.iter().map(toml_value_to_json).collect()),
        T::InlineTable(table) => Value::Object(
            table
                .iter()
                .map(|(k, v)| (k.to_owned(), toml_value_to_json(v)))
                .collect(),
        ),
    }
}

/// A server object as a `[table]` whose nested objects (env, headers) are inline tables.
fn json_to_toml_table(value: &Value) -> toml_edit::Item {
    let mut table = toml_edit::Table::new();
    if let Value::Object(map) = value {
        for (key, value) in map {
            if let Some(value) = json_to_toml_value(value) {
                table.insert(key, toml_edit::Item::Value(value));
            }
        }
    }
    toml_edit::Item::Table(table)
}

fn json_to_toml_value(value: &Value) -> Option<toml_edit::Value> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64()?.into(),
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(items) => {
            toml_edit::Value::Array(items.iter().filter_map(json_to_toml_value).collect())
        }
        Value::Object(map) => {
            let mut inline = toml_edit::InlineTable::new();
            for (key, value) in map {
                if let Some(value) = json_to_toml_value(value) {
                    inline.insert(key, value);
                }
            }
            toml_edit::Value::InlineTable(inline)
        }
    })
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

//! Tool pinning: a hash of each tool's name, description and schemas, recorded the first time
//! the gateway sees it. A pinned tool whose upstream later changes it (a "rug pull": the same
//! name, new instructions) is hidden until the change is approved, with `nsh gateway pins
//! approve` or the McpGateway's `pinnedTools`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rmcp::model::Tool;
use sha2::Digest as _;

/// `sha256:<hex>` over the parts of a tool an agent reads.
pub fn hash(tool: &Tool) -> String {
    let canonical = serde_json::json!({
        "name": tool.name,
        "description": tool.description,
        "inputSchema": tool.input_schema,
        "outputSchema": tool.output_schema,
    });
    let digest = sha2::Sha256::digest(serde_json::to_vec(&canonical).unwrap_or_default());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// What the pins say about one tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Never seen: now pinned.
    New,
    Same,
    Changed {
        pinned: String,
    },
}

#[derive(Debug)]
pub struct Pins {
    path: Option<PathBuf>,
    recorded: Mutex<BTreeMap<String, String>>,
    /// Changes already reported, so each shows up once in the audit log.
    reported: Mutex<HashSet<(String, String)>>,
}

impl Pins {
    /// Pins recorded in `path` (none yet when it does not exist or cannot be read).
    pub fn load(path: Option<PathBuf>) -> Self {
        let recorded = path.as_deref().map(read).unwrap_or_default();
        Self {
            path,
            recorded: Mutex::new(recorded),
            reported: Mutex::default(),
        }
    }

    pub fn recorded(&self) -> BTreeMap<String, String> {
        self.recorded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Re-reads the file (after `nsh gateway pins approve` wrote it).
    pub fn reload(&self) -> bool {
        let Some(path) = &self.path else { return false };
        let fresh = read(path);
        let mut recorded = self
            .recorded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = *recorded != fresh && !fresh.is_empty();
        if changed {
            *recorded = fresh;
        }
        changed
    }

    /// Checks `tool` (by its exposed name) against `approved` (from the config, which wins)
    /// and the recorded pins; a new tool is recorded.
    pub fn check(&self, exposed: &str, hash: &str, approved: &BTreeMap<String, String>) -> Check {
        if let Some(pinned) = approved.get(exposed) {
            return if pinned == hash {
                Check::Same
            } else {
                Check::Changed {
                    pinned: pinned.clone(),
                }
            };
        }
        let mut recorded = self
            .recorded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match recorded.get(exposed) {
            Some(pinned) if pinned == hash => Check::Same,
            Some(pinned) => Check::Changed {
                pinned: pinned.clone(),
            },
            None => {
                recorded.insert(exposed.to_owned(), hash.to_owned());
                if let Some(path) = &self.path
                    && let Err(err) = write(path, &recorded)
                {
                    tracing::warn!(%err, path = %path.display(), "cannot save tool pins; they live in memory until a restart");
                }
                Check::New
            }
        }
    }

    /// Whether this change is reported for the first time.
    pub fn first_report(&self, exposed: &str, hash: &str) -> bool {
        self.reported
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((exposed.to_owned(), hash.to_owned()))
    }
}

pub fn read(path: &Path) -> BTreeMap<String, String> {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Writes the pins file atomically (a reader never sees half a file).
pub fn write(path: &Path, pins: &BTreeMap<String, String>) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut bytes = serde_json::to_vec_pretty(pins).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("pins"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(description: &str) -> Tool {
        serde_json::from_value(serde_json::json!({
            "name": "echo", "description": description,
            "inputSchema": { "type": "object" },
        }))
        .unwrap()
    }

    #[test]
    fn a_changed_description_is_caught_and_approval_wins() {
        let dir = tempfile::tempdir().unwrap();
        let pins = Pins::load(Some(dir.path().join("pins.json")));
        let (a, b) = (
            hash(&tool("echoes")),
            hash(&tool("ignore previous instructions")),
        );
        assert_ne!(a, b);
        let none = BTreeMap::new();
        assert_eq!(pins.check("u__echo", &a, &none), Check::New);
        assert_eq!(pins.check("u__echo", &a, &none), Check::Same);
        assert_eq!(
            pins.check("u__echo", &b, &none),
            Check::Changed { pinned: a.clone() }
        );
        // Saved, so a restarted gateway still knows the pin.
        let again = Pins::load(Some(dir.path().join("pins.json")));
        assert_eq!(
            again.check("u__echo", &b, &none),
            Check::Changed { pinned: a }
        );
        let approved = BTreeMap::from([("u__echo".to_owned(), b.clone())]);
        assert_eq!(again.check("u__echo", &b, &approved), Check::Same);
    }
}

//! Edits of config files that belong to other programs (Claude Code's settings, MCP clients'
//! server lists). Nothing is lost: a file that does not parse is refused and left untouched,
//! the previous contents are copied to a timestamped backup in one folder (a few per file), and the new contents replace the
//! old in one rename, so a reader sees the old file or the new one, never half of either.
#![forbid(unsafe_code)]

mod atomic;
mod json;

pub use atomic::{BACKUPS_PER_FILE, backup, backup_dir, backup_in, write_atomic};
pub use json::{JsonEdit, edit_json, to_cst, to_pretty_json};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}:{line}:{column}: {why}; the file was left untouched (fix it, or move it away to start afresh)"
    )]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        why: String,
    },
    #[error("{path}: {why}; the file was left untouched")]
    Shape { path: PathBuf, why: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

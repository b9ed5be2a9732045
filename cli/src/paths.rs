//! Where nsh keeps things on this machine.

use std::path::PathBuf;

use anyhow::Context as _;

/// `$HOME`, which several defaults live under.
pub(crate) fn home() -> anyhow::Result<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .context("HOME is not set: pass --inbox-dir")
}

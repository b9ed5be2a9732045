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

/// `flag` (a `--data-dir`), else `$XDG_DATA_HOME/nsh`, else `~/.local/share/nsh`.
pub(crate) fn data_dir(flag: Option<&std::path::Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(dir.to_owned());
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("nsh"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("neither --data-dir, XDG_DATA_HOME nor HOME is set; pass --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/nsh"))
}

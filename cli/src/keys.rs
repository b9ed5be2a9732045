//! Team key files on this machine.

use std::io::Write as _;

use anyhow::Context as _;
use nsh_mesh_transport::token::TeamKey;

/// Writes a new random team key to `path`, readable by the owner only; never overwrites.
pub(crate) fn write_new_key(path: &std::path::Path) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| {
        format!(
            "cannot create {} (it must not exist yet; keys are never overwritten)",
            path.display()
        )
    })?;
    writeln!(file, "{}", TeamKey::generate_text())?;
    file.sync_all()?;
    tracing::info!(path = %path.display(), "team key written");
    Ok(())
}

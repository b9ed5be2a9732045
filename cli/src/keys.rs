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

/// Writes `contents` to `path`, readable by the owner only. An existing file is an error
/// unless `replace`, which swaps it atomically (a reader never sees half a token).
pub(crate) fn write_secret(
    path: &std::path::Path,
    contents: &str,
    replace: bool,
) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if !replace && path.exists() {
        anyhow::bail!("{} exists; pass --force to replace it", path.display());
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => std::path::Path::new("."),
    };
    let mut temp = tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    temp.write_all(contents.as_bytes())?;
    temp.as_file().sync_all()?;
    if replace {
        temp.persist(path)?;
    } else {
        // No replace: fails if the file appeared meanwhile.
        temp.persist_noclobber(path)?;
    }
    Ok(())
}

/// Reads a team key file; errors name `--key-file` and the path.
pub(crate) fn read_key(path: &std::path::Path) -> anyhow::Result<TeamKey> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("--key-file {}: cannot read it", path.display()))?;
    TeamKey::from_file_contents(&bytes).with_context(|| format!("--key-file {}", path.display()))
}

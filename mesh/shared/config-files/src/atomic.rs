use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::EditError;

/// Replaces `path` with `contents` through a temporary file in the same directory and a rename.
/// Keeps the old file's permissions; creates missing parent directories.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), EditError> {
    let write_error = |source| EditError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(write_error)?;
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(
            ".{}.",
            path.file_name().unwrap_or_default().to_string_lossy()
        ))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(write_error)?;
    temp.write_all(contents).map_err(write_error)?;
    if let Ok(meta) = fs::metadata(path) {
        temp.as_file()
            .set_permissions(meta.permissions())
            .map_err(write_error)?;
    }
    // The data must be on disk before the rename makes it the file.
    temp.as_file().sync_all().map_err(write_error)?;
    temp.persist(path).map_err(|e| write_error(e.error))?;
    Ok(())
}

/// Copies `path` to `<path>.bak.<UTC timestamp>` next to it; `None` when there is no file yet.
pub fn backup(path: &Path) -> Result<Option<PathBuf>, EditError> {
    if !path.exists() {
        return Ok(None);
    }
    let format = time::macros::format_description!(
        "[year][month][day]T[hour][minute][second].[subsecond digits:3]Z"
    );
    let stamp = time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_default();
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".bak.{stamp}"));
    let target = path.with_file_name(name);
    fs::copy(path, &target).map_err(|source| EditError::Write {
        path: target.clone(),
        source,
    })?;
    Ok(Some(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_contents_keeps_permissions_and_backs_up() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        write_atomic(&path, b"one").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let saved = backup(&path).unwrap().unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read(&saved).unwrap(), b"one");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Only the file, its backup, and no temporary leftovers.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn no_backup_of_a_missing_file_and_parents_are_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/c.json");
        assert!(backup(&path).unwrap().is_none());
        write_atomic(&path, b"{}").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"{}");
    }
}

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

/// Backups kept per edited file; older ones are deleted.
pub const BACKUPS_PER_FILE: usize = 5;
/// Backups kept in all, whatever file they are of (files edited once, e.g. in a temporary
/// folder, would otherwise pile up).
pub(crate) const BACKUPS_IN_ALL: usize = 100;

/// The one folder every backup goes to: `$NSH_BACKUP_DIR`, else `$XDG_STATE_HOME/nsh/backups`,
/// else `~/.local/state/nsh/backups`; `None` without any of them (then beside the file).
pub fn backup_dir() -> Option<PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("NSH_BACKUP_DIR")
        .or_else(|| var("XDG_STATE_HOME").map(|d| d.join("nsh/backups")))
        .or_else(|| var("HOME").map(|d| d.join(".local/state/nsh/backups")))
}

/// Copies `path` into [`backup_dir`] as `<name>.<path hash>.<UTC timestamp>.bak`, keeping the
/// newest [`BACKUPS_PER_FILE`] of that file; `None` when there is no file yet.
pub fn backup(path: &Path) -> Result<Option<PathBuf>, EditError> {
    let dir = backup_dir().unwrap_or_else(|| parent(path).to_owned());
    backup_in(path, &dir)
}

/// [`backup`] into `dir`.
pub fn backup_in(path: &Path, dir: &Path) -> Result<Option<PathBuf>, EditError> {
    if !path.exists() {
        return Ok(None);
    }
    let write_error = |target: &Path| {
        let target = target.to_owned();
        move |source| EditError::Write {
            path: target,
            source,
        }
    };
    let format = time::macros::format_description!(
        "[year][month][day]T[hour][minute][second].[subsecond digits:6]Z"
    );
    let stamp = time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_default();
    // The same file name in two folders must not share a count: the prefix names the path.
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let prefix = format!(
        "{}.{:08x}.",
        path.file_name().unwrap_or_default().to_string_lossy(),
        fnv1a(absolute.as_os_str().as_encoded_bytes()) as u32
    );
    fs::create_dir_all(dir).map_err(write_error(dir))?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        // Settings files hold tokens and keys now and then: the backups are private.
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    }
    let target = dir.join(format!("{prefix}{stamp}.bak"));
    fs::copy(path, &target).map_err(write_error(&target))?;
    prune(dir, &prefix, BACKUPS_PER_FILE);
    prune(dir, "", BACKUPS_IN_ALL);
    Ok(Some(target))
}

/// Deletes the oldest `*.bak` files of `dir` starting with `prefix` beyond `keep`. Best effort:
/// a backup that cannot be deleted costs space, not data.
fn prune(dir: &Path, prefix: &str, keep: usize) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut backups: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(prefix) && name.ends_with(".bak")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    backups.sort();
    let excess = backups.len().saturating_sub(keep);
    for (_, old) in backups.into_iter().take(excess) {
        let _ = fs::remove_file(old);
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// FNV-1a: a fixed hash, so a file's backups keep their prefix across releases.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
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
        let saved = backup_in(&path, &dir.path().join("backups"))
            .unwrap()
            .unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read(&saved).unwrap(), b"one");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Only the file, the backups folder, and no temporary leftovers.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn no_backup_of_a_missing_file_and_parents_are_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/c.json");
        assert!(backup_in(&path, dir.path()).unwrap().is_none());
        write_atomic(&path, b"{}").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"{}");
    }

    #[test]
    fn backups_go_to_one_folder_and_are_bounded_per_file() {
        let dir = tempfile::tempdir().unwrap();
        let backups = dir.path().join("backups");
        let (a, b) = (
            dir.path().join("a/settings.json"),
            dir.path().join("b/settings.json"),
        );
        for path in [&a, &b] {
            write_atomic(path, b"0").unwrap();
        }
        for round in 0..BACKUPS_PER_FILE + 3 {
            write_atomic(&a, round.to_string().as_bytes()).unwrap();
            backup_in(&a, &backups).unwrap().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let b_backup = backup_in(&b, &backups).unwrap().unwrap();
        let mut names: Vec<String> = fs::read_dir(&backups)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names.len(), BACKUPS_PER_FILE + 1, "{names:?}");
        assert!(
            names
                .iter()
                .all(|n| n.starts_with("settings.json.") && n.ends_with(".bak"))
        );
        // The newest of `a` are kept: its last write was the last round.
        let newest_a = names
            .iter()
            .filter(|n| **n != b_backup.file_name().unwrap().to_string_lossy())
            .max()
            .unwrap();
        assert_eq!(
            fs::read_to_string(backups.join(newest_a)).unwrap(),
            (BACKUPS_PER_FILE + 2).to_string()
        );
        assert_eq!(fs::read(&b_backup).unwrap(), b"0");
    }
}

//! The benchmark tests refuse an `nsh` that is not this tree's build: one whose dep-info lists a
//! source modified after it, or one that is gone, and one without a dep-info that says.

mod common;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::stale;

/// A dep-info file `dir/nsh.d` listing `sources` (make's syntax, as cargo writes it), modified
/// now: the build's time.
fn dep_info(dir: &Path, sources: &[&Path]) -> PathBuf {
    let listed: Vec<String> = sources
        .iter()
        .map(|s| s.display().to_string().replace(' ', "\\ "))
        .collect();
    let path = dir.join("nsh.d");
    fs::write(
        &path,
        format!("{}: {}\n", dir.join("nsh").display(), listed.join(" ")),
    )
    .unwrap();
    path
}

/// Asserts that the dep-info at `info` is stale for a reason that names `because`.
fn assert_stale(info: &Path, because: &str) {
    let why = stale(info).expect("stale");
    assert!(why.contains(because), "{why}");
}

/// Creates `path` if need be and sets its modification time to `at`.
fn touch(path: &Path, at: SystemTime) {
    File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap()
        .set_modified(at)
        .unwrap();
}

#[test]
fn a_build_newer_than_its_sources_is_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let (main, spaced) = (dir.path().join("main.rs"), dir.path().join("with space.rs"));
    touch(&main, an_hour_ago);
    touch(&spaced, an_hour_ago);
    let info = dep_info(dir.path(), &[&main, &spaced]);
    assert_eq!(stale(&info), None);
}

#[test]
fn a_source_changed_after_the_build_makes_it_stale() {
    let dir = tempfile::tempdir().unwrap();
    let (main, spaced) = (dir.path().join("main.rs"), dir.path().join("with space.rs"));
    touch(&main, SystemTime::now() - Duration::from_secs(3600));
    let info = dep_info(dir.path(), &[&main, &spaced]);
    touch(&info, SystemTime::now() - Duration::from_secs(60));
    touch(&spaced, SystemTime::now());
    assert_stale(&info, "with space.rs changed since");
}

#[test]
fn a_build_from_another_checkout_is_stale() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("other-checkout/src/main.rs");
    let info = dep_info(dir.path(), &[&elsewhere]);
    assert_stale(&info, "other-checkout/src/main.rs, which is not here");
}

#[test]
fn no_dep_info_is_stale() {
    let dir = tempfile::tempdir().unwrap();
    assert_stale(&dir.path().join("nsh.d"), "unreadable");
}

#[test]
fn a_dep_info_without_sources_is_stale() {
    let dir = tempfile::tempdir().unwrap();
    let info = dir.path().join("nsh.d");
    fs::write(&info, "not make's syntax\n").unwrap();
    assert_stale(&info, "lists no sources");
}

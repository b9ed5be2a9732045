use std::path::PathBuf;
use std::time::Duration;

/// What can go wrong while bringing up or driving a test part.
///
/// `Debug` prints the same text as `Display`: tests `unwrap()` these, and the reader of a
/// failed test needs the message and its fix, not the enum's fields.
#[derive(thiserror::Error)]
pub enum Error {
    #[error(
        "{name} not found at {}: run `{fix}` to build or install it (never skipped: tests need the real part)",
        path.display()
    )]
    MissingBinary {
        name: &'static str,
        path: PathBuf,
        fix: &'static str,
    },

    #[error("could not start {name}: {source}")]
    Spawn {
        name: String,
        source: std::io::Error,
    },

    #[error("{name} exited early ({status}); last lines of its log {}:\n{log_tail}", log.display())]
    Exited {
        name: String,
        status: std::process::ExitStatus,
        log: PathBuf,
        log_tail: String,
    },

    #[error("{name} was not ready after {after:?}: {last_error}; last lines of its log {}:\n{log_tail}", log.display())]
    NotReady {
        name: String,
        after: Duration,
        last_error: String,
        log: PathBuf,
        log_tail: String,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },

    #[error("generating test certificates: {0}")]
    Pki(#[from] rcgen::Error),

    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),

    #[error("kubernetes client: {0}")]
    Kube(#[from] kube::Error),

    #[error("scripts/versions.env: {0}")]
    Versions(String),
}

impl Error {
    /// `map_err` helper that adds what was being done to an I/O error.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

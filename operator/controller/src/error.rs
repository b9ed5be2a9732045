use std::time::Duration;

use kube::runtime::controller::Action;

/// Why a reconcile did not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec cannot work as written; nothing changes until the user edits it.
    #[error("{field}: {problem}; {fix}")]
    InvalidSpec {
        field: std::borrow::Cow<'static, str>,
        problem: String,
        fix: String,
    },
    /// An object this one depends on is missing or not ready yet; retried when it changes.
    #[error("{0}")]
    Waiting(String),
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("encoding {what}: {source}")]
    Encode {
        what: &'static str,
        source: serde_json::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(
        field: impl Into<std::borrow::Cow<'static, str>>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::InvalidSpec {
            field: field.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// The error policy: invalid specs wait for an edit (the watch brings it), dependencies are
    /// polled slowly, API errors back off.
    pub fn requeue(&self) -> Action {
        match self {
            Self::InvalidSpec { .. } => Action::await_change(),
            Self::Waiting(_) => Action::requeue(Duration::from_secs(30)),
            Self::Kube(_) | Self::Encode { .. } => Action::requeue(Duration::from_secs(5)),
        }
    }
}

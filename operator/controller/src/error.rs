use std::borrow::Cow;
use std::time::Duration;

use kube::runtime::controller::Action;

/// Why a reconcile did not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec cannot work as written; nothing changes until the user edits it.
    #[error("{field}: {problem}; {fix}")]
    InvalidSpec {
        field: Cow<'static, str>,
        problem: String,
        fix: String,
    },
    /// An object this one depends on is missing or not ready yet; retried when it changes.
    /// `reason` is the `Ready` condition's (a constant of `conditions::reason`).
    #[error("{message}")]
    Waiting {
        reason: &'static str,
        message: String,
    },
    /// The mesh token could not be signed (the team key was refused).
    #[error("cannot sign the mesh token: {0}")]
    Mint(#[source] nsh_mesh_transport::token::TokenError),
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(
        field: impl Into<Cow<'static, str>>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::InvalidSpec {
            field: field.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    pub fn waiting(reason: &'static str, message: impl Into<String>) -> Self {
        Self::Waiting {
            reason,
            message: message.into(),
        }
    }

    /// The `Ready=False` reason this failure is reported with, or `None` for failures that
    /// leave the status as it is (a failed API call says nothing about the object).
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        use nsh_operator_api::conditions::reason;
        match self {
            Self::InvalidSpec { .. } => Some(reason::INVALID_SPEC),
            Self::Waiting { reason, .. } => Some(reason),
            Self::Mint(_) => Some(reason::TOKEN_FAILED),
            Self::Kube(_) => None,
        }
    }

    /// The error policy: invalid specs wait for an edit (the watch brings it), dependencies are
    /// polled slowly, API errors back off.
    pub fn requeue(&self) -> Action {
        match self {
            Self::InvalidSpec { .. } => Action::await_change(),
            Self::Waiting { .. } => Action::requeue(Duration::from_secs(30)),
            Self::Kube(_) | Self::Mint(_) => Action::requeue(Duration::from_secs(5)),
        }
    }

    /// The reason of the Warning event a failed reconcile publishes.
    pub fn event_reason(&self) -> &'static str {
        match self {
            Self::InvalidSpec { .. } => "InvalidSpec",
            Self::Waiting { .. } => "Waiting",
            Self::Mint(_) | Self::Kube(_) => "ReconcileError",
        }
    }
}

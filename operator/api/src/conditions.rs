//! Condition types and reasons the operator writes into `status.conditions`, as constants so
//! the controller, tests and docs cannot disagree on spelling.

/// Every kind: the object is fully reconciled and its workload is serving.
pub const READY: &str = "Ready";
/// Team: the object it points at (`meshRef`) exists.
pub const REFERENCE_RESOLVED: &str = "ReferenceResolved";
/// Team: the signing key Secret exists. Agent: the token Secret holds a valid, unexpired token.
pub const CREDENTIALS_READY: &str = "CredentialsReady";

pub mod reason {
    pub const RECONCILED: &str = "Reconciled";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const REFERENCE_MISSING: &str = "ReferenceMissing";
    pub const REFERENCE_NOT_READY: &str = "ReferenceNotReady";
    pub const WAITING_FOR_PODS: &str = "WaitingForPods";
    pub const TOKEN_ISSUED: &str = "TokenIssued";
    /// Agent: the team's key would not sign a token.
    pub const TOKEN_FAILED: &str = "TokenFailed";
}

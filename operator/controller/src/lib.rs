//! The nsh-mesh operator. Each kind's reconcile is a pipeline
//! `dereference -> validate -> build -> apply -> status`; `validate` and `build` are pure
//! functions of their inputs (tested without a cluster), only the ends touch the API.
//!
//! Reconciled so far: [`team`] (signing key Secret, status), [`mesh_server`] (Deployment,
//! Service, ConfigMap, team keys Secret, PodDisruptionBudget, status) and [`agent`] (mesh
//! token Secret with rotation, and [`agent_workload`]: the `agent launch` ConfigMap and a
//! one-pod StatefulSet with the `nsh mesh client` native sidecar; status follows the pod) and
//! [`gateway`] (settings ConfigMap, Deployment with the teams' keys, Service, status).
#![forbid(unsafe_code)]

pub mod agent;
pub mod agent_workload;
pub mod apply;
pub mod context;
pub mod error;
pub mod gateway;
pub mod leader;
pub mod mesh_server;
pub mod metrics;
pub mod pod;
pub mod rbac;
pub mod run;
pub mod team;

pub use context::Context;
pub use error::{Error, Result};
pub use run::run;

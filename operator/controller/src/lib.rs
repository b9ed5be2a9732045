//! The nsh-mesh operator. Each kind's reconcile is a pipeline
//! `dereference -> validate -> build -> apply -> status`: `dereference` reads everything the
//! object refers to into one typed struct (or fails with one typed "waiting for X"),
//! `validate` and `build` are pure functions of their inputs (tested with small fixtures),
//! `apply` writes the kind's one list of owned objects ([`apply::owned`], which also deletes
//! what the spec no longer asks for), and `status` is a pure function from how the pipeline
//! ended to the kind's typed status, written by server-side apply.
//!
//! The four controllers: [`team`] (signing key Secret), [`mesh_server`] (Deployment, Service,
//! settings ConfigMap, team keys Secret, PodDisruptionBudget, managed Redis), [`agent`] (mesh
//! token Secret with rotation; the `agent launch` ConfigMap and a one-pod StatefulSet with the
//! `nsh mesh client` native sidecar) and [`gateway`] (settings ConfigMap, Deployment with the
//! teams' keys, Service).
#![forbid(unsafe_code)]

pub mod agent;
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
pub mod token_request;

pub use context::{Context, Images};
pub use error::{Error, Result};
pub use run::{run, run_in};

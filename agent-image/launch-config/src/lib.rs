//! The agent launch model shared by `nsh agent launch` on a laptop and the operator in a pod:
//! the `.agent.yaml` schema ([`settings`]), config files ([`files`]), the built-in catalogue of
//! MCP presets and profiles ([`catalog`]), layering with provenance ([`layers`]), and the
//! `claude` command it all becomes ([`launch`]). Pure: no process is started here.
#![forbid(unsafe_code)]

pub mod catalog;
pub mod files;
pub mod launch;
pub mod layers;
pub mod settings;

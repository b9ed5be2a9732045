//! What one nsh process writes and another reads, defined once.
//!
//! The operator writes `nsh` command lines and `NSH_*` environment variables into pod specs;
//! the `nsh` binary parses them with clap. Both sides take flag and variable names from here,
//! and a test in `cli` parses every command line the operator builds with the real parser, so
//! a renamed flag fails a test instead of crash-looping a pod. The same goes for the rules
//! several crates check: names, rates, shell quoting and the in-cluster URLs.
//!
//! A leaf: no nsh crate below it, so every layer may use it.
#![forbid(unsafe_code)]

pub mod command;
pub mod env;
pub mod image;
pub mod names;
pub mod quote;
pub mod rate;
pub mod url;

pub use rate::{Rate, RateParseError};

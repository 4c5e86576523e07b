//! `omega-node`: the wiring of an Omega host — today the `omega` command-line
//! tool over identities, capability tokens (ACTs) and ZGraph manifests.
//!
//! The daemon (`omega node`), its local API and durable storage arrive with
//! the mesh work; they will live here too, since this crate is the only one
//! that may depend on every other Omega crate.

pub mod api;
pub mod cli;
pub mod daemon;
pub mod keystore;

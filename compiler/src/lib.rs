//! Strata's compiler: a model file becomes a graph IR, then kernels, then an artifact.
//!
//! The pipeline, one module per stage:
//! [`syntax`] (text -> AST) -> [`elaborate`] (AST -> graph IR) -> [`passes`] ->
//! [`lower`] (graph -> kernel IR) -> [`plan`] (memory plan) -> [`artifact`] (manifest,
//! CLIF, weights). [`train`] turns a model's `train` section into its training entries.
//! [`explain`] builds the entry of input gradients that attributions come from.
//! [`driver`] strings them together for the `strata` command (crate `strata-cli`).
//!
//! The compiler never runs generated code (only its reference interpreter evaluates
//! graphs) and depends on no runtime: what it hands over is a
//! [`strata_artifact::Artifact`].

pub mod artifact;
pub mod driver;
pub mod elaborate;
pub mod explain;
pub mod ir;
pub mod limits;
pub mod lower;
pub mod passes;
pub mod plan;
pub mod source;
pub mod sweep;
pub mod syntax;
pub mod train;

//! Strata's compiler: a model file becomes a graph IR, then kernels, then an artifact.
//!
//! The pipeline, one module per stage:
//! [`syntax`] (text -> AST) -> [`elaborate`] (AST -> graph IR) -> [`passes`] ->
//! [`lower`] (graph -> kernel IR + memory plan) -> [`artifact`] (manifest, CLIF, weights;
//! executables). [`driver`] strings them together for the `strata` command.

pub mod artifact;
pub mod cli;
pub mod driver;
pub mod elaborate;
pub mod ir;
pub mod lower;
pub mod passes;
pub mod plan;
pub mod syntax;
pub mod train;

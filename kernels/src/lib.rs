//! Strata's kernel IR and its emitters.
//!
//! - [`scalar_op`]: the element-wise op vocabulary (unary, binary, reductions) with its
//!   names and `f64` semantics, shared with the graph IR.
//! - [`ir`]: the backend-neutral kernel IR (iteration spaces, scalar expressions,
//!   contractions).
//! - [`print`] and [`parse`]: the kernel IR's text form, written and read back.
//! - [`eval`]: a reference evaluator of the kernel IR (f64), which tests the lowering
//!   apart from the emitters.
//! - [`bounds`]: the proof that a kernel's loads, stores and `gemm` operands stay inside
//!   its buffers at a batch size.
//! - [`residue`]: the proof that two maps write disjoint blocks of one buffer.
//! - [`batch_rows`]: which buffers a kernel touches only at the batch row of each point.
//! - [`cpu`]: kernel IR -> Cranelift IR (CLIF text).
//! - [`gpu`]: kernel IR -> WGSL compute shaders, validated by naga.
//! - `hoist`: the loop-invariant subexpressions both emitters compute outside the loops
//!   they do not depend on.
//!
//! This crate knows nothing of the DSL or of the graph IR; the graph IR imports
//! [`scalar_op`] from here.

pub mod batch_rows;
pub mod bounds;
pub mod cost;
pub mod cpu;
pub mod erf;
pub mod eval;
pub mod gpu;
mod hoist;
pub mod ir;
pub mod parse;
pub mod print;
pub mod residue;
pub mod rng;
pub mod scalar_op;
#[cfg(test)]
mod test_fixtures;

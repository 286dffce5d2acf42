//! Strata's runtime: loads a compiled artifact, JIT-compiles its kernels, runs entries.
//!
//! It never parses the DSL and never plans: everything it does is written in the
//! artifact's manifest ([`strata_artifact`], the contract with the compiler). Training,
//! data and metrics are `strata_training`'s; the command line is `strata`'s.
//!
//! - [`session`]: a loaded model: compiled kernels, weights, arena; runs entries.
//! - [`cpu`]: the CPU backend (JIT of CLIF text, kernel launch).
//! - `launches`: an entry's launches on the CPU, bound to the run's storage (loops seated).
//! - [`gpu`]: the GPU backend (WGSL pipelines through wgpu).
//! - [`decode`]: greedy decoding of sequence-to-sequence models through an entry.
//! - [`bench`](mod@bench): timing an entry's runs.
//! - [`error`]: the error types.

mod arena;
pub mod bench;
pub mod cpu;
pub mod decode;
pub mod error;
pub mod gpu;
mod host_buffers;
mod launches;
pub mod session;

pub use error::{RunError, SessionError};
pub use session::{CarriedCode, CpuCode, Session};
pub use strata_artifact::Backend;

//! Strata's runtime: loads a compiled artifact, JIT-compiles its kernels, runs entries.
//!
//! It never parses the DSL and never plans: everything it does is written in the
//! artifact's manifest.
//!
//! - [`artifact`]: the compiled-model file, its validation, and executable packing.
//! - [`bench`](mod@bench): timing an entry's runs.
//! - [`session`]: a loaded model: compiled kernels, weights, arena; runs entries.
//! - [`cpu`]: the CPU backend (JIT of CLIF text, kernel launch).
//! - [`decode`]: greedy decoding of sequence-to-sequence models through an entry.
//! - [`gpu`]: the GPU backend (WGSL pipelines through wgpu).
//! - [`tensor`], [`npy`]: host tensors and `.npy` files.
//! - [`stub`]: the standalone executable's command line.
//! - [`train`]: training support: datasets, loaders, metrics, checkpoints, logs.
//! - [`error`]: the error types.

pub mod artifact;
pub mod bench;
pub mod cpu;
pub mod decode;
pub mod error;
pub mod gpu;
pub mod npy;
pub mod session;
pub mod stub;
pub mod tensor;
pub mod train;

pub use artifact::{Artifact, ModelInfo};
pub use error::{ArtifactError, NpyError, RunError, SessionError, TensorError, WeightsError};
pub use session::Session;
pub use tensor::{HostTensor, TensorData};

//! The compiled-model file: one self-describing, checksummed container holding the
//! manifest, the generated code and the initial weights.
//!
//! - [`container`]: the byte layout (magic, version, section lengths, checksum).
//! - [`manifest`]: what the runtime must know about the model (buffers, kernels, entries).
//! - [`validate`]: every invariant of a loaded artifact that running it relies on.
//! - [`weights`]: matching a safetensors blob against the model's persistent buffers.
//! - [`info`]: a printable summary of a model (entries, ports, parameters, arena).
//! - [`executable`]: appending an artifact to the stub binary and finding it again.
//!
//! An [`Artifact`] returned by [`Artifact::from_bytes`] has passed [`Artifact::validate`];
//! one built in memory has not until it is validated (a `Session` validates it again).

pub mod container;
pub mod executable;
pub mod info;
pub mod manifest;
pub mod train_config;
pub mod validate;
pub mod weights;

pub use container::{FORMAT_VERSION, MAGIC};
pub use executable::{TRAILER_MAGIC, append_to_executable, find_in_executable};
pub use info::{EntryInfo, ModelInfo, PortInfo};
pub use manifest::Manifest;

/// A compiled model: everything a runtime needs, with nothing of the source.
#[derive(Clone, Debug, PartialEq)]
pub struct Artifact {
    pub manifest: Manifest,
    /// The CPU code: one CLIF function per kernel, named after it (`function %name(...)`).
    pub clif: String,
    /// The GPU code: one WGSL module per kernel (`strata_kernels::gpu::emit_wgsl`), or
    /// empty when the model was built for the CPU only. A model with GPU code runs on the
    /// GPU by default.
    pub wgsl: String,
    /// The initial value of every persistent buffer, as a safetensors file.
    pub weights: Vec<u8>,
}

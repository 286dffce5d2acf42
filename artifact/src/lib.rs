//! The contract between Strata's compiler and its runtime: the compiled-model file.
//!
//! The compiler writes an [`Artifact`]; the runtime, the training driver and every built
//! executable read it. Everything both sides must agree on lives here and nowhere else:
//!
//! - [`container`]: the byte layout (magic, version, section lengths, checksum).
//! - [`manifest`]: what the runtime must know about the model (buffers and their
//!   [`Extent`](manifest::Extent)s, windows, loops, kernels, entries).
//! - [`train_config`]: how to train the model (the resolved `train` section), and
//!   [`schedule`]: the learning rate of each step under its schedule.
//! - [`metric`]: the metrics a train section may ask for, by name.
//! - [`backend`]: which code of an artifact runs (CPU or GPU).
//! - [`validate`]: every invariant of a loaded artifact that running it relies on.
//! - [`weights`]: matching a safetensors blob against the model's persistent buffers;
//!   [`weight_keys`]: what each of them is (parameter, normalization, optimizer state).
//! - [`explain_entry`]: the ports of the `explain` entry (input gradients of outputs).
//! - [`info`]: a printable summary of a model (entries, ports, parameters, arena).
//! - [`machine_code`]: kernels compiled ahead of time, carried by built executables.
//! - [`bytes`]: the bytes an artifact is read from, owned or mapped from a file.
//! - [`executable`]: appending an artifact to a binary and finding it again.
//! - [`tensor`], [`npy`]: host tensors and `.npy` files.
//! - [`output_path`]: the paths Strata may write a file to (never over a directory,
//!   FIFO or device).
//! - [`error`]: the error types.
//!
//! An [`Artifact`] returned by [`Artifact::from_bytes`] has passed [`Artifact::validate`];
//! one built in memory has not until it is validated (a runtime session validates it
//! again).

pub mod backend;
pub mod bytes;
pub mod container;
pub mod error;
pub mod executable;
pub mod explain_entry;
pub mod info;
pub mod machine_code;
pub mod manifest;
pub mod metric;
pub mod npy;
pub mod output_path;
pub mod schedule;
pub mod tensor;
pub mod train_config;
pub mod validate;
pub mod weight_keys;
pub mod weights;

pub use backend::Backend;
pub use bytes::Bytes;
pub use container::{FORMAT_VERSION, MAGIC};
pub use error::{ArtifactError, NpyError, TensorError, WeightsError};
pub use executable::{
    TRAILER_MAGIC, append_to_executable, find_in_executable, read_appended, write_executable,
};
pub use info::{EntryInfo, ModelInfo, PortInfo};
pub use machine_code::MachineCode;
pub use manifest::Manifest;
pub use metric::Metric;
pub use output_path::check_output_path;
pub use tensor::{HostTensor, TensorData};
pub use weight_keys::WeightKind;

/// A compiled model: everything a runtime needs, with nothing of the source.
#[derive(Clone, Debug, PartialEq)]
pub struct Artifact {
    pub manifest: Manifest,
    /// The CPU code as text: one CLIF function per kernel, named after it (`function
    /// %name(...)`), for reading; empty in a built executable. Never run.
    pub clif: String,
    /// The GPU code: one WGSL module per kernel (`strata_kernels::gpu::emit_wgsl`), or
    /// empty when the model was built for the CPU only. A model with GPU code runs on the
    /// GPU by default.
    pub wgsl: String,
    /// The initial value of every persistent buffer, as a safetensors file (a view of
    /// the executable's own file when a built executable reads itself).
    pub weights: Bytes,
    /// The CPU code compiled ahead of time, when the artifact was built into an
    /// executable ([`machine_code`]); the runtime otherwise compiles the kernel IR.
    pub machine_code: Option<MachineCode>,
    /// The `infer` entry as an ONNX model whose parameters' values are left out, for the
    /// executable's `export` command to fill from the weights it runs
    /// (`strata_onnx::template`); empty when the artifact was not written by `strata
    /// build` or its `infer` does not export. The runtime never reads it.
    pub onnx: Vec<u8>,
}

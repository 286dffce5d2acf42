//! The runtime's error types: one enum per thing that can go wrong for a user, each
//! variant a message that names what was expected and what was found.
//!
//! - [`SessionError`]: a valid artifact whose code cannot be compiled or set up.
//! - [`RunError`]: inputs that do not fit an entry.
//!
//! The artifact's own errors (a corrupt file, weights that do not fit, a bad `.npy`) are
//! [`strata_artifact::error`]'s.

use strata_artifact::error::names_text;
use strata_artifact::{ArtifactError, TensorError, WeightsError};

/// A valid artifact that cannot be made ready to run.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("cannot compile the model's CPU code: {0}")]
    Jit(#[from] crate::cpu::JitError),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Gpu(#[from] crate::gpu::GpuError),
}

/// Inputs that do not fit an entry, or a run that cannot be carried out.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no entry `{name}` (the model has {})", names_text(available))]
    UnknownEntry {
        name: String,
        available: Vec<String>,
    },
    #[error(
        "entry `{entry}` has no input `{name}` (its inputs are {})",
        names_text(expected)
    )]
    UnknownInput {
        entry: String,
        name: String,
        expected: Vec<String>,
    },
    #[error("input `{name}` is given twice")]
    DuplicateInput { name: String },
    #[error("missing inputs {}", names_text(names))]
    MissingInputs { names: Vec<String> },
    #[error("input `{name}`: expected {expected}, got {found}")]
    InputType {
        name: String,
        expected: String,
        found: String,
    },
    #[error("input `{name}`: {source}")]
    InputData { name: String, source: TensorError },
    #[error("input `{name}` has batch size {found}, but input `{first}` has batch size {expected}")]
    BatchMismatch {
        name: String,
        first: String,
        expected: u64,
        found: u64,
    },
    #[error("batch size must be at least 1")]
    EmptyBatch,
    #[error("compiling the kernels of entry `{entry}`: {message}")]
    Compile { entry: String, message: String },
    #[error("batch size {batch} is too large: {what} does not fit in memory")]
    TooLarge { batch: u64, what: String },
    #[error(
        "batch size {batch} needs {bytes} bytes of memory, more than the budget of {budget} \
         bytes (raise it with --max-memory BYTES)"
    )]
    OverBudget { batch: u64, bytes: u64, budget: u64 },
    /// A kernel whose memory accesses may leave its buffers at this run's batch size.
    #[error("refusing to run the model: {0}")]
    OutOfBounds(#[source] Box<ArtifactError>),
    /// A broken invariant of a validated manifest: a bug, reported rather than trusted.
    #[error("internal error: {0}")]
    Internal(String),
    /// The GPU failed, timed out or lacks room for this run.
    #[error(transparent)]
    Gpu(crate::gpu::GpuError),
}

//! The artifact's error types: one enum per thing that can go wrong for a user, each
//! variant a message that names what was expected and what was found.
//!
//! - [`ArtifactError`]: an artifact file (or an executable's appended artifact) that is
//!   corrupt, from another format version, or internally inconsistent.
//! - [`WeightsError`]: a safetensors blob that does not fit the model's parameters.
//! - [`NpyError`]: a `.npy` file that cannot be read or written (names the file).
//! - [`TensorError`]: a host tensor whose shape and data disagree.

use std::path::PathBuf;

use strata_kernels::ir::KernelError;

use crate::manifest::Extent;

/// Shape as text for messages: `[2, 3]`.
pub fn shape_text<T: std::fmt::Display>(shape: &[T]) -> String {
    let dims: Vec<String> = shape.iter().map(T::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// Names as text for messages: `` `a`, `b` ``.
pub fn names_text(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    quoted.join(", ")
}

fn extent_text(e: &Extent) -> String {
    match (e.fixed, e.per_batch) {
        (f, 0) => format!("{f}"),
        (0, p) => format!("{p}*batch"),
        (f, p) => format!("{f} + {p}*batch"),
    }
}

/// Why an artifact was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("not a Strata artifact (its first bytes are {found:02x?}, not the Strata magic)")]
    BadMagic { found: Vec<u8> },
    #[error(
        "artifact format version {found} is not supported: this runtime reads version \
         {supported} (rebuild the model with a matching `strata`)"
    )]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error(
        "artifact is truncated: its header and sections need {needed} bytes, the file has {got}"
    )]
    Truncated { needed: u64, got: u64 },
    #[error("artifact has {extra} unexpected bytes after its checksum")]
    TrailingBytes { extra: u64 },
    #[error(
        "artifact is corrupt: checksum {computed:#010x} does not match the stored {stored:#010x}"
    )]
    Checksum { stored: u32, computed: u32 },
    #[error("artifact's {section} section is not valid UTF-8: {source}")]
    NotUtf8 {
        section: &'static str,
        source: std::str::Utf8Error,
    },
    #[error("artifact's manifest is not valid: {0}")]
    ManifestJson(#[source] serde_json::Error),
    #[error("cannot store the manifest: {0}")]
    Unrepresentable(String),
    #[error(
        "executable trailer is corrupt: it announces a {announced}-byte artifact in a {available}-byte file"
    )]
    BadTrailer { announced: u64, available: u64 },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the artifact: {0}")]
    Write(#[source] std::io::Error),

    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("kernel name `{name}` is used twice")]
    DuplicateKernel { name: String },
    #[error("entry name `{name}` is used twice")]
    DuplicateEntry { name: String },
    #[error("entry `{entry}`: {side} `{name}` is declared twice")]
    DuplicatePort {
        entry: String,
        side: &'static str,
        name: String,
    },
    #[error("{context}: buffer #{buffer} does not exist (the manifest has {count} buffers)")]
    UnknownBuffer {
        context: String,
        buffer: usize,
        count: usize,
    },
    #[error("entry `{entry}`: {side} `{name}` must live in the I/O block")]
    PortNotInIo {
        entry: String,
        side: &'static str,
        name: String,
    },
    #[error(
        "entry `{entry}`, launch {launch}: kernel #{kernel} does not exist (the manifest has {count} kernels)"
    )]
    UnknownKernel {
        entry: String,
        launch: usize,
        kernel: usize,
        count: usize,
    },
    #[error(
        "entry `{entry}`, launch {launch}: kernel `{kernel}` has {expected} buffer slots but \
         the launch binds {got}"
    )]
    LaunchArity {
        entry: String,
        launch: usize,
        kernel: String,
        expected: usize,
        got: usize,
    },
    /// `site` is e.g. ``entry `infer`, launch 0: slot `x` of kernel `dense` ``.
    #[error("{site} is {expected} but is bound to buffer `{buffer}` of type {found}")]
    BindingType {
        site: String,
        buffer: String,
        expected: String,
        found: String,
    },
    #[error(
        "entry `{entry}`, launch {launch}: contraction `{kernel}` writes `{out}`, which \
         overlaps its operand `{operand}`"
    )]
    AliasedContraction {
        entry: String,
        launch: usize,
        kernel: String,
        operand: String,
        out: String,
    },
    #[error(
        "entry `{entry}`, launch {launch}: part {} of kernel `{kernel}` writes `{written}`, \
         which overlaps `{used}` of part {}",
        parts.0,
        parts.1
    )]
    AliasedParts {
        entry: String,
        launch: usize,
        kernel: String,
        parts: (usize, usize),
        written: String,
        used: String,
    },
    /// `outputs` is e.g. `` `a` and `b`, bound to `x` and `y` ``.
    #[error("entry `{entry}`, launch {launch}: kernel `{kernel}` writes {outputs}, which overlap")]
    AliasedOutputs {
        entry: String,
        launch: usize,
        kernel: String,
        outputs: String,
    },
    /// A kernel whose index expressions may leave its buffers (`strata_kernels::bounds`).
    #[error("memory access outside a buffer: {0}")]
    OutOfBounds(#[source] KernelError),
    #[error("buffer `{buffer}` has the batch dimension more than once")]
    RepeatedBatch { buffer: String },
    #[error("persistent buffer `{buffer}` has a batch dimension")]
    BatchInPersistent { buffer: String },
    #[error("buffer `{buffer}` is too large to address")]
    SizeOverflow { buffer: String },
    #[error(
        "buffer `{buffer}`: offset {} is not a multiple of its element size",
        extent_text(offset)
    )]
    MisalignedBuffer { buffer: String, offset: Extent },
    #[error(
        "buffer `{buffer}` ({} bytes at offset {}) does not fit in the {block} ({} bytes)",
        extent_text(size),
        extent_text(offset),
        extent_text(arena)
    )]
    OutsideArena {
        buffer: String,
        block: &'static str,
        offset: Extent,
        size: Extent,
        arena: Extent,
    },
    #[error("buffer `{buffer}` is a window that does not fit its parent: {reason}")]
    BadWindow { buffer: String, reason: String },
    #[error("entry `{entry}`: {reason}")]
    BadLoop { entry: String, reason: String },
    #[error("the machine code section is invalid: {reason}")]
    BadMachineCode { reason: String },
    #[error("weight key `{key}` is used by two buffers")]
    DuplicateWeightKey { key: String },
    #[error("artifact's weights: {0}")]
    Weights(#[from] WeightsError),
    #[error("the CLIF section defines no function `%{function}` for kernel `{kernel}`")]
    MissingFunction { function: String, kernel: String },
    #[error("the WGSL section has no module for kernel `{kernel}`")]
    MissingWgslModule { kernel: String },
}

/// A set of weights that does not fit the model's persistent buffers.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("not a valid safetensors file: {0}")]
    NotSafetensors(#[source] safetensors::SafeTensorError),
    #[error("missing tensors {}", names_text(keys))]
    Missing { keys: Vec<String> },
    #[error(
        "unknown tensors {} (the model's parameters are {})",
        names_text(keys),
        names_text(expected)
    )]
    Unknown {
        keys: Vec<String>,
        expected: Vec<String>,
    },
    #[error("tensor `{key}`: expected dtype {expected}, got {found}")]
    Dtype {
        key: String,
        expected: String,
        found: String,
    },
    #[error(
        "tensor `{key}`: expected shape {}, got {}",
        shape_text(expected),
        shape_text(found)
    )]
    Shape {
        key: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
    #[error("tensor `{key}` depends on the batch size, which persistent buffers cannot")]
    BatchDependent { key: String },
    #[error("tensor `{key}`: {source}")]
    Tensor { key: String, source: TensorError },
    #[error("cannot write safetensors: {0}")]
    Serialize(#[source] safetensors::SafeTensorError),
}

/// A `.npy` file that cannot be read or written; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a valid .npy file: {message}", path.display())]
    Format { path: PathBuf, message: String },
    #[error("{}: arrays of dtype `{dtype}` are not supported (use float32, float64, int32, int64, or int8, uint8, int16 or uint16)", path.display())]
    UnsupportedDtype { path: PathBuf, dtype: String },
    #[error("{}: Fortran-ordered arrays are not supported (save it with np.ascontiguousarray)", path.display())]
    FortranOrder { path: PathBuf },
    #[error("{}: element {index} is {value}, which does not fit in i32", path.display())]
    OutOfRange {
        path: PathBuf,
        index: usize,
        value: i64,
    },
}

/// A host tensor whose shape and data disagree.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorError {
    #[error(
        "shape {} holds a different number of elements than the {len} given",
        shape_text(shape)
    )]
    LengthMismatch { shape: Vec<u64>, len: usize },
    #[error("shape {} is too large", shape_text(shape))]
    TooLarge { shape: Vec<u64> },
}

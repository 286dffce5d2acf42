//! The error types of training support, one per concern, each variant a message that
//! names the file (or built-in dataset) and, where there is one, the line, column or
//! byte offset of the problem.
//!
//! - [`DataError`]: a dataset that cannot be loaded, split, reshaped or batched.
//! - [`MetricError`]: predictions and targets that do not fit together.
//! - [`CheckpointError`]: a checkpoint that cannot be written, read or matched.
//! - [`LogError`]: a metrics log or plot that cannot be written or read back.

use std::fmt;
use std::path::PathBuf;

use strata_artifact::{NpyError, TensorError};

/// Where in a file a problem was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// The file as a whole (a count or a shape that disagrees).
    File,
    /// A 1-based line of a text file.
    Line(u64),
    /// A 1-based line and 1-based column (field) of a delimited text file.
    Cell { line: u64, column: usize },
    /// A byte offset into a binary file.
    Offset(u64),
    /// A value of a tensor file: its sample (row) and its position in the sample
    /// (column), both from 0.
    Sample { row: u64, column: usize },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File => Ok(()),
            Location::Line(line) => write!(f, ": line {line}"),
            Location::Cell { line, column } => write!(f, ": line {line}, column {column}"),
            Location::Offset(offset) => write!(f, ": byte offset {offset}"),
            Location::Sample { row, column } => {
                write!(f, ": row {row}, column {column} (from 0)")
            }
        }
    }
}

/// A dataset that cannot be loaded, split, reshaped or batched.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file whose contents do not follow its format; `file` is the path as given, or
    /// the name of a built-in dataset.
    #[error("{file}{location}: {message}")]
    Malformed {
        file: String,
        location: Location,
        message: String,
    },
    #[error(
        "{file}: line {line}, column {column}: missing value (empty or NaN); \
         drop such rows with the `drop_missing` option"
    )]
    MissingValue {
        file: String,
        line: u64,
        column: usize,
    },
    #[error(transparent)]
    Npy(#[from] NpyError),
    #[error("unknown built-in dataset `{name}` (available: {})", available.join(", "))]
    UnknownBuiltin {
        name: String,
        available: Vec<String>,
    },
    #[error("data source `{spec}`: {message}")]
    BadSpec { spec: String, message: String },
    /// An argument that cannot apply to the dataset (split fractions, batch size, shape).
    #[error("{0}")]
    Invalid(String),
}

impl DataError {
    /// A [`DataError::Malformed`] with the file name as text.
    pub(crate) fn malformed(
        file: impl Into<String>,
        location: Location,
        message: impl Into<String>,
    ) -> DataError {
        DataError::Malformed {
            file: file.into(),
            location,
            message: message.into(),
        }
    }
}

/// Predictions and targets that do not fit together, or a metric that is undefined for
/// them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    #[error("{what}: expected {expected} values, got {found}")]
    LengthMismatch {
        what: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("no samples to compute the metric on")]
    Empty,
    #[error("the number of classes must be at least 1")]
    NoClasses,
    #[error("sample {index}: class {value} is outside 0..{classes}")]
    ClassOutOfRange {
        index: usize,
        value: i32,
        classes: usize,
    },
    #[error("sample {index}: binary target {value} is neither 0 nor 1")]
    NotBinary { index: usize, value: i32 },
    #[error("sample {index}: the score is NaN, so samples cannot be ranked")]
    NanScore { index: usize },
    #[error("{0}")]
    Undefined(String),
}

/// A tensor whose shape in a checkpoint differs from the expected one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    pub key: String,
    pub expected: Vec<u64>,
    pub found: Vec<u64>,
}

fn keys_text(keys: &[String]) -> String {
    let quoted: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
    quoted.join(", ")
}

fn mismatch_text(missing: &[String], unexpected: &[String], shapes: &[ShapeMismatch]) -> String {
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing tensors {}", keys_text(missing)));
    }
    if !unexpected.is_empty() {
        parts.push(format!("unexpected tensors {}", keys_text(unexpected)));
    }
    for s in shapes {
        parts.push(format!(
            "tensor `{}` has shape {} where {} is expected",
            s.key,
            strata_artifact::error::shape_text(&s.found),
            strata_artifact::error::shape_text(&s.expected)
        ));
    }
    parts.join("; ")
}

/// A checkpoint that cannot be written, read, or matched against a model.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not a readable safetensors file: truncated, garbled header, or a checksum that
    /// does not match the tensor data.
    #[error("{}: corrupt checkpoint: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "{}: a safetensors file but not a Strata checkpoint (its metadata has no `{key}`)",
        path.display()
    )]
    NotACheckpoint { path: PathBuf, key: &'static str },
    #[error(
        "{}: checkpoint format version {found} is not supported (this runtime reads \
         version {supported}); it was written by another version of Strata: start a new run",
        path.display()
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: String,
        supported: u32,
    },
    #[error("{}: metadata `{key}`: {message}", path.display())]
    BadMetadata {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("tensor `{key}` appears twice in the checkpoint")]
    DuplicateKey { key: String },
    #[error("tensor `{key}`: {source}")]
    Tensor { key: String, source: TensorError },
    #[error("cannot encode the checkpoint: {0}")]
    Encode(String),
    #[error(
        "checkpoint does not fit the model: {}",
        mismatch_text(missing, unexpected, shapes)
    )]
    Mismatch {
        missing: Vec<String>,
        unexpected: Vec<String>,
        shapes: Vec<ShapeMismatch>,
    },
}

/// A metrics log or training-curve plot that cannot be written or read back.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: line {line}: {message}", path.display())]
    Malformed {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error("cannot encode a log record: {0}")]
    Encode(String),
}

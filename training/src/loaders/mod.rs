//! Loading datasets from files: CSV, NPY, IDX (the MNIST format) and safetensors, and
//! the command-line [`DataSource`] spec that picks one.
//!
//! Every loader reads the whole file, checks it against its format before trusting any
//! count in it (so a hostile header cannot make it allocate or loop without bound), and
//! answers a [`DataError`] naming the file and the line, column or byte offset of the
//! first problem: never a panic, never a silently truncated dataset. A file that starts
//! with the gzip magic is decompressed first, so `train-images-idx3-ubyte.gz` and
//! `data.csv.gz` load as they are.
//!
//! Labels follow the data's own types: integer labels (in a CSV, every label a whole
//! number in `0..65536`; in NPY, IDX and safetensors, an integer dtype) are class
//! indices, `classes` being the largest plus one; anything else is a regression target.
//!
//! - [`csv_file`]: delimited text, with a header or not, and [`CsvOptions`].
//! - [`idx_file`]: the IDX format of MNIST.
//! - [`safetensors_file`]: tensors `features` and `labels` in a safetensors file.
//! - [`npz_file`]: NumPy's `.npz` archives.
//! - [`named`]: files of named arrays (`.npz`, safetensors, a directory of `.npy` files)
//!   read for a model, each input and label taking its array by name.
//! - [`source`]: [`DataSource`], the command-line spec.
//! - [`finite`]: [`DataSpec`], a source that refuses NaN and infinities unless it ends in
//!   `,allow_nonfinite`.
//! - here: gzip detection, NPY pairs, and turning tensors into a [`Dataset`].

pub mod csv_file;
pub mod finite;
pub mod idx_file;
pub mod named;
pub mod npz_file;
pub mod safetensors_file;
pub mod source;

use std::io::Read;
use std::path::Path;

pub use csv_file::{CsvOptions, HeaderMode, MAX_AUTO_CLASSES, Task, load_csv, parse_csv};
pub(crate) use csv_file::{dataset_from_table, read_csv_table};
pub use finite::{ALLOW_NONFINITE, DataSpec};
pub use idx_file::{load_idx, parse_idx};
pub use named::{ArrayFileKind, ArrayFileSpec, ArrayRequest, ArrayRole, load_named};
pub use safetensors_file::{load_safetensors, parse_safetensors};
pub use source::DataSource;

use super::dataset::{Dataset, Labels};
use super::error::{DataError, Location};
use strata_artifact::tensor::{HostTensor, TensorData, element_count};

/// Reads a file, decompressing it if it starts with the gzip magic.
pub fn read_data_file(path: &Path) -> Result<Vec<u8>, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    maybe_gunzip(bytes, &path.display().to_string())
}

/// `bytes` decompressed if they start with the gzip magic, else unchanged; the limit on
/// the decompressed size is [`decompressed_limit`]'s.
pub(crate) fn maybe_gunzip(bytes: Vec<u8>, file: &str) -> Result<Vec<u8>, DataError> {
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Ok(bytes);
    }
    let setting = std::env::var(DECOMPRESSED_LIMIT_VAR).ok();
    let limit = decompressed_limit(setting.as_deref())
        .map_err(|message| DataError::malformed(file, Location::File, message))?;
    maybe_gunzip_at_most(bytes, file, limit)
}

/// The environment variable that sets the most bytes a gzipped data file may
/// decompress to.
pub const DECOMPRESSED_LIMIT_VAR: &str = "STRATA_MAX_DECOMPRESSED_BYTES";

/// The limit on a gzipped data file's decompressed size, from the value of
/// [`DECOMPRESSED_LIMIT_VAR`] if set (a whole number of bytes), else
/// [`MAX_DECOMPRESSED_BYTES`].
pub fn decompressed_limit(setting: Option<&str>) -> Result<u64, String> {
    match setting {
        None => Ok(MAX_DECOMPRESSED_BYTES),
        Some(text) => match text.trim().parse::<u64>() {
            Ok(limit) if limit > 0 => Ok(limit),
            _ => Err(format!(
                "{DECOMPRESSED_LIMIT_VAR}={text} is not a positive whole number of bytes"
            )),
        },
    }
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// [`maybe_gunzip`] with a limit on the decompressed size.
pub fn maybe_gunzip_at_most(bytes: Vec<u8>, file: &str, limit: u64) -> Result<Vec<u8>, DataError> {
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Ok(bytes);
    }
    let mut out = Vec::new();
    // MultiGzDecoder: a .gz may hold several members (concatenated gzip files). Read at
    // most one byte past the limit, so a small file that inflates without bound (a gzip
    // bomb) stops there.
    flate2::read::MultiGzDecoder::new(bytes.as_slice())
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| {
            DataError::malformed(
                file,
                Location::File,
                format!("the gzip stream is corrupt or truncated: {e}"),
            )
        })?;
    if out.len() as u64 > limit {
        return Err(DataError::malformed(
            file,
            Location::File,
            format!(
                "it decompresses to more than {limit} bytes, the limit on a gzipped data \
                 file (raise it with {DECOMPRESSED_LIMIT_VAR}=BYTES, or decompress the file \
                 yourself)"
            ),
        ));
    }
    Ok(out)
}

/// The most bytes a gzipped data file may decompress to unless [`DECOMPRESSED_LIMIT_VAR`]
/// says otherwise: 4 GiB.
pub const MAX_DECOMPRESSED_BYTES: u64 = 4 << 30;

// ---------------------------------------------------------------------------------------
// Tensors (NPY, IDX, safetensors) to datasets

/// Features from a tensor shaped `[n, ...sample]` (`[n]`: one feature per sample).
fn features_from_tensor(
    tensor: HostTensor,
    file: &str,
) -> Result<(Vec<f32>, Vec<u64>, usize), DataError> {
    let Some((&n, rest)) = tensor.shape.split_first() else {
        return Err(DataError::malformed(
            file,
            Location::File,
            "features must have a sample dimension, found a scalar",
        ));
    };
    let sample: Vec<u64> = if rest.is_empty() {
        vec![1]
    } else {
        rest.to_vec()
    };
    if n == 0 || element_count(&sample) == Some(0) {
        return Err(DataError::malformed(
            file,
            Location::File,
            format!(
                "features of shape {} hold no values",
                strata_artifact::error::shape_text(&tensor.shape)
            ),
        ));
    }
    let values = match tensor.data {
        TensorData::F32(v) => v,
        TensorData::I32(v) => v.into_iter().map(|x| x as f32).collect(),
    };
    Ok((values, sample, n as usize))
}

/// Labels from a tensor of `n` samples: integers `[n]` (or `[n, 1]`) are class indices,
/// integers `[n, T, …]` a sequence of them per sample, floats `[n, …]` targets of any
/// shape (flattened per sample).
fn labels_from_tensor(tensor: HostTensor, n: usize, file: &str) -> Result<Labels, DataError> {
    let width = match tensor.shape.split_first() {
        Some((&m, rest)) if m == n as u64 => element_count(rest)
            .and_then(|w| usize::try_from(w).ok())
            .filter(|&w| w > 0),
        _ => None,
    };
    let Some(width) = width else {
        return Err(DataError::malformed(
            file,
            Location::File,
            format!(
                "labels of shape {} do not fit {n} samples (expected [{n}, …])",
                strata_artifact::error::shape_text(&tensor.shape)
            ),
        ));
    };
    match tensor.data {
        TensorData::I32(values) => {
            if let Some(i) = values.iter().position(|&v| v < 0) {
                return Err(DataError::malformed(
                    file,
                    Location::File,
                    format!(
                        "label {i} is {}: class labels must be non-negative",
                        values[i]
                    ),
                ));
            }
            let classes = values.iter().max().map_or(0, |&m| m as usize + 1);
            Ok(match width {
                1 => Labels::Classes { values, classes },
                length => Labels::Sequences {
                    values,
                    classes,
                    length,
                },
            })
        }
        TensorData::F32(values) => Ok(Labels::Targets { values, width }),
    }
}

pub(crate) fn dataset_from_tensors(
    features: HostTensor,
    features_file: &str,
    labels: HostTensor,
    labels_file: &str,
) -> Result<Dataset, DataError> {
    let (values, sample, n) = features_from_tensor(features, features_file)?;
    let labels = labels_from_tensor(labels, n, labels_file)?;
    Dataset::new(values, sample, labels)
}

/// Loads features and labels from two `.npy` files (gzipped or not).
pub fn load_npy(features: &Path, labels: &Path) -> Result<Dataset, DataError> {
    let read = |path: &Path| -> Result<HostTensor, DataError> {
        let bytes = read_data_file(path)?;
        Ok(strata_artifact::npy::read_npy_bytes(&bytes, path)?)
    };
    dataset_from_tensors(
        read(features)?,
        &features.display().to_string(),
        read(labels)?,
        &labels.display().to_string(),
    )
}

//! Files of named arrays (`.npz`, safetensors, a directory of `NAME.npy` files) read for
//! a model: each of its inputs and labels takes the array of its own name, or the one the
//! source maps it to (`npz:f.npz,a=left`), checked against the port's element type and
//! shape before anything is copied.
//!
//! Without a mapping or an array of its name, the features input falls back to an array
//! `features` and the first label to `labels`, the names a one-input dataset file has
//! always used; those two may hold each sample in another shape of the same size (the
//! digits' `[64]` for an input `[1, 8, 8]`), as before. An array found by name must have
//! exactly the port's shape.
//!
//! Errors name the file and the array: a missing array (with the names the file holds),
//! a wrong element type or shape, arrays that disagree on the number of samples.

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use strata_artifact::error::shape_text;
use strata_artifact::tensor::{HostTensor, TensorData, dtype_name, element_count};
use strata_kernels::ir::ScalarType;

use super::npz_file::NpzArchive;
use super::safetensors_file::read_tensor;
use super::{decompressed_limit, read_data_file};
use crate::dataset::{Dataset, Labels, NamedArray};
use crate::error::{DataError, Location};

/// What a port of the model plays in the dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArrayRole {
    /// The features input (normalized, drawn in image grids).
    Features,
    /// The first label: the one the prediction is scored against.
    Label,
    /// Another model input, or another label.
    Other,
}

/// A model input or label to fill from the file.
#[derive(Clone, Debug, PartialEq)]
pub struct ArrayRequest {
    pub name: String,
    pub dtype: ScalarType,
    /// The port's shape without its batch dimension.
    pub sample_shape: Vec<u64>,
    pub role: ArrayRole,
}

/// An opened file of named arrays.
enum ArrayFile {
    Npz(NpzArchive),
    Safetensors(Vec<u8>),
    NpyDir(PathBuf),
}

/// A file of named arrays as a data source names it: its kind, its path, and the
/// `NAME=ARRAY` pairs of the inputs and labels whose arrays have other names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArrayFileSpec<'a> {
    pub kind: ArrayFileKind,
    pub path: &'a Path,
    pub names: &'a [(String, String)],
}

/// The kinds of files of named arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArrayFileKind {
    Npz,
    Safetensors,
    NpyDir,
}

impl ArrayFile {
    fn open(kind: ArrayFileKind, path: &Path, file: &str) -> Result<ArrayFile, DataError> {
        Ok(match kind {
            ArrayFileKind::Npz => {
                let bytes = std::fs::read(path).map_err(|source| DataError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                ArrayFile::Npz(NpzArchive::parse(bytes, file)?)
            }
            ArrayFileKind::Safetensors => {
                let bytes = read_data_file(path)?;
                SafeTensors::deserialize(&bytes).map_err(|e| {
                    DataError::malformed(
                        file,
                        Location::File,
                        format!("not a valid safetensors file: {e}"),
                    )
                })?;
                ArrayFile::Safetensors(bytes)
            }
            ArrayFileKind::NpyDir => {
                if !path.is_dir() {
                    return Err(DataError::malformed(
                        file,
                        Location::File,
                        "not a directory (`npy(\"DIR\")` reads DIR/NAME.npy for each input \
                         and label; `npy(\"x.npy\", \"y.npy\")` reads features and labels)",
                    ));
                }
                ArrayFile::NpyDir(path.to_path_buf())
            }
        })
    }

    /// The arrays the file holds, sorted (for messages).
    fn names(&self) -> Vec<String> {
        let mut names = match self {
            ArrayFile::Npz(archive) => archive.names(),
            ArrayFile::Safetensors(bytes) => SafeTensors::deserialize(bytes)
                .map(|t| t.names().into_iter().map(str::to_string).collect())
                .unwrap_or_default(),
            ArrayFile::NpyDir(dir) => std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok())
                        .filter_map(|e| {
                            let name = e.file_name().into_string().ok()?;
                            Some(name.strip_suffix(".npy")?.to_string())
                        })
                        .collect()
                })
                .unwrap_or_default(),
        };
        names.sort_unstable();
        names
    }

    /// Array `name`, or None if the file has none of that name.
    fn read(&self, name: &str, file: &str) -> Result<Option<HostTensor>, DataError> {
        match self {
            ArrayFile::Npz(archive) => {
                let limit = decompressed_limit(
                    std::env::var(super::DECOMPRESSED_LIMIT_VAR).ok().as_deref(),
                )
                .map_err(|message| DataError::malformed(file, Location::File, message))?;
                let Some(bytes) = archive.npy_bytes(name, limit)? else {
                    return Ok(None);
                };
                let member = PathBuf::from(format!("{file}/{name}.npy"));
                Ok(Some(strata_artifact::npy::read_npy_bytes(&bytes, &member)?))
            }
            ArrayFile::Safetensors(bytes) => {
                let tensors = SafeTensors::deserialize(bytes).map_err(|e| {
                    DataError::malformed(
                        file,
                        Location::File,
                        format!("not a valid safetensors file: {e}"),
                    )
                })?;
                if !tensors.names().contains(&name) {
                    return Ok(None);
                }
                read_tensor(&tensors, name, file).map(Some)
            }
            ArrayFile::NpyDir(dir) => {
                // A name is one file of the directory, never a path out of it.
                if name.contains(['/', '\\']) || name == ".." {
                    return Ok(None);
                }
                let path = dir.join(format!("{name}.npy"));
                if !path.is_file() {
                    return Ok(None);
                }
                let bytes = read_data_file(&path)?;
                Ok(Some(strata_artifact::npy::read_npy_bytes(&bytes, &path)?))
            }
        }
    }
}

/// Loads the arrays `requests` ask for from the file at `path` (`mapping` gives an
/// input's or label's array where it has another name) into a [`Dataset`]: the features
/// and the first label as its features and labels, every other request as one of its
/// [`NamedArray`]s. Without a label request, the labels are a placeholder (zeros) that
/// label-free training never reads.
pub fn load_named(
    kind: ArrayFileKind,
    path: &Path,
    mapping: &[(String, String)],
    requests: &[ArrayRequest],
) -> Result<Dataset, DataError> {
    let file = path.display().to_string();
    let arrays = ArrayFile::open(kind, path, &file)?;
    let bad = |message: String| DataError::malformed(&file, Location::File, message);
    // Each request's array, its name in the file, and whether it was found under a
    // legacy fallback name (which may hold a sample in another shape of the same size).
    let mut found: Vec<(&ArrayRequest, String, HostTensor)> = Vec::new();
    for request in requests {
        let mapped = mapping.iter().find(|(n, _)| *n == request.name);
        let (array, tensor) = match mapped {
            Some((_, array)) => (array.clone(), arrays.read(array, &file)?),
            None => {
                let fallback = match request.role {
                    ArrayRole::Features => Some("features"),
                    ArrayRole::Label => Some("labels"),
                    ArrayRole::Other => None,
                };
                match arrays.read(&request.name, &file)? {
                    Some(t) => (request.name.clone(), Some(t)),
                    None => match fallback {
                        Some(f) => (f.to_string(), arrays.read(f, &file)?),
                        None => (request.name.clone(), None),
                    },
                }
            }
        };
        let Some(tensor) = tensor else {
            let what = match request.role {
                ArrayRole::Label => "label",
                _ => "input",
            };
            let holds = arrays.names();
            let mut message = format!(
                "no array `{array}` for the {what} `{}`; it holds {}",
                request.name,
                if holds.is_empty() {
                    "no arrays".to_string()
                } else {
                    holds.join(", ")
                }
            );
            if mapped.is_none() {
                message.push_str(&format!(
                    " (map one to it in the data source: `{} = \"ARRAY\"`)",
                    request.name
                ));
            }
            return Err(bad(message));
        };
        found.push((request, array, tensor));
    }
    // Every array holds the same samples.
    let mut samples: Option<(u64, &str)> = None;
    for (request, array, tensor) in &found {
        let Some(&n) = tensor.shape.first() else {
            return Err(bad(format!(
                "array `{array}` (for `{}`) is a scalar; it needs a first dimension of samples",
                request.name
            )));
        };
        match samples {
            None => samples = Some((n, array)),
            Some((m, first)) if m != n => {
                return Err(bad(format!(
                    "the arrays disagree on the number of samples: `{first}` has {m}, `{array}` has {n}"
                )));
            }
            Some(_) => {}
        }
    }
    let n = samples.map_or(0, |(n, _)| n);
    if n == 0 {
        return Err(bad("the arrays hold no samples".into()));
    }
    let mut features: Option<(Vec<f32>, Vec<u64>)> = None;
    let mut labels: Option<Labels> = None;
    let mut others = Vec::new();
    for (request, array, tensor) in found {
        let legacy = array != request.name
            && !mapping.iter().any(|(n, _)| *n == request.name)
            && matches!(request.role, ArrayRole::Features | ArrayRole::Label);
        let data = fit(request, &array, tensor, n, legacy).map_err(bad)?;
        match request.role {
            ArrayRole::Features => {
                let values = match data {
                    TensorData::F32(v) => v,
                    // Token ids travel as f32 until the driver feeds them (exact below
                    // 2^24, which `check_token_ids` makes sure of).
                    TensorData::I32(v) => v.into_iter().map(|x| x as f32).collect(),
                };
                features = Some((values, request.sample_shape.clone()));
            }
            ArrayRole::Label => {
                labels = Some(labels_of(request, &array, data).map_err(bad)?);
            }
            ArrayRole::Other => others.push(NamedArray {
                name: request.name.clone(),
                sample_shape: request.sample_shape.clone(),
                data,
            }),
        }
    }
    let Some((values, shape)) = features else {
        return Err(bad("the model takes no features input from the data".into()));
    };
    let labels = labels.unwrap_or(Labels::Targets {
        values: vec![0.0; n as usize],
        width: 1,
    });
    Dataset::new(values, shape, labels)?.with_arrays(others)
}

/// `tensor` (array `array` of the file) as the values `request` takes: its element type
/// converted where that is exact in meaning (integers to an f32 port), its shape checked.
fn fit(
    request: &ArrayRequest,
    array: &str,
    tensor: HostTensor,
    n: u64,
    legacy: bool,
) -> Result<TensorData, String> {
    let mut want = vec![n];
    want.extend_from_slice(&request.sample_shape);
    let port = |shape: &[u64]| {
        let dims: Vec<String> = std::iter::once("batch".to_string())
            .chain(shape.iter().map(|d| d.to_string()))
            .collect();
        format!("[{}]", dims.join(", "))
    };
    let what = match request.role {
        ArrayRole::Label => "label",
        _ => "input",
    };
    let same_size = element_count(&tensor.shape) == element_count(&want);
    if tensor.shape != want && !(legacy && same_size) {
        return Err(format!(
            "array `{array}` is {}, but the {what} `{}` takes {} ({n} samples of {})",
            shape_text(&tensor.shape),
            request.name,
            port(&request.sample_shape),
            shape_text(&request.sample_shape),
        ));
    }
    match (request.dtype, tensor.data) {
        (ScalarType::F32, TensorData::F32(v)) => Ok(TensorData::F32(v)),
        (ScalarType::F32, TensorData::I32(v)) => {
            Ok(TensorData::F32(v.into_iter().map(|x| x as f32).collect()))
        }
        (ScalarType::I32, TensorData::I32(v)) => Ok(TensorData::I32(v)),
        (dtype, TensorData::F32(_)) => Err(format!(
            "array `{array}` holds floating-point numbers, but the {what} `{}` is {}",
            request.name,
            dtype_name(dtype)
        )),
    }
}

/// The first label's values as [`Labels`]: integers are class indices (one per sample,
/// or a sequence of them), floats targets of any shape.
fn labels_of(request: &ArrayRequest, array: &str, data: TensorData) -> Result<Labels, String> {
    let per_sample = element_count(&request.sample_shape)
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0);
    Ok(match data {
        TensorData::F32(values) => Labels::Targets {
            values,
            width: per_sample,
        },
        TensorData::I32(values) => {
            if let Some(i) = values.iter().position(|&v| v < 0) {
                return Err(format!(
                    "array `{array}`: value {i} is {}; class labels are non-negative",
                    values[i]
                ));
            }
            let classes = values.iter().max().map_or(0, |&m| m as usize + 1);
            match per_sample {
                1 => Labels::Classes { values, classes },
                length => Labels::Sequences {
                    values,
                    classes,
                    length,
                },
            }
        }
    })
}

/// The arrays `features` and `labels` of the file at `path`, as a dataset (the file read
/// without a model to say which arrays it needs).
pub fn load_features_and_labels(kind: ArrayFileKind, path: &Path) -> Result<Dataset, DataError> {
    let file = path.display().to_string();
    let arrays = ArrayFile::open(kind, path, &file)?;
    let get = |name: &str| {
        arrays.read(name, &file)?.ok_or_else(|| {
            DataError::malformed(
                &file,
                Location::File,
                format!(
                    "no array `{name}` (without a model, a dataset file holds `features` and \
                     `labels`; this one holds {})",
                    arrays.names().join(", ")
                ),
            )
        })
    };
    super::dataset_from_tensors(get("features")?, &file, get("labels")?, &file)
}

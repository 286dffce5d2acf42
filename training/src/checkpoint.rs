//! Training checkpoints: every tensor the run needs to resume (parameters and optimizer
//! state) plus its counters, in one safetensors file, written atomically.
//!
//! # File format
//!
//! A standard safetensors file, loadable by any safetensors reader. Tensors are `F32` or
//! `I32`, stored under their keys. The header's string metadata holds the scalars:
//!
//! | key | value |
//! |---|---|
//! | `format` | `strata-checkpoint` |
//! | `format_version` | [`CHECKPOINT_FORMAT_VERSION`] in decimal |
//! | `step`, `epoch`, `rng_state` | decimal `u64` |
//! | `best_metric` | shortest round-trip decimal `f64`; absent for `None` |
//! | `extra` | JSON text |
//! | `crc32` | CRC-32 (hex) over every other metadata entry (key and value, in key order), then every tensor's key, dtype, shape and bytes, in key order |
//!
//! safetensors itself checks the header and that the file is exactly as long as the
//! header says (so truncation is caught); the CRC catches flipped bits anywhere else,
//! in a counter as well as in tensor data, which the format alone cannot.
//!
//! The same checkpoint is always the same bytes: the header is written with its keys in
//! sorted order (safetensors writes its metadata in a hash map's order, which changes
//! from one process to the next), so a resumed run's `last.ckpt` can be compared with an
//! uninterrupted one's byte for byte.
//!
//! Version 1 kept the counters outside the CRC; its files are refused with a message
//! that says to start a new run.
//!
//! # Atomic save
//!
//! [`Checkpoint::save_atomic`] writes through [`write_atomic`]: after a crash at any point
//! the target is either the old checkpoint or the new one, never a mix, and a temporary
//! file a killed save left (`.last.ckpt.XXXXXX.tmp`) is removed by the next run in that
//! directory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use strata_kernels::ir::ScalarType;

use super::error::{CheckpointError, ShapeMismatch};
use crate::atomic_file::write_atomic;
use strata_artifact::tensor::{HostTensor, TensorData};

/// The checkpoint format this runtime writes and reads.
pub const CHECKPOINT_FORMAT_VERSION: u32 = 2;

const FORMAT_NAME: &str = "strata-checkpoint";

/// The metadata key of the checksum (the one entry it does not cover).
const CRC_KEY: &str = "crc32";

/// The state of a training run at the end of a step.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Parameters and optimizer state, by key (distinct keys). [`Checkpoint::load`]
    /// returns them in key order.
    pub weights: Vec<(String, HostTensor)>,
    /// Optimizer steps taken.
    pub step: u64,
    /// Epochs completed.
    pub epoch: u64,
    /// The driver's random state (e.g. the Philox counter or derived seed to resume
    /// with).
    pub rng_state: u64,
    /// The best validation metric so far, for early stopping and best-model tracking.
    pub best_metric: Option<f64>,
    /// Anything else the driver wants back on resume (config, normalizer, patience).
    pub extra: serde_json::Value,
}

impl Checkpoint {
    /// The tensor stored under `key`.
    pub fn tensor(&self, key: &str) -> Option<&HostTensor> {
        self.weights.iter().find(|(k, _)| k == key).map(|(_, t)| t)
    }

    /// The checkpoint as safetensors bytes (see the module docs).
    pub fn to_bytes(&self) -> Result<Vec<u8>, CheckpointError> {
        let mut seen = BTreeSet::new();
        for (key, tensor) in &self.weights {
            if !seen.insert(key.as_str()) {
                return Err(CheckpointError::DuplicateKey { key: key.clone() });
            }
            tensor
                .check_len()
                .map_err(|source| CheckpointError::Tensor {
                    key: key.clone(),
                    source,
                })?;
        }
        let owned: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = self
            .weights
            .iter()
            .map(|(key, tensor)| {
                let bytes: Vec<u8> = match &tensor.data {
                    TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                };
                let shape = tensor.shape.iter().map(|&d| d as usize).collect();
                (
                    key.as_str(),
                    safetensors_dtype(tensor.dtype()),
                    shape,
                    bytes,
                )
            })
            .collect();
        let mut views = Vec::with_capacity(owned.len());
        for (key, dtype, shape, bytes) in &owned {
            let view = TensorView::new(*dtype, shape.clone(), bytes)
                .map_err(|e| CheckpointError::Encode(e.to_string()))?;
            views.push((*key, view));
        }

        let mut metadata = BTreeMap::new();
        metadata.insert("format".to_string(), FORMAT_NAME.to_string());
        metadata.insert(
            "format_version".to_string(),
            CHECKPOINT_FORMAT_VERSION.to_string(),
        );
        metadata.insert("step".to_string(), self.step.to_string());
        metadata.insert("epoch".to_string(), self.epoch.to_string());
        metadata.insert("rng_state".to_string(), self.rng_state.to_string());
        if let Some(best) = self.best_metric {
            metadata.insert("best_metric".to_string(), best.to_string());
        }
        metadata.insert("extra".to_string(), self.extra.to_string());
        let mut in_key_order: Vec<_> = owned.iter().collect();
        in_key_order.sort_by_key(|(key, ..)| *key);
        let checksum = checksum(
            metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            in_key_order
                .into_iter()
                .map(|(k, d, s, b)| (*k, *d, s.as_slice(), b.as_slice())),
        );
        metadata.insert(CRC_KEY.to_string(), format!("{checksum:08x}"));
        let bytes = safetensors::serialize(views, Some(metadata.into_iter().collect()))
            .map_err(|e| CheckpointError::Encode(e.to_string()))?;
        with_sorted_metadata(&bytes)
    }

    /// Reads a checkpoint from safetensors bytes; `origin` names it in errors.
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<Checkpoint, CheckpointError> {
        let corrupt = |message: String| CheckpointError::Corrupt {
            path: origin.to_path_buf(),
            message,
        };
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| {
            corrupt(format!(
                "not a complete safetensors file ({e}); it may be truncated"
            ))
        })?;
        let file = SafeTensors::deserialize(bytes).map_err(|e| corrupt(e.to_string()))?;
        let empty = HashMap::new();
        let metadata = header.metadata().as_ref().unwrap_or(&empty);
        let get = |key: &'static str| metadata.get(key).map(String::as_str);

        if get("format") != Some(FORMAT_NAME) {
            return Err(CheckpointError::NotACheckpoint {
                path: origin.to_path_buf(),
                key: "format",
            });
        }
        let version = get("format_version").unwrap_or("(none)");
        if version != CHECKPOINT_FORMAT_VERSION.to_string() {
            return Err(CheckpointError::UnsupportedVersion {
                path: origin.to_path_buf(),
                found: version.to_string(),
                supported: CHECKPOINT_FORMAT_VERSION,
            });
        }
        let stored_crc = get(CRC_KEY).ok_or_else(|| corrupt(format!("no `{CRC_KEY}` entry")))?;
        let stored_crc = u32::from_str_radix(stored_crc, 16)
            .map_err(|_| corrupt(format!("`{CRC_KEY}` `{stored_crc}` is not hexadecimal")))?;
        let mut names = file.names();
        names.sort_unstable();
        let mut views = Vec::with_capacity(names.len());
        for name in names {
            let view = file.tensor(name).map_err(|e| corrupt(e.to_string()))?;
            if !matches!(view.dtype(), Dtype::F32 | Dtype::I32) {
                return Err(corrupt(format!(
                    "tensor `{name}` has dtype {:?}; checkpoints hold F32 and I32",
                    view.dtype()
                )));
            }
            views.push((name, view));
        }
        let entries: BTreeMap<&str, &str> = metadata
            .iter()
            .filter(|(k, _)| k.as_str() != CRC_KEY)
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let computed = checksum(
            entries.into_iter(),
            views
                .iter()
                .map(|(name, view)| (*name, view.dtype(), view.shape(), view.data())),
        );
        // A fuzzing build reads on past a wrong checksum, to reach the metadata behind it.
        if computed != stored_crc && !cfg!(fuzzing) {
            return Err(corrupt(format!(
                "checksum {computed:08x} does not match the stored {stored_crc:08x}: \
                 the counters or the tensor data are damaged"
            )));
        }
        let bad = |key: &str, message: String| CheckpointError::BadMetadata {
            path: origin.to_path_buf(),
            key: key.to_string(),
            message,
        };
        let int = |key: &'static str| -> Result<u64, CheckpointError> {
            let text = get(key).ok_or_else(|| bad(key, "missing".into()))?;
            text.parse()
                .map_err(|_| bad(key, format!("`{text}` is not an unsigned integer")))
        };
        let step = int("step")?;
        let epoch = int("epoch")?;
        let rng_state = int("rng_state")?;
        let best_metric = match get("best_metric") {
            None => None,
            Some(text) => Some(
                text.parse::<f64>()
                    .map_err(|_| bad("best_metric", format!("`{text}` is not a number")))?,
            ),
        };
        let extra = match get("extra") {
            None => serde_json::Value::Null,
            Some(text) => serde_json::from_str(text)
                .map_err(|e| bad("extra", format!("not valid JSON: {e}")))?,
        };
        let weights = views
            .into_iter()
            .map(|(name, view)| (name.to_string(), host_tensor(&view)))
            .collect();
        Ok(Checkpoint {
            weights,
            step,
            epoch,
            rng_state,
            best_metric,
            extra,
        })
    }

    /// Reads and validates a checkpoint file.
    pub fn load(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Checkpoint::from_bytes(&bytes, path)
    }

    /// Writes the checkpoint to `path` atomically (see the module docs); `path` must be
    /// absent or a regular file.
    pub fn save_atomic(&self, path: &Path) -> Result<(), CheckpointError> {
        let bytes = self.to_bytes()?;
        write_atomic(path, &bytes).map_err(|source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Checks the checkpoint's tensors against the `(key, shape)` pairs a model expects;
    /// the error lists every missing key, unexpected key and shape mismatch at once.
    pub fn check_against<K, S>(
        &self,
        expected: impl IntoIterator<Item = (K, S)>,
    ) -> Result<(), CheckpointError>
    where
        K: AsRef<str>,
        S: AsRef<[u64]>,
    {
        let expected: BTreeMap<String, Vec<u64>> = expected
            .into_iter()
            .map(|(k, s)| (k.as_ref().to_string(), s.as_ref().to_vec()))
            .collect();
        let present: BTreeMap<&str, &HostTensor> =
            self.weights.iter().map(|(k, t)| (k.as_str(), t)).collect();
        let missing: Vec<String> = expected
            .keys()
            .filter(|k| !present.contains_key(k.as_str()))
            .cloned()
            .collect();
        let unexpected: Vec<String> = present
            .keys()
            .filter(|k| !expected.contains_key(**k))
            .map(|k| k.to_string())
            .collect();
        let shapes: Vec<ShapeMismatch> = expected
            .iter()
            .filter_map(|(key, shape)| {
                let found = &present.get(key.as_str())?.shape;
                (found != shape).then(|| ShapeMismatch {
                    key: key.clone(),
                    expected: shape.clone(),
                    found: found.clone(),
                })
            })
            .collect();
        if missing.is_empty() && unexpected.is_empty() && shapes.is_empty() {
            Ok(())
        } else {
            Err(CheckpointError::Mismatch {
                missing,
                unexpected,
                shapes,
            })
        }
    }

    /// The tensors alone as a safetensors file, for [`strata_runtime::Session::load_weights`]
    /// when the checkpoint holds exactly the model's persistent buffers.
    pub fn weights_safetensors(&self) -> Result<Vec<u8>, CheckpointError> {
        strata_artifact::weights::encode_weights(self.weights.iter().map(|(k, t)| (k.as_str(), t)))
            .map_err(|e| CheckpointError::Encode(e.to_string()))
    }
}

fn safetensors_dtype(dtype: ScalarType) -> Dtype {
    match dtype {
        ScalarType::F32 => Dtype::F32,
        ScalarType::I32 => Dtype::I32,
    }
}

/// CRC-32 over every metadata `(key, value)` and then every tensor's `(key, dtype,
/// shape, bytes)`, each in the order given.
fn checksum<'a>(
    metadata: impl Iterator<Item = (&'a str, &'a str)>,
    tensors: impl Iterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>,
) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    let text = |hasher: &mut crc32fast::Hasher, s: &str| {
        hasher.update(&(s.len() as u64).to_le_bytes());
        hasher.update(s.as_bytes());
    };
    for (key, value) in metadata {
        text(&mut hasher, key);
        text(&mut hasher, value);
    }
    for (key, dtype, shape, bytes) in tensors {
        text(&mut hasher, key);
        hasher.update(format!("{dtype:?}").as_bytes());
        hasher.update(&(shape.len() as u64).to_le_bytes());
        for &d in shape {
            hasher.update(&(d as u64).to_le_bytes());
        }
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    }
    hasher.finalize()
}

/// A safetensors file with its header's `__metadata__` written in key order (and the
/// header's other entries as safetensors wrote them), so that equal checkpoints are
/// equal bytes. The tensor data and its offsets are unchanged.
fn with_sorted_metadata(bytes: &[u8]) -> Result<Vec<u8>, CheckpointError> {
    let encode = |message: String| CheckpointError::Encode(message);
    let (len, rest) = bytes
        .split_first_chunk::<8>()
        .ok_or_else(|| encode("safetensors wrote no header".into()))?;
    let len = usize::try_from(u64::from_le_bytes(*len))
        .ok()
        .filter(|&n| n <= rest.len())
        .ok_or_else(|| encode("safetensors wrote a header longer than its file".into()))?;
    let (header, data) = rest.split_at(len);
    // The outer map and the metadata are BTreeMaps: sorted whatever serde_json's own
    // map keeps.
    let mut entries: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| encode(e.to_string()))?;
    let metadata = entries.remove("__metadata__");
    let mut text = String::from("{");
    if let Some(metadata) = metadata {
        let sorted: BTreeMap<String, String> =
            serde_json::from_value(metadata).map_err(|e| encode(e.to_string()))?;
        let sorted = serde_json::to_string(&sorted).map_err(|e| encode(e.to_string()))?;
        text.push_str(&format!("\"__metadata__\":{sorted}"));
    }
    for (key, value) in &entries {
        if text.len() > 1 {
            text.push(',');
        }
        let key = serde_json::to_string(key).map_err(|e| encode(e.to_string()))?;
        text.push_str(&format!("{key}:{value}"));
    }
    text.push('}');
    // safetensors pads its header with spaces to a multiple of 8 bytes.
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + data.len());
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(data);
    Ok(out)
}

/// Copies a tensor view (F32 or I32, already checked) into a host tensor.
fn host_tensor(view: &TensorView<'_>) -> HostTensor {
    let shape = view.shape().iter().map(|&d| d as u64).collect();
    let words = view
        .data()
        .chunks_exact(4)
        .filter_map(|c| c.first_chunk::<4>().copied());
    let data = match view.dtype() {
        Dtype::I32 => TensorData::I32(words.map(i32::from_le_bytes).collect()),
        _ => TensorData::F32(words.map(f32::from_le_bytes).collect()),
    };
    HostTensor { shape, data }
}

//! Weights: a safetensors file whose tensors are exactly the model's persistent buffers.
//!
//! Each [`Location::Persistent`] buffer is stored under its key, with the buffer's dtype
//! (`F32` or `I32`) and its (batch-free) shape. A weights file must hold every key and
//! nothing else: a missing parameter would leave the model half-initialized and an extra
//! one almost always means the file belongs to another model.

use std::borrow::Cow;
use std::collections::BTreeSet;

use safetensors::tensor::{TensorView, View};
use safetensors::{Dtype, SafeTensors};
use strata_kernels::ir::{Dim, ScalarType};

use super::manifest::{BufferId, Location, Manifest};
use crate::error::WeightsError;
use crate::tensor::{HostTensor, TensorData, dtype_name};

/// The persistent buffers of a manifest: `(buffer, key)` in buffer order.
pub fn persistent_buffers(manifest: &Manifest) -> Vec<(BufferId, &str)> {
    manifest
        .buffers
        .iter()
        .enumerate()
        .filter_map(|(id, b)| match &b.location {
            Location::Persistent { key } => Some((id, key.as_str())),
            Location::Arena { .. } | Location::Io { .. } | Location::Window(_) => None,
        })
        .collect()
}

/// The shape of a persistent buffer, or None if it (wrongly) depends on the batch.
pub fn fixed_shape(shape: &[Dim]) -> Option<Vec<u64>> {
    shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => Some(*n),
            Dim::Batch => None,
        })
        .collect()
}

/// Checks `bytes` against the persistent buffers of `manifest` and returns, for each
/// persistent buffer in order that the file holds, a view of its tensor. Only optimizer
/// state may be left out: it is then zero ([`crate::weight_keys::starts_at_zero`]).
pub fn match_weights<'a>(
    manifest: &Manifest,
    bytes: &'a [u8],
) -> Result<Vec<(BufferId, TensorView<'a>)>, WeightsError> {
    let file = SafeTensors::deserialize(bytes).map_err(WeightsError::NotSafetensors)?;
    let persistent = persistent_buffers(manifest);
    let expected: BTreeSet<&str> = persistent.iter().map(|(_, key)| *key).collect();
    let present: BTreeSet<&str> = file.names().into_iter().collect();

    let missing: Vec<String> = expected
        .difference(&present)
        .filter(|k| !crate::weight_keys::starts_at_zero(k))
        .map(|k| k.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(WeightsError::Missing { keys: missing });
    }
    let unknown: Vec<String> = present
        .difference(&expected)
        .map(|k| k.to_string())
        .collect();
    if !unknown.is_empty() {
        return Err(WeightsError::Unknown {
            keys: unknown,
            expected: expected.iter().map(|k| k.to_string()).collect(),
        });
    }

    let mut views = Vec::with_capacity(persistent.len());
    for (id, key) in persistent {
        let Some(info) = manifest.buffers.get(id) else {
            continue;
        };
        if !present.contains(key) {
            // Left out: starts at zero (checked above).
            continue;
        }
        let view = file.tensor(key).map_err(|_| WeightsError::Missing {
            keys: vec![key.to_string()],
        })?;
        let expected_dtype = match info.dtype {
            ScalarType::F32 => Dtype::F32,
            ScalarType::I32 => Dtype::I32,
        };
        if view.dtype() != expected_dtype {
            return Err(WeightsError::Dtype {
                key: key.to_string(),
                expected: dtype_name(info.dtype).to_string(),
                found: format!("{:?}", view.dtype()).to_lowercase(),
            });
        }
        let found: Vec<u64> = view.shape().iter().map(|&d| d as u64).collect();
        let Some(expected_shape) = fixed_shape(&info.shape) else {
            return Err(WeightsError::BatchDependent {
                key: key.to_string(),
            });
        };
        if found != expected_shape {
            return Err(WeightsError::Shape {
                key: key.to_string(),
                expected: expected_shape,
                found,
            });
        }
        views.push((id, view));
    }
    Ok(views)
}

/// The persistent buffers of `manifest` that a file's `views` (from [`match_weights`])
/// leave out, with their dtype and shape: optimizer state, which then starts at zero.
pub fn left_out(
    manifest: &Manifest,
    views: &[(BufferId, TensorView<'_>)],
) -> Vec<(BufferId, ScalarType, Vec<u64>)> {
    let held: BTreeSet<BufferId> = views.iter().map(|(id, _)| *id).collect();
    persistent_buffers(manifest)
        .into_iter()
        .filter(|(id, _)| !held.contains(id))
        .filter_map(|(id, _)| {
            let info = manifest.buffers.get(id)?;
            Some((id, info.dtype, fixed_shape(&info.shape)?))
        })
        .collect()
}

/// Copies a (checked) tensor view into a host tensor.
pub fn to_host_tensor(view: &TensorView<'_>) -> HostTensor {
    let dtype = match view.dtype() {
        Dtype::I32 => ScalarType::I32,
        _ => ScalarType::F32,
    };
    let shape = view.shape().iter().map(|&d| d as u64).collect();
    tensor_from_le_bytes(dtype, shape, view.data())
}

/// A host tensor of `shape` from its elements as little-endian words (safetensors'
/// layout); a trailing partial word is ignored.
pub fn tensor_from_le_bytes(dtype: ScalarType, shape: Vec<u64>, bytes: &[u8]) -> HostTensor {
    let whole = &bytes[..bytes.len() / 4 * 4];
    // Little-endian words: on a little-endian host a copy (a start copies every weight).
    let data = match (dtype, cfg!(target_endian = "little")) {
        (ScalarType::I32, true) => TensorData::I32(bytemuck::pod_collect_to_vec(whole)),
        (ScalarType::F32, true) => TensorData::F32(bytemuck::pod_collect_to_vec(whole)),
        (dtype, false) => {
            let words = whole
                .chunks_exact(4)
                .filter_map(|c| c.first_chunk::<4>().copied());
            match dtype {
                ScalarType::I32 => TensorData::I32(words.map(i32::from_le_bytes).collect()),
                ScalarType::F32 => TensorData::F32(words.map(f32::from_le_bytes).collect()),
            }
        }
    };
    HostTensor { shape, data }
}

/// A safetensors file read tensor by tensor: its header is parsed once, and a tensor is
/// decoded only when asked for (an export reads the parameters, not the optimizer's
/// state beside them).
pub struct WeightsReader<'a> {
    file: SafeTensors<'a>,
}

impl<'a> WeightsReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Result<Self, WeightsError> {
        let file = SafeTensors::deserialize(bytes).map_err(WeightsError::NotSafetensors)?;
        Ok(WeightsReader { file })
    }

    /// The tensor named `key`, None when the file has none; fails on a dtype other than
    /// `F32` and `I32`.
    pub fn get(&self, key: &str) -> Result<Option<HostTensor>, WeightsError> {
        let Ok(view) = self.file.tensor(key) else {
            return Ok(None);
        };
        if !matches!(view.dtype(), Dtype::F32 | Dtype::I32) {
            return Err(WeightsError::Dtype {
                key: key.to_string(),
                expected: "F32 or I32".into(),
                found: format!("{:?}", view.dtype()),
            });
        }
        Ok(Some(to_host_tensor(&view)))
    }
}

/// The names of the tensors in a safetensors file, from its header alone (no value is
/// read or copied).
pub fn weight_names(bytes: &[u8]) -> Result<Vec<String>, WeightsError> {
    let file = SafeTensors::deserialize(bytes).map_err(WeightsError::NotSafetensors)?;
    Ok(file.names().into_iter().map(str::to_string).collect())
}

/// Every tensor of a safetensors file as a host tensor, sorted by key; fails
/// on a dtype other than `F32` and `I32`.
pub fn read_weights(bytes: &[u8]) -> Result<Vec<(String, HostTensor)>, WeightsError> {
    let file = SafeTensors::deserialize(bytes).map_err(WeightsError::NotSafetensors)?;
    let mut names = file.names();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    for key in names {
        let view = file.tensor(key).map_err(WeightsError::NotSafetensors)?;
        if !matches!(view.dtype(), Dtype::F32 | Dtype::I32) {
            return Err(WeightsError::Dtype {
                key: key.to_string(),
                expected: "F32 or I32".into(),
                found: format!("{:?}", view.dtype()),
            });
        }
        tensors.push((key.to_string(), to_host_tensor(&view)));
    }
    Ok(tensors)
}

/// An `f32` tensor whose values are computed when the weights file is written, so a
/// model's initial weights exist once, in the file, rather than also as tensors.
pub struct ComputedTensor<'a> {
    shape: Vec<usize>,
    values: Box<dyn Fn() -> Vec<f32> + 'a>,
}

impl<'a> ComputedTensor<'a> {
    /// A tensor of `shape` whose row-major values `values` returns.
    pub fn f32(shape: &[u64], values: impl Fn() -> Vec<f32> + 'a) -> ComputedTensor<'a> {
        ComputedTensor {
            shape: shape.iter().map(|&d| d as usize).collect(),
            values: Box::new(values),
        }
    }

    fn elements(&self) -> usize {
        self.shape.iter().product()
    }
}

impl View for ComputedTensor<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        let mut values = (self.values)();
        // The file's offsets come from the shape: the values must fill it exactly.
        debug_assert_eq!(
            values.len(),
            self.elements(),
            "values do not fill the shape"
        );
        values.resize(self.elements(), 0.0);
        Cow::Owned(values.iter().flat_map(|x| x.to_le_bytes()).collect())
    }

    fn data_len(&self) -> usize {
        self.elements() * std::mem::size_of::<f32>()
    }
}

/// [`encode_weights`] of tensors computed one at a time as they are written: the same
/// bytes for the same keys, shapes and values.
pub fn encode_computed_weights<'a>(
    tensors: impl IntoIterator<Item = (&'a str, ComputedTensor<'a>)>,
) -> Result<Vec<u8>, WeightsError> {
    safetensors::serialize(tensors, None).map_err(WeightsError::Serialize)
}

/// Writes named host tensors as a safetensors file.
pub fn encode_weights<'t>(
    tensors: impl IntoIterator<Item = (&'t str, &'t HostTensor)>,
) -> Result<Vec<u8>, WeightsError> {
    let mut owned = Vec::new();
    for (key, tensor) in tensors {
        tensor.check_len().map_err(|source| WeightsError::Tensor {
            key: key.to_string(),
            source,
        })?;
        let bytes: Vec<u8> = match &tensor.data {
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        };
        let dtype = match tensor.dtype() {
            ScalarType::F32 => Dtype::F32,
            ScalarType::I32 => Dtype::I32,
        };
        let shape: Vec<usize> = tensor.shape.iter().map(|&d| d as usize).collect();
        owned.push((key, dtype, shape, bytes));
    }
    let mut views = Vec::with_capacity(owned.len());
    for (key, dtype, shape, bytes) in &owned {
        let view =
            TensorView::new(*dtype, shape.clone(), bytes).map_err(WeightsError::Serialize)?;
        views.push((*key, view));
    }
    safetensors::serialize(views, None).map_err(WeightsError::Serialize)
}

/// How one tensor name lines up between a weights file and a model (see
/// [`compare_weights`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WeightsMatch {
    /// In both, with the same dtype and shape.
    Matched,
    /// A persistent buffer of the model that the file lacks.
    Missing,
    /// A tensor of the file that the model has no buffer for.
    Unused,
    /// In both, with another dtype or shape.
    Mismatch,
}

/// One name of a weights comparison: the model's type for it and the file's, each as
/// text (`f32[24, 8]`), when there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightsEntry {
    pub key: String,
    pub status: WeightsMatch,
    pub model: Option<String>,
    pub file: Option<String>,
}

/// Every tensor name of a weights file and of a model's persistent buffers, sorted by
/// name, each with how it matches: what `match_weights` would refuse, all at once.
pub fn compare_weights(
    manifest: &Manifest,
    bytes: &[u8],
) -> Result<Vec<WeightsEntry>, WeightsError> {
    let file = SafeTensors::deserialize(bytes).map_err(WeightsError::NotSafetensors)?;
    let mut model_types = std::collections::BTreeMap::new();
    for (id, key) in persistent_buffers(manifest) {
        if let Some(info) = manifest.buffers.get(id) {
            let shape: Vec<String> = info.shape.iter().map(ToString::to_string).collect();
            let text = format!("{}[{}]", dtype_name(info.dtype), shape.join(", "));
            model_types.insert(key.to_string(), text);
        }
    }
    let mut file_types = std::collections::BTreeMap::new();
    for (key, view) in file.tensors() {
        let shape: Vec<String> = view.shape().iter().map(ToString::to_string).collect();
        let dtype = format!("{:?}", view.dtype()).to_lowercase();
        file_types.insert(key, format!("{dtype}[{}]", shape.join(", ")));
    }
    let keys: BTreeSet<&String> = model_types.keys().chain(file_types.keys()).collect();
    Ok(keys
        .into_iter()
        .map(|key| {
            let model = model_types.get(key).cloned();
            let file = file_types.get(key).cloned();
            let status = match (&model, &file) {
                (Some(m), Some(f)) if m == f => WeightsMatch::Matched,
                (Some(_), Some(_)) => WeightsMatch::Mismatch,
                (Some(_), None) => WeightsMatch::Missing,
                (None, _) => WeightsMatch::Unused,
            };
            WeightsEntry {
                key: key.clone(),
                status,
                model,
                file,
            }
        })
        .collect())
}

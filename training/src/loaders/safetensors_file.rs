//! Datasets stored as a safetensors file with the tensors `features` (`[n, ...]`) and
//! `labels` (`[n]` integers for classes, `[n]` or `[n, width]` floats for targets).

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use super::{dataset_from_tensors, read_data_file};
use crate::dataset::Dataset;
use crate::error::{DataError, Location};
use strata_artifact::tensor::{HostTensor, TensorData};

/// Loads a safetensors file holding tensors `features` and `labels` (other tensors are
/// ignored).
pub fn load_safetensors(path: &Path) -> Result<Dataset, DataError> {
    let file = path.display().to_string();
    parse_safetensors(&read_data_file(path)?, &file)
}

/// Parses safetensors bytes holding `features` and `labels`; `file` names it in errors.
pub fn parse_safetensors(bytes: &[u8], file: &str) -> Result<Dataset, DataError> {
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| {
        DataError::malformed(
            file,
            Location::File,
            format!("not a valid safetensors file: {e}"),
        )
    })?;
    let get = |key: &str| read_tensor(&tensors, key, file);
    dataset_from_tensors(get("features")?, file, get("labels")?, file)
}

/// Tensor `key` of `tensors` (a dataset file, `file` in errors), its elements widened or
/// narrowed to f32 or i32; a missing tensor is an error listing the file's tensors.
pub(crate) fn read_tensor(
    tensors: &SafeTensors<'_>,
    key: &str,
    file: &str,
) -> Result<HostTensor, DataError> {
    let view = tensors.tensor(key).map_err(|_| {
        let mut names = tensors.names();
        names.sort_unstable();
        DataError::malformed(
            file,
            Location::File,
            format!(
                "no tensor `{key}` (a dataset file holds `features` and `labels`; this one \
                 holds {})",
                names.join(", ")
            ),
        )
    })?;
    let shape: Vec<u64> = view.shape().iter().map(|&d| d as u64).collect();
    let data = view.data();
    let data = match view.dtype() {
        Dtype::F32 => TensorData::F32(
            data.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        Dtype::F64 => TensorData::F32(
            data.chunks_exact(8)
                .filter_map(|c| c.first_chunk::<8>())
                .map(|c| f64::from_le_bytes(*c) as f32)
                .collect(),
        ),
        Dtype::U8 => TensorData::I32(data.iter().map(|&b| i32::from(b)).collect()),
        Dtype::I8 => TensorData::I32(data.iter().map(|&b| i32::from(b as i8)).collect()),
        Dtype::I16 => TensorData::I32(
            data.chunks_exact(2)
                .map(|c| i32::from(i16::from_le_bytes([c[0], c[1]])))
                .collect(),
        ),
        Dtype::U16 => TensorData::I32(
            data.chunks_exact(2)
                .map(|c| i32::from(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
        ),
        Dtype::I32 => TensorData::I32(
            data.chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        Dtype::I64 => {
            let mut out = Vec::with_capacity(data.len() / 8);
            for (i, c) in data.chunks_exact(8).enumerate() {
                let Some(c) = c.first_chunk::<8>() else {
                    continue;
                };
                let v = i64::from_le_bytes(*c);
                out.push(i32::try_from(v).map_err(|_| {
                    DataError::malformed(
                        file,
                        Location::File,
                        format!("tensor `{key}`: element {i} is {v}, which does not fit in i32"),
                    )
                })?);
            }
            TensorData::I32(out)
        }
        other => {
            return Err(DataError::malformed(
                file,
                Location::File,
                format!(
                    "tensor `{key}` has dtype {other:?} (supported: F32, F64, U8, I8, I16, \
                     U16, I32, I64)"
                ),
            ));
        }
    };
    HostTensor::new(shape, data)
        .map_err(|e| DataError::malformed(file, Location::File, format!("tensor `{key}`: {e}")))
}

//! IDX files, the format of the MNIST distribution (LeCun et al.): a magic giving the
//! element type and the number of dimensions, big-endian `u32` extents, then big-endian
//! elements.

use std::path::Path;

use super::{dataset_from_tensors, read_data_file};
use crate::dataset::Dataset;
use crate::error::{DataError, Location};
use strata_artifact::tensor::{HostTensor, TensorData, element_count};

/// Loads an IDX images file and an IDX labels file (gzipped or not): the MNIST format.
pub fn load_idx(images: &Path, labels: &Path) -> Result<Dataset, DataError> {
    let images_name = images.display().to_string();
    let labels_name = labels.display().to_string();
    let images = parse_idx(&read_data_file(images)?, &images_name)?;
    let labels = parse_idx(&read_data_file(labels)?, &labels_name)?;
    dataset_from_tensors(images, &images_name, labels, &labels_name)
}

/// Parses an IDX file: two zero bytes, a type byte, a dimension count, big-endian `u32`
/// extents, then big-endian elements. Integer types (`u8`, `i8`, `i16`, `i32`) become
/// `i32` tensors, `f32` and `f64` become `f32`. The file must hold exactly the elements
/// its header announces.
pub fn parse_idx(bytes: &[u8], file: &str) -> Result<HostTensor, DataError> {
    let at = |offset: usize, message: String| {
        DataError::malformed(file, Location::Offset(offset as u64), message)
    };
    let Some(&[z0, z1, type_code, ndims]) = bytes.first_chunk::<4>() else {
        return Err(at(
            bytes.len(),
            "truncated: an IDX header needs 4 bytes".into(),
        ));
    };
    if z0 != 0 || z1 != 0 {
        return Err(at(
            0,
            format!("not an IDX file: the magic starts {z0:#04x} {z1:#04x}, not 00 00"),
        ));
    }
    let element_size = match type_code {
        0x08 | 0x09 => 1,
        0x0b => 2,
        0x0c | 0x0d => 4,
        0x0e => 8,
        other => {
            return Err(at(
                2,
                format!(
                    "unknown IDX element type {other:#04x} (known: 0x08 u8, 0x09 i8, 0x0b i16, \
                     0x0c i32, 0x0d f32, 0x0e f64)"
                ),
            ));
        }
    };
    if ndims == 0 {
        return Err(at(3, "an IDX array needs at least one dimension".into()));
    }
    let header_len = 4 + 4 * usize::from(ndims);
    let Some(dims) = bytes.get(4..header_len) else {
        return Err(at(
            bytes.len(),
            format!(
                "truncated: the header announces {ndims} dimensions ({header_len} header bytes)"
            ),
        ));
    };
    let shape: Vec<u64> = dims
        .chunks_exact(4)
        .map(|d| u64::from(u32::from_be_bytes([d[0], d[1], d[2], d[3]])))
        .collect();
    let data = &bytes[header_len..];
    let needed = element_count(&shape).and_then(|n| n.checked_mul(element_size));
    match needed {
        Some(needed) if needed == data.len() as u64 => {}
        Some(needed) if needed > data.len() as u64 => {
            return Err(at(
                bytes.len(),
                format!(
                    "truncated: shape {} needs {needed} data bytes after the {header_len}-byte \
                     header, the file has {}",
                    strata_artifact::error::shape_text(&shape),
                    data.len()
                ),
            ));
        }
        Some(needed) => {
            return Err(at(
                header_len + needed as usize,
                format!(
                    "{} unexpected bytes after the data of shape {}",
                    data.len() as u64 - needed,
                    strata_artifact::error::shape_text(&shape)
                ),
            ));
        }
        None => {
            return Err(at(
                4,
                format!(
                    "shape {} is too large",
                    strata_artifact::error::shape_text(&shape)
                ),
            ));
        }
    }
    let values = match type_code {
        0x08 => TensorData::I32(data.iter().map(|&b| i32::from(b)).collect()),
        0x09 => TensorData::I32(data.iter().map(|&b| i32::from(b as i8)).collect()),
        0x0b => TensorData::I32(
            data.chunks_exact(2)
                .map(|c| i32::from(i16::from_be_bytes([c[0], c[1]])))
                .collect(),
        ),
        0x0c => TensorData::I32(
            data.chunks_exact(4)
                .map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        0x0d => TensorData::F32(
            data.chunks_exact(4)
                .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        _ => TensorData::F32(
            data.chunks_exact(8)
                .filter_map(|c| c.first_chunk::<8>())
                .map(|c| f64::from_be_bytes(*c) as f32)
                .collect(),
        ),
    };
    Ok(HostTensor {
        shape,
        data: values,
    })
}

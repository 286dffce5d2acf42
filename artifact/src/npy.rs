//! Reading and writing NumPy `.npy` files as [`HostTensor`]s.
//!
//! Read: `float32`, `float64` (rounded to f32), `int32` and `int64` (which must fit in
//! i32), either endianness, C order only. Written: `float32` and `int32`, C order.
//! Every error names the file.
//!
//! Before npyz sees a header, its `shape` is checked for a product that overflows and the
//! data is checked to be as long as the header says: npyz computes both products
//! unchecked and sizes its output from the header, so a hostile header could otherwise
//! abort the process instead of producing an error.

use std::path::Path;

use npyz::{DType, NpyFile, Order, TypeChar, WriterBuilder};

use crate::error::NpyError;
use crate::tensor::{HostTensor, TensorData};

/// Reads a `.npy` file.
pub fn read_npy(path: &Path) -> Result<HostTensor, NpyError> {
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_npy_bytes(&bytes, path)
}

/// Writes a tensor as a `.npy` file (`float32` or `int32`).
pub fn write_npy(path: &Path, tensor: &HostTensor) -> Result<(), NpyError> {
    let bytes = npy_bytes(tensor, path)?;
    let io = |source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    };
    crate::output_path::check_output_path(path).map_err(io)?;
    std::fs::write(path, bytes).map_err(io)
}

/// Parses the contents of a `.npy` file; `path` is only used in error messages.
pub fn read_npy_bytes(bytes: &[u8], path: &Path) -> Result<HostTensor, NpyError> {
    let format = |message: String| NpyError::Format {
        path: path.to_path_buf(),
        message,
    };
    let header = precheck_header(bytes).map_err(format)?;

    let npy = NpyFile::new(bytes).map_err(|e| format(e.to_string()))?;
    if npy.order() == Order::Fortran {
        return Err(NpyError::FortranOrder {
            path: path.to_path_buf(),
        });
    }
    let dtype = npy.dtype();
    let kind = match &dtype {
        DType::Plain(t) => match (t.type_char(), t.size_field()) {
            (TypeChar::Float, 4) => Some(Kind::F32),
            (TypeChar::Float, 8) => Some(Kind::F64),
            (TypeChar::Int, 4) => Some(Kind::I32),
            (TypeChar::Int, 8) => Some(Kind::I64),
            (TypeChar::Int, 1) => Some(Kind::I8),
            (TypeChar::Int, 2) => Some(Kind::I16),
            (TypeChar::Uint, 1) => Some(Kind::U8),
            (TypeChar::Uint, 2) => Some(Kind::U16),
            _ => None,
        },
        DType::Array(..) | DType::Record(_) => None,
    };
    let Some(kind) = kind else {
        return Err(NpyError::UnsupportedDtype {
            path: path.to_path_buf(),
            dtype: dtype.descr(),
        });
    };
    let shape = npy.shape().to_vec();
    let needed = npy.len().checked_mul(kind.size());
    if needed.is_none_or(|n| n > header.data_len) {
        return Err(format(format!(
            "the header announces {} elements of {} bytes but the file holds {} data bytes",
            npy.len(),
            kind.size(),
            header.data_len
        )));
    }
    // Bytes after the data mean the header's shape is not the file's (or two files were
    // joined): refused rather than ignored.
    if let Some(n) = needed
        && n < header.data_len
    {
        return Err(format(format!(
            "{} bytes after the data: the header announces {} elements of {} bytes ({n} bytes) but the file holds {} data bytes",
            header.data_len - n,
            npy.len(),
            kind.size(),
            header.data_len
        )));
    }
    let io = |e: std::io::Error| format(e.to_string());
    let data = match kind {
        Kind::F32 => TensorData::F32(npy.into_vec::<f32>().map_err(io)?),
        Kind::F64 => {
            let wide = npy.into_vec::<f64>().map_err(io)?;
            TensorData::F32(wide.into_iter().map(|x| x as f32).collect())
        }
        Kind::I32 => TensorData::I32(npy.into_vec::<i32>().map_err(io)?),
        Kind::I64 => {
            let wide = npy.into_vec::<i64>().map_err(io)?;
            let mut narrow = Vec::with_capacity(wide.len());
            for (index, value) in wide.into_iter().enumerate() {
                let v = i32::try_from(value).map_err(|_| NpyError::OutOfRange {
                    path: path.to_path_buf(),
                    index,
                    value,
                })?;
                narrow.push(v);
            }
            TensorData::I32(narrow)
        }
        Kind::U8 => widen(npy.into_vec::<u8>().map_err(io)?),
        Kind::I8 => widen(npy.into_vec::<i8>().map_err(io)?),
        Kind::U16 => widen(npy.into_vec::<u16>().map_err(io)?),
        Kind::I16 => widen(npy.into_vec::<i16>().map_err(io)?),
    };
    HostTensor::new(shape, data).map_err(|e| format(e.to_string()))
}

/// Narrow integers as i32.
fn widen<T: Into<i32>>(values: Vec<T>) -> TensorData {
    TensorData::I32(values.into_iter().map(Into::into).collect())
}

/// The contents of a `.npy` file holding `tensor`; `path` is only used in error messages.
pub fn npy_bytes(tensor: &HostTensor, path: &Path) -> Result<Vec<u8>, NpyError> {
    let format = |message: String| NpyError::Format {
        path: path.to_path_buf(),
        message,
    };
    tensor.check_len().map_err(|e| format(e.to_string()))?;
    let io = |e: std::io::Error| NpyError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let mut out = Vec::new();
    match &tensor.data {
        TensorData::F32(v) => {
            let mut writer = npyz::WriteOptions::new()
                .default_dtype()
                .shape(&tensor.shape)
                .writer(&mut out)
                .begin_nd()
                .map_err(io)?;
            writer.extend(v.iter().copied()).map_err(io)?;
            writer.finish().map_err(io)?;
        }
        TensorData::I32(v) => {
            let mut writer = npyz::WriteOptions::new()
                .default_dtype()
                .shape(&tensor.shape)
                .writer(&mut out)
                .begin_nd()
                .map_err(io)?;
            writer.extend(v.iter().copied()).map_err(io)?;
            writer.finish().map_err(io)?;
        }
    }
    Ok(out)
}

#[derive(Clone, Copy)]
enum Kind {
    F32,
    F64,
    I32,
    I64,
    /// Narrow integers (`u1`, `i1`, `u2`, `i2`: pixel counts, class labels), widened to i32.
    U8,
    I8,
    U16,
    I16,
}

impl Kind {
    fn size(self) -> u64 {
        match self {
            Kind::F32 | Kind::I32 => 4,
            Kind::F64 | Kind::I64 => 8,
            Kind::U8 | Kind::I8 => 1,
            Kind::U16 | Kind::I16 => 2,
        }
    }
}

/// What the pre-check learned about a header.
struct HeaderFacts {
    /// Bytes after the header.
    data_len: u64,
}

/// Checks the header's framing and that its shape's products cannot overflow.
fn precheck_header(bytes: &[u8]) -> Result<HeaderFacts, String> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if !bytes.starts_with(MAGIC) {
        return Err("it does not start with the .npy magic".into());
    }
    let major = *bytes.get(6).ok_or("the header is truncated")?;
    let (len, start) = match major {
        1 => {
            let b = bytes.get(8..10).ok_or("the header is truncated")?;
            (u64::from(u16::from_le_bytes([b[0], b[1]])), 10u64)
        }
        2 | 3 => {
            let b = bytes.get(8..12).ok_or("the header is truncated")?;
            (
                u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                12u64,
            )
        }
        v => return Err(format!("format version {v} is not supported")),
    };
    let end = start + len;
    let text = usize::try_from(end)
        .ok()
        .and_then(|end| bytes.get(start as usize..end))
        .ok_or("the header is truncated")?;
    let text = String::from_utf8_lossy(text);
    // npyz's header parser backtracks over nested brackets, taking time exponential in
    // their depth; a header Strata can read nests two deep (`{… 'shape': (…)}`).
    let depth = nesting_depth(&text);
    if depth > MAX_HEADER_NESTING {
        return Err(format!(
            "the header nests brackets {depth} deep (at most {MAX_HEADER_NESTING} is read)"
        ));
    }
    let shape = parse_shape(&text).ok_or("cannot read the `shape` of the header")?;
    // If the product of the non-zero extents fits, so does every partial product npyz
    // computes (in either order).
    let fits = shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .is_some();
    if !fits {
        return Err(format!("shape {shape:?} is too large"));
    }
    Ok(HeaderFacts {
        data_len: bytes.len() as u64 - end,
    })
}

/// The deepest a header's brackets may nest: a plain dtype's header nests 2 deep, a
/// record dtype's (refused later, but with a clear message) a few more.
const MAX_HEADER_NESTING: usize = 8;

/// How deep the brackets `(`, `[` and `{` of `text` nest (closers never go below 0).
fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for c in text.chars() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The tuple after the `shape` key of a header dict: `'shape': (2, 3)` gives `[2, 3]`.
fn parse_shape(header: &str) -> Option<Vec<u64>> {
    let key = header
        .find("'shape'")
        .or_else(|| header.find("\"shape\""))?;
    let rest = header.get(key + "'shape'".len()..)?.trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('(')?;
    let close = rest.find(')')?;
    rest[..close]
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.trim_end_matches('L').parse::<u64>().ok())
        .collect()
}

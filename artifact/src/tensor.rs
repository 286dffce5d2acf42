//! Host tensors: the values that go into and come out of an entry, and the runtime's
//! copy of persistent buffers (parameters).
//!
//! A [`HostTensor`] is a concrete shape and a flat, row-major vector of `f32` or `i32`
//! elements. Its constructors keep the invariant that the data holds exactly the product
//! of the shape's extents; code that fills the public fields directly must keep it too
//! (the session checks it again before copying a tensor into the arena).

use strata_kernels::ir::{Dim, ScalarType};

use crate::error::TensorError;

/// The elements of a [`HostTensor`], row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    I32(Vec<i32>),
}

impl TensorData {
    pub fn dtype(&self) -> ScalarType {
        match self {
            TensorData::F32(_) => ScalarType::F32,
            TensorData::I32(_) => ScalarType::I32,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements of `dtype` read from native-endian bytes (a trailing partial element is
    /// ignored); the bytes need no alignment.
    pub fn from_ne_bytes(dtype: ScalarType, bytes: &[u8]) -> TensorData {
        let words = bytes
            .chunks_exact(4)
            .filter_map(|c| c.first_chunk::<4>().copied());
        match dtype {
            ScalarType::F32 => TensorData::F32(words.map(f32::from_ne_bytes).collect()),
            ScalarType::I32 => TensorData::I32(words.map(i32::from_ne_bytes).collect()),
        }
    }

    /// The elements as native-endian bytes (what generated kernels read and write).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            TensorData::F32(v) => bytemuck::cast_slice(v),
            TensorData::I32(v) => bytemuck::cast_slice(v),
        }
    }

    /// The elements as mutable native-endian bytes.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        match self {
            TensorData::F32(v) => bytemuck::cast_slice_mut(v),
            TensorData::I32(v) => bytemuck::cast_slice_mut(v),
        }
    }
}

/// A tensor in host memory.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<u64>,
    pub data: TensorData,
}

impl HostTensor {
    /// An `f32` tensor; fails unless `data` holds exactly the elements of `shape`.
    pub fn f32(shape: Vec<u64>, data: Vec<f32>) -> Result<HostTensor, TensorError> {
        HostTensor::new(shape, TensorData::F32(data))
    }

    /// An `i32` tensor; fails unless `data` holds exactly the elements of `shape`.
    pub fn i32(shape: Vec<u64>, data: Vec<i32>) -> Result<HostTensor, TensorError> {
        HostTensor::new(shape, TensorData::I32(data))
    }

    /// A tensor of `data` viewed with `shape`; fails unless the element counts agree.
    pub fn new(shape: Vec<u64>, data: TensorData) -> Result<HostTensor, TensorError> {
        let tensor = HostTensor { shape, data };
        tensor.check_len()?;
        Ok(tensor)
    }

    /// A tensor of zeros; fails if the element count does not fit in memory's index type.
    pub fn zeros(dtype: ScalarType, shape: Vec<u64>) -> Result<HostTensor, TensorError> {
        let n = element_count(&shape).ok_or_else(|| TensorError::TooLarge {
            shape: shape.clone(),
        })?;
        let n = usize::try_from(n).map_err(|_| TensorError::TooLarge {
            shape: shape.clone(),
        })?;
        let data = match dtype {
            ScalarType::F32 => TensorData::F32(vec![0.0; n]),
            ScalarType::I32 => TensorData::I32(vec![0; n]),
        };
        Ok(HostTensor { shape, data })
    }

    pub fn dtype(&self) -> ScalarType {
        self.data.dtype()
    }

    /// Number of elements the shape describes (None on overflow).
    pub fn elements(&self) -> Option<u64> {
        element_count(&self.shape)
    }

    /// The elements if this is an `f32` tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            TensorData::I32(_) => None,
        }
    }

    /// The elements if this is an `i32` tensor.
    pub fn as_i32(&self) -> Option<&[i32]> {
        match &self.data {
            TensorData::I32(v) => Some(v),
            TensorData::F32(_) => None,
        }
    }

    /// Checks that the data holds exactly the elements of the shape.
    pub fn check_len(&self) -> Result<(), TensorError> {
        match self.elements() {
            Some(n) if n == self.data.len() as u64 => Ok(()),
            _ => Err(TensorError::LengthMismatch {
                shape: self.shape.clone(),
                len: self.data.len(),
            }),
        }
    }

    /// The tensor's type as text, `f32[5, 63]`.
    pub fn type_string(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(u64::to_string).collect();
        format!("{}[{}]", dtype_name(self.dtype()), dims.join(", "))
    }
}

/// Product of the extents (None on overflow).
pub fn element_count(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))
}

/// The lowercase name of a dtype, as the DSL writes it: `f32`, `i32`.
pub fn dtype_name(dtype: ScalarType) -> &'static str {
    match dtype {
        ScalarType::F32 => "f32",
        ScalarType::I32 => "i32",
    }
}

/// A declared (possibly batch-dependent) type as text, `f32[batch, 64]`.
pub fn type_string(dtype: ScalarType, shape: &[Dim]) -> String {
    let dims: Vec<String> = shape.iter().map(Dim::to_string).collect();
    format!("{}[{}]", dtype_name(dtype), dims.join(", "))
}

/// The position of the highest score in `row`, the predicted class: ties go to the
/// lowest index, and a NaN never beats a number (a row of NaNs, or an empty row,
/// gives 0). Metrics and greedy decoding both predict with it.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (j, &x) in row.iter().enumerate().skip(1) {
        if x > row[best] || (row[best].is_nan() && !x.is_nan()) {
            best = j;
        }
    }
    best
}

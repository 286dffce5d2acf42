//! Tensor types: element types, dimensions with a symbolic batch, shapes.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    F32,
    I32,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I32 => "i32",
        }
    }

    pub fn parse(s: &str) -> Option<DType> {
        match s {
            "f32" => Some(DType::F32),
            "i32" => Some(DType::I32),
            _ => None,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One dimension: a fixed extent or the symbolic batch size, known only at run time.
///
/// A shape holds the batch at most once: every tensor's size is then proportional to the
/// batch or independent of it, which the memory plan relies on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Dim {
    Batch,
    Fixed(u64),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Batch => f.write_str("batch"),
            Dim::Fixed(n) => write!(f, "{n}"),
        }
    }
}

impl Dim {
    pub fn fixed(self) -> Option<u64> {
        match self {
            Dim::Fixed(n) => Some(n),
            Dim::Batch => None,
        }
    }

    pub fn resolve(self, batch: u64) -> u64 {
        self.fixed().unwrap_or(batch)
    }
}

/// A list of dimensions, outermost first (row-major).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    pub fn scalar() -> Shape {
        Shape(Vec::new())
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    pub fn dims(&self) -> &[Dim] {
        &self.0
    }

    pub fn has_batch(&self) -> bool {
        self.0.contains(&Dim::Batch)
    }

    /// Product of the fixed dimensions (the elements per batch row if it has a batch).
    /// Saturates at `u64::MAX` instead of overflowing.
    pub fn fixed_elements(&self) -> u64 {
        self.0
            .iter()
            .filter_map(|d| d.fixed())
            .fold(1u64, |acc, d| acc.saturating_mul(d))
    }

    /// Number of elements for a concrete batch size.
    /// Saturates at `u64::MAX` instead of overflowing.
    pub fn elements(&self, batch: u64) -> u64 {
        self.0
            .iter()
            .fold(1u64, |acc, d| acc.saturating_mul(d.resolve(batch)))
    }

    /// Concrete extents for a batch size.
    pub fn resolve(&self, batch: u64) -> Vec<usize> {
        self.0.iter().map(|d| d.resolve(batch) as usize).collect()
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// The type of a value: element type and shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Shape,
}

impl TensorType {
    pub fn new(dtype: DType, dims: Vec<Dim>) -> TensorType {
        TensorType {
            dtype,
            shape: Shape(dims),
        }
    }

    pub fn f32(dims: Vec<Dim>) -> TensorType {
        TensorType::new(DType::F32, dims)
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, self.shape)
    }
}

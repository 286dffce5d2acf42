//! The operations of the graph IR and their typing rules.
//!
//! The set is small and orthogonal: layers (`dense`, `softmax`, …) are built from these
//! during elaboration, so autodiff, fusion and the backends see few kinds of op.

use super::scan::Scan;
use super::types::{DType, Dim, Shape, TensorType};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The element-wise ops of [`Op::Unary`], [`Op::Binary`] and [`Op::Reduce`], the same
/// enums as the kernel IR's, so lowering carries them across unchanged. Their names in the
/// text form and their `f64` meaning (what the interpreter computes) are defined in
/// [`strata_kernels::scalar_op`].
pub use strata_kernels::scalar_op::{BinaryOp, ReduceOp, UnaryOp};

/// How a parameter's initial value is drawn. `fan_in`/`fan_out` come from the layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Init {
    Zeros,
    Ones,
    Constant(f64),
    /// U(-a, a) with a = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010).
    XavierUniform,
    /// N(0, 2 / (fan_in + fan_out)).
    XavierNormal,
    /// U(-a, a) with a = sqrt(6 / fan_in) (He et al. 2015, PyTorch's kaiming_uniform_ with relu gain).
    HeUniform,
    /// N(0, 2 / fan_in).
    HeNormal,
    Uniform(f64),
    Normal(f64),
}

impl Init {
    pub fn parse(s: &str) -> Option<Init> {
        Some(match s {
            "zeros" => Init::Zeros,
            "ones" => Init::Ones,
            "xavier_uniform" | "glorot_uniform" => Init::XavierUniform,
            "xavier_normal" | "glorot_normal" => Init::XavierNormal,
            "he_uniform" | "kaiming_uniform" => Init::HeUniform,
            "he_normal" | "kaiming_normal" => Init::HeNormal,
            _ => return None,
        })
    }

    pub const NAMES: &'static [&'static str] = &[
        "zeros",
        "ones",
        "xavier_uniform",
        "xavier_normal",
        "he_uniform",
        "he_normal",
    ];
}

impl fmt::Display for Init {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Init::Zeros => f.write_str("zeros"),
            Init::Ones => f.write_str("ones"),
            Init::Constant(c) => write!(f, "constant({c})"),
            Init::XavierUniform => f.write_str("xavier_uniform"),
            Init::XavierNormal => f.write_str("xavier_normal"),
            Init::HeUniform => f.write_str("he_uniform"),
            Init::HeNormal => f.write_str("he_normal"),
            Init::Uniform(a) => write!(f, "uniform({a})"),
            Init::Normal(s) => write!(f, "normal({s})"),
        }
    }
}

/// The sliding window of a 2-d convolution, PyTorch's `Conv2d` geometry: a `kh x kw`
/// kernel whose taps are `dilation` apart, moved by `stride`, over an input zero-padded by
/// `padding` on every side. Every field is at least 1 except `padding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConvWindow {
    pub kh: u64,
    pub kw: u64,
    pub stride: u64,
    pub padding: u64,
    pub dilation: u64,
}

impl ConvWindow {
    /// The output extent along an input extent `n` with kernel extent `k`:
    /// `(n + 2 padding - dilation (k - 1) - 1) / stride + 1`, or why there is none.
    pub fn out_extent(&self, n: u64, k: u64) -> Result<u64, String> {
        if self.kh == 0 || self.kw == 0 || self.stride == 0 || self.dilation == 0 {
            return Err(format!(
                "kernel {}x{}, stride {} and dilation {} must be at least 1",
                self.kh, self.kw, self.stride, self.dilation
            ));
        }
        let span = self.dilation * (k - 1) + 1;
        let padded = n + 2 * self.padding;
        if span > padded {
            return Err(format!(
                "the kernel spans {span} pixels but the padded input has {padded}"
            ));
        }
        Ok((padded - span) / self.stride + 1)
    }

    /// `(OH, OW)` for an `h x w` input.
    pub fn out_size(&self, h: u64, w: u64) -> Result<(u64, u64), String> {
        Ok((self.out_extent(h, self.kh)?, self.out_extent(w, self.kw)?))
    }
}

impl fmt::Display for ConvWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kernel=[{}, {}] stride={} padding={} dilation={}",
            self.kh, self.kw, self.stride, self.padding, self.dilation
        )
    }
}

/// One operation of the graph IR.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A model input. Typing: the declared type.
    Input { name: String },
    /// A trainable parameter with a stable dotted path (its safetensors key).
    /// Typing: the declared type; never has the batch dimension.
    Param { path: String, init: Init },
    /// A scalar constant. Typing: `f32[]`.
    Const { value: f64 },
    /// Typing: an f32 operand; the result has its type.
    Unary(UnaryOp),
    /// Typing: two f32 operands; the result is f32 with the broadcast of their shapes
    /// (NumPy rules). Comparisons give 1.0 or 0.0.
    Binary(BinaryOp),
    /// `a[..., m, k] x b[..., k, n] -> [..., m, n]`; either operand may be rank 2 and is
    /// then shared by every leading index of the other; otherwise the leading dims must
    /// be equal. `k` may be
    /// the batch: the product then sums over it and the result has no batch.
    MatMul,
    /// Fold over `axes` (sorted, distinct), dropping them unless `keep_dims`. Its
    /// mnemonic is `reduce_` followed by the op's name ([`Op::reduce_mnemonic`]).
    Reduce {
        op: ReduceOp,
        axes: Vec<usize>,
        keep_dims: bool,
    },
    /// Same elements, new shape (same element count; the batch stays the batch).
    Reshape { shape: Shape },
    /// Permute dimensions: output dim `i` is input dim `perm[i]`.
    Transpose { perm: Vec<usize> },
    /// Join operands along `axis`; other dims must be equal.
    Concat { axis: usize },
    /// Elements `start..start + len` along `axis` (the inverse of one operand's part of a
    /// [`Op::Concat`]). Typing: operand dims with dim `axis` replaced by `len`; the axis
    /// must be fixed (not the batch) with `start + len` within it. Any dtype.
    Slice { axis: usize, start: u64, len: u64 },
    /// The identity forward; autodiff sends no gradient through it (a GAN's
    /// generator output fed to the discriminator's loss, a target network).
    /// Typing: operand type, any dtype.
    StopGradient,
    /// Stretch the operand to `shape` by NumPy broadcasting (align from the right, dims
    /// of 1 stretch, missing leading dims are added). Typing: the broadcast of the
    /// operand's shape with `shape` must be `shape` itself; result `f32[shape]`.
    Broadcast { shape: Shape },
    /// Integer labels to one-hot rows: `out[..., c] = 1.0 if labels[...] == c else 0.0`.
    /// A label outside `0..classes` gives a row of zeros. Typing: `i32[dims]` ->
    /// `f32[dims, classes]`, `classes >= 1`. Not differentiable (its operand is an
    /// integer), so autodiff never sends a gradient through it.
    OneHot { classes: u64 },
    /// Rows of a table selected by integer ids (an embedding's lookup, ONNX's `Gather` on
    /// axis 0): `out[i..., c] = table[ids[i...], c]`, a row of zeros for an id outside
    /// `0..rows`. Operands `(table, ids)`. Typing: `f32[rows, cols]` (both fixed) and
    /// `i32[dims]` -> `f32[dims, cols]`. Differentiable in the table only: its
    /// vector-Jacobian product is [`Op::ScatterAdd`] of the cotangent; the ids are integers.
    Gather,
    /// The adjoint of [`Op::Gather`]: `out[r, c] = sum of values[i..., c] over every i...
    /// with ids[i...] == r`, zero rows where no id is `r`; an id outside `0..rows` adds
    /// nothing. Operands `(ids, values)`. Typing: `i32[dims]` and `f32[dims, cols]` (cols
    /// fixed) -> `f32[rows, cols]`, `rows >= 1`. Differentiable in the values (their
    /// vector-Jacobian product is a [`Op::Gather`] of the cotangent).
    ScatterAdd { rows: u64 },
    /// The operand's elements as `to`: `i32 -> f32` exactly (rounded to the nearest
    /// `f32` above 2²⁴), `f32 -> i32` truncated toward zero, saturating at `i32`'s
    /// bounds, NaN -> 0 (what every backend's store of an `f32` into an `i32` buffer
    /// does); the identity to the same type. Typing: any dtype -> `to[same shape]`. Not
    /// differentiable: an integer has no gradient, and truncation is piecewise constant.
    Cast { to: DType },
    /// Uniform draws in `[0, 1)` for dropout masks, the same bits on every backend:
    /// element `i` (row-major, over `shape` at the run's batch) is
    /// `strata_kernels::rng::uniform_at(seed, i, step_word(step))`, Philox4x32-10 with
    /// `i` and the step in the counter and `seed` as the key. The one operand is the
    /// training step, an integer held as a float (converted truncating and saturating,
    /// negatives and NaN -> 0), so each step draws a fresh mask.
    /// Typing: `f32[]` -> `f32[shape]`. Not differentiable: autodiff sends no gradient
    /// to the step.
    RandomUniform { seed: u64, shape: Shape },
    /// The sliding windows of an image, one tap per row (PyTorch's `unfold`, with the
    /// window's axes kept apart), so a convolution is a matrix product of the weight
    /// `[O, C kh kw]` with this seen as `[n, C kh kw, OH OW]`: `out[n, c, i, j, oh, ow] =
    /// x[n, c, oh * stride + i * dilation - padding, ow * stride + j * dilation - padding]`,
    /// zero where that falls in the padding. Typing: `f32[n, C, H, W]` (C, H, W fixed) ->
    /// `f32[n, C, kh, kw, OH, OW]`, with `OH`, `OW` from [`ConvWindow::out_size`]; the
    /// kernel must fit in the padded input. The output pixel is the innermost axis, so
    /// the gather reads image rows in order (contiguous at stride 1), with no division.
    Im2Col { window: ConvWindow },
    /// The adjoint of [`Op::Im2Col`] (PyTorch's `fold`): every input pixel sums the
    /// column entries that read it. Typing: `f32[n, channels, kh, kw, OH, OW]` ->
    /// `f32[n, channels, height, width]`, `OH`, `OW` those of a `height x width` input.
    Col2Im {
        window: ConvWindow,
        channels: u64,
        height: u64,
        width: u64,
    },
    /// A loop over a time axis with carried state; see [`super::scan`] for its operands,
    /// body and result.
    Scan(Box<Scan>),
}

impl Op {
    /// The op's mnemonic in the text form.
    pub fn mnemonic(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Param { .. } => "param",
            Op::Const { .. } => "const",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::MatMul => "matmul",
            Op::Reduce { op, .. } => Op::reduce_mnemonic(*op),
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Concat { .. } => "concat",
            Op::Slice { .. } => "slice",
            Op::StopGradient => "stop_gradient",
            Op::Broadcast { .. } => "broadcast",
            Op::OneHot { .. } => "one_hot",
            Op::Gather => "gather",
            Op::ScatterAdd { .. } => "scatter_add",
            Op::Cast { .. } => "cast",
            Op::RandomUniform { .. } => "random_uniform",
            Op::Im2Col { .. } => "im2col",
            Op::Col2Im { .. } => "col2im",
            Op::Scan(_) => "scan",
        }
    }

    /// `reduce_` followed by [`ReduceOp::name`], which is what the parser reads back;
    /// spelled out so that it is `&'static`, and checked against the name by a test.
    pub fn reduce_mnemonic(op: ReduceOp) -> &'static str {
        match op {
            ReduceOp::Sum => "reduce_sum",
            ReduceOp::Max => "reduce_max",
            ReduceOp::Min => "reduce_min",
        }
    }

    /// Number of operands, or None if variadic.
    pub fn arity(&self) -> Option<usize> {
        match self {
            Op::Input { .. } | Op::Param { .. } | Op::Const { .. } => Some(0),
            Op::Unary(_)
            | Op::Reduce { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Slice { .. }
            | Op::StopGradient
            | Op::Broadcast { .. }
            | Op::OneHot { .. }
            | Op::Cast { .. }
            | Op::RandomUniform { .. }
            | Op::Im2Col { .. }
            | Op::Col2Im { .. } => Some(1),
            Op::Binary(_) | Op::MatMul | Op::Gather | Op::ScatterAdd { .. } => Some(2),
            Op::Concat { .. } | Op::Scan(_) => None,
        }
    }

    /// The typing rule: the result type from the operand types, or why they don't fit.
    /// Leaf ops (input, param) carry their type elsewhere and are not inferred here.
    pub fn infer(&self, operands: &[&TensorType]) -> Result<TensorType, String> {
        if let Some(n) = self.arity()
            && operands.len() != n
        {
            return Err(format!(
                "`{}` takes {n} operand(s), got {}",
                self.mnemonic(),
                operands.len()
            ));
        }
        let float = |t: &TensorType| -> Result<(), String> {
            if t.dtype == DType::F32 {
                Ok(())
            } else {
                Err(format!("`{}` needs f32 operands, got {t}", self.mnemonic()))
            }
        };
        match self {
            Op::Input { .. } | Op::Param { .. } => {
                Err("leaf values carry their declared type".into())
            }
            Op::Const { .. } => Ok(TensorType::f32(vec![])),
            Op::Unary(_) => {
                float(operands[0])?;
                Ok(operands[0].clone())
            }
            Op::Binary(_) => {
                float(operands[0])?;
                float(operands[1])?;
                let shape = broadcast_shapes(&operands[0].shape, &operands[1].shape)?;
                Ok(TensorType {
                    dtype: DType::F32,
                    shape,
                })
            }
            Op::MatMul => {
                let (a, b) = (operands[0], operands[1]);
                float(a)?;
                float(b)?;
                let (ra, rb) = (a.shape.rank(), b.shape.rank());
                if ra < 2 || rb < 2 {
                    return Err(format!(
                        "matmul needs operands of rank >= 2, got {a} and {b}"
                    ));
                }
                let (m, k) = (a.shape.0[ra - 2], a.shape.0[ra - 1]);
                let (k2, n) = (b.shape.0[rb - 2], b.shape.0[rb - 1]);
                if k != k2 {
                    return Err(format!(
                        "matmul inner dimensions differ: {a} x {b} ({k} vs {k2})"
                    ));
                }
                // k may be the batch (both operands hold it there): the product then sums
                // over the batch, as a dense weight's gradient `xᵀ x dy` does, and has
                // no batch dimension itself. An operand of rank 2 is shared by the
                // other's leading dims (a convolution's weight times each image's
                // columns); otherwise the leading dims must agree.
                let lead = if ra == 2 {
                    &b.shape.0[..rb - 2]
                } else {
                    &a.shape.0[..ra - 2]
                };
                if ra != 2 && rb != 2 && a.shape.0[..ra - 2] != b.shape.0[..rb - 2] {
                    return Err(format!("matmul batch dimensions differ: {a} x {b}"));
                }
                let mut dims = lead.to_vec();
                dims.push(m);
                dims.push(n);
                checked_shape(Shape(dims)).map(|shape| TensorType {
                    dtype: DType::F32,
                    shape,
                })
            }
            Op::Reduce {
                axes, keep_dims, ..
            } => {
                let t = operands[0];
                float(t)?;
                let rank = t.shape.rank();
                if axes.is_empty() || axes.windows(2).any(|w| w[0] >= w[1]) {
                    return Err("reduction axes must be sorted, distinct and not empty".into());
                }
                if let Some(a) = axes.iter().find(|a| **a >= rank) {
                    return Err(format!("reduction axis {a} is out of range for {t}"));
                }
                let dims = t
                    .shape
                    .0
                    .iter()
                    .enumerate()
                    .filter_map(|(i, d)| match (axes.contains(&i), keep_dims) {
                        (false, _) => Some(*d),
                        (true, true) => Some(Dim::Fixed(1)),
                        (true, false) => None,
                    })
                    .collect();
                Ok(TensorType::f32(dims))
            }
            Op::Reshape { shape } => {
                let t = operands[0];
                if t.shape.has_batch() != shape.has_batch()
                    || t.shape.fixed_elements() != shape.fixed_elements()
                {
                    return Err(format!(
                        "cannot reshape {} into {shape}: element counts differ",
                        t.shape
                    ));
                }
                checked_shape(shape.clone()).map(|shape| TensorType {
                    dtype: t.dtype,
                    shape,
                })
            }
            Op::Transpose { perm } => {
                let t = operands[0];
                let rank = t.shape.rank();
                let mut seen = vec![false; rank];
                if perm.len() != rank
                    || perm
                        .iter()
                        .any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
                {
                    return Err(format!(
                        "{perm:?} is not a permutation of the {rank} dimensions of {t}"
                    ));
                }
                Ok(TensorType {
                    dtype: t.dtype,
                    shape: Shape(perm.iter().map(|&p| t.shape.0[p]).collect()),
                })
            }
            Op::Concat { axis } => {
                let Some(first) = operands.first() else {
                    return Err("concat needs at least one operand".into());
                };
                let rank = first.shape.rank();
                if *axis >= rank {
                    return Err(format!("concat axis {axis} is out of range for {first}"));
                }
                let mut total = 0u64;
                for t in operands {
                    if t.dtype != first.dtype || t.shape.rank() != rank {
                        return Err(format!("cannot concat {first} and {t}"));
                    }
                    for (i, (a, b)) in first.shape.0.iter().zip(&t.shape.0).enumerate() {
                        if i != *axis && a != b {
                            return Err(format!(
                                "cannot concat {first} and {t} along axis {axis}: dimension {i} differs"
                            ));
                        }
                    }
                    match t.shape.0[*axis] {
                        Dim::Fixed(n) => total += n,
                        Dim::Batch => {
                            return Err("cannot concat along the batch dimension".into());
                        }
                    }
                }
                let mut dims = first.shape.0.clone();
                dims[*axis] = Dim::Fixed(total);
                Ok(TensorType {
                    dtype: first.dtype,
                    shape: Shape(dims),
                })
            }
            Op::Slice { axis, start, len } => {
                let t = operands[0];
                let Some(dim) = t.shape.0.get(*axis) else {
                    return Err(format!("slice axis {axis} is out of range for {t}"));
                };
                let Dim::Fixed(n) = *dim else {
                    return Err("cannot slice along the batch dimension".into());
                };
                if start.checked_add(*len).is_none_or(|end| end > n) {
                    return Err(format!(
                        "slice {start}..{} of axis {axis} is out of range for {t}",
                        start.saturating_add(*len)
                    ));
                }
                let mut dims = t.shape.0.clone();
                dims[*axis] = Dim::Fixed(*len);
                Ok(TensorType {
                    dtype: t.dtype,
                    shape: Shape(dims),
                })
            }
            Op::StopGradient => Ok(operands[0].clone()),
            Op::Broadcast { shape } => {
                let t = operands[0];
                float(t)?;
                let shape = checked_shape(shape.clone())?;
                if broadcast_shapes(&t.shape, &shape)? != shape {
                    return Err(format!("cannot broadcast {t} to {shape}"));
                }
                Ok(TensorType {
                    dtype: DType::F32,
                    shape,
                })
            }
            Op::OneHot { classes } => {
                let t = operands[0];
                if t.dtype != DType::I32 {
                    return Err(format!("`one_hot` needs i32 labels, got {t}"));
                }
                if *classes == 0 {
                    return Err("`one_hot` needs at least one class".into());
                }
                let mut dims = t.shape.0.clone();
                dims.push(Dim::Fixed(*classes));
                Ok(TensorType::f32(dims))
            }
            Op::Gather => {
                let (table, ids) = (operands[0], operands[1]);
                let cols = match (table.dtype, table.shape.dims()) {
                    (DType::F32, [Dim::Fixed(_), Dim::Fixed(cols)]) => *cols,
                    _ => {
                        return Err(format!(
                            "`gather` needs a table `f32[rows, cols]` of fixed size, got {table}"
                        ));
                    }
                };
                if ids.dtype != DType::I32 {
                    return Err(format!("`gather` needs i32 ids, got {ids}"));
                }
                let mut dims = ids.shape.0.clone();
                dims.push(Dim::Fixed(cols));
                Ok(TensorType::f32(dims))
            }
            Op::ScatterAdd { rows } => {
                let (ids, values) = (operands[0], operands[1]);
                if ids.dtype != DType::I32 {
                    return Err(format!("`scatter_add` needs i32 ids, got {ids}"));
                }
                if *rows == 0 {
                    return Err("`scatter_add` needs at least one row".into());
                }
                float(values)?;
                let dims = values.shape.dims();
                match dims.split_last() {
                    Some((Dim::Fixed(cols), lead)) if *lead == *ids.shape.dims() => {
                        Ok(TensorType::f32(vec![Dim::Fixed(*rows), Dim::Fixed(*cols)]))
                    }
                    _ => Err(format!(
                        "`scatter_add` needs values `[ids' dims, cols]` (cols fixed) for ids {ids}, got {values}"
                    )),
                }
            }
            Op::Cast { to } => Ok(TensorType {
                dtype: *to,
                shape: operands[0].shape.clone(),
            }),
            Op::RandomUniform { shape, .. } => {
                let step = operands[0];
                if *step != TensorType::f32(vec![]) {
                    return Err(format!(
                        "`random_uniform` needs the step as an f32[] scalar, got {step}"
                    ));
                }
                checked_shape(shape.clone()).map(|shape| TensorType {
                    dtype: DType::F32,
                    shape,
                })
            }
            Op::Im2Col { window } => {
                let t = operands[0];
                float(t)?;
                let dims = t.shape.dims();
                let [n, Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)] = *dims else {
                    return Err(format!(
                        "`im2col` needs an image `[batch, channels, height, width]` with fixed channels and size, got {t}"
                    ));
                };
                let (oh, ow) = window.out_size(h, w)?;
                let fixed = [c, window.kh, window.kw, oh, ow].map(Dim::Fixed);
                Ok(TensorType::f32([&[n][..], &fixed].concat()))
            }
            Op::Scan(scan) => scan.infer(operands),
            Op::Col2Im {
                window,
                channels,
                height,
                width,
            } => {
                let t = operands[0];
                float(t)?;
                let (oh, ow) = window.out_size(*height, *width)?;
                let want = [*channels, window.kh, window.kw, oh, ow].map(Dim::Fixed);
                let dims = t.shape.dims();
                if dims.len() != 6 || dims[1..] != want {
                    return Err(format!(
                        "`col2im` to [{channels}, {height}, {width}] with {window} needs columns `[n, {channels}, {}, {}, {oh}, {ow}]`, got {t}",
                        window.kh, window.kw
                    ));
                }
                Ok(TensorType::f32(vec![
                    dims[0],
                    Dim::Fixed(*channels),
                    Dim::Fixed(*height),
                    Dim::Fixed(*width),
                ]))
            }
        }
    }
}

fn checked_shape(shape: Shape) -> Result<Shape, String> {
    if shape.0.iter().filter(|d| **d == Dim::Batch).count() > 1 {
        return Err(format!("{shape} holds the batch dimension twice"));
    }
    Ok(shape)
}

/// Whether a transpose's `perm` swaps the last two axes and keeps the others (a matrix
/// transposed, batch by batch).
pub fn swaps_last_two(perm: &[usize]) -> bool {
    let r = perm.len();
    r >= 2
        && perm[..r - 2].iter().enumerate().all(|(i, p)| *p == i)
        && perm[r - 2] == r - 1
        && perm[r - 1] == r - 2
}

/// NumPy broadcasting: align from the right; a dimension of 1 stretches.
pub fn broadcast_shapes(a: &Shape, b: &Shape) -> Result<Shape, String> {
    let rank = a.rank().max(b.rank());
    let mut dims = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = (i + a.rank()).checked_sub(rank).map(|j| a.0[j]);
        let db = (i + b.rank()).checked_sub(rank).map(|j| b.0[j]);
        dims.push(match (da, db) {
            (Some(x), None) | (None, Some(x)) => x,
            (Some(x), Some(y)) if x == y => x,
            (Some(Dim::Fixed(1)), Some(y)) => y,
            (Some(x), Some(Dim::Fixed(1))) => x,
            _ => return Err(format!("shapes {a} and {b} do not broadcast")),
        });
    }
    checked_shape(Shape(dims))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduce_mnemonics_are_reduce_and_the_op_name() {
        for op in ReduceOp::ALL {
            assert_eq!(Op::reduce_mnemonic(op), format!("reduce_{}", op.name()));
        }
    }
}

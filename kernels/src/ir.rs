//! The kernel IR: what one generated kernel computes, independent of any backend.
//!
//! A [`Kernel`] is an iteration space, the buffers it binds, and what it computes at
//! every point of that space:
//!
//! - [`KernelBody::Map`]: for every point `i` of `space`, evaluate each [`Store`]'s
//!   expression and write it at the store's index. Element-wise ops, broadcasts,
//!   transposes, concatenation and fused chains of them are all maps.
//! - [`KernelBody::Reduce`]: for every point `i` of `space`, fold `value(i, r)` over every
//!   point `r` of `reduce` with `op`, then write `epilogue` (where [`Expr::Acc`] is the
//!   folded value) at `out`.
//! - [`KernelBody::Contract`]: a (batched) matrix product `C = A x B` with strided
//!   operands (or `B` a convolution's window over an image, [`ImageWindow`]), possibly
//!   summed over further batch dimensions (a weight gradient summed over the batch),
//!   or plus further products ([`Term`]s: a recurrent step's `x W_ihᵀ + h W_hhᵀ`),
//!   followed by an element-wise epilogue over `C` (bias, activation, residual).
//! - [`KernelBody::ScatterAdd`]: the rows of a table selected by integer ids, summed into
//!   from per-point values (an embedding's weight gradient); race-free because each
//!   column of the table is owned by one thread or invocation, which adds the points in
//!   order.
//! - [`KernelBody::Parts`]: several of the above, independent of each other, run by one
//!   launch (multi-output, horizontal fusion); each part keeps its own space. On the CPU
//!   part `i` is the function [`Kernel::part_name`]`(name, i)`.
//!
//! # Loop variables
//! Expressions and indices refer to loop variables by position ([`Index::Var`]). In a map,
//! variable `d` is the coordinate along `space[d]`. In a reduction, variables
//! `0..space.len()` are the output coordinates and `space.len()..` the reduced ones. In a
//! contraction's epilogue the variables are `batch..., m, n`. Inside the value of a nested
//! [`Expr::Reduce`], the variables in scope are those of the enclosing expression followed
//! by one per dimension of the nested reduction's extent.
//!
//! # Data-dependent positions
//! Every index is an affine-like expression of loop variables and the batch, so its range
//! is known before a kernel runs ([`crate::bounds`]) except in two places, both a row of a
//! fixed `[rows, cols]` table chosen by an `i32` id read from memory: the gather load
//! [`Expr::Gather`] and the scatter-add body [`KernelBody::ScatterAdd`]. There the id is
//! checked when the kernel runs: an id outside `0..rows` reads `0.0` or adds nothing, so
//! no access leaves the table whatever the ids hold.
//!
//! # Sizes
//! A dimension is either fixed or the symbolic batch ([`Dim::Batch`]), known only when the
//! kernel runs; [`Index::Batch`] lets strides depend on it. Every buffer holds `f32` or
//! `i32` elements, row-major, addressed by a flat element index.
//!
//! # Invariants (checked by [`Kernel::validate`])
//! Every buffer reference names a declared buffer, every variable is in scope, stores
//! write only to buffers declared writable, and `Acc` appears only in epilogues, never
//! inside a nested reduction. A gather's or scatter-add's table is a fixed `f32[rows, cols]`
//! buffer and its ids an `i32` buffer. Parts are at least two, not nested, and no part writes a
//! slot another part reads or writes.
//!
//! Neither the DSL nor the graph IR is known here: both emitters (CPU and GPU) walk this
//! IR and nothing else.

use serde::{Deserialize, Serialize};

/// The element-wise ops of [`Expr::Unary`], [`Expr::Binary`] and the folds of reductions:
/// the vocabulary the graph IR uses too, with its `f64` meaning.
pub use crate::scalar_op::{BinaryOp, ReduceOp, UnaryOp};

/// One extent of an iteration space or buffer shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Dim {
    /// A size known when the kernel is generated.
    Fixed(u64),
    /// The batch size, passed to the kernel when it runs.
    Batch,
}

impl Dim {
    /// The concrete extent for a given batch size.
    pub fn resolve(self, batch: u64) -> u64 {
        match self {
            Dim::Fixed(n) => n,
            Dim::Batch => batch,
        }
    }
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Batch => write!(f, "batch"),
        }
    }
}

/// Element type of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ScalarType {
    F32,
    I32,
}

impl ScalarType {
    pub fn size_bytes(self) -> u64 {
        4
    }
}

/// How a kernel uses a buffer it binds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Access {
    Read,
    Write,
    ReadWrite,
}

/// A buffer binding of a kernel. The kernel addresses it by its position in
/// [`Kernel::buffers`] (its slot).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BufferDecl {
    /// A readable name, used in generated code and error messages.
    pub name: String,
    pub dtype: ScalarType,
    /// Logical shape; the buffer holds the product of these extents, row-major.
    pub shape: Vec<Dim>,
    pub access: Access,
}

/// A flat element index into a buffer, computed from loop variables.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Index {
    /// The loop variable at this position.
    Var(usize),
    Const(i64),
    /// The batch size of this run.
    Batch,
    Add(Box<Index>, Box<Index>),
    Mul(Box<Index>, Box<Index>),
    /// Integer division by a positive constant (floor, operands are never negative).
    Div(Box<Index>, i64),
    /// Remainder by a positive constant.
    Rem(Box<Index>, i64),
}

impl Index {
    pub fn var(v: usize) -> Index {
        Index::Var(v)
    }

    /// `self + other`, folding constants.
    // Smart constructors that fold constants while building index expressions, not
    // arithmetic on values: `std::ops` traits would hide the folding at call sites.
    #[allow(clippy::should_implement_trait)]
    pub fn add(self, other: Index) -> Index {
        match (self, other) {
            (Index::Const(0), x) | (x, Index::Const(0)) => x,
            (Index::Const(a), Index::Const(b)) => Index::Const(a + b),
            (a, b) => Index::Add(Box::new(a), Box::new(b)),
        }
    }

    /// `self * other`, folding constants.
    // Smart constructors that fold constants while building index expressions, not
    // arithmetic on values: `std::ops` traits would hide the folding at call sites.
    #[allow(clippy::should_implement_trait)]
    pub fn mul(self, other: Index) -> Index {
        match (self, other) {
            (Index::Const(0), _) | (_, Index::Const(0)) => Index::Const(0),
            (Index::Const(1), x) | (x, Index::Const(1)) => x,
            (Index::Const(a), Index::Const(b)) => Index::Const(a * b),
            (a, b) => Index::Mul(Box::new(a), Box::new(b)),
        }
    }

    /// The index expression of a dimension's extent.
    pub fn of_dim(d: Dim) -> Index {
        match d {
            Dim::Fixed(n) => Index::Const(n as i64),
            Dim::Batch => Index::Batch,
        }
    }

    /// Row-major flat index of `coords` (one index per dimension of `shape`).
    pub fn row_major(coords: &[Index], shape: &[Dim]) -> Index {
        assert_eq!(coords.len(), shape.len(), "one coordinate per dimension");
        let mut flat = Index::Const(0);
        for (c, d) in coords.iter().zip(shape) {
            flat = flat.mul(Index::of_dim(*d)).add(c.clone());
        }
        flat
    }

    /// Evaluate with concrete loop variables and batch size.
    pub fn eval(&self, vars: &[i64], batch: i64) -> i64 {
        match self {
            Index::Var(v) => vars[*v],
            Index::Const(c) => *c,
            Index::Batch => batch,
            Index::Add(a, b) => a.eval(vars, batch) + b.eval(vars, batch),
            Index::Mul(a, b) => a.eval(vars, batch) * b.eval(vars, batch),
            Index::Div(a, d) => a.eval(vars, batch).div_euclid(*d),
            Index::Rem(a, d) => a.eval(vars, batch).rem_euclid(*d),
        }
    }

    /// The coefficient of loop variable `v` in the index, if it is affine in `v` with a
    /// constant coefficient (0 when it does not depend on `v`).
    pub fn coefficient(&self, v: usize) -> Option<i64> {
        match self {
            Index::Var(u) => Some(i64::from(*u == v)),
            Index::Const(_) | Index::Batch => Some(0),
            Index::Add(a, b) => a.coefficient(v)?.checked_add(b.coefficient(v)?),
            Index::Mul(a, b) => match (a.coefficient(v)?, b.coefficient(v)?) {
                (0, 0) => Some(0),
                (ca, 0) => match **b {
                    Index::Const(k) => ca.checked_mul(k),
                    _ => None,
                },
                (0, cb) => match **a {
                    Index::Const(k) => cb.checked_mul(k),
                    _ => None,
                },
                _ => None,
            },
            Index::Div(a, _) | Index::Rem(a, _) => (a.coefficient(v)? == 0).then_some(0),
        }
    }

    /// The index with every loop variable `v` replaced by `f(v)`, its structure kept.
    pub fn map_vars(&self, f: &impl Fn(usize) -> Index) -> Index {
        let sub = |x: &Index| Box::new(x.map_vars(f));
        match self {
            Index::Var(v) => f(*v),
            Index::Const(c) => Index::Const(*c),
            Index::Batch => Index::Batch,
            Index::Add(a, b) => Index::Add(sub(a), sub(b)),
            Index::Mul(a, b) => Index::Mul(sub(a), sub(b)),
            Index::Div(a, d) => Index::Div(sub(a), *d),
            Index::Rem(a, d) => Index::Rem(sub(a), *d),
        }
    }

    /// The largest loop variable the index uses.
    pub(crate) fn max_var(&self) -> Option<usize> {
        match self {
            Index::Var(v) => Some(*v),
            Index::Const(_) | Index::Batch => None,
            Index::Add(a, b) | Index::Mul(a, b) => a.max_var().max(b.max_var()),
            Index::Div(a, _) | Index::Rem(a, _) => a.max_var(),
        }
    }
}

/// A scalar `f32` expression evaluated at one point of the iteration space.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    /// Element `index` of buffer slot `buf` (an `i32` buffer's element is converted to f32).
    Load {
        buf: usize,
        index: Index,
    },
    Const(f64),
    /// The folded value of a reduction, or the product of a contraction; only in epilogues.
    Acc,
    /// A loop index (or any index expression) as a float.
    IndexValue(Index),
    Unary(UnaryOp, Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    /// `if cond != 0 { then } else { otherwise }`
    Select {
        cond: Box<Expr>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
    /// Element `col` of row `id` of the table in slot `table` (a fixed `f32[rows, cols]`
    /// buffer), where `id` is element `id_index` of the `i32` buffer in slot `ids`; `0.0`
    /// when `id` is outside `0..rows` (an embedding's lookup). The one load whose position
    /// depends on data: `id_index` and `col` are ordinary indices (`col` must lie in
    /// `0..cols`), the id is checked when the kernel runs.
    Gather {
        table: usize,
        ids: usize,
        id_index: Index,
        col: Index,
    },
    /// A uniform draw in `[0, 1)`: [`crate::rng::uniform_at`]`(seed, index, step)`, with
    /// `index` the element's flat index (never negative) and `step` an `f32` expression
    /// (typically a load of the training step) converted by [`crate::rng::step_word`].
    /// Every backend computes the same bits.
    Uniform {
        seed: u64,
        index: Index,
        step: Box<Expr>,
    },
    /// `value` folded with `op` over every point of `extent`: a small reduction computed
    /// inside the expression that uses it (a softmax's row max and row sum inside the map
    /// that writes the probabilities), instead of by a kernel of its own and a buffer.
    /// Inside `value`, the variables in scope are the enclosing expression's followed by
    /// `extent.len()` new ones, the coordinates of the folded point; `Acc` is not allowed
    /// there. It folds as [`KernelBody::Reduce`] does (the CPU sums in `f64`).
    Reduce {
        op: ReduceOp,
        extent: Vec<Dim>,
        value: Box<Expr>,
    },
}

impl Expr {
    /// Every index that `exprs` (their nested reductions and random draws included)
    /// load at or compute with, appended to `indices`.
    pub fn indices_of<'a>(mut exprs: Vec<&'a Expr>, indices: &mut Vec<&'a Index>) {
        while let Some(e) = exprs.pop() {
            match e {
                Expr::Load { index, .. } | Expr::IndexValue(index) => indices.push(index),
                Expr::Gather { id_index, col, .. } => indices.extend([id_index, col]),
                Expr::Uniform { index, step, .. } => {
                    indices.push(index);
                    exprs.push(step);
                }
                Expr::Const(_) | Expr::Acc => {}
                Expr::Unary(_, x) | Expr::Reduce { value: x, .. } => exprs.push(x),
                Expr::Binary(_, a, b) => exprs.extend([&**a, &**b]),
                Expr::Select {
                    cond,
                    then,
                    otherwise,
                } => exprs.extend([&**cond, &**then, &**otherwise]),
            }
        }
    }

    /// The expression with every index it loads at or computes with (its nested
    /// reductions' and random draws' included) replaced by `f(index)`.
    pub fn map_indices(&self, f: &impl Fn(&Index) -> Index) -> Expr {
        let sub = |x: &Expr| Box::new(x.map_indices(f));
        match self {
            Expr::Load { buf, index } => Expr::Load {
                buf: *buf,
                index: f(index),
            },
            Expr::Gather {
                table,
                ids,
                id_index,
                col,
            } => Expr::Gather {
                table: *table,
                ids: *ids,
                id_index: f(id_index),
                col: f(col),
            },
            Expr::Const(c) => Expr::Const(*c),
            Expr::Acc => Expr::Acc,
            Expr::IndexValue(ix) => Expr::IndexValue(f(ix)),
            Expr::Unary(op, x) => Expr::Unary(*op, sub(x)),
            Expr::Binary(op, a, b) => Expr::Binary(*op, sub(a), sub(b)),
            Expr::Select {
                cond,
                then,
                otherwise,
            } => Expr::Select {
                cond: sub(cond),
                then: sub(then),
                otherwise: sub(otherwise),
            },
            Expr::Uniform { seed, index, step } => Expr::Uniform {
                seed: *seed,
                index: f(index),
                step: sub(step),
            },
            Expr::Reduce { op, extent, value } => Expr::Reduce {
                op: *op,
                extent: extent.clone(),
                value: sub(value),
            },
        }
    }

    pub fn load(buf: usize, index: Index) -> Expr {
        Expr::Load { buf, index }
    }

    pub fn unary(op: UnaryOp, x: Expr) -> Expr {
        Expr::Unary(op, Box::new(x))
    }

    pub fn binary(op: BinaryOp, a: Expr, b: Expr) -> Expr {
        Expr::Binary(op, Box::new(a), Box::new(b))
    }

    /// Calls `f` on every load in the expression: its slot and element index, `None` for
    /// the element of a gather's table, whose position depends on data.
    pub fn visit_loads(&self, f: &mut impl FnMut(usize, Option<&Index>)) {
        match self {
            Expr::Load { buf, index } => f(*buf, Some(index)),
            Expr::Gather {
                table,
                ids,
                id_index,
                ..
            } => {
                f(*ids, Some(id_index));
                f(*table, None);
            }
            Expr::Const(_) | Expr::Acc | Expr::IndexValue(_) => {}
            Expr::Unary(_, x) | Expr::Uniform { step: x, .. } | Expr::Reduce { value: x, .. } => {
                x.visit_loads(f)
            }
            Expr::Binary(_, a, b) => {
                a.visit_loads(f);
                b.visit_loads(f);
            }
            Expr::Select {
                cond,
                then,
                otherwise,
            } => {
                cond.visit_loads(f);
                then.visit_loads(f);
                otherwise.visit_loads(f);
            }
        }
    }

    /// Renames every buffer slot the expression loads from with `f`.
    pub fn remap_slots(&mut self, f: &impl Fn(usize) -> usize) {
        match self {
            Expr::Load { buf, .. } => *buf = f(*buf),
            Expr::Gather { table, ids, .. } => {
                *table = f(*table);
                *ids = f(*ids);
            }
            Expr::Const(_) | Expr::Acc | Expr::IndexValue(_) => {}
            Expr::Unary(_, x) | Expr::Uniform { step: x, .. } => x.remap_slots(f),
            Expr::Binary(_, a, b) => {
                a.remap_slots(f);
                b.remap_slots(f);
            }
            Expr::Select {
                cond,
                then,
                otherwise,
            } => {
                cond.remap_slots(f);
                then.remap_slots(f);
                otherwise.remap_slots(f);
            }
            Expr::Reduce { value, .. } => value.remap_slots(f),
        }
    }

    /// The first scoping rule the expression breaks with `nvars` variables in scope: a
    /// variable out of scope, or `acc` where `acc` says it may not be.
    fn scope_error(&self, nvars: usize, acc: AccRule) -> Option<String> {
        let index = |ix: &Index| {
            ix.max_var()
                .filter(|v| *v >= nvars)
                .map(|v| format!("loop variable {v} out of scope ({nvars} in scope)"))
        };
        match self {
            Expr::Acc => match acc {
                AccRule::Allowed => None,
                AccRule::OutsideEpilogue => Some("`acc` outside an epilogue".into()),
                AccRule::InsideNestedReduce => Some("`acc` inside a nested reduction".into()),
            },
            Expr::Const(_) => None,
            Expr::Load { index: ix, .. } | Expr::IndexValue(ix) => index(ix),
            Expr::Gather { id_index, col, .. } => index(id_index).or_else(|| index(col)),
            Expr::Uniform {
                index: ix, step, ..
            } => index(ix).or_else(|| step.scope_error(nvars, acc)),
            Expr::Unary(_, x) => x.scope_error(nvars, acc),
            Expr::Binary(_, a, b) => a
                .scope_error(nvars, acc)
                .or_else(|| b.scope_error(nvars, acc)),
            Expr::Select {
                cond,
                then,
                otherwise,
            } => cond
                .scope_error(nvars, acc)
                .or_else(|| then.scope_error(nvars, acc))
                .or_else(|| otherwise.scope_error(nvars, acc)),
            Expr::Reduce { extent, value, .. } => {
                value.scope_error(nvars + extent.len(), AccRule::InsideNestedReduce)
            }
        }
    }
}

/// Where [`Expr::Acc`] may appear in an expression being validated.
#[derive(Clone, Copy)]
enum AccRule {
    Allowed,
    OutsideEpilogue,
    InsideNestedReduce,
}

/// Write `value` to element `index` of buffer slot `buf`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Store {
    pub buf: usize,
    pub index: Index,
    pub value: Expr,
}

/// One operand of a contraction: a (batched) strided matrix inside a buffer.
///
/// Element `(b..., row, col)` is at `offset(b...) + row * row_stride + col * col_stride`,
/// where `offset` is an index over the contraction's batch variables; or, with a
/// `window`, it is the window's element `(row, col)` of the image starting at
/// `offset(b...)` (and both strides are `0`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatrixOperand {
    pub buf: usize,
    pub offset: Index,
    pub row_stride: Index,
    pub col_stride: Index,
    /// Read through a convolution's window instead of strides (right-hand operands only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Box<ImageWindow>>,
}

impl MatrixOperand {
    /// The strided matrix `(row, col) -> offset + row * row_stride + col * col_stride`.
    pub fn strided(buf: usize, offset: Index, row_stride: Index, col_stride: Index) -> Self {
        MatrixOperand {
            buf,
            offset,
            row_stride,
            col_stride,
            window: None,
        }
    }

    /// The im2col matrix of the image `[channels, height, width]` at `offset`, never
    /// stored: row `(c, i, j)`, column `(y, x)` (see [`ImageWindow`]).
    pub fn windowed(buf: usize, offset: Index, window: ImageWindow) -> Self {
        MatrixOperand {
            buf,
            offset,
            row_stride: Index::Const(0),
            col_stride: Index::Const(0),
            window: Some(Box::new(window)),
        }
    }
}

/// The im2col matrix of a convolution read in place from its image (an implicit-GEMM
/// convolution, as cuDNN's and oneDNN's): row `r` is the tap `(c, i, j)` of
/// `[channels, kh, kw]`, column `q` the output position `(y, x)` of `[out_h, out_w]`,
/// and element `(r, q)` is the image's `[c, y stride + i dilation - padding, x stride + j
/// dilation - padding]`, or `0` where that falls in the padding. The image is
/// `[channels, height, width]`, row-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageWindow {
    pub channels: u64,
    pub height: u64,
    pub width: u64,
    pub kh: u64,
    pub kw: u64,
    pub stride: u64,
    pub padding: u64,
    pub dilation: u64,
}

impl ImageWindow {
    /// `(out_h, out_w)`, or `None` when the window does not fit the padded image (or a
    /// size is 0 where it may not be).
    pub fn out_size(&self) -> Option<(u64, u64)> {
        let along = |n: u64, k: u64| -> Option<u64> {
            if k == 0 || self.stride == 0 || self.dilation == 0 {
                return None;
            }
            let span = self.dilation.checked_mul(k - 1)?.checked_add(1)?;
            let padded = n.checked_add(self.padding.checked_mul(2)?)?;
            Some(padded.checked_sub(span)? / self.stride + 1)
        };
        Some((along(self.height, self.kh)?, along(self.width, self.kw)?))
    }

    /// The matrix's rows: `channels * kh * kw` taps.
    pub fn rows(&self) -> Option<u64> {
        self.channels.checked_mul(self.kh)?.checked_mul(self.kw)
    }

    /// The matrix's columns: `out_h * out_w` positions.
    pub fn cols(&self) -> Option<u64> {
        let (oh, ow) = self.out_size()?;
        oh.checked_mul(ow)
    }

    /// The image's elements: `channels * height * width`.
    pub fn image_len(&self) -> Option<u64> {
        self.channels
            .checked_mul(self.height)?
            .checked_mul(self.width)
    }

    /// The image element (from the image's start) at `(row, col)` of the matrix, or
    /// `None` in the padding; `row` and `col` must be in range.
    pub fn element(&self, row: u64, col: u64) -> Option<u64> {
        let (_, ow) = self.out_size()?;
        let (c, tap) = (row / (self.kh * self.kw), row % (self.kh * self.kw));
        let tap = (c, tap / self.kw, tap % self.kw);
        self.tap_element(tap, (col / ow, col % ow))
    }

    /// The image element (from the image's start) that tap `(c, i, j)` reads for output
    /// position `(y, x)`, or `None` in the padding; all four in range.
    pub fn tap_element(&self, (c, i, j): (u64, u64, u64), (y, x): (u64, u64)) -> Option<u64> {
        let iy = (y * self.stride + i * self.dilation).checked_sub(self.padding)?;
        let ix = (x * self.stride + j * self.dilation).checked_sub(self.padding)?;
        (iy < self.height && ix < self.width).then(|| (c * self.height + iy) * self.width + ix)
    }
}

/// `out[b..., m, n] = epilogue(sum_s... sum_k a[b..., s..., m, k] * b[b..., s..., k, n])`.
///
/// `out` is contiguous `[batch..., m, n]`. The epilogue's variables are `batch..., m, n`
/// and [`Expr::Acc`] is the product's element; with no fusion it is just `Acc`. The
/// operands' offsets are indices over the `batch` variables followed by the `summed`
/// ones: the product is summed over every point of `summed` as it is over `k` (a dense
/// layer's weight gradient, `sum_b aᵀ[b] x g[b]`, is one contraction).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contraction {
    pub batch: Vec<Dim>,
    /// Batch dimensions summed over, innermost of the operands' offset variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub summed: Vec<Dim>,
    pub m: Dim,
    pub n: Dim,
    pub k: Dim,
    pub a: MatrixOperand,
    pub b: MatrixOperand,
    pub out: usize,
    pub epilogue: Expr,
    /// Further products of the same `m x n` summed into [`Expr::Acc`], each over its own
    /// depth: `acc = sum_k a b + sum_t sum_k' a_t b_t`. A recurrent step's `x_t W_ihᵀ +
    /// h W_hhᵀ` is one contraction this way (the CPU adds each term's `gemm` onto the
    /// output), so the input projection of every step is never stored. Only unbatched,
    /// unsummed products without windows have terms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub terms: Vec<Term>,
}

/// A product summed into a contraction's element ([`Contraction::terms`]):
/// `sum_k a[m, k] * b[k, n]` over `k`, its operands' offsets and strides constant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Term {
    pub k: Dim,
    pub a: MatrixOperand,
    pub b: MatrixOperand,
}

impl Contraction {
    /// Every product of the element: the contraction's own `(k, a, b)`, then its terms'.
    pub fn products(&self) -> impl Iterator<Item = (Dim, &MatrixOperand, &MatrixOperand)> {
        std::iter::once((self.k, &self.a, &self.b))
            .chain(self.terms.iter().map(|t| (t.k, &t.a, &t.b)))
    }

    /// The epilogue's iteration space: `batch..., m, n`.
    pub fn space(&self) -> Vec<Dim> {
        let mut s = self.batch.clone();
        s.push(self.m);
        s.push(self.n);
        s
    }
}

/// `out[ids[id_index(n)], c] += value(n, c)` for every point `n` of `over`, in row-major
/// order, into a table `out` (a fixed `f32[rows, cols]` buffer) first filled with zeros;
/// an id outside `0..rows` adds nothing. The adjoint of [`Expr::Gather`]: an embedding's
/// weight gradient, in O(points x cols) instead of a product with a one-hot matrix.
///
/// The loop variables are `n`'s, `0..over.len()`, then the column `c` (variable
/// `over.len()`); `id_index` reads only `n`'s. Column `c` of the table is written by one
/// thread (CPU) or invocation (GPU), which adds the points in order, so two points with
/// the same id never race and the sums are deterministic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScatterAdd {
    pub over: Vec<Dim>,
    pub ids: usize,
    pub id_index: Index,
    pub value: Expr,
    pub out: usize,
}

impl ScatterAdd {
    /// Every variable of `value`: the points' dims followed by the table's columns.
    pub fn value_space(&self, cols: u64) -> Vec<Dim> {
        let mut s = self.over.clone();
        s.push(Dim::Fixed(cols));
        s
    }
}

/// What a kernel computes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum KernelBody {
    Map {
        space: Vec<Dim>,
        stores: Vec<Store>,
    },
    Reduce {
        space: Vec<Dim>,
        reduce: Vec<Dim>,
        op: ReduceOp,
        value: Expr,
        /// Written at `out.index` with `Acc` bound to the folded value; `out.value` is the
        /// epilogue.
        out: Store,
    },
    Contract(Contraction),
    ScatterAdd(ScatterAdd),
    /// Independent bodies run by one launch: multi-output (horizontal) fusion, as in
    /// XLA's sibling and horizontal fusion. No part reads or writes a buffer slot that
    /// another part writes, so the parts may run in any order or at the same time; each
    /// keeps its own iteration space. Parts are never nested.
    Parts(Vec<KernelBody>),
}

impl KernelBody {
    /// The bodies a launch runs: the parts of [`KernelBody::Parts`], else the body itself.
    pub fn bodies(&self) -> &[KernelBody] {
        match self {
            KernelBody::Parts(parts) => parts,
            body => std::slice::from_ref(body),
        }
    }

    /// Renames every buffer slot the body loads from or stores to with `f`.
    pub fn remap_slots(&mut self, f: &impl Fn(usize) -> usize) {
        match self {
            KernelBody::Map { stores, .. } => {
                for s in stores {
                    s.buf = f(s.buf);
                    s.value.remap_slots(f);
                }
            }
            KernelBody::Reduce { value, out, .. } => {
                value.remap_slots(f);
                out.buf = f(out.buf);
                out.value.remap_slots(f);
            }
            KernelBody::Contract(c) => {
                c.a.buf = f(c.a.buf);
                c.b.buf = f(c.b.buf);
                for t in &mut c.terms {
                    t.a.buf = f(t.a.buf);
                    t.b.buf = f(t.b.buf);
                }
                c.out = f(c.out);
                c.epilogue.remap_slots(f);
            }
            KernelBody::ScatterAdd(s) => {
                s.ids = f(s.ids);
                s.out = f(s.out);
                s.value.remap_slots(f);
            }
            KernelBody::Parts(parts) => parts.iter_mut().for_each(|p| p.remap_slots(f)),
        }
    }

    /// Buffer slots this body stores to (a contraction's output included).
    pub fn written_slots(&self) -> Vec<usize> {
        let mut slots: Vec<usize> = Vec::new();
        for body in self.bodies() {
            match body {
                KernelBody::Map { stores, .. } => slots.extend(stores.iter().map(|s| s.buf)),
                KernelBody::Reduce { out, .. } => slots.push(out.buf),
                KernelBody::Contract(c) => slots.push(c.out),
                KernelBody::ScatterAdd(s) => slots.push(s.out),
                KernelBody::Parts(_) => {}
            }
        }
        slots.sort_unstable();
        slots.dedup();
        slots
    }

    /// Buffer slots this body loads from (contraction operands included).
    pub fn read_slots(&self) -> Vec<usize> {
        let mut slots: Vec<usize> = Vec::new();
        let mut mark = |b: usize, _: Option<&Index>| slots.push(b);
        for body in self.bodies() {
            match body {
                KernelBody::Map { stores, .. } => {
                    stores.iter().for_each(|s| s.value.visit_loads(&mut mark))
                }
                KernelBody::Reduce { value, out, .. } => {
                    value.visit_loads(&mut mark);
                    out.value.visit_loads(&mut mark);
                }
                KernelBody::Contract(c) => {
                    for (_, a, b) in c.products() {
                        mark(a.buf, Some(&a.offset));
                        mark(b.buf, Some(&b.offset));
                    }
                    c.epilogue.visit_loads(&mut mark);
                }
                KernelBody::ScatterAdd(s) => {
                    mark(s.ids, Some(&s.id_index));
                    s.value.visit_loads(&mut mark);
                }
                KernelBody::Parts(_) => {}
            }
        }
        slots.sort_unstable();
        slots.dedup();
        slots
    }
}

/// One kernel: writes its outputs over an iteration space.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Kernel {
    /// Unique within an artifact; a valid identifier (`[A-Za-z_][A-Za-z0-9_]*`).
    pub name: String,
    pub buffers: Vec<BufferDecl>,
    pub body: KernelBody,
}

/// A kernel that breaks an invariant of this IR.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("kernel `{kernel}`: {message}")]
pub struct KernelError {
    pub kernel: String,
    pub message: String,
}

impl Kernel {
    /// The number of bodies a launch of this kernel runs (1 unless it has parts).
    pub fn part_count(&self) -> usize {
        self.body.bodies().len()
    }

    /// Part `i` as a kernel of its own: the same buffer table, the body of that part, and
    /// the name [`Kernel::part_name`]. A kernel without parts is its own part 0.
    pub fn part(&self, i: usize) -> Kernel {
        match &self.body {
            KernelBody::Parts(parts) => Kernel {
                name: Kernel::part_name(&self.name, i),
                buffers: self.buffers.clone(),
                body: parts[i].clone(),
            },
            _ => self.clone(),
        }
    }

    /// The name of part `i` of kernel `name` (the name of its CPU function).
    pub fn part_name(name: &str, i: usize) -> String {
        format!("{name}__part{i}")
    }

    /// One kernel whose parts are `kernels`' bodies, each with its own buffers: the
    /// buffer tables are laid end to end, each buffer renamed `<kernel>_<buffer>`, and
    /// every part's slots renumbered. (The compiler's grouping shares the slot of a
    /// buffer that several parts bind.)
    pub fn join(name: &str, kernels: &[Kernel]) -> Kernel {
        let mut buffers = Vec::new();
        let mut parts = Vec::new();
        for k in kernels {
            let first = buffers.len();
            buffers.extend(k.buffers.iter().map(|b| BufferDecl {
                name: format!("{}_{}", k.name, b.name),
                ..b.clone()
            }));
            for body in k.body.bodies() {
                let mut body = body.clone();
                body.remap_slots(&|s| first + s);
                parts.push(body);
            }
        }
        Kernel {
            name: name.to_string(),
            buffers,
            body: KernelBody::Parts(parts),
        }
    }

    /// `(rows, cols)` of the table in `slot`: a fixed `f32[rows, cols]` buffer, as a
    /// gather reads and a scatter-add writes; `None` for any other buffer.
    pub fn table_extent(&self, slot: usize) -> Option<(u64, u64)> {
        match self.buffers.get(slot) {
            Some(BufferDecl {
                dtype: ScalarType::F32,
                shape,
                ..
            }) => match shape[..] {
                [Dim::Fixed(rows), Dim::Fixed(cols)] => Some((rows, cols)),
                _ => None,
            },
            _ => None,
        }
    }

    /// Why slots `table` and `ids` cannot be a gather's or scatter-add's table and ids.
    fn table_error(&self, table: usize, ids: usize) -> Option<String> {
        let name = |s: usize| self.buffers.get(s).map_or("?", |b| b.name.as_str());
        if self.table_extent(table).is_none() {
            return Some(format!(
                "table `{}` is not a fixed f32[rows, cols] buffer",
                name(table)
            ));
        }
        match self.buffers.get(ids) {
            Some(decl) if decl.dtype == ScalarType::I32 => None,
            _ => Some(format!("ids `{}` are not an i32 buffer", name(ids))),
        }
    }

    /// The first gather in `e` whose table or ids break [`Kernel::table_error`].
    fn gather_error(&self, e: &Expr) -> Option<String> {
        match e {
            Expr::Gather { table, ids, .. } => self.table_error(*table, *ids),
            Expr::Load { .. } | Expr::Const(_) | Expr::Acc | Expr::IndexValue(_) => None,
            Expr::Unary(_, x) | Expr::Uniform { step: x, .. } | Expr::Reduce { value: x, .. } => {
                self.gather_error(x)
            }
            Expr::Binary(_, a, b) => self.gather_error(a).or_else(|| self.gather_error(b)),
            Expr::Select {
                cond,
                then,
                otherwise,
            } => self
                .gather_error(cond)
                .or_else(|| self.gather_error(then))
                .or_else(|| self.gather_error(otherwise)),
        }
    }

    /// The names of the kernel's CPU functions, one per part in order: its own name when
    /// it has no parts.
    pub fn function_names(&self) -> Vec<String> {
        match &self.body {
            KernelBody::Parts(parts) => (0..parts.len())
                .map(|i| Kernel::part_name(&self.name, i))
                .collect(),
            _ => vec![self.name.clone()],
        }
    }

    /// Checks the invariants listed in the module docs (and, for parts, their independence).
    pub fn validate(&self) -> Result<(), KernelError> {
        let err = |message: String| KernelError {
            kernel: self.name.clone(),
            message,
        };
        let valid_name = self
            .name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(err(format!("`{}` is not an identifier", self.name)));
        }
        let parts = self.body.bodies();
        if let KernelBody::Parts(_) = &self.body {
            if parts.len() < 2 {
                return Err(err(format!(
                    "{} part(s): parts need at least 2",
                    parts.len()
                )));
            }
            for (i, part) in parts.iter().enumerate() {
                if let KernelBody::Parts(_) = part {
                    return Err(err(format!("part {i} has parts of its own")));
                }
                let writes = part.written_slots();
                for (j, other) in parts.iter().enumerate().filter(|(j, _)| *j != i) {
                    let touched = [other.read_slots(), other.written_slots()].concat();
                    if let Some(s) = writes.iter().find(|s| touched.contains(s)) {
                        let name = self.buffers.get(*s).map_or("?", |b| b.name.as_str());
                        return Err(err(format!(
                            "part {i} writes `{name}`, which part {j} also uses"
                        )));
                    }
                }
            }
        }
        for body in parts {
            self.validate_body(body, &err)?;
        }
        Ok(())
    }

    fn validate_body(
        &self,
        body: &KernelBody,
        err: &impl Fn(String) -> KernelError,
    ) -> Result<(), KernelError> {
        let check_expr = |e: &Expr, nvars: usize, acc_ok: bool| -> Result<(), KernelError> {
            let acc = if acc_ok {
                AccRule::Allowed
            } else {
                AccRule::OutsideEpilogue
            };
            if let Some(message) = e.scope_error(nvars, acc).or_else(|| self.gather_error(e)) {
                return Err(err(message));
            }
            let mut bad = None;
            e.visit_loads(&mut |b, _| {
                if b >= self.buffers.len() {
                    bad = Some(b);
                }
            });
            match bad {
                Some(b) => Err(err(format!("load from undeclared buffer slot {b}"))),
                None => Ok(()),
            }
        };
        let check_store = |s: &Store, nvars: usize, acc_ok: bool| -> Result<(), KernelError> {
            let Some(decl) = self.buffers.get(s.buf) else {
                return Err(err(format!("store to undeclared buffer slot {}", s.buf)));
            };
            if decl.access == Access::Read {
                return Err(err(format!("store to read-only buffer `{}`", decl.name)));
            }
            if let Some(v) = s.index.max_var()
                && v >= nvars
            {
                return Err(err(format!(
                    "loop variable {v} out of scope ({nvars} in scope)"
                )));
            }
            check_expr(&s.value, nvars, acc_ok)
        };
        match body {
            KernelBody::Parts(_) => return Err(err("nested parts".into())),
            KernelBody::Map { space, stores } => {
                if stores.is_empty() {
                    return Err(err("a map with no stores".into()));
                }
                for s in stores {
                    check_store(s, space.len(), false)?;
                }
            }
            KernelBody::Reduce {
                space,
                reduce,
                value,
                out,
                ..
            } => {
                check_expr(value, space.len() + reduce.len(), false)?;
                check_store(out, space.len(), true)?;
            }
            KernelBody::Contract(c) => {
                let nvars = c.batch.len() + 2;
                if !c.terms.is_empty()
                    && (!c.batch.is_empty()
                        || !c.summed.is_empty()
                        || c.products()
                            .any(|(_, a, b)| a.window.is_some() || b.window.is_some()))
                {
                    return Err(err(
                        "only an unbatched, unsummed product without windows has terms".into(),
                    ));
                }
                for op in c.products().flat_map(|(_, a, b)| [a, b]) {
                    if op.buf >= self.buffers.len() {
                        return Err(err(format!("operand from undeclared slot {}", op.buf)));
                    }
                    for ix in [&op.offset, &op.row_stride, &op.col_stride] {
                        if let Some(v) = ix.max_var()
                            && v >= c.batch.len() + c.summed.len()
                        {
                            return Err(err("operand offset uses a non-batch variable".into()));
                        }
                    }
                }
                if let Some(message) = window_error(c) {
                    return Err(err(message));
                }
                let out = Store {
                    buf: c.out,
                    index: Index::Const(0),
                    value: c.epilogue.clone(),
                };
                check_store(&out, nvars, true)?;
                if self.buffers[c.out].dtype != ScalarType::F32 {
                    return Err(err("contraction output must be f32".into()));
                }
            }
            KernelBody::ScatterAdd(s) => {
                if let Some(message) = self.table_error(s.out, s.ids) {
                    return Err(err(message));
                }
                if let Some(v) = s.id_index.max_var()
                    && v >= s.over.len()
                {
                    return Err(err(format!(
                        "the ids' index uses variable {v}, not one of the {} points'",
                        s.over.len()
                    )));
                }
                let out = Store {
                    buf: s.out,
                    index: Index::Const(0),
                    value: s.value.clone(),
                };
                check_store(&out, s.over.len() + 1, false)?;
                // The table is zeroed before the points are added: none may read it.
                let mut reads_out = false;
                s.value.visit_loads(&mut |b, _| reads_out |= b == s.out);
                if reads_out {
                    return Err(err("a scatter-add's values read its own table".into()));
                }
            }
        }
        Ok(())
    }
}

/// Why a contraction's window operand is malformed, if it is: only the right-hand
/// operand may be one, with zero strides and no summed dimensions, and the product's
/// depth and columns are the window's rows and columns.
fn window_error(c: &Contraction) -> Option<String> {
    if c.a.window.is_some() {
        return Some("only the right-hand operand may be read through a window".into());
    }
    let w = c.b.window.as_deref()?;
    let (Some(rows), Some(cols), Some(_)) = (w.rows(), w.cols(), w.image_len()) else {
        return Some(format!("a window that does not fit its image: {w:?}"));
    };
    if c.b.row_stride != Index::Const(0) || c.b.col_stride != Index::Const(0) {
        return Some("a window operand has no strides (both 0)".into());
    }
    if !c.summed.is_empty() {
        return Some("a window operand in a product summed over batch dims".into());
    }
    if c.k != Dim::Fixed(rows) || c.n != Dim::Fixed(cols) {
        return Some(format!(
            "a window of {rows} x {cols} taps and positions in a product of depth {:?} and {:?} columns",
            c.k, c.n
        ));
    }
    None
}

//! The vector-Jacobian rule of every op, written as graph IR ops.
//!
//! For `y = f(x_1, ..., x_n)` with cotangent `g = d loss / d y` (of `y`'s type), the rule
//! gives `g_i = d loss / d x_i` (of `x_i`'s type) for each operand asked for. Notation
//! below: `y` is the op's result, `g` its cotangent, `a`/`b` the operands of a binary op.
//!
//! Where a function has a kink, the rule picks a subgradient and says which; the
//! finite-difference tests stay away from kinks.

use crate::ir::{BinaryOp, Dim, Graph, Node, Op, ReduceOp, Shape, UnaryOp, ValueId};
use crate::source::Span;
use std::collections::HashMap;

/// Appends ops to the graph, sharing scalar constants.
pub(super) struct Emitter<'g> {
    pub(super) graph: &'g mut Graph,
    /// Constants already added, by bit pattern.
    constants: HashMap<u64, ValueId>,
}

impl<'g> Emitter<'g> {
    pub(super) fn new(graph: &'g mut Graph) -> Emitter<'g> {
        Emitter {
            graph,
            constants: HashMap::new(),
        }
    }

    pub(super) fn op(
        &mut self,
        op: Op,
        operands: &[ValueId],
        span: Span,
    ) -> Result<ValueId, String> {
        self.graph.add(op, operands, span)
    }

    pub(super) fn constant(&mut self, value: f64, span: Span) -> Result<ValueId, String> {
        if let Some(&c) = self.constants.get(&value.to_bits()) {
            return Ok(c);
        }
        let c = self.op(Op::Const { value }, &[], span)?;
        self.constants.insert(value.to_bits(), c);
        Ok(c)
    }

    fn unary(&mut self, op: UnaryOp, x: ValueId, span: Span) -> Result<ValueId, String> {
        self.op(Op::Unary(op), &[x], span)
    }

    pub(super) fn binary(
        &mut self,
        op: BinaryOp,
        a: ValueId,
        b: ValueId,
        span: Span,
    ) -> Result<ValueId, String> {
        self.op(Op::Binary(op), &[a, b], span)
    }

    /// `op(a, c)` with a scalar constant `c`.
    fn binary_const(
        &mut self,
        op: BinaryOp,
        a: ValueId,
        c: f64,
        span: Span,
    ) -> Result<ValueId, String> {
        let c = self.constant(c, span)?;
        self.binary(op, a, c, span)
    }

    /// `x` reshaped to `shape`, or `x` itself if it has that shape already.
    fn reshape(&mut self, x: ValueId, shape: &Shape, span: Span) -> Result<ValueId, String> {
        if self.graph.ty(x).shape == *shape {
            return Ok(x);
        }
        self.op(
            Op::Reshape {
                shape: shape.clone(),
            },
            &[x],
            span,
        )
    }

    /// The last two dimensions of `x` swapped.
    pub(super) fn transpose_last2(&mut self, x: ValueId, span: Span) -> Result<ValueId, String> {
        let r = self.graph.ty(x).shape.rank();
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(r - 2, r - 1);
        self.op(Op::Transpose { perm }, &[x], span)
    }

    pub(super) fn reduce_sum(
        &mut self,
        x: ValueId,
        axes: Vec<usize>,
        keep_dims: bool,
        span: Span,
    ) -> Result<ValueId, String> {
        self.op(
            Op::Reduce {
                op: ReduceOp::Sum,
                axes,
                keep_dims,
            },
            &[x],
            span,
        )
    }

    /// An `f32` tensor of zeros of `shape`.
    pub(super) fn zeros(&mut self, shape: &Shape, span: Span) -> Result<ValueId, String> {
        let zero = self.constant(0.0, span)?;
        if shape.rank() == 0 {
            return Ok(zero);
        }
        self.op(
            Op::Broadcast {
                shape: shape.clone(),
            },
            &[zero],
            span,
        )
    }

    /// The adjoint of NumPy broadcasting: `c`, a cotangent of a broadcast result, summed
    /// over the axes along which an operand of shape `target` was stretched (the leading
    /// axes it lacks and its dims of 1 that grew), then reshaped to `target`.
    fn unbroadcast(&mut self, c: ValueId, target: &Shape, span: Span) -> Result<ValueId, String> {
        let shape = self.graph.ty(c).shape.clone();
        if shape == *target {
            return Ok(c);
        }
        let lead = shape.rank() - target.rank();
        let axes: Vec<usize> = (0..shape.rank())
            .filter(|&i| {
                i < lead || (target.0[i - lead] == Dim::Fixed(1) && shape.0[i] != Dim::Fixed(1))
            })
            .collect();
        let summed = if axes.is_empty() {
            c
        } else {
            self.reduce_sum(c, axes, true, span)?
        };
        self.reshape(summed, target, span)
    }

    /// `g_i` for each operand `i` with `wanted[i]`, None for the others.
    pub(super) fn vjp(
        &mut self,
        y: ValueId,
        node: &Node,
        operands: &[ValueId],
        wanted: &[bool],
        g: ValueId,
    ) -> Result<Vec<Option<ValueId>>, String> {
        let span = node.span;
        let mut out = vec![None; operands.len()];
        match &node.op {
            Op::Scan(scan) => return self.scan_rule(y, scan, operands, wanted, g, span),
            // Leaves have no operands; these pass no gradient (see `passes_gradient`).
            Op::Input { .. }
            | Op::Param { .. }
            | Op::Const { .. }
            | Op::StopGradient
            | Op::OneHot { .. }
            | Op::Cast { .. }
            | Op::RandomUniform { .. } => {}
            Op::Unary(u) => out[0] = Some(self.unary_rule(*u, operands[0], y, g, span)?),
            Op::Binary(b) => {
                let (a, bv) = (operands[0], operands[1]);
                let (ga, gb) = self.binary_rule(*b, a, bv, y, g, wanted, span)?;
                for (i, gi) in [ga, gb].into_iter().enumerate() {
                    if let Some(gi) = gi {
                        let target = self.graph.ty(operands[i]).shape.clone();
                        out[i] = Some(self.unbroadcast(gi, &target, span)?);
                    }
                }
            }
            Op::MatMul => {
                let (a, b) = (operands[0], operands[1]);
                if wanted[0] {
                    out[0] = Some(self.matmul_lhs_rule(a, b, g, span)?);
                }
                if wanted[1] {
                    out[1] = Some(self.matmul_rhs_rule(a, b, g, span)?);
                }
            }
            Op::Reduce {
                op,
                axes,
                keep_dims,
            } => out[0] = Some(self.reduce_rule(*op, axes, *keep_dims, operands[0], y, g, span)?),
            // Reshape: the same elements in the same order, so the cotangent is reshaped
            // back.
            Op::Reshape { .. } => {
                let shape = self.graph.ty(operands[0]).shape.clone();
                out[0] = Some(self.reshape(g, &shape, span)?);
            }
            // Transpose by `perm`: the cotangent is transposed by the inverse permutation.
            Op::Transpose { perm } => {
                let mut inverse = vec![0; perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    inverse[p] = i;
                }
                out[0] = Some(self.op(Op::Transpose { perm: inverse }, &[g], span)?);
            }
            // Concat: operand `i` gets the slice of the cotangent where it was placed.
            Op::Concat { axis } => {
                let mut start = 0;
                for (i, &x) in operands.iter().enumerate() {
                    let len = self.graph.ty(x).shape.0[*axis]
                        .fixed()
                        .ok_or("concat along the batch")?;
                    if wanted[i] {
                        let slice = Op::Slice {
                            axis: *axis,
                            start,
                            len,
                        };
                        out[i] = Some(self.op(slice, &[g], span)?);
                    }
                    start += len;
                }
            }
            // Slice: the cotangent padded with zeros back to the operand's extent, as a
            // concat of [zeros(start), g, zeros(rest)] along the axis.
            Op::Slice { axis, start, len } => {
                let shape = self.graph.ty(operands[0]).shape.clone();
                let n = shape.0[*axis].fixed().ok_or("slice along the batch")?;
                let zeros_of = |e: &mut Self, extent: u64| -> Result<ValueId, String> {
                    let mut dims = shape.0.clone();
                    dims[*axis] = Dim::Fixed(extent);
                    e.zeros(&Shape(dims), span)
                };
                let mut parts = Vec::new();
                if *start > 0 {
                    parts.push(zeros_of(self, *start)?);
                }
                parts.push(g);
                if start + len < n {
                    parts.push(zeros_of(self, n - start - len)?);
                }
                out[0] = Some(if parts.len() == 1 {
                    g
                } else {
                    self.op(Op::Concat { axis: *axis }, &parts, span)?
                });
            }
            // Broadcast: the adjoint of broadcasting, as for a binary op's operand.
            Op::Broadcast { .. } => {
                let shape = self.graph.ty(operands[0]).shape.clone();
                out[0] = Some(self.unbroadcast(g, &shape, span)?);
            }
            // im2col is linear and copies each pixel into the columns that read it, so
            // its adjoint sums those columns back: col2im.
            Op::Im2Col { window } => {
                let dims = self.graph.ty(operands[0]).shape.0.clone();
                let fixed = |i: usize| dims[i].fixed().ok_or("im2col of a batched image dim");
                let col2im = Op::Col2Im {
                    window: *window,
                    channels: fixed(1)?,
                    height: fixed(2)?,
                    width: fixed(3)?,
                };
                out[0] = Some(self.op(col2im, &[g], span)?);
            }
            // A gather copies the rows its ids select, so its adjoint adds each row of the
            // cotangent into the row its id selected; the ids, integers, get none.
            Op::Gather => {
                if wanted[0] {
                    let rows = self.graph.ty(operands[0]).shape.0[0]
                        .fixed()
                        .ok_or("gather from a batched table")?;
                    let scatter = Op::ScatterAdd { rows };
                    out[0] = Some(self.op(scatter, &[operands[1], g], span)?);
                }
            }
            // And the adjoint of the scatter-add is the gather again.
            Op::ScatterAdd { .. } => {
                if wanted[1] {
                    out[1] = Some(self.op(Op::Gather, &[g, operands[0]], span)?);
                }
            }
            // col2im is the adjoint of im2col, so its adjoint is im2col again.
            Op::Col2Im { window, .. } => {
                out[0] = Some(self.op(Op::Im2Col { window: *window }, &[g], span)?);
            }
        }
        Ok(out)
    }

    /// Element-wise rules, `g_x = g * f'(x)`, with `f'` in terms of `y` where that is
    /// cheaper.
    fn unary_rule(
        &mut self,
        op: UnaryOp,
        x: ValueId,
        y: ValueId,
        g: ValueId,
        span: Span,
    ) -> Result<ValueId, String> {
        use BinaryOp::{Div, Gt, Lt, Mul, Sub};
        match op {
            // neg: g_x = -g
            UnaryOp::Neg => self.unary(UnaryOp::Neg, g, span),
            // abs: g_x = g * sign(x), sign(x) = gt(x, 0) - lt(x, 0) (0 at x = 0, a
            // subgradient)
            UnaryOp::Abs => {
                let zero = self.constant(0.0, span)?;
                let pos = self.binary(Gt, x, zero, span)?;
                let neg = self.binary(Lt, x, zero, span)?;
                let sign = self.binary(Sub, pos, neg, span)?;
                self.binary(Mul, g, sign, span)
            }
            // exp: g_x = g * y
            UnaryOp::Exp => self.binary(Mul, g, y, span),
            // log: g_x = g / x
            UnaryOp::Log => self.binary(Div, g, x, span),
            // sqrt: g_x = g / (2 y)
            UnaryOp::Sqrt => {
                let two_y = self.binary_const(Mul, y, 2.0, span)?;
                self.binary(Div, g, two_y, span)
            }
            // recip: g_x = -g * y * y (d/dx 1/x = -1/x^2)
            UnaryOp::Recip => {
                let yy = self.binary(Mul, y, y, span)?;
                let gyy = self.binary(Mul, g, yy, span)?;
                self.unary(UnaryOp::Neg, gyy, span)
            }
            // tanh: g_x = g * (1 - y * y)
            UnaryOp::Tanh => {
                let yy = self.binary(Mul, y, y, span)?;
                let one = self.constant(1.0, span)?;
                let d = self.binary(Sub, one, yy, span)?;
                self.binary(Mul, g, d, span)
            }
            // erf: g_x = g * 2/sqrt(pi) * exp(-x^2)
            UnaryOp::Erf => {
                let xx = self.binary(Mul, x, x, span)?;
                let neg = self.unary(UnaryOp::Neg, xx, span)?;
                let density = self.unary(UnaryOp::Exp, neg, span)?;
                let d = self.binary_const(Mul, density, std::f64::consts::FRAC_2_SQRT_PI, span)?;
                self.binary(Mul, g, d, span)
            }
            // sigmoid: g_x = g * y * (1 - y)
            UnaryOp::Sigmoid => {
                let one = self.constant(1.0, span)?;
                let one_minus = self.binary(Sub, one, y, span)?;
                let d = self.binary(Mul, y, one_minus, span)?;
                self.binary(Mul, g, d, span)
            }
            // relu: g_x = g * gt(x, 0) (0 at x = 0, a subgradient)
            UnaryOp::Relu => {
                let zero = self.constant(0.0, span)?;
                let mask = self.binary(Gt, x, zero, span)?;
                self.binary(Mul, g, mask, span)
            }
        }
    }

    /// Element-wise rules for `y = a op b`, before un-broadcasting: each result has `y`'s
    /// shape.
    #[allow(clippy::too_many_arguments)]
    fn binary_rule(
        &mut self,
        op: BinaryOp,
        a: ValueId,
        b: ValueId,
        y: ValueId,
        g: ValueId,
        wanted: &[bool],
        span: Span,
    ) -> Result<(Option<ValueId>, Option<ValueId>), String> {
        use BinaryOp::*;
        let (wa, wb) = (wanted[0], wanted[1]);
        let mut ga = None;
        let mut gb = None;
        match op {
            // add: g_a = g, g_b = g
            Add => {
                ga = wa.then_some(g);
                gb = wb.then_some(g);
            }
            // sub: g_a = g, g_b = -g
            Sub => {
                ga = wa.then_some(g);
                if wb {
                    gb = Some(self.unary(UnaryOp::Neg, g, span)?);
                }
            }
            // mul: g_a = g * b, g_b = g * a
            Mul => {
                if wa {
                    ga = Some(self.binary(Mul, g, b, span)?);
                }
                if wb {
                    gb = Some(self.binary(Mul, g, a, span)?);
                }
            }
            // div: g_a = g / b, g_b = -(g * y) / b (d/db a/b = -a/b^2 = -y/b)
            Div => {
                if wa {
                    ga = Some(self.binary(Div, g, b, span)?);
                }
                if wb {
                    let gy = self.binary(Mul, g, y, span)?;
                    let q = self.binary(Div, gy, b, span)?;
                    gb = Some(self.unary(UnaryOp::Neg, q, span)?);
                }
            }
            // max: g_a = g * (ge(a, b) + gt(a, b)) / 2, g_b = g * (le(a, b) + lt(a, b)) / 2:
            // the larger operand takes g, a tie splits it in halves (as PyTorch's
            // `maximum`); min is the mirror image.
            Max | Min => {
                let (a_wins, b_wins) = if op == Max {
                    ((Ge, Gt), (Le, Lt))
                } else {
                    ((Le, Lt), (Ge, Gt))
                };
                for (want, (weak, strict), slot) in [(wa, a_wins, &mut ga), (wb, b_wins, &mut gb)] {
                    if want {
                        let w = self.binary(weak, a, b, span)?;
                        let s = self.binary(strict, a, b, span)?;
                        let both = self.binary(Add, w, s, span)?;
                        let mask = self.binary_const(Mul, both, 0.5, span)?;
                        *slot = Some(self.binary(Mul, g, mask, span)?);
                    }
                }
            }
            // pow: g_a = g * b * a^(b - 1), g_b = g * log(a) * y (b's rule needs a > 0)
            Pow => {
                if wa {
                    let b_minus_1 = self.binary_const(Sub, b, 1.0, span)?;
                    let p = self.binary(Pow, a, b_minus_1, span)?;
                    let d = self.binary(Mul, b, p, span)?;
                    ga = Some(self.binary(Mul, g, d, span)?);
                }
                if wb {
                    let log_a = self.unary(UnaryOp::Log, a, span)?;
                    let d = self.binary(Mul, log_a, y, span)?;
                    gb = Some(self.binary(Mul, g, d, span)?);
                }
            }
            // Comparisons are piecewise constant: zero gradient, never reached (see
            // `passes_gradient`).
            Lt | Le | Gt | Ge | Eq => {}
        }
        Ok((ga, gb))
    }

    /// `y = a x b`: `g_a = g x bᵀ`. With `b` of rank 2 shared by `a`'s leading dims,
    /// `g [..., m, n] x bᵀ [n, k]` is again a shared-rhs product. With `a` of rank 2
    /// shared by `b`'s leading dims `L` (a convolution's weight), `g_a` sums over them:
    /// `reduce_sum(g x bᵀ, L)`, one contraction summed over `L` after lowering (fusion
    /// rule `summed-product`).
    fn matmul_lhs_rule(
        &mut self,
        a: ValueId,
        b: ValueId,
        g: ValueId,
        span: Span,
    ) -> Result<ValueId, String> {
        let bt = self.transpose_last2(b, span)?;
        let per_index = self.op(Op::MatMul, &[g, bt], span)?;
        let rb = self.graph.ty(b).shape.rank();
        if self.graph.ty(a).shape.rank() == 2 && rb > 2 {
            return self.reduce_sum(per_index, (0..rb - 2).collect(), false, span);
        }
        Ok(per_index)
    }

    /// `y = a x b`: `g_b = aᵀ x g`, per leading index when `b` has them. When `b` is
    /// rank 2 and shared by `a`'s leading dims `L`, `g_b` sums over them too:
    /// - if `L` and `m` merge into one dimension `N` (all fixed, or the batch alone with
    ///   fixed dims of 1), `a` and `g` are reshaped to `[N, k]` and `[N, n]` and
    ///   `g_b = aᵀ x g` is one product (contracting over the batch if `N` is the batch);
    /// - otherwise (`[batch, s, k]` with `s > 1`: `batch * s` is no single dimension),
    ///   `g_b = reduce_sum(aᵀ x g, L)`, a batched product then a sum over its batch,
    ///   which lowering makes one contraction summed over `L` (fusion rule
    ///   `summed-product`; on the CPU one product of depth `batch * s`).
    fn matmul_rhs_rule(
        &mut self,
        a: ValueId,
        b: ValueId,
        g: ValueId,
        span: Span,
    ) -> Result<ValueId, String> {
        let a_shape = self.graph.ty(a).shape.clone();
        let ra = a_shape.rank();
        let shared = self.graph.ty(b).shape.rank() == 2 && ra > 2;
        if !shared {
            let at = self.transpose_last2(a, span)?;
            return self.op(Op::MatMul, &[at, g], span);
        }
        let k = a_shape.0[ra - 1];
        let n = *self.graph.ty(g).shape.0.last().ok_or("matmul of rank 0")?;
        if let Some(rows) = merged_dim(&a_shape.0[..ra - 1]) {
            let a2 = self.reshape(a, &Shape(vec![rows, k]), span)?;
            let g2 = self.reshape(g, &Shape(vec![rows, n]), span)?;
            let at = self.transpose_last2(a2, span)?;
            return self.op(Op::MatMul, &[at, g2], span);
        }
        let at = self.transpose_last2(a, span)?;
        let per_index = self.op(Op::MatMul, &[at, g], span)?;
        self.reduce_sum(per_index, (0..ra - 2).collect(), false, span)
    }

    /// Reductions, with `g` first brought to the keep-dims shape `K` of `y`:
    /// - sum: `g_x = broadcast(g_K, shape(x))`;
    /// - max/min: `mask = eq(x, y_K)`, `g_x = mask * g_K / reduce_sum(mask)`: the extreme
    ///   element takes `g`, and `k` tied extremes share it in `k` equal parts (as
    ///   PyTorch's `amax`), so the gradient still sums to `g`.
    #[allow(clippy::too_many_arguments)]
    fn reduce_rule(
        &mut self,
        op: ReduceOp,
        axes: &[usize],
        keep_dims: bool,
        x: ValueId,
        y: ValueId,
        g: ValueId,
        span: Span,
    ) -> Result<ValueId, String> {
        let x_shape = self.graph.ty(x).shape.clone();
        let kept = Shape(
            x_shape
                .0
                .iter()
                .enumerate()
                .map(|(i, d)| if axes.contains(&i) { Dim::Fixed(1) } else { *d })
                .collect(),
        );
        let g_kept = if keep_dims {
            g
        } else {
            self.reshape(g, &kept, span)?
        };
        match op {
            ReduceOp::Sum => self.op(Op::Broadcast { shape: x_shape }, &[g_kept], span),
            ReduceOp::Max | ReduceOp::Min => {
                let y_kept = if keep_dims {
                    y
                } else {
                    self.reshape(y, &kept, span)?
                };
                let mask = self.binary(BinaryOp::Eq, x, y_kept, span)?;
                let count = self.reduce_sum(mask, axes.to_vec(), true, span)?;
                let share = self.binary(BinaryOp::Div, g_kept, count, span)?;
                self.binary(BinaryOp::Mul, mask, share, span)
            }
        }
    }
}

/// The single dimension holding all of `dims` (row-major), if there is one: the product
/// of fixed dims, or the batch when every other dim is 1.
fn merged_dim(dims: &[Dim]) -> Option<Dim> {
    let fixed: u64 = dims.iter().filter_map(|d| d.fixed()).product();
    match dims.iter().filter(|d| **d == Dim::Batch).count() {
        0 => Some(Dim::Fixed(fixed)),
        1 if fixed == 1 => Some(Dim::Batch),
        _ => None,
    }
}

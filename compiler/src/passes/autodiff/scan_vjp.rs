//! The vector-Jacobian rule of `scan`: backpropagation through time as more scans.
//!
//! For a forward scan `R = scan(f, init, xs..., cs...)` (keep = all) with cotangent `G`
//! of `R`, write `prev[t]` for the carry step `t` reads and `next[t]` for the one it
//! writes (`R[t]`/`R[t + 1]` forward, `R[t + 1]`/`R[t]` reverse). Then:
//!
//! 1. The total cotangent `g` of every carry runs backwards through time: a scan in the
//!    opposite direction whose carry starts at `G` of the final carry and whose step is
//!    `g(prev[t]) = G(prev[t]) + (d f / d h)ᵀ g(next[t])`, the body's own
//!    vector-Jacobian product with respect to its carry (built by [`vector_jacobian_products`]
//!    on a copy of the body). Its stacked result is `g` at every index of `R`; the
//!    gradient of `init` is `g` of the first carry.
//! 2. Given `g`, each step's contributions are independent of the others: the gradient
//!    of a sequence is a forward scan stacking `(d f / d x)ᵀ g(next[t])` per step, and the
//!    gradient of a constant is a `keep = last` scan accumulating
//!    `(d f / d c)ᵀ g(next[t])` over the steps (one carry of memory, not one per step).
//!
//! Every backward body recomputes the forward step it needs from `prev[t]` and the
//! inputs (the forward keeps only the carries): recomputation instead of a tape, so the
//! IR's size stays independent of `T`.

use super::vector_jacobian_products;
use super::vjp::Emitter;
use crate::ir::scan::Scan;
use crate::ir::{BinaryOp, Graph, Op, Shape, TensorType, ValueId};
use crate::source::Span;

/// What a backward body computes.
#[derive(Clone, Copy)]
enum Target {
    /// `g(prev) = G(prev) + (d f / d h)ᵀ carry`: the carry is `g(next)`.
    Carry,
    /// `(d f / d x_j)ᵀ g(next)`: the carry is unused.
    Sequence(usize),
    /// `carry + (d f / d c_i)ᵀ g(next)`: the carry accumulates.
    Constant(usize),
}

impl Emitter<'_> {
    /// `g_i` for each wanted operand of the scan `y` (see the module docs).
    pub(super) fn scan_rule(
        &mut self,
        y: ValueId,
        scan: &Scan,
        operands: &[ValueId],
        wanted: &[bool],
        g: ValueId,
        span: Span,
    ) -> Result<Vec<Option<ValueId>>, String> {
        if !scan.keep_all {
            return Err("only a scan that keeps every carry can be differentiated".into());
        }
        let k = scan.sequences;
        let carry_ty = self.graph.ty(operands[0]).clone();
        let steps = match self.graph.ty(y).shape.dims().first() {
            Some(crate::ir::Dim::Fixed(n)) => n - 1,
            _ => return Err("a scan result has a fixed time axis first".into()),
        };
        let (prev_start, next_start) = if scan.reverse { (1, 0) } else { (0, 1) };
        let (first, last) = if scan.reverse { (steps, 0) } else { (0, steps) };
        let prev = self.time_slice(y, prev_start, steps, span)?;
        let g_prev = self.time_slice(g, prev_start, steps, span)?;
        let g_last = self.carry_at(g, last, &carry_ty, span)?;
        let xs = &operands[1..=k];
        let cs = &operands[1 + k..];

        // 1. The carries' total cotangents, backwards through time.
        let body = backward_body(&scan.body, k, Target::Carry)?;
        let mut ops = vec![g_last, prev];
        ops.extend_from_slice(xs);
        ops.push(g_prev);
        ops.extend_from_slice(cs);
        let gs = self.graph.add(
            Op::Scan(Box::new(Scan {
                body,
                sequences: k + 2,
                reverse: !scan.reverse,
                keep_all: true,
            })),
            &ops,
            span,
        )?;
        let g_next = self.time_slice(gs, next_start, steps, span)?;

        let mut out = vec![None; operands.len()];
        if wanted[0] {
            out[0] = Some(self.carry_at(gs, first, &carry_ty, span)?);
        }
        // 2. Per-step contributions to the sequences and constants. A constant used only
        // as a recurrent weight next to a sequence (see [`linear_constant`]) sums a
        // product of that sequence's gradient with the stacked carries instead.
        let mut step_ops = vec![prev];
        step_ops.extend_from_slice(xs);
        step_ops.push(g_next);
        step_ops.extend_from_slice(cs);
        let linear: Vec<Option<LinearUse>> = (0..cs.len())
            .map(|i| {
                wanted[1 + k + i]
                    .then(|| linear_constant(&scan.body, k, i))
                    .flatten()
            })
            .collect();
        let mut order: Vec<usize> = (1..operands.len()).collect();
        // Sequences first: a linear constant's gradient is computed from one of theirs.
        order.sort_by_key(|&i| i > k);
        for i in order {
            let needed_by_linear = i <= k && linear.iter().flatten().any(|u| u.sequence + 1 == i);
            if !wanted[i] && !needed_by_linear {
                continue;
            }
            if i > k
                && let Some(use_) = linear[i - 1 - k]
            {
                let g_seq =
                    out[1 + use_.sequence].ok_or("a linear constant's sequence gradient")?;
                out[i] = Some(self.linear_constant_gradient(prev, g_seq, use_, span)?);
                continue;
            }
            let operand_ty = self.graph.ty(operands[i]).clone();
            let (target, carry_shape, keep_all) = if i <= k {
                let slice = Shape(operand_ty.shape.dims()[1..].to_vec());
                (Target::Sequence(i - 1), slice, true)
            } else {
                (Target::Constant(i - 1 - k), operand_ty.shape.clone(), false)
            };
            let zero = self.zeros(&carry_shape, span)?;
            let mut ops = vec![zero];
            ops.extend_from_slice(&step_ops);
            let r = self.graph.add(
                Op::Scan(Box::new(Scan {
                    body: backward_body(&scan.body, k, target)?,
                    sequences: k + 2,
                    reverse: false,
                    keep_all,
                })),
                &ops,
                span,
            )?;
            out[i] = Some(if keep_all {
                self.time_slice(r, 1, steps, span)?
            } else {
                r
            });
        }
        for (i, o) in out.iter_mut().enumerate() {
            if !wanted[i] {
                *o = None;
            }
        }
        Ok(out)
    }

    /// The gradient of a constant `c` with a [`LinearUse`]: the step's product is
    /// `z[t] = p[t] x cᵀ` (or `p[t] x c`) and `z[t] + x[t]` its only use, so `z[t]`'s
    /// cotangent is the sequence's gradient `gx[t]` and `g_c = sum_t gx[t]ᵀ x p[t]`
    /// (or `sum_t p[t]ᵀ x gx[t]`): one product summed over time and batch (fusion rule
    /// `summed-product`), where a scan would recompute every step's forward to
    /// accumulate it.
    fn linear_constant_gradient(
        &mut self,
        prev: ValueId,
        g_seq: ValueId,
        use_: LinearUse,
        span: Span,
    ) -> Result<ValueId, String> {
        let p = match use_.slice {
            Some((axis, start, len)) => self.graph.add(
                Op::Slice {
                    axis: axis + 1,
                    start,
                    len,
                },
                &[prev],
                span,
            )?,
            None => prev,
        };
        let per_step = if use_.transposed {
            let gt = self.transpose_last2(g_seq, span)?;
            self.op(Op::MatMul, &[gt, p], span)?
        } else {
            let pt = self.transpose_last2(p, span)?;
            self.op(Op::MatMul, &[pt, g_seq], span)?
        };
        self.reduce_sum(per_step, vec![0], false, span)
    }

    /// `x[start..start + len]` along the time axis.
    fn time_slice(
        &mut self,
        x: ValueId,
        start: u64,
        len: u64,
        span: Span,
    ) -> Result<ValueId, String> {
        self.graph.add(
            Op::Slice {
                axis: 0,
                start,
                len,
            },
            &[x],
            span,
        )
    }

    /// `x[index]` along the time axis, as a value of the carry's type.
    fn carry_at(
        &mut self,
        x: ValueId,
        index: u64,
        carry: &TensorType,
        span: Span,
    ) -> Result<ValueId, String> {
        let one = self.time_slice(x, index, 1, span)?;
        self.graph.add(
            Op::Reshape {
                shape: carry.shape.clone(),
            },
            &[one],
            span,
        )
    }
}

/// How a scan body uses a constant that is a recurrent weight: its only use is the
/// product `p x cᵀ` (`transposed`) or `p x c`, `p` the carry or a slice of it along
/// `slice`'s axis, and that product's only use is `z + x_j` with the step's element of
/// sequence `j`, which nothing else reads, of the same type (an LSTM's or RNN's
/// `h Whhᵀ + (x Wih + b)[t]`). Then `z`'s cotangent is `x_j`'s.
#[derive(Clone, Copy)]
struct LinearUse {
    sequence: usize,
    slice: Option<(usize, u64, u64)>,
    transposed: bool,
}

/// The [`LinearUse`] of constant `i` of a forward body with `k` sequences, if it has one.
fn linear_constant(body: &Graph, k: usize, i: usize) -> Option<LinearUse> {
    let only_user = |v: ValueId| match body.users(v)[..] {
        [u] if body.outputs.iter().all(|(_, o)| *o != v) => Some(u),
        _ => None,
    };
    let c = *body.inputs.get(1 + k + i)?;
    let mut user = only_user(c)?;
    let transposed = matches!(&body.node(user).op, Op::Transpose { perm } if perm == &[1, 0]);
    let weight = if transposed {
        let t = user;
        user = only_user(t)?;
        t
    } else {
        c
    };
    let product = user;
    let [p, w] = body.operands(product)[..] else {
        return None;
    };
    if body.node(product).op != Op::MatMul || w != weight || p == weight {
        return None;
    }
    if body.ty(c).shape.rank() != 2 || body.ty(p).shape.rank() != 2 {
        return None;
    }
    let carry = body.inputs[0];
    let slice = match &body.node(p).op {
        _ if p == carry => None,
        Op::Slice { axis, start, len } if body.operands(p) == [carry] => {
            Some((*axis, *start, *len))
        }
        _ => return None,
    };
    let add = only_user(product)?;
    let [a, b] = body.operands(add)[..] else {
        return None;
    };
    let x = if a == product { b } else { a };
    let sequence = body.inputs[1..=k].iter().position(|s| *s == x)?;
    let same = body.ty(x) == body.ty(product) && body.ty(add) == body.ty(product);
    (body.node(add).op == Op::Binary(BinaryOp::Add) && a != b && same && only_user(x) == Some(add))
        .then_some(LinearUse {
            sequence,
            slice,
            transposed,
        })
}

/// A body for one backward scan (see [`Target`]). Its inputs: the carry, then the
/// sequences `prev`, the forward's `k` sequences and the step's cotangent (`G(prev)` for
/// [`Target::Carry`], `g(next)` otherwise), then the forward's constants.
fn backward_body(forward: &Graph, k: usize, target: Target) -> Result<Graph, String> {
    let input_ty = |i: usize| forward.ty(forward.inputs[i]).clone();
    let carry_ty = input_ty(0);
    let span = forward
        .outputs
        .first()
        .map(|(_, v)| forward.node(*v).span)
        .unwrap_or_default();
    let mut b = Graph::new(format!("{}_vjp", forward.name));
    let own_carry_ty = match target {
        Target::Carry => carry_ty.clone(),
        Target::Sequence(j) => input_ty(1 + j),
        Target::Constant(i) => input_ty(1 + k + i),
    };
    let leaf =
        |b: &mut Graph, name: String, ty: TensorType| b.add_leaf(Op::Input { name }, ty, span);
    let carry = leaf(&mut b, "carry".into(), own_carry_ty);
    let h = leaf(&mut b, "h".into(), carry_ty.clone());
    let xs: Vec<ValueId> = (0..k)
        .map(|j| leaf(&mut b, format!("x{j}"), input_ty(1 + j)))
        .collect();
    let cot = leaf(&mut b, "g".into(), carry_ty);
    let cs: Vec<ValueId> = (1 + k..forward.inputs.len())
        .map(|i| leaf(&mut b, format!("c{}", i - 1 - k), input_ty(i)))
        .collect();
    let mut args = vec![h];
    args.extend(&xs);
    args.extend(&cs);
    let next = b.inline(forward, &args)?[0];
    let (seed, wrt) = match target {
        Target::Carry => (carry, h),
        Target::Sequence(j) => (cot, xs[j]),
        Target::Constant(i) => (cot, cs[i]),
    };
    let d = vector_jacobian_products(&mut b, next, Some(seed), &[wrt])?[0];
    let result = match target {
        Target::Carry => b.add(Op::Binary(BinaryOp::Add), &[cot, d], span)?,
        Target::Sequence(_) => d,
        Target::Constant(_) => b.add(Op::Binary(BinaryOp::Add), &[carry, d], span)?,
    };
    b.outputs.push(("next".into(), result));
    crate::passes::dce::eliminate_dead_code(&mut b, false);
    Ok(b)
}

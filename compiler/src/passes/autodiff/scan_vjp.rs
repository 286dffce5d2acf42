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
        // 2. Per-step contributions to the sequences and constants.
        let mut step_ops = vec![prev];
        step_ops.extend_from_slice(xs);
        step_ops.push(g_next);
        step_ops.extend_from_slice(cs);
        for i in 1..operands.len() {
            if !wanted[i] {
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
        Ok(out)
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

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
//! inputs, except the values on the tape ([`tape_values`]: the body's activations and
//! the products the backward still reads): when they have the carry's shape but for the
//! last axis, the forward scan is rebuilt to carry them too (concatenated after the
//! carry, see [`Emitter::record_tape`]) and the backward reads them. A sequence of that
//! shape gets its gradient in the carries' scan (step 1) rather than a scan of its own.
//! The IR's size stays independent of `T`.

use super::vector_jacobian_products;
use super::vjp::Emitter;
use crate::ir::scan::Scan;
use crate::ir::{BinaryOp, Graph, Op, Shape, TensorType, UnaryOp, ValueId};
use crate::source::Span;
use std::collections::HashSet;

/// What a backward body computes.
#[derive(Clone, Copy)]
enum Target {
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
        // The forward's activations and products are kept (a tape) when they can ride
        // along with the carry, so the backward steps need not recompute them.
        let tape = tape_values(&scan.body);
        // With a tape, the backward bodies read whole rows of the taped scan's result
        // (the carry with the recorded values after it) and take their parts inside, so no
        // part is copied out of it: `prev[t]`'s row as the carry, `next[t]`'s row for
        // the values step `t` recorded.
        let (y, rows, tapes) = if tape.is_empty() {
            let prev = self.time_slice(y, prev_start, steps, span)?;
            (y, prev, Vec::new())
        } else {
            let (carries, stacked) = self.record_tape(y, scan, operands, &tape, span)?;
            let prev_rows = self.time_slice(stacked, prev_start, steps, span)?;
            let next_rows = self.time_slice(stacked, next_start, steps, span)?;
            (carries, prev_rows, vec![next_rows])
        };
        let n = tapes.len();
        let prev = if tapes.is_empty() {
            rows
        } else {
            self.time_slice(y, prev_start, steps, span)?
        };
        let g_prev = self.time_slice(g, prev_start, steps, span)?;
        let g_last = self.carry_at(g, last, &carry_ty, span)?;
        let xs = &operands[1..=k];
        let cs = &operands[1 + k..];

        // Constants used only as a recurrent weight next to a sequence (see
        // [`linear_constant`]) sum a product of that sequence's gradient with the stacked
        // carries instead of running a scan of their own.
        let linear: Vec<Option<LinearUse>> = (0..cs.len())
            .map(|i| {
                wanted[1 + k + i]
                    .then(|| linear_constant(&scan.body, k, i))
                    .flatten()
            })
            .collect();
        let needed = |i: usize| {
            wanted[i] || (i <= k && linear.iter().flatten().any(|u| u.sequence + 1 == i))
        };
        // Sequences whose per-step gradient rides along in the carries' scan: the same
        // backward step computes it from the same `g(next)`, so the cell's forward is
        // recomputed once for both (an LSTM step runs its cell twice, not three times).
        let merged: Vec<usize> = (0..k)
            .filter(|&j| needed(1 + j) && joins(&carry_ty, &step_type(self.graph.ty(xs[j]))))
            .collect();

        // 1. The carries' total cotangents, backwards through time, with the merged
        // sequences' gradients concatenated after them along the last axis.
        let body = carry_body(&scan.body, k, &merged, &tape)?;
        let mut init = g_last;
        if !merged.is_empty() {
            let axis = carry_ty.shape.rank() - 1;
            let mut parts = vec![g_last];
            for &j in &merged {
                let step = step_type(self.graph.ty(xs[j]));
                parts.push(self.zeros(&step.shape, span)?);
            }
            init = self.graph.add(Op::Concat { axis }, &parts, span)?;
        }
        let mut ops = vec![init, rows];
        ops.extend_from_slice(xs);
        ops.push(g_prev);
        ops.extend_from_slice(&tapes);
        ops.extend_from_slice(cs);
        let mut gs = self.graph.add(
            Op::Scan(Box::new(Scan {
                body,
                sequences: k + 2 + n,
                reverse: !scan.reverse,
                keep_all: true,
            })),
            &ops,
            span,
        )?;
        let mut out = vec![None; operands.len()];
        if !merged.is_empty() {
            // Step t's output lands at the index of `prev[t]` in the stacked result.
            let axis = carry_ty.shape.rank();
            let stacked = gs;
            let mut start = last_dim(&carry_ty);
            gs = self.graph.add(
                Op::Slice {
                    axis,
                    start: 0,
                    len: start,
                },
                &[stacked],
                span,
            )?;
            for &j in &merged {
                let len = last_dim(self.graph.ty(xs[j]));
                let part = self
                    .graph
                    .add(Op::Slice { axis, start, len }, &[stacked], span)?;
                out[1 + j] = Some(self.time_slice(part, prev_start, steps, span)?);
                start += len;
            }
        }
        let g_next = self.time_slice(gs, next_start, steps, span)?;

        if wanted[0] {
            out[0] = Some(self.carry_at(gs, first, &carry_ty, span)?);
        }
        // 2. Per-step contributions to the other sequences and the constants.
        let mut step_ops = vec![rows];
        step_ops.extend_from_slice(xs);
        step_ops.push(g_next);
        step_ops.extend_from_slice(&tapes);
        step_ops.extend_from_slice(cs);
        let mut order: Vec<usize> = (1..operands.len()).collect();
        // Sequences first: a linear constant's gradient is computed from one of theirs.
        order.sort_by_key(|&i| i > k);
        for i in order {
            if !needed(i) || out[i].is_some() {
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
                    body: backward_body(&scan.body, k, target, &tape)?,
                    sequences: k + 2 + n,
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

    /// Replaces the forward scan `y` by one whose carry also holds the body's `tape`
    /// values, concatenated after the carry on the last axis, and returns the carries
    /// (a slice of the new scan, which now stands for `y` everywhere) and the new scan's
    /// whole result (step `t`'s values are in the row of `next[t]`).
    fn record_tape(
        &mut self,
        y: ValueId,
        scan: &Scan,
        operands: &[ValueId],
        tape: &[ValueId],
        span: Span,
    ) -> Result<(ValueId, ValueId), String> {
        let body = &scan.body;
        let carry_ty = body.ty(body.inputs[0]).clone();
        let axis = carry_ty.shape.rank() - 1;
        let width = last_dim(&carry_ty);
        let widths: Vec<u64> = tape.iter().map(|&m| last_dim(body.ty(m))).collect();
        let mut taped = Graph::new(format!("{}_taped", body.name));
        let carry = taped.add_leaf(
            Op::Input {
                name: "carry".into(),
            },
            widened(&carry_ty, widths.iter().sum()),
            span,
        );
        let h = taped.add(
            Op::Slice {
                axis,
                start: 0,
                len: width,
            },
            &[carry],
            span,
        )?;
        let mut args = vec![h];
        for &i in &body.inputs[1..] {
            let name = match &body.node(i).op {
                Op::Input { name } => name.clone(),
                _ => format!("{i}"),
            };
            args.push(taped.add_leaf(Op::Input { name }, body.ty(i).clone(), span));
        }
        let map = taped.inline_mapped(body, &args)?;
        let mut parts = vec![map[&body.outputs[0].1]];
        parts.extend(tape.iter().map(|m| map[m]));
        let next = taped.add(Op::Concat { axis }, &parts, span)?;
        taped.outputs.push(("next".into(), next));

        let mut init = vec![operands[0]];
        for &m in tape {
            init.push(self.zeros(&body.ty(m).shape, span)?);
        }
        let init = self.graph.add(Op::Concat { axis }, &init, span)?;
        let mut ops = vec![init];
        ops.extend_from_slice(&operands[1..]);
        let stacked = self.graph.add(
            Op::Scan(Box::new(Scan {
                body: taped,
                ..scan.clone()
            })),
            &ops,
            span,
        )?;
        let carries = self.graph.add(
            Op::Slice {
                axis: axis + 1,
                start: 0,
                len: width,
            },
            &[stacked],
            span,
        )?;
        self.graph.replace_all_uses(y, carries);
        Ok((carries, stacked))
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

/// A backward body under construction: its inputs and the forward step recomputed from
/// them. Inputs: the carry, then the sequences `prev`, the forward's `k` sequences and
/// the step's cotangent (`G(prev)` for the carries' scan, `g(next)` otherwise), then the
/// forward's constants.
struct Step {
    b: Graph,
    carry: ValueId,
    h: ValueId,
    xs: Vec<ValueId>,
    cot: ValueId,
    cs: Vec<ValueId>,
    next: ValueId,
    span: Span,
    /// The recomputed copy of each tape value and the input holding the recorded one.
    recorded: Vec<(ValueId, ValueId)>,
}

impl Step {
    fn new(
        forward: &Graph,
        k: usize,
        own_carry_ty: TensorType,
        tape: &[ValueId],
    ) -> Result<Step, String> {
        let input_ty = |i: usize| forward.ty(forward.inputs[i]).clone();
        let carry_ty = input_ty(0);
        let span = forward
            .outputs
            .first()
            .map(|(_, v)| forward.node(*v).span)
            .unwrap_or_default();
        let mut b = Graph::new(format!("{}_vjp", forward.name));
        let leaf =
            |b: &mut Graph, name: String, ty: TensorType| b.add_leaf(Op::Input { name }, ty, span);
        let carry = leaf(&mut b, "carry".into(), own_carry_ty);
        // With a tape, the carry comes as its taped row: the carry, then the recorded values.
        let widths: Vec<u64> = tape.iter().map(|&m| last_dim(forward.ty(m))).collect();
        let row_ty = widened(&carry_ty, widths.iter().sum());
        let axis = carry_ty.shape.rank() - 1;
        let row_part = |b: &mut Graph, row: ValueId, start: u64, len: u64| {
            b.add(Op::Slice { axis, start, len }, &[row], span)
        };
        let h = if tape.is_empty() {
            leaf(&mut b, "h".into(), carry_ty.clone())
        } else {
            let row = leaf(&mut b, "h".into(), row_ty.clone());
            row_part(&mut b, row, 0, last_dim(&carry_ty))?
        };
        let xs: Vec<ValueId> = (0..k)
            .map(|j| leaf(&mut b, format!("x{j}"), input_ty(1 + j)))
            .collect();
        let cot = leaf(&mut b, "g".into(), carry_ty.clone());
        let mut recorded = Vec::with_capacity(tape.len());
        if !tape.is_empty() {
            let row = leaf(&mut b, "recorded".into(), row_ty);
            let mut start = last_dim(&carry_ty);
            for len in widths {
                recorded.push(row_part(&mut b, row, start, len)?);
                start += len;
            }
        }
        let cs: Vec<ValueId> = (1 + k..forward.inputs.len())
            .map(|i| leaf(&mut b, format!("c{}", i - 1 - k), input_ty(i)))
            .collect();
        let mut args = vec![h];
        args.extend(&xs);
        args.extend(&cs);
        let map = b.inline_mapped(forward, &args)?;
        let next = map[&forward.outputs[0].1];
        let recorded = tape.iter().map(|m| map[m]).zip(recorded).collect();
        Ok(Step {
            b,
            carry,
            h,
            xs,
            cot,
            cs,
            next,
            span,
            recorded,
        })
    }

    /// The body returning `result`, reading the recorded tape values instead of
    /// recomputing them (a product's rule never reads its own result, an activation's
    /// reads only its result, so nothing is left computing them).
    fn finish(mut self, result: ValueId) -> Graph {
        for &(copy, input) in &self.recorded {
            self.b.replace_all_uses(copy, input);
        }
        self.b.outputs.push(("next".into(), result));
        crate::passes::dce::eliminate_dead_code(&mut self.b, false);
        self.b
    }
}

/// The carries' backward body: `g(prev) = G(prev) + (d f / d h)ᵀ g(next)`, followed on
/// the last axis by `(d f / d x_j)ᵀ g(next)` for each sequence `j` of `merged`. Its carry
/// holds `g(next)` (and, after it, the previous step's merged gradients, unused).
fn carry_body(
    forward: &Graph,
    k: usize,
    merged: &[usize],
    tape: &[ValueId],
) -> Result<Graph, String> {
    let carry_ty = forward.ty(forward.inputs[0]).clone();
    let axis = carry_ty.shape.rank() - 1;
    let extra = merged
        .iter()
        .map(|&j| last_dim(forward.ty(forward.inputs[1 + j])))
        .sum();
    let mut s = Step::new(forward, k, widened(&carry_ty, extra), tape)?;
    let span = s.span;
    let seed = if merged.is_empty() {
        s.carry
    } else {
        s.b.add(
            Op::Slice {
                axis,
                start: 0,
                len: last_dim(&carry_ty),
            },
            &[s.carry],
            span,
        )?
    };
    let mut wrt = vec![s.h];
    wrt.extend(merged.iter().map(|&j| s.xs[j]));
    let d = vector_jacobian_products(&mut s.b, s.next, Some(seed), &wrt)?;
    let g_prev = s.b.add(Op::Binary(BinaryOp::Add), &[s.cot, d[0]], span)?;
    let result = if merged.is_empty() {
        g_prev
    } else {
        let mut parts = vec![g_prev];
        parts.extend_from_slice(&d[1..]);
        s.b.add(Op::Concat { axis }, &parts, span)?
    };
    Ok(s.finish(result))
}

/// A body for one backward scan of a sequence's or a constant's gradient (see
/// [`Target`]); its inputs are [`Step`]'s, the cotangent being `g(next)`.
fn backward_body(
    forward: &Graph,
    k: usize,
    target: Target,
    tape: &[ValueId],
) -> Result<Graph, String> {
    let input_ty = |i: usize| forward.ty(forward.inputs[i]).clone();
    let own_carry_ty = match target {
        Target::Sequence(j) => input_ty(1 + j),
        Target::Constant(i) => input_ty(1 + k + i),
    };
    let mut s = Step::new(forward, k, own_carry_ty, tape)?;
    let wrt = match target {
        Target::Sequence(j) => s.xs[j],
        Target::Constant(i) => s.cs[i],
    };
    let d = vector_jacobian_products(&mut s.b, s.next, Some(s.cot), &[wrt])?[0];
    let result = match target {
        Target::Sequence(_) => d,
        Target::Constant(_) => s.b.add(Op::Binary(BinaryOp::Add), &[s.carry, d], s.span)?,
    };
    Ok(s.finish(result))
}

/// The forward body's values worth recording on the tape, among those that can ride
/// along with the carry (see [`joins`]), in topological order:
///
/// - the results of its `sigmoid`, `tanh` and `exp` (an LSTM's gates and `tanh(c)`),
///   whose rules read only their result, so the backward recomputes no transcendental
///   (unless the value is already in the carry: the body's result, or a part of it);
/// - its matrix products that the backward still reads with those recorded
///   ([`read_by_backward`]): a GRU's `h W_hnᵀ`, multiplied by its reset gate, but not an
///   LSTM's `h W_hhᵀ`, which only feeds recorded gates through sums and slices.
fn tape_values(body: &Graph) -> Vec<ValueId> {
    let carry = body.ty(body.inputs[0]);
    let result = body.outputs[0].1;
    let mut in_carry = vec![result];
    if let Op::Concat { .. } = body.node(result).op {
        in_carry.extend(body.operands(result));
    }
    let order = body.topo_order();
    let recorded: HashSet<ValueId> = order
        .iter()
        .copied()
        .filter(|&v| {
            matches!(
                body.node(v).op,
                Op::Unary(UnaryOp::Sigmoid | UnaryOp::Tanh | UnaryOp::Exp)
            ) && joins(carry, body.ty(v))
                && !in_carry.contains(&v)
        })
        .collect();
    order
        .into_iter()
        .filter(|&v| {
            recorded.contains(&v)
                || (body.node(v).op == Op::MatMul
                    && joins(carry, body.ty(v))
                    && read_by_backward(body, v, &recorded))
        })
        .collect()
}

/// Whether the backward of `body` reads the value of `v` when the values in `recorded`
/// come from the tape: some value computed from `v` by sums, slices and other ops whose
/// rules read no operand (a recorded value ends a path: its rule reads its own result)
/// is an operand of an op whose rule reads it (a product, a multiplication, ...).
fn read_by_backward(body: &Graph, v: ValueId, recorded: &HashSet<ValueId>) -> bool {
    let mut seen = HashSet::from([v]);
    let mut stack = vec![v];
    while let Some(x) = stack.pop() {
        for u in body.users(x) {
            if recorded.contains(&u) {
                continue;
            }
            let reads_no_operand = matches!(
                body.node(u).op,
                Op::Binary(BinaryOp::Add | BinaryOp::Sub)
                    | Op::Unary(UnaryOp::Neg)
                    | Op::Slice { .. }
                    | Op::Concat { .. }
                    | Op::Reshape { .. }
                    | Op::Transpose { .. }
                    | Op::Broadcast { .. }
            );
            if !reads_no_operand {
                return true;
            }
            if seen.insert(u) {
                stack.push(u);
            }
        }
    }
    false
}

/// Whether a value of type `x` can be concatenated after a carry of type `carry` on the
/// last axis: same element type and rank, same dims but the last, both fixed there.
fn joins(carry: &TensorType, x: &TensorType) -> bool {
    let (c, x_dims) = (carry.shape.dims(), x.shape.dims());
    carry.dtype == x.dtype
        && !c.is_empty()
        && c.len() == x_dims.len()
        && c[..c.len() - 1] == x_dims[..x_dims.len() - 1]
        && matches!(c.last(), Some(crate::ir::Dim::Fixed(_)))
        && matches!(x_dims.last(), Some(crate::ir::Dim::Fixed(_)))
}

/// The type of one step of a sequence `[T, ...]`.
fn step_type(sequence: &TensorType) -> TensorType {
    TensorType::new(sequence.dtype, sequence.shape.dims()[1..].to_vec())
}

/// The fixed last dim of `ty` (0 if it has none).
fn last_dim(ty: &TensorType) -> u64 {
    match ty.shape.dims().last() {
        Some(crate::ir::Dim::Fixed(n)) => *n,
        _ => 0,
    }
}

/// `ty` with `extra` more on its last axis.
fn widened(ty: &TensorType, extra: u64) -> TensorType {
    let mut dims = ty.shape.dims().to_vec();
    if let Some(l) = dims.last_mut() {
        *l = crate::ir::Dim::Fixed(last_dim(ty) + extra);
    }
    TensorType::new(ty.dtype, dims)
}

//! Algebraic identities: rewrites that keep every value bit for bit (up to the sign of a
//! zero) and make the graph smaller or easier to fuse. Each rule is a named function from
//! a value to its replacement; the pass applies them in topological order until none
//! fires.
//!
//! | rule                  | before                                   | after                        |
//! |-----------------------|------------------------------------------|------------------------------|
//! | `mul_one`             | `mul x, 1` / `mul 1, x`                  | `x`                          |
//! | `div_one`             | `div x, 1`                               | `x`                          |
//! | `add_zero`            | `add x, 0` / `add 0, x` / `sub x, 0`     | `x`                          |
//! | `neg_neg`             | `neg (neg x)`                            | `x`                          |
//! | `transpose_identity`  | `transpose perm=[0, 1, …] x`             | `x`                          |
//! | `transpose_transpose` | `transpose p2 (transpose p1 x)` (not a swap of the last two axes of a transpose with other users) | `transpose p1∘p2 x` or `x`   |
//! | `transpose_matmul`    | `transpose [1, 0] (matmul a, b)` (rank 2, one user) | `matmul bᵀ, aᵀ`   |
//! | `reshape_same`        | `reshape` to the operand's own shape     | `x`                          |
//! | `reshape_reshape`     | `reshape s2 (reshape s1 x)`              | `reshape s2 x`               |
//! | `unary_reshape`       | `u (reshape s x)`, `u` element-wise, the reshape not only of 1s, `x` a product, reduction or element-wise op | `reshape s (u x)` |
//! | `broadcast_same`      | `broadcast` to the operand's own shape   | `x`                          |
//! | `broadcast_broadcast` | `broadcast s2 (broadcast s1 x)`          | `broadcast s2 x`             |
//! | `broadcast_operand`   | `op (broadcast x), y` where `op` broadcasts `x` itself to the same result | `op x, y` |
//! | `stop_gradient`       | `stop_gradient x` (after autodiff it is the identity) | `x`             |
//! | `relu_mask`           | `gt x, 0` where `relu x` exists (or `gt (reshape s x), 0`) | `gt (relu x), 0` (`gt (reshape s (relu x)), 0`) |
//! | `slice_concat`        | `slice` of a `concat` that is exactly one of its parts | that part      |
//! | `slice_broadcast`     | `slice` of `broadcast x` along an axis `x` does not vary on | `broadcast x` to the slice's shape |
//! | `slice_slice`         | `slice a s2 (slice a s1 x)` on the same axis | `slice a (s1 + s2) x`      |
//! | `slice_order`         | `slice a (slice b x)`, `a < b`              | `slice b (slice a x)`        |
//! | `concat_concat`       | `concat (concat a, b), c` on the same axis, the inner one used only there | `concat a, b, c` |
//! | `add_concat`          | `add (concat a…) (concat b…)`, zeros where the other's parts are cut | `concat` of the pieces' sums |
//!
//! Each rule only fires when the replacement has exactly the replaced value's type.
//! `x * 0 -> 0` is not a rule: it is wrong for infinities and NaN. `relu_mask` lets the
//! forward's bias + ReLU be one kernel: the backward's mask then reads the activation,
//! not the pre-activation (`x > 0` exactly when `relu(x) > 0`, NaN included).
//! `unary_reshape` does the same for a convolution: its product is `[batch, O, OH OW]`,
//! reshaped to `[batch, O, OH, OW]` before the activation; applied before the reshape,
//! the activation joins the product's epilogue and the reshape is a view of its output
//! (fusion cannot carry an epilogue through a reshape that is more than 1s, whose
//! coordinates are a flat-index remap).

use crate::ir::op::swaps_last_two;
use crate::ir::{BinaryOp, Dim, Graph, Op, UnaryOp, ValueId};

/// A rewrite: the value to use instead of `v`, adding ops to the graph if needed.
type Rule = fn(&mut Graph, ValueId) -> Result<Option<ValueId>, String>;

/// The rules, by name, in the order they are tried.
pub const RULES: &[(&str, Rule)] = &[
    ("mul_one", mul_one),
    ("div_one", div_one),
    ("add_zero", add_zero),
    ("neg_neg", neg_neg),
    ("transpose_identity", transpose_identity),
    ("transpose_transpose", transpose_transpose),
    ("transpose_matmul", transpose_matmul),
    ("reshape_same", reshape_same),
    ("reshape_reshape", reshape_reshape),
    ("unary_reshape", unary_reshape),
    ("broadcast_same", broadcast_same),
    ("broadcast_broadcast", broadcast_broadcast),
    ("broadcast_operand", broadcast_operand),
    ("stop_gradient", stop_gradient),
    ("relu_mask", relu_mask),
    ("slice_concat", slice_concat),
    ("slice_broadcast", slice_broadcast),
    ("slice_slice", slice_slice),
    ("slice_order", slice_order),
    ("concat_concat", concat_concat),
    ("add_concat", add_concat),
];

/// Whether `v` is zero everywhere: the constant 0, possibly broadcast.
fn zero_fill(g: &Graph, v: ValueId) -> bool {
    match g.node(v).op {
        Op::Const { value } => value == 0.0,
        Op::Broadcast { .. } => zero_fill(g, g.operands(v)[0]),
        _ => false,
    }
}

/// The parts of concat `v` along `axis` as `(start, end, part)`.
fn concat_parts(g: &Graph, v: ValueId, axis: usize) -> Option<Vec<(u64, u64, ValueId)>> {
    let mut at = 0u64;
    g.operands(v)
        .into_iter()
        .map(|part| {
            let n = g.ty(part).shape.dims().get(axis)?.fixed()?;
            at += n;
            Some((at - n, at, part))
        })
        .collect()
}

/// `add (concat a…) (concat b…)` along one axis, where the parts that the other side's
/// boundaries cut are zeros (the backward of several slices of one value: each slice's
/// gradient padded with zeros to the whole): `concat` of the pieces between all
/// boundaries, each the sum of its non-zero sides, so no zero padding is written and
/// added. Bit for bit: `x + 0 = x` (up to the sign of a zero).
fn add_concat(g: &mut Graph, v: ValueId) -> Result<Option<ValueId>, String> {
    let Some((a, b)) = binary_operands(g, v, BinaryOp::Add) else {
        return Ok(None);
    };
    let axis = match (&g.node(a).op, &g.node(b).op) {
        (Op::Concat { axis }, Op::Concat { axis: other }) if axis == other => *axis,
        _ => return Ok(None),
    };
    if g.ty(a) != g.ty(v) || g.ty(b) != g.ty(v) {
        return Ok(None);
    }
    let (Some(pa), Some(pb)) = (concat_parts(g, a, axis), concat_parts(g, b, axis)) else {
        return Ok(None);
    };
    let mut cuts: Vec<u64> = pa.iter().chain(&pb).flat_map(|p| [p.0, p.1]).collect();
    cuts.sort_unstable();
    cuts.dedup();
    // Each piece's side: None for zeros, or the part that is exactly that piece.
    let side = |g: &Graph, parts: &[(u64, u64, ValueId)], s: u64, e: u64| {
        let &(ps, pe, part) = parts.iter().find(|p| p.0 <= s && e <= p.1)?;
        if zero_fill(g, part) {
            Some(None)
        } else if (ps, pe) == (s, e) {
            Some(Some(part))
        } else {
            None
        }
    };
    let mut pieces = Vec::new();
    for w in cuts.windows(2) {
        let (s, e) = (w[0], w[1]);
        let (Some(x), Some(y)) = (side(g, &pa, s, e), side(g, &pb, s, e)) else {
            return Ok(None);
        };
        pieces.push((s, e, x, y));
    }
    let span = g.node(v).span;
    let mut parts = Vec::with_capacity(pieces.len());
    for (s, e, x, y) in pieces {
        parts.push(match (x, y) {
            (Some(x), Some(y)) => g.add(Op::Binary(BinaryOp::Add), &[x, y], span)?,
            (Some(x), None) | (None, Some(x)) => x,
            (None, None) => {
                let mut dims = g.ty(v).shape.dims().to_vec();
                dims[axis] = crate::ir::Dim::Fixed(e - s);
                let zero = g.add(Op::Const { value: 0.0 }, &[], span)?;
                let shape = crate::ir::Shape(dims);
                g.add(Op::Broadcast { shape }, &[zero], span)?
            }
        });
    }
    let new = match parts[..] {
        [one] => one,
        _ => g.add(Op::Concat { axis }, &parts, span)?,
    };
    Ok(same_type(g, v, new))
}

/// A concat whose part is itself a concat on the same axis with no other user: one
/// concat of all the parts, so the inner one is written straight into the outer one's
/// buffer instead of into its own and then copied (an LSTM's carry `[h, c]` with the
/// forward's products after it).
fn concat_concat(g: &mut Graph, v: ValueId) -> Result<Option<ValueId>, String> {
    let Op::Concat { axis } = g.node(v).op else {
        return Ok(None);
    };
    let parts = g.operands(v);
    let inner = |g: &Graph, p: ValueId| {
        g.node(p).op == (Op::Concat { axis })
            && g.users(p).len() == 1
            && !g.outputs.iter().any(|(_, o)| *o == p)
    };
    if !parts.iter().any(|&p| inner(g, p)) {
        return Ok(None);
    }
    let flat: Vec<ValueId> = parts
        .iter()
        .flat_map(|&p| if inner(g, p) { g.operands(p) } else { vec![p] })
        .collect();
    let new = g.add(Op::Concat { axis }, &flat, g.node(v).span)?;
    Ok(same_type(g, v, new))
}

fn slice_of(g: &Graph, v: ValueId) -> Option<(usize, u64, u64, ValueId)> {
    match g.node(v).op {
        Op::Slice { axis, start, len } => Some((axis, start, len, g.operands(v)[0])),
        _ => None,
    }
}

/// A slice of a slice along the same axis: one slice of the source.
fn slice_slice(g: &mut Graph, v: ValueId) -> Result<Option<ValueId>, String> {
    let Some((axis, start, len, x)) = slice_of(g, v) else {
        return Ok(None);
    };
    let Some((inner_axis, inner_start, _, src)) = slice_of(g, x) else {
        return Ok(None);
    };
    if inner_axis != axis {
        return Ok(None);
    }
    let op = Op::Slice {
        axis,
        start: inner_start + start,
        len,
    };
    let new = g.add(op, &[src], g.node(v).span)?;
    Ok(same_type(g, v, new))
}

/// Slices along different axes commute; this puts the one along the lower axis next to
/// the source (a slice is a view or a copy of what it reads, so one kept for its other
/// users costs no recomputation), so a slice of a stacked result along time (axis 0) is taken first: a
/// window of the stored buffer, no copy (the lowering reads the other slice through the
/// window, e.g. as a product's strided operand).
fn slice_order(g: &mut Graph, v: ValueId) -> Result<Option<ValueId>, String> {
    let Some((axis, start, len, x)) = slice_of(g, v) else {
        return Ok(None);
    };
    let Some((inner_axis, inner_start, inner_len, src)) = slice_of(g, x) else {
        return Ok(None);
    };
    if axis >= inner_axis {
        return Ok(None);
    }
    let span = g.node(v).span;
    let first = g.add(Op::Slice { axis, start, len }, &[src], span)?;
    let then = Op::Slice {
        axis: inner_axis,
        start: inner_start,
        len: inner_len,
    };
    let new = g.add(then, &[first], span)?;
    Ok(same_type(g, v, new))
}

fn slice_concat(g: &mut Graph, v: ValueId) -> Result<Option<ValueId>, String> {
    let Some((axis, start, len, x)) = slice_of(g, v) else {
        return Ok(None);
    };
    if g.node(x).op != (Op::Concat { axis }) {
        return Ok(None);
    }
    let mut at = 0u64;
    for part in g.operands(x) {
        let Some(n) = g.ty(part).shape.dims().get(axis).and_then(|d| d.fixed()) else {
            return Ok(None);
        };
        if at == start && n == len {
            return Ok(same_type(g, v, part));
        }
        at += n;
    }
    Ok(None)
}

fn slice_broadcast(g: &mut Graph, v: ValueId) -> Result<Option<ValueId>, String> {
    let Some((axis, _, _, b)) = slice_of(g, v) else {
        return Ok(None);
    };
    if !matches!(g.node(b).op, Op::Broadcast { .. }) {
        return Ok(None);
    }
    let x = g.operands(b)[0];
    // `x` aligns with the broadcast's last dims; along `axis` it is absent or 1.
    let (rank, xrank) = (g.ty(b).shape.rank(), g.ty(x).shape.rank());
    let invariant = axis + xrank < rank
        || g.ty(x).shape.dims()[axis + xrank - rank] == crate::ir::Dim::Fixed(1);
    if !invariant {
        return Ok(None);
    }
    let shape = g.ty(v).shape.clone();
    let span = g.node(v).span;
    let new = g.add(Op::Broadcast { shape }, &[x], span)?;
    Ok(same_type(g, v, new))
}

fn const_value(graph: &Graph, v: ValueId) -> Option<f64> {
    match graph.node(v).op {
        Op::Const { value } => Some(value),
        _ => None,
    }
}

/// `Some(x)` if `x` can stand for `v` (same type).
fn same_type(graph: &Graph, v: ValueId, x: ValueId) -> Option<ValueId> {
    (graph.ty(v) == graph.ty(x)).then_some(x)
}

fn binary_operands(graph: &Graph, v: ValueId, op: BinaryOp) -> Option<(ValueId, ValueId)> {
    match graph.node(v).op {
        Op::Binary(b) if b == op => {
            let o = graph.operands(v);
            Some((o[0], o[1]))
        }
        _ => None,
    }
}

fn mul_one(g: &mut Graph, v: ValueId) -> Result<Option<ValueId>, String> {
    let Some((a, b)) = binary_operands(g, v, BinaryOp::Mul) else {
        return Ok(None);
    };
    Ok(match (const_value(g, a), const_value(g, b)) {
        (_, Some(1.0)) => same_type(g, v, a),
        (Some(1.0), _) => same_type(g, v, b),
        _ => None,
    })
}

fn div_one(g: &mut Graph, v: ValueId) -> Result<Option<ValueId>, String> {
    let Some((a, b)) = binary_operands(g, v, BinaryOp::Div) else {
        return Ok(None);
    };
    Ok(match const_value(g, b) {
        Some(1.0) => same_type(g, v, a),
        _ => None,
    })
}

fn add_zero(g: &mut Graph, v: ValueId) -> Result<Option<ValueId>, String> {
    if let Some((a, b)) = binary_operands(g, v, BinaryOp::Add) {
        return Ok(match (const_value(g, a), const_value(g, b)) {
            (_, Some(0.0)) => same_type(g, v, a),
            (Some(0.0), _) => same_type(g, v, b),
            _ => None,
        });
    }
    if let Some((a, b)) = binary_operands(g, v, BinaryOp::Sub) {
        return Ok(match const_value(g, b) {
            Some(0.0) => same_type(g, v, a),
            _ => None,
        });
    }
    Ok(None)
}

fn neg_neg(g: &mut Graph, v: ValueId) -> Result<Option<ValueId>, String> {
    if g.node(v).op != Op::Unary(UnaryOp::Neg) {
        return Ok(None);
    }
    let x = g.operands(v)[0];
    if g.node(x).op != Op::Unary(UnaryOp::Neg) {
        return Ok(None);
    }
    let inner = g.operands(x)[0];
    Ok(same_type(g, v, inner))
}

fn transpose_identity(g: &mut Graph, v: ValueId) -> Result<Option<ValueId>, String> {
    match &g.node(v).op {
        Op::Transpose { perm } if perm.iter().enumerate().all(|(i, p)| i == *p) => {
            Ok(same_type(g, v, g.operands(v)[0]))
        }
        _ => Ok(None),
    }
}

fn transpose_transpose(g: &mut Graph, v: ValueId) -> Result<Option<ValueId>, String> {
    let Op::Transpose { perm: outer } = g.node(v).op.clone() else {
        return Ok(None);
    };
    let x = g.operands(v)[0];
    let Op::Transpose { perm: inner } = g.node(x).op.clone() else {
        return Ok(None);
    };
    // out[i] = x[outer[i]] = src[inner[outer[i]]].
    let perm: Vec<usize> = outer.iter().map(|&o| inner[o]).collect();
    let src = g.operands(x)[0];
    let span = g.node(v).span;
    if perm.iter().enumerate().all(|(i, p)| i == *p) {
        return Ok(same_type(g, v, src));
    }
    // A swap of the last two axes of a transpose that is stored anyway (it has other
    // users) stays: a matrix product reads it through its strides, where the composed
    // permutation would be one more copy (W3's input weight gradient reads the
    // time-major copy of `x`, transposed, instead of a second copy of `x`).
    if swaps_last_two(&outer) && g.users(x).len() > 1 {
        return Ok(None);
    }
    Ok(Some(g.add(Op::Transpose { perm }, &[src], span)?))
}

fn transpose_matmul(g: &mut Graph, v: ValueId) -> Result<Option<ValueId>, String> {
    match &g.node(v).op {
        Op::Transpose { perm } if perm == &[1, 0] => {}
        _ => return Ok(None),
    }
    let m = g.operands(v)[0];
    if g.node(m).op != Op::MatMul || g.users(m).len() != 1 || g.outputs.iter().any(|(_, o)| *o == m)
    {
        return Ok(None);
    }
    let ops = g.operands(m);
    let (a, b) = (ops[0], ops[1]);
    if g.ty(a).shape.rank() != 2 || g.ty(b).shape.rank() != 2 {
        return Ok(None);
    }
    let span = g.node(v).span;
    let bt = g.add(Op::Transpose { perm: vec![1, 0] }, &[b], span)?;
    let at = g.add(Op::Transpose { perm: vec![1, 0] }, &[a], span)?;
    let new = g.add(Op::MatMul, &[bt, at], span)?;
    Ok(same_type(g, v, new))
}

fn reshape_same(g: &mut Graph, v: ValueId) -> Result<Option<ValueId>, String> {
    match &g.node(v).op {
        Op::Reshape { .. } => Ok(same_type(g, v, g.operands(v)[0])),
        _ => Ok(None),
    }
}

fn reshape_reshape(g: &mut Graph, v: ValueId) -> Result<Option<ValueId>, String> {
    let Op::Reshape { shape } = g.node(v).op.clone() else {
        return Ok(None);
    };
    let x = g.operands(v)[0];
    if !matches!(g.node(x).op, Op::Reshape { .. }) {
        return Ok(None);
    }
    let src = g.operands(x)[0];
    let span = g.node(v).span;
    if g.ty(src) == g.ty(v) {
        return Ok(Some(src));
    }
    Ok(Some(g.add(Op::Reshape { shape }, &[src], span)?))
}

/// Whether reshape `v` does more than add or remove dimensions of 1.
fn reindexes(g: &Graph, v: ValueId) -> bool {
    let Op::Reshape { shape } = &g.node(v).op else {
        return false;
    };
    let not_one = |d: &&Dim| **d != Dim::Fixed(1);
    let src = g.ty(g.operands(v)[0]).shape.dims().to_vec();
    !shape
        .dims()
        .iter()
        .filter(not_one)
        .eq(src.iter().filter(not_one))
}

fn unary_reshape(g: &mut Graph, v: ValueId) -> Result<Option<ValueId>, String> {
    let Op::Unary(u) = g.node(v).op else {
        return Ok(None);
    };
    let r = g.operands(v)[0];
    if !reindexes(g, r) {
        return Ok(None);
    }
    // Only where the kernel computing the reshaped value can compute `u` too (a
    // product's or reduction's epilogue, a map): `u` of an input or a parameter would
    // be a kernel of its own where its users now compute it inline.
    let x = g.operands(r)[0];
    if !matches!(
        g.node(x).op,
        Op::MatMul | Op::Reduce { .. } | Op::Unary(_) | Op::Binary(_)
    ) {
        return Ok(None);
    }
    let Op::Reshape { shape } = g.node(r).op.clone() else {
        return Ok(None);
    };
    let span = g.node(v).span;
    let inner = g.add(Op::Unary(u), &[x], span)?;
    Ok(Some(g.add(Op::Reshape { shape }, &[inner], span)?))
}

fn broadcast_same(g: &mut Graph, v: ValueId) -> Result<Option<ValueId>, String> {
    match &g.node(v).op {
        Op::Broadcast { .. } => Ok(same_type(g, v, g.operands(v)[0])),
        _ => Ok(None),
    }
}

fn broadcast_broadcast(g: &mut Graph, v: ValueId) -> Result<Option<ValueId>, String> {
    let Op::Broadcast { shape } = g.node(v).op.clone() else {
        return Ok(None);
    };
    let x = g.operands(v)[0];
    if !matches!(g.node(x).op, Op::Broadcast { .. }) {
        return Ok(None);
    }
    let src = g.operands(x)[0];
    let span = g.node(v).span;
    Ok(Some(g.add(Op::Broadcast { shape }, &[src], span)?))
}

/// `op (broadcast x), y` -> `op x, y` when the binary op's own broadcasting gives the
/// same result type: the explicit broadcast was only spelling out what `op` does.
fn broadcast_operand(g: &mut Graph, v: ValueId) -> Result<Option<ValueId>, String> {
    let Op::Binary(op) = g.node(v).op else {
        return Ok(None);
    };
    let ops = g.operands(v);
    for i in 0..2 {
        if !matches!(g.node(ops[i]).op, Op::Broadcast { .. }) {
            continue;
        }
        let src = g.operands(ops[i])[0];
        let mut new_ops = ops.clone();
        new_ops[i] = src;
        let tys: Vec<&crate::ir::TensorType> = new_ops.iter().map(|o| g.ty(*o)).collect();
        if Op::Binary(op).infer(&tys).ok().as_ref() == Some(g.ty(v)) {
            let span = g.node(v).span;
            return Ok(Some(g.add(Op::Binary(op), &new_ops, span)?));
        }
    }
    Ok(None)
}

fn stop_gradient(g: &mut Graph, v: ValueId) -> Result<Option<ValueId>, String> {
    match g.node(v).op {
        Op::StopGradient => Ok(same_type(g, v, g.operands(v)[0])),
        _ => Ok(None),
    }
}

fn relu_mask(g: &mut Graph, v: ValueId) -> Result<Option<ValueId>, String> {
    let Some((x, zero)) = binary_operands(g, v, BinaryOp::Gt) else {
        return Ok(None);
    };
    if const_value(g, zero) != Some(0.0) {
        return Ok(None);
    }
    let span = g.node(v).span;
    // `gt (reshape s y), 0` where `relu y` exists: after `unary_reshape` a convolution's
    // activation is applied before its reshape.
    if let Op::Reshape { shape } = g.node(x).op.clone()
        && reindexes(g, x)
    {
        let Some(relu) = relu_of(g, g.operands(x)[0]) else {
            return Ok(None);
        };
        let ty = g.ty(x).clone();
        let existing = g
            .users(relu)
            .into_iter()
            .find(|u| matches!(g.node(*u).op, Op::Reshape { .. }) && *g.ty(*u) == ty);
        let reshaped = match existing {
            Some(r) => r,
            None => g.add(Op::Reshape { shape }, &[relu], span)?,
        };
        return Ok(Some(g.add(
            Op::Binary(BinaryOp::Gt),
            &[reshaped, zero],
            span,
        )?));
    }
    if g.node(x).op == Op::Unary(UnaryOp::Relu) {
        return Ok(None);
    }
    let Some(relu) = relu_of(g, x) else {
        return Ok(None);
    };
    Ok(Some(g.add(
        Op::Binary(BinaryOp::Gt),
        &[relu, zero],
        span,
    )?))
}

/// A `relu` of `x` already in the graph.
fn relu_of(g: &Graph, x: ValueId) -> Option<ValueId> {
    g.users(x)
        .into_iter()
        .find(|u| g.node(*u).op == Op::Unary(UnaryOp::Relu))
}

/// Applies every rule in topological order until none fires (each firing removes or
/// replaces a value, so this ends).
pub fn simplify_algebra(graph: &mut Graph) -> Result<(), String> {
    for _round in 0..16 {
        let mut fired = false;
        for v in graph.topo_order() {
            if !graph.contains(v) {
                continue;
            }
            for (name, rule) in RULES {
                if let Some(new) = rule(graph, v).map_err(|e| format!("rule `{name}`: {e}"))? {
                    if new != v {
                        graph.replace_all_uses(v, new);
                        fired = true;
                    }
                    break;
                }
            }
        }
        super::dce::eliminate_dead_code(graph, false);
        if !fired {
            break;
        }
    }
    Ok(())
}

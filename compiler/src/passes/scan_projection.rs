//! A scan's projected sequence computed inside its loop: `x W + b` of every step, made
//! before the loop as one product over the whole sequence, moves into the body when the
//! body adds it to a product of its own (a recurrent step's `h W_hhᵀ`).
//!
//! Before: `p = x W_ihᵀ + b_ih + b_hh` over `[T, batch, 4H]` is one product of `T batch`
//! rows with a depth of the input width (32 for W3), written whole and read back a step
//! at a time: a buffer of `T batch 4H` values (3.3 MB for W3's training step) that the
//! product writes at memory speed (its depth is too small to hide the stores). After:
//! the body reads `x_t` and computes `x_t W_ihᵀ + h W_hhᵀ + b_ih + b_hh`, which fusion
//! makes one contraction with a term (rule `terms` of [`crate::lower::fuse`]): the CPU
//! adds the input's product onto the recurrent one in the cache, and `p` never exists.
//!
//! Lowering runs this on a copy of a training step's graph ([`sunk`]): the graph IR,
//! and an ONNX export of it, keep the projection before the loop, the form every peer
//! reads; and inference keeps it there (at batch 1 it is the cheaper schedule).
//!
//! Unused operands of a scan go first (the backward scan of a training step lists the
//! forward's projected sequence without reading it), so that the sequence's only reader
//! is the scan that needs it.
//!
//! # The rule
//! A sequence operand `s` of a scan moves in when
//! - `s` is a chain of additions of values without the time axis (biases) onto a
//!   product `x W` of a sequence `x` `[T, ...]` by a matrix `W` (rank 2), every link used
//!   only by the next and the last only by this scan (once), none an output or update;
//! - and the body's input for `s` is used once, by an addition whose other operand is a
//!   matrix product.
//!
//! Then `x` is the sequence operand instead, `W` and the biases are new constants
//! (consecutive biases of one type summed once before the loop, `b_ih + b_hh`), and the
//! body rebuilds the chain from `x_t`: `x_t W + b`.

use super::scan_operands::rewrite_scans;
use crate::ir::{BinaryOp, Dim, Graph, Op, Scan, Shape, TensorType, ValueId};

/// `graph` with its projected sequences moved into their scans' bodies (and what that
/// leaves unused removed), or `None` if there is nothing to move.
pub fn sunk(graph: &Graph) -> Result<Option<Graph>, String> {
    let has_scan = graph
        .values()
        .iter()
        .any(|v| matches!(graph.node(*v).op, Op::Scan(_)));
    // Only a graph that updates its parameters (a training step, whose batch is the
    // train section's). At batch 1 the step's product is a `gemv` and the projection
    // before the loop is cheap (24 us of W3's inference), while the input's product in
    // each step cost more: W3's batch-1 inference went 0.135-0.142 -> 0.145-0.154 ms.
    if !has_scan || graph.updates.is_empty() {
        return Ok(None);
    }
    let mut sunk = graph.clone();
    if !sink_projections(&mut sunk)? {
        return Ok(None);
    }
    super::dce::eliminate_dead_code(&mut sunk, false);
    Ok(Some(sunk))
}

/// Drops unused scan operands and moves projected sequences into scan bodies; whether
/// it moved any.
pub fn sink_projections(graph: &mut Graph) -> Result<bool, String> {
    // Every scan's unused operands first: a later scan's may be an earlier one's
    // sequence.
    rewrite_scans(graph, |_, _, scan, operands| {
        Ok(drop_unused(scan, operands))
    })?;
    let mut moved = false;
    rewrite_scans(graph, |graph, _, scan, operands| {
        let mut changed = false;
        for i in 1..=scan.sequences {
            changed |= sink(graph, scan, operands, i)?;
        }
        moved |= changed;
        Ok(changed)
    })?;
    Ok(moved)
}

/// Removes the operands whose body inputs have no users (keeping one sequence).
fn drop_unused(scan: &mut Scan, operands: &mut Vec<ValueId>) -> bool {
    let mut changed = false;
    let mut i = 1;
    while i < operands.len() {
        let input = scan.body.inputs[i];
        let is_sequence = i <= scan.sequences;
        if !scan.body.users(input).is_empty() || (is_sequence && scan.sequences == 1) {
            i += 1;
            continue;
        }
        scan.body.remove(input);
        operands.remove(i);
        if is_sequence {
            scan.sequences -= 1;
        }
        changed = true;
    }
    changed
}

/// A projection `x W + b...`: the sequence `x`, the matrix `W`, and the biases the
/// chain adds, from the product up (an addition commutes, bit for bit, so which side
/// each was on does not matter).
struct Projection {
    x: ValueId,
    w: ValueId,
    biases: Vec<ValueId>,
}

/// The projection that sequence operand `s` (of `steps` steps) is, if it is one that
/// moves in (see the module docs).
fn projection(graph: &Graph, s: ValueId, steps: u64) -> Option<Projection> {
    let kept = |x: ValueId| {
        graph.outputs.iter().any(|(_, o)| *o == x) || graph.updates.iter().any(|(_, n)| *n == x)
    };
    let rank = graph.ty(s).shape.rank();
    let mut biases = Vec::new();
    let mut link = s;
    loop {
        if kept(link) || graph.users(link).len() != 1 {
            return None;
        }
        match graph.node(link).op {
            Op::MatMul => break,
            Op::Binary(BinaryOp::Add) => {
                let ops = graph.operands(link);
                // The bias is the operand without the time axis (lower rank).
                let low = |o: ValueId| graph.ty(o).shape.rank() < rank;
                let (next, bias) = match (low(ops[0]), low(ops[1])) {
                    (false, true) => (ops[0], ops[1]),
                    (true, false) => (ops[1], ops[0]),
                    _ => return None,
                };
                if graph.ty(next).shape != graph.ty(s).shape {
                    return None;
                }
                biases.push(bias);
                link = next;
            }
            _ => return None,
        }
    }
    let [x, w] = graph.operands(link)[..] else {
        return None;
    };
    let x_dims = graph.ty(x).shape.dims();
    if graph.ty(w).shape.rank() != 2 || x_dims.len() != rank || x_dims[0] != Dim::Fixed(steps) {
        return None;
    }
    biases.reverse();
    Some(Projection { x, w, biases })
}

/// Moves sequence operand `i` into the body if it is a projection that should (see the
/// module docs); whether it did.
fn sink(
    graph: &mut Graph,
    scan: &mut Scan,
    operands: &mut Vec<ValueId>,
    i: usize,
) -> Result<bool, String> {
    let s = operands[i];
    let input = scan.body.inputs[i];
    let body = &scan.body;
    let adds_to_product = match body.users(input)[..] {
        [u] => {
            matches!(body.node(u).op, Op::Binary(BinaryOp::Add))
                && body
                    .operands(u)
                    .iter()
                    .any(|o| *o != input && matches!(body.node(*o).op, Op::MatMul))
        }
        _ => false,
    };
    let once = operands.iter().filter(|o| **o == s).count() == 1;
    let Some(steps) = graph.ty(s).shape.dims().first().and_then(|d| d.fixed()) else {
        return Ok(false);
    };
    if !adds_to_product || !once {
        return Ok(false);
    }
    let Some(mut p) = projection(graph, s, steps) else {
        return Ok(false);
    };
    // Biases of one type are summed once, before the loop: the step adds one (and a
    // one-row product then starts at it, `y + acc`).
    let span = graph.node(s).span;
    let mut folded: Vec<ValueId> = Vec::new();
    for b in p.biases {
        match folded.last_mut() {
            Some(sum) if graph.ty(*sum) == graph.ty(b) => {
                *sum = graph.add(Op::Binary(BinaryOp::Add), &[*sum, b], span)?;
            }
            _ => folded.push(b),
        }
    }
    p.biases = folded;
    let body = &mut scan.body;
    let span = body.node(input).span;
    // A body input per new constant, after the others, in the operands' order.
    let mut constant = |body: &mut Graph, v: ValueId, name: &str| {
        operands.push(v);
        body.add_leaf(
            Op::Input {
                name: name.to_string(),
            },
            graph.ty(v).clone(),
            span,
        )
    };
    // Names of the body's inputs are unique: suffixed with the sequence's position.
    let w = constant(body, p.w, &format!("projection_{i}"));
    let biases: Vec<ValueId> = p
        .biases
        .iter()
        .enumerate()
        .map(|(j, &b)| constant(body, b, &format!("projection_{i}_bias_{j}")))
        .collect();
    // The step's slice of `x`, in the place of the projected sequence's.
    let x_ty = graph.ty(p.x);
    let step = body.add_leaf(
        Op::Input {
            name: format!("sequence_{i}_step"),
        },
        TensorType {
            dtype: x_ty.dtype,
            shape: Shape(x_ty.shape.dims()[1..].to_vec()),
        },
        span,
    );
    body.inputs.pop();
    let mut value = body.add(Op::MatMul, &[step, w], span)?;
    for b in biases {
        value = body.add(Op::Binary(BinaryOp::Add), &[value, b], span)?;
    }
    if body.ty(value) != body.ty(input) {
        return Err(format!(
            "a projection moved into a scan's body has type {}, not its sequence's {}",
            body.ty(value),
            body.ty(input)
        ));
    }
    body.replace_all_uses(input, value);
    body.remove(input);
    body.inputs.insert(i, step);
    operands[i] = p.x;
    Ok(true)
}

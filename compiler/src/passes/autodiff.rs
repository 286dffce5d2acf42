//! Reverse-mode automatic differentiation as a graph transform.
//!
//! [`gradients`] appends to a graph the ops that compute `d loss / d w` for a list of
//! values `w`, and returns them. It is the classic reverse sweep (Griewank & Walther,
//! *Evaluating Derivatives*, ch. 3; the structure of JAX's `backward_pass`):
//!
//! 1. The *active* values are those on a path from some `w` to the loss along edges that
//!    carry a gradient: every edge except into `stop_gradient`, `one_hot`,
//!    `random_uniform` (its operand is the step counter) and the comparisons (`lt`,
//!    `le`, `gt`, `ge`, `eq`), whose derivative is zero almost everywhere.
//!    Only active values get gradient ops; the rest of the graph is left alone.
//! 2. The loss's cotangent is the constant 1. Visiting the active values in reverse
//!    topological order, each value's cotangent is complete (all its users came first);
//!    the op's vector-Jacobian rule (in [`vjp`]) turns it into one contribution per active
//!    operand, and a value used more than once (fan-out, or the same operand twice as in
//!    `mul %x, %x`) sums its contributions with `add`.
//! 3. Each `w`'s gradient is its cotangent; a `w` that does not influence the loss gets
//!    zeros of its type (`broadcast` of the constant 0).
//!
//! Every gradient has exactly its value's type, and the graph still passes
//! [`Graph::verify`]. The gradient ops carry the span of the forward op they come from, so
//! a problem in the backward graph points at the model line that caused it.

use crate::ir::{Graph, Op, ValueId};
use std::collections::{HashMap, HashSet};

mod scan_vjp;
mod vjp;

use vjp::Emitter;

/// Appends the ops computing `d loss / d w` for each `w` of `wrt`, and returns them in
/// order (the same value for a `w` listed twice).
///
/// `loss` must be an `f32[]` value and every `w` an `f32` value of `graph`. A `w` may be
/// any value, not only a parameter or an input: its gradient is then the total
/// derivative of the loss with respect to that value, every path through it counted.
pub fn gradients(
    graph: &mut Graph,
    loss: ValueId,
    wrt: &[ValueId],
) -> Result<Vec<ValueId>, String> {
    if !graph.contains(loss) {
        return Err(format!("the loss {loss} is not a value of the graph"));
    }
    let loss_ty = graph.ty(loss);
    if loss_ty.dtype != crate::ir::DType::F32 || loss_ty.shape.rank() != 0 {
        return Err(format!("the loss must be an f32 scalar, got {loss_ty}"));
    }
    vector_jacobian_products(graph, loss, None, wrt)
}

/// Appends the ops computing `seedᵀ (d y / d w)` for each `w` of `wrt`: the reverse sweep
/// of [`gradients`] started from the cotangent `seed` of `y` (of `y`'s type) instead of
/// the constant 1. A scan's rule differentiates its body this way, one step at a time.
pub fn vector_jacobian_products(
    graph: &mut Graph,
    y: ValueId,
    seed: Option<ValueId>,
    wrt: &[ValueId],
) -> Result<Vec<ValueId>, String> {
    if let Some(seed) = seed
        && (!graph.contains(seed) || graph.ty(seed) != graph.ty(y))
    {
        return Err(format!(
            "the cotangent {seed} does not have the type of {y}"
        ));
    }
    let loss = y;
    for &w in wrt {
        if !graph.contains(w) {
            return Err(format!("{w} is not a value of the graph"));
        }
        if graph.ty(w).dtype != crate::ir::DType::F32 {
            return Err(format!(
                "cannot differentiate with respect to {w}, of type {}: only f32 values have gradients",
                graph.ty(w)
            ));
        }
    }

    let active = active_values(graph, loss, wrt);
    // Reverse topological order of the forward graph, taken before any op is added.
    let order: Vec<ValueId> = graph
        .topo_order()
        .into_iter()
        .rev()
        .filter(|v| active.contains(v))
        .collect();

    let mut emit = Emitter::new(graph);
    let mut cotangents: HashMap<ValueId, ValueId> = HashMap::new();
    if active.contains(&loss) {
        let seed = match seed {
            Some(seed) => seed,
            None => emit.constant(1.0, emit.graph.node(loss).span)?,
        };
        cotangents.insert(loss, seed);
    }
    for v in order {
        let Some(&g) = cotangents.get(&v) else {
            continue;
        };
        let operands = emit.graph.operands(v);
        let wanted: Vec<bool> = operands.iter().map(|o| active.contains(o)).collect();
        if !wanted.iter().any(|w| *w) {
            continue;
        }
        let node = emit.graph.node(v).clone();
        let contributions = emit
            .vjp(v, &node, &operands, &wanted, g)
            .map_err(|e| format!("gradient of {v} ({}): {e}", node.op.mnemonic()))?;
        for (o, c) in operands.into_iter().zip(contributions) {
            let Some(c) = c else { continue };
            let total = match cotangents.get(&o) {
                Some(&prev) => emit.binary(crate::ir::BinaryOp::Add, prev, c, node.span)?,
                None => c,
            };
            cotangents.insert(o, total);
        }
    }

    wrt.iter()
        .map(|&w| match cotangents.get(&w) {
            Some(&g) => Ok(g),
            None => {
                let span = emit.graph.node(w).span;
                let ty = emit.graph.ty(w).clone();
                emit.zeros(&ty.shape, span)
            }
        })
        .collect()
}

/// Whether a gradient flows from an op's result back into its operands.
fn passes_gradient(op: &Op) -> bool {
    !matches!(
        op,
        Op::Input { .. }
            | Op::Param { .. }
            | Op::Const { .. }
            | Op::StopGradient
            | Op::OneHot { .. }
            | Op::Cast { .. }
            | Op::RandomUniform { .. }
    ) && !matches!(op, Op::Binary(b) if b.is_comparison())
}

/// The values on a gradient-carrying path from some `w` to `loss` (both ends included).
fn active_values(graph: &Graph, loss: ValueId, wrt: &[ValueId]) -> HashSet<ValueId> {
    // Everything the loss depends on.
    let mut needed = HashSet::new();
    let mut stack = vec![loss];
    while let Some(v) = stack.pop() {
        if needed.insert(v) {
            stack.extend(graph.operands(v));
        }
    }
    // Of those, everything a `w` reaches through ops that pass gradients.
    let mut active = HashSet::new();
    let mut stack: Vec<ValueId> = wrt.iter().copied().filter(|w| needed.contains(w)).collect();
    while let Some(v) = stack.pop() {
        if !active.insert(v) {
            continue;
        }
        for u in graph.users(v) {
            if needed.contains(&u) && passes_gradient(&graph.node(u).op) {
                stack.push(u);
            }
        }
    }
    active
}

#[cfg(test)]
mod tests;

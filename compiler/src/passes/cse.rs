//! Common-subexpression elimination: two ops with the same op, attributes, operands and
//! type compute the same value, so the later one is replaced by the earlier. Operands of
//! commutative ops ([`is_commutative`](crate::ir::BinaryOp::is_commutative): `add`, `mul`, `max`, `min`, `eq`) are
//! compared as a set. Inputs and parameters are
//! never merged (each is its own storage). Random draws with the same seed, shape and
//! step merge: a draw is a function of exactly those and the element index.

use crate::ir::{Graph, Op, TensorType, ValueId};
use std::collections::HashMap;
use std::mem::{Discriminant, discriminant};

/// The structure of a computation: the kind of op (a constant's value), operands (sorted
/// for a commutative op) and type. Two values with one structure are the same computation
/// when their ops (with attributes) print the same, compared only then: printing every op
/// was most of the pass's time.
type Structure = (Discriminant<Op>, Option<u64>, Vec<usize>, TensorType);

fn structure(graph: &Graph, v: ValueId) -> Option<Structure> {
    let node = graph.node(v);
    if matches!(node.op, Op::Input { .. } | Op::Param { .. }) {
        return None;
    }
    let mut operands: Vec<usize> = graph.operands(v).iter().map(|o| o.index()).collect();
    if matches!(node.op, Op::Binary(b) if b.is_commutative()) {
        operands.sort();
    }
    let constant = match node.op {
        Op::Const { value } => Some(value.to_bits()),
        _ => None,
    };
    Some((discriminant(&node.op), constant, operands, node.ty.clone()))
}

/// Whether two ops are the same op with the same attributes. Their printed forms are
/// compared (not `==`): a constant `0.0` is not `-0.0`, and a NaN is the same NaN.
fn same_op(a: &Op, b: &Op) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// Merges every repeated computation into its first occurrence.
pub fn eliminate_common_subexpressions(graph: &mut Graph) -> Result<(), String> {
    let order = graph.topo_order();
    let mut seen: HashMap<Structure, Vec<ValueId>> = HashMap::with_capacity(order.len());
    let mut replaced: HashMap<ValueId, ValueId> = HashMap::new();
    let mut duplicates = Vec::new();
    for v in order {
        let Some(k) = structure(graph, v) else {
            continue;
        };
        let firsts = seen.entry(k).or_default();
        let op = &graph.node(v).op;
        match firsts.iter().find(|&&f| same_op(&graph.node(f).op, op)) {
            Some(&first) => {
                graph.replace_operand_uses(v, first);
                replaced.insert(v, first);
                duplicates.push(v);
            }
            None => firsts.push(v),
        }
    }
    // Removed together (in the order found, so the graph reuses their slots as before),
    // and a first occurrence is never replaced, so one lookup finds a replacement.
    graph.remove_all(&duplicates);
    graph.replace_in_outputs(&replaced);
    Ok(())
}

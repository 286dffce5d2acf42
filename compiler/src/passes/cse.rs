//! Common-subexpression elimination: two ops with the same op, attributes, operands and
//! type compute the same value, so the later one is replaced by the earlier. Operands of
//! commutative ops ([`is_commutative`](crate::ir::BinaryOp::is_commutative): `add`, `mul`, `max`, `min`, `eq`) are
//! compared as a set. Inputs and parameters are
//! never merged (each is its own storage). Random draws with the same seed, shape and
//! step merge: a draw is a function of exactly those and the element index.

use crate::ir::{Graph, Op, ValueId};
use std::collections::HashMap;

/// The identity of a computation: op (with attributes), type and operands.
fn key(graph: &Graph, v: ValueId) -> Option<String> {
    let node = graph.node(v);
    if matches!(node.op, Op::Input { .. } | Op::Param { .. }) {
        return None;
    }
    let mut operands: Vec<usize> = graph.operands(v).iter().map(|o| o.index()).collect();
    if matches!(node.op, Op::Binary(b) if b.is_commutative()) {
        operands.sort();
    }
    Some(format!("{:?}|{}|{operands:?}", node.op, node.ty))
}

/// Merges every repeated computation into its first occurrence.
pub fn eliminate_common_subexpressions(graph: &mut Graph) -> Result<(), String> {
    let mut seen: HashMap<String, ValueId> = HashMap::new();
    let mut replaced: HashMap<ValueId, ValueId> = HashMap::new();
    let mut duplicates = Vec::new();
    for v in graph.topo_order() {
        let Some(k) = key(graph, v) else { continue };
        match seen.get(&k) {
            Some(&first) => {
                graph.replace_operand_uses(v, first);
                replaced.insert(v, first);
                duplicates.push(v);
            }
            None => {
                seen.insert(k, v);
            }
        }
    }
    // Removed together (in the order found, so the graph reuses their slots as before),
    // and a first occurrence is never replaced, so one lookup finds a replacement.
    graph.remove_all(&duplicates);
    graph.replace_in_outputs(&replaced);
    Ok(())
}

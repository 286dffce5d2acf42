//! Dead-code elimination: removes every value that no output and no update depends on.
//! Inputs stay (they are an entry's signature) unless `drop_inputs` asks otherwise.

use crate::ir::{Graph, Op, ValueId};
use std::collections::HashSet;

/// The values the outputs and updates depend on.
pub fn live_values(graph: &Graph) -> HashSet<ValueId> {
    let mut live = HashSet::new();
    let mut stack: Vec<ValueId> = graph.outputs.iter().map(|(_, v)| *v).collect();
    for (param, new) in &graph.updates {
        stack.push(*param);
        stack.push(*new);
    }
    while let Some(v) = stack.pop() {
        if live.insert(v) {
            stack.extend(graph.operands(v));
        }
    }
    live
}

/// Removes dead values; dead inputs are removed only with `drop_inputs`.
pub fn eliminate_dead_code(graph: &mut Graph, drop_inputs: bool) {
    let live = live_values(graph);
    let mut order = graph.topo_order();
    order.reverse();
    for v in order {
        let is_input = matches!(graph.node(v).op, Op::Input { .. });
        if !live.contains(&v) && (drop_inputs || !is_input) {
            graph.remove(v);
        }
    }
}

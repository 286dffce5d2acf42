//! Dead-code elimination: removes every value that no output and no update depends on.
//! Inputs stay (they are an entry's signature) unless `drop_inputs` asks otherwise.

use crate::ir::{Graph, Op, ValueId};

/// The values the outputs and updates depend on, as a flag per value index (a dense
/// vector rather than a hash set: this runs after every simplification round).
pub fn live_values(graph: &Graph) -> Vec<bool> {
    let mut live = vec![false; graph.index_bound()];
    let mut stack: Vec<ValueId> = graph.outputs.iter().map(|(_, v)| *v).collect();
    for (param, new) in &graph.updates {
        stack.push(*param);
        stack.push(*new);
    }
    while let Some(v) = stack.pop() {
        if !live[v.index()] {
            live[v.index()] = true;
            stack.extend(graph.operands(v));
        }
    }
    live
}

/// Removes dead values; dead inputs are removed only with `drop_inputs`.
pub fn eliminate_dead_code(graph: &mut Graph, drop_inputs: bool) {
    let live = live_values(graph);
    let dead = |v: ValueId| {
        !live[v.index()] && (drop_inputs || !matches!(graph.node(v).op, Op::Input { .. }))
    };
    // Most rounds of the simplification passes leave nothing dead: no order needed.
    if !graph.values().into_iter().any(dead) {
        return;
    }
    // Users before their operands, as always (the graph reuses freed slots in order).
    let removed: Vec<ValueId> = graph
        .topo_order()
        .into_iter()
        .rev()
        .filter(|v| dead(*v))
        .collect();
    for v in removed {
        graph.remove(v);
    }
}

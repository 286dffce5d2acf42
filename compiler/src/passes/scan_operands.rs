//! Scan operands and bodies: constants move into the body, and every body is simplified
//! by the same pass pipeline as the graph around it.
//!
//! A scan operand that is a scalar constant, or a broadcast of one (a sequence of zeros
//! is what backpropagation through time feeds the carry's cotangent when only the last
//! state is used), is rebuilt inside the body instead: the operand and its body input
//! go, so no buffer of constants is filled and read every step, and the body's own
//! simplification sees the constant (`g + 0 -> g`). A scan keeps at least one sequence
//! (its length comes from it).

use crate::ir::{Graph, Op, Scan, Shape, ValueId};

/// Moves constant operands into scan bodies and simplifies every body.
pub fn simplify_scans(graph: &mut Graph) -> Result<(), String> {
    for v in graph.topo_order() {
        let Op::Scan(scan) = &graph.node(v).op else {
            continue;
        };
        let mut scan: Scan = (**scan).clone();
        let before = crate::ir::print::print_graph(&scan.body, None);
        let mut operands = graph.operands(v);
        let count = operands.len();
        let mut i = 1;
        while i < operands.len() {
            let is_sequence = i <= scan.sequences;
            let Some(c) = scalar_constant(graph, operands[i]) else {
                i += 1;
                continue;
            };
            if is_sequence && scan.sequences == 1 {
                i += 1;
                continue;
            }
            let input = scan.body.inputs[i];
            let ty = scan.body.ty(input).clone();
            let span = scan.body.node(input).span;
            let k = scan.body.add(Op::Const { value: c }, &[], span)?;
            let replacement = if ty.shape.rank() == 0 {
                k
            } else {
                scan.body.add(
                    Op::Broadcast {
                        shape: Shape(ty.shape.dims().to_vec()),
                    },
                    &[k],
                    span,
                )?
            };
            scan.body.replace_all_uses(input, replacement);
            scan.body.remove(input);
            operands.remove(i);
            if is_sequence {
                scan.sequences -= 1;
            }
        }
        super::run_pipeline(&mut scan.body, |_, _| {})
            .map_err(|e| format!("in the body of scan {v}: {e}"))?;
        if operands.len() == count && crate::ir::print::print_graph(&scan.body, None) == before {
            continue;
        }
        let span = graph.node(v).span;
        let new = graph.add(Op::Scan(Box::new(scan)), &operands, span)?;
        graph.replace_all_uses(v, new);
        graph.remove(v);
    }
    Ok(())
}

/// The scalar `c` if `v` is `const c` or a broadcast of one.
fn scalar_constant(graph: &Graph, v: ValueId) -> Option<f64> {
    match graph.node(v).op {
        Op::Const { value } => Some(value),
        Op::Broadcast { .. } => scalar_constant(graph, graph.operands(v)[0])
            .filter(|_| graph.ty(graph.operands(v)[0]).shape.rank() == 0),
        _ => None,
    }
}

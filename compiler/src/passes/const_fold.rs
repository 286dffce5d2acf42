//! Constant folding: an element-wise op whose operands are all scalar constants becomes
//! the constant it evaluates to, computed in `f64` exactly as the reference interpreter
//! computes it (so folding never changes what the interpreter says).

use crate::ir::interpret::{Tensor, apply_op};
use crate::ir::{Graph, Op};
use std::collections::HashMap;

/// Folds every foldable op, in topological order (so chains of constants fold whole).
pub fn fold_constants(graph: &mut Graph) -> Result<(), String> {
    let mut replaced = HashMap::new();
    for v in graph.topo_order() {
        let node = graph.node(v);
        if !matches!(node.op, Op::Unary(_) | Op::Binary(_)) || node.ty.shape.rank() != 0 {
            continue;
        }
        let operands = graph.operands(v);
        let values: Option<Vec<f64>> = operands
            .iter()
            .map(|o| match graph.node(*o).op {
                Op::Const { value } => Some(value),
                _ => None,
            })
            .collect();
        let Some(values) = values else { continue };
        let tensors: Vec<Tensor> = values.into_iter().map(Tensor::scalar).collect();
        let refs: Vec<&Tensor> = tensors.iter().collect();
        let folded = apply_op(&node.op, &refs).map_err(|e| format!("folding {v}: {e}"))?;
        let span = node.span;
        let c = graph.add(
            Op::Const {
                value: folded.data[0],
            },
            &[],
            span,
        )?;
        graph.replace_operand_uses(v, c);
        graph.remove(v);
        replaced.insert(v, c);
    }
    // A constant is never folded again, so one lookup finds a value's replacement.
    graph.replace_in_outputs(&replaced);
    Ok(())
}

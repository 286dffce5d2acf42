//! Scan operands and bodies: constants move into the body, transposed constants move out,
//! and every body is simplified by the same pass pipeline as the graph around it.
//!
//! A scan operand that is a scalar constant, or a broadcast of one (a sequence of zeros
//! is what backpropagation through time feeds the carry's cotangent when only the last
//! state is used), is rebuilt inside the body instead: the operand and its body input
//! go, so no buffer of constants is filled and read every step, and the body's own
//! simplification sees the constant (`g + 0 -> g`). A scan keeps at least one sequence
//! (its length comes from it).

use crate::ir::{Graph, Op, Scan, Shape, ValueId};

/// The fewest steps of a scan whose transposed constants are transposed before its loop:
/// one copy of the weight must cost less than the strided reads it saves.
pub const MIN_STEPS_TO_TRANSPOSE: u64 = 4;

/// Moves constant operands into scan bodies, transposed ones out, and simplifies every
/// body.
pub fn simplify_scans(graph: &mut Graph) -> Result<(), String> {
    rewrite_scans(graph, |graph, v, scan, operands| {
        let before = crate::ir::print::print_graph(&scan.body, None);
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
        // After the body's own simplification: a transpose of a transpose is gone by now.
        let steps = {
            let tys: Vec<&crate::ir::TensorType> = operands.iter().map(|o| graph.ty(*o)).collect();
            Scan::steps(&tys)
        };
        // Only where the graph updates its parameters (a training step), which reads
        // them afresh at every run anyway: an inference graph would copy the weight at
        // every run too, for a product that at batch 1 saves less than the copy costs
        // (W3's 128 x 512 recurrent weight: ~38 us per run against 50 x 0.5 us).
        let updates_parameters = !graph.updates.is_empty();
        if updates_parameters && steps.is_some_and(|t| t >= MIN_STEPS_TO_TRANSPOSE) {
            let constants = operands.iter_mut().enumerate().skip(scan.sequences + 1);
            for (i, operand) in constants {
                if let Some(perm) = read_only_transposed(&scan.body, scan.body.inputs[i]) {
                    let span = graph.node(*operand).span;
                    let transpose = Op::Transpose { perm: perm.clone() };
                    *operand = graph.add(transpose, &[*operand], span)?;
                    transpose_input(&mut scan.body, i, &perm)?;
                }
            }
        }
        Ok(operands.len() != count || crate::ir::print::print_graph(&scan.body, None) != before)
    })
}

/// Rebuilds every scan `v` (in topological order) that `rewrite` changes, given `v`, a
/// copy of its loop and its operands: the new scan replaces the old one's uses.
pub(super) fn rewrite_scans(
    graph: &mut Graph,
    mut rewrite: impl FnMut(&mut Graph, ValueId, &mut Scan, &mut Vec<ValueId>) -> Result<bool, String>,
) -> Result<(), String> {
    for v in graph.topo_order() {
        let Op::Scan(scan) = &graph.node(v).op else {
            continue;
        };
        let mut scan: Scan = (**scan).clone();
        let mut operands = graph.operands(v);
        if !rewrite(graph, v, &mut scan, &mut operands)? {
            continue;
        }
        let span = graph.node(v).span;
        let new = graph.add(Op::Scan(Box::new(scan)), &operands, span)?;
        graph.replace_all_uses(v, new);
        graph.remove(v);
    }
    Ok(())
}

/// The permutation of the transposes that are the only users of body input `input`, if
/// it has users and all are transposes by the same permutation.
fn read_only_transposed(body: &Graph, input: ValueId) -> Option<Vec<usize>> {
    let users = body.users(input);
    let mut perm = None;
    for u in &users {
        let Op::Transpose { perm: p } = &body.node(*u).op else {
            return None;
        };
        match &perm {
            None => perm = Some(p.clone()),
            Some(q) if q == p => {}
            Some(_) => return None,
        }
    }
    perm
}

/// Makes body input `i` the transpose by `perm` of what it was: its transposes' users
/// read it directly.
fn transpose_input(body: &mut Graph, i: usize, perm: &[usize]) -> Result<(), String> {
    let input = body.inputs[i];
    let ty = Op::Transpose {
        perm: perm.to_vec(),
    }
    .infer(&[body.ty(input)])?;
    let transposes = body.users(input);
    body.retype_input(input, ty);
    for t in transposes {
        body.replace_all_uses(t, input);
        body.remove(t);
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

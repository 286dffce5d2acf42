//! The `explain` entry: the gradients of a model's outputs with respect to its inputs,
//! which attribution methods (plain gradient, gradient x input, integrated gradients,
//! SmoothGrad) are built from.
//!
//! [`explain_graph`] turns the `infer` graph into the entry whose ports
//! [`strata_artifact::explain_entry`] describes: each f32 output `o` gets a seed input
//! `seed.o` of its type, the scalar `Σ_o Σ seed.o ⊙ o` is differentiated by the same
//! reverse sweep as a training step ([`autodiff::gradients`]), and each f32 input `x`
//! gets its gradient as output `grad.x`. The seed is fed at run time, so which output
//! element is explained (a class, a position) is the caller's choice without
//! recompiling; a sample's gradient depends on its own seed row alone, since an
//! inference graph does not mix samples.
//!
//! The entry keeps the model's outputs, so one run gives both `f(x)` and its gradient:
//! integrated gradients' completeness check needs the former.

use crate::ir::{BinaryOp, DType, Graph, Op, ReduceOp, ValueId};
use crate::passes::{autodiff, dce};
use crate::source::{Diagnostic, ErrorCode, Span};
use strata_artifact::explain_entry::{STEP_INPUT, gradient_output, seed_input};

/// The explain entry built from `infer` (the model as the `infer` entry computes it,
/// features' normalization included). A model without an f32 input (token ids only) or
/// without an f32 output has nothing to differentiate: that is an error at its input or
/// output.
pub fn explain_graph(infer: &Graph) -> Result<Graph, Diagnostic> {
    let mut graph = infer.clone();
    let at = |v: ValueId| graph_span(infer, v);
    let inputs: Vec<(String, ValueId)> = infer
        .inputs
        .iter()
        .filter_map(|&i| match &infer.node(i).op {
            Op::Input { name } if name != STEP_INPUT => Some((name.clone(), i)),
            _ => None,
        })
        .collect();
    let explained: Vec<(String, ValueId)> = inputs
        .iter()
        .filter(|(_, v)| infer.ty(*v).dtype == DType::F32)
        .cloned()
        .collect();
    if explained.is_empty() {
        let span = inputs.first().map_or(Span::default(), |(_, v)| at(*v));
        return Err(Diagnostic::error(
            ErrorCode::DTypeMismatch,
            "cannot explain this model: it has no f32 input (gradients with respect to \
             token ids do not exist)",
            span,
        ));
    }
    let seeded: Vec<(String, ValueId)> = infer
        .outputs
        .iter()
        .filter(|(_, v)| infer.ty(*v).dtype == DType::F32)
        .cloned()
        .collect();
    if seeded.is_empty() {
        let span = infer
            .outputs
            .first()
            .map_or(Span::default(), |(_, v)| at(*v));
        return Err(Diagnostic::error(
            ErrorCode::DTypeMismatch,
            "cannot explain this model: it has no f32 output",
            span,
        ));
    }
    let internal = |span: Span| {
        move |e: String| {
            Diagnostic::error(
                ErrorCode::ShapeMismatch,
                format!("cannot differentiate this model for its explain entry: {e}"),
                span,
            )
        }
    };
    // Σ_o Σ seed.o ⊙ o, one scalar.
    let mut total: Option<ValueId> = None;
    for (name, output) in &seeded {
        let span = at(*output);
        let ty = infer.ty(*output).clone();
        let seed = graph.add_leaf(
            Op::Input {
                name: seed_input(name),
            },
            ty.clone(),
            span,
        );
        let weighted = graph
            .add(Op::Binary(BinaryOp::Mul), &[seed, *output], span)
            .map_err(internal(span))?;
        let summed = match ty.shape.rank() {
            0 => weighted,
            rank => graph
                .add(
                    Op::Reduce {
                        op: ReduceOp::Sum,
                        axes: (0..rank).collect(),
                        keep_dims: false,
                    },
                    &[weighted],
                    span,
                )
                .map_err(internal(span))?,
        };
        total = Some(match total {
            None => summed,
            Some(t) => graph
                .add(Op::Binary(BinaryOp::Add), &[t, summed], span)
                .map_err(internal(span))?,
        });
    }
    let total = total.expect("at least one f32 output");
    let wrt: Vec<ValueId> = explained.iter().map(|(_, v)| *v).collect();
    let span = at(seeded[0].1);
    let grads = autodiff::gradients(&mut graph, total, &wrt).map_err(internal(span))?;
    let mut outputs = infer.outputs.clone();
    for ((name, _), g) in explained.iter().zip(grads) {
        outputs.push((gradient_output(name), g));
    }
    graph.outputs = outputs;
    dce::eliminate_dead_code(&mut graph, false);
    Ok(graph)
}

fn graph_span(graph: &Graph, v: ValueId) -> Span {
    graph.node(v).span
}

#[cfg(test)]
mod tests;

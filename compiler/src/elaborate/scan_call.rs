//! `scan(cell, xs, init)`: a custom recurrent cell, written as a block, run over a
//! sequence. The block is elaborated once, into the body of an IR `scan`, so the model's
//! IR does not grow with the sequence length; its parameters live in the model (they are
//! trained like any other) and the body reads them as operands.
//!
//! The block takes the carry and one step of the sequence and returns the next carry:
//!
//! ```text
//! block Elman(h, x, hidden = 16) {
//!     return tanh(dense(h, hidden, bias = false) + dense(x, hidden))
//! }
//! hs = scan(Elman, xs, init)     // xs [batch, T, F], init [batch, 16] -> [batch, T, 16]
//! ```

use super::Elaborator;
use super::args::{self, BoundArgs, ParamSpec};
use super::recurrent::{final_state, states_after_each_step};
use super::value::{Spanned, Value};
use crate::ir::{DType, Dim, Graph, Op, Scan, Shape, TensorType, ValueId};
use crate::source::Span;
use crate::source::{Diagnostic, ErrorCode};
use crate::syntax::ast::Call;

/// What the elaborator keeps while a cell's body is built in its `graph`.
pub(super) struct CellFrame {
    /// The model's graph.
    outer: Graph,
    /// Model values the body reads, each with the body input standing for it.
    operands: Vec<(ValueId, ValueId)>,
}

static SCAN: &[ParamSpec] = &[
    args::req("cell"),
    args::req("xs"),
    args::req("init"),
    args::opt("return_sequences"),
    args::opt("reverse"),
];

fn error(span: Span, message: impl Into<String>) -> Diagnostic {
    Diagnostic::error(ErrorCode::BadArgument, message, span)
}

impl<'p> Elaborator<'p> {
    /// Makes the model's graph current again (for a parameter a cell creates); undo with
    /// [`Elaborator::leave_model_graph`].
    pub(super) fn enter_model_graph(&mut self) -> CellFrame {
        let mut frame = self.cell.take().expect("inside a cell");
        std::mem::swap(&mut self.graph, &mut frame.outer);
        frame
    }

    pub(super) fn leave_model_graph(&mut self, mut frame: CellFrame) {
        std::mem::swap(&mut self.graph, &mut frame.outer);
        self.cell = Some(frame);
    }

    /// The body input standing for the model's value `outer` (a parameter).
    pub(super) fn cell_operand(
        &mut self,
        outer: ValueId,
        path: &str,
    ) -> Result<ValueId, Diagnostic> {
        let frame = self.cell.as_mut().expect("inside a cell");
        if let Some(&(_, inner)) = frame.operands.iter().find(|(o, _)| *o == outer) {
            return Ok(inner);
        }
        let ty = frame.outer.ty(outer).clone();
        let span = frame.outer.node(outer).span;
        let name = path.replace('.', "_");
        let inner = self.graph.add_leaf(Op::Input { name }, ty, span);
        let frame = self.cell.as_mut().expect("inside a cell");
        frame.operands.push((outer, inner));
        Ok(inner)
    }

    /// `scan(cell, xs, init, return_sequences = true, reverse = false)`.
    pub(super) fn scan_call(
        &mut self,
        call: &Call,
        positional: Vec<Spanned>,
        named: Vec<(String, Span, Spanned)>,
    ) -> Result<Value, Diagnostic> {
        let span = call.span;
        let bound = BoundArgs::bind("scan", span, SCAN, positional, named, false)?;
        let keep_sequence = bound.bool("return_sequences", true)?;
        let reverse = bound.bool("reverse", false)?;
        let (xs, xspan) = bound.tensor("xs")?;
        let (init, _) = bound.tensor("init")?;
        let Some((cell_name, cell_span)) = bound.word("cell") else {
            return Err(error(span, "`scan` needs `cell`, the name of a block"));
        };
        let Some(block) = self.blocks.get(&cell_name).copied() else {
            return Err(error(cell_span, format!("`{cell_name}` is not a block"))
                .with_label("expected the name of a block `(carry, x) -> next carry`"));
        };
        if self.cell.is_some() {
            return Err(error(span, "a scan cell cannot run a scan itself"));
        }
        let xty = self.graph.ty(xs).clone();
        let dims = xty.shape.dims().to_vec();
        let (steps, step_dims) = match dims.as_slice() {
            [Dim::Batch, Dim::Fixed(t), rest @ ..] => (*t, rest.to_vec()),
            _ => {
                return Err(Diagnostic::error(
                    ErrorCode::ShapeMismatch,
                    format!("`scan` needs a sequence `[batch, T, …]`, got {xty}"),
                    xspan,
                )
                .with_label(format!("this is {xty}")));
            }
        };
        let carry_ty = self.graph.ty(init).clone();
        if carry_ty.dtype != DType::F32 || carry_ty.shape.dims().first() != Some(&Dim::Batch) {
            return Err(Diagnostic::error(
                ErrorCode::ShapeMismatch,
                format!("the carry `init` must be f32 `[batch, …]`, got {carry_ty}"),
                span,
            )
            .with_label("`init` is the first carry"));
        }
        // Time-major: `[T, batch, …]`, so each step is one contiguous run.
        let mut perm: Vec<usize> = (0..dims.len()).collect();
        perm.swap(0, 1);
        let time_major = self.op(Op::Transpose { perm: perm.clone() }, &[xs], span)?;

        // The body: inputs carry and step, then the parameters the cell reads.
        let mut body = Graph::new(format!("{cell_name}_cell"));
        let carry = body.add_leaf(
            Op::Input {
                name: "carry".into(),
            },
            carry_ty.clone(),
            span,
        );
        let mut step_shape = vec![Dim::Batch];
        step_shape.extend(&step_dims);
        let step_ty = TensorType {
            dtype: xty.dtype,
            shape: Shape(step_shape),
        };
        let x = body.add_leaf(Op::Input { name: "x".into() }, step_ty, span);
        let outer = std::mem::replace(&mut self.graph, body);
        self.cell = Some(CellFrame {
            outer,
            operands: Vec::new(),
        });
        let outer_step = self.step.take();
        let args = vec![
            Spanned {
                value: Value::Tensor(carry),
                span,
            },
            Spanned {
                value: Value::Tensor(x),
                span,
            },
        ];
        let result = self.call_block(block, call, args, Vec::new(), None);
        let drew = self.step.is_some();
        self.step = outer_step;
        let frame = self.cell.take().expect("the cell frame");
        let mut body = std::mem::replace(&mut self.graph, frame.outer);
        let next = match result? {
            Value::Tensor(v) => v,
            other => {
                return Err(error(
                    span,
                    format!(
                        "the cell `{cell_name}` returns {}, not a tensor",
                        other.kind()
                    ),
                ));
            }
        };
        if drew {
            return Err(error(
                span,
                format!(
                    "the cell `{cell_name}` draws random numbers (dropout, normal, uniform), which a scan cell cannot"
                ),
            ));
        }
        if *body.ty(next) != carry_ty {
            return Err(Diagnostic::error(
                ErrorCode::ShapeMismatch,
                format!(
                    "the cell `{cell_name}` returns {} but the carry is {carry_ty}",
                    body.ty(next)
                ),
                span,
            )
            .with_label("the next carry must have the type of `init`"));
        }
        body.outputs.push(("next".into(), next));
        let mut operands = vec![init, time_major];
        operands.extend(frame.operands.iter().map(|(o, _)| *o));
        let stacked = self.op(
            Op::Scan(Box::new(Scan {
                body,
                sequences: 1,
                reverse,
                keep_all: true,
            })),
            &operands,
            span,
        )?;
        if keep_sequence {
            let states = states_after_each_step(self, stacked, steps, reverse, span)?;
            let mut perm: Vec<usize> = (0..carry_ty.shape.rank() + 1).collect();
            perm.swap(0, 1);
            Ok(Value::Tensor(self.op(
                Op::Transpose { perm },
                &[states],
                span,
            )?))
        } else {
            let carry = carry_ty.shape.clone();
            let last = final_state(self, stacked, steps, reverse, carry, span)?;
            Ok(Value::Tensor(last))
        }
    }
}

//! A `train` section inside the model's graph: its label input, the `params` and
//! `weights` lists its penalties read, and its loss (or each `step`'s), elaborated in the
//! model's scope so the loss can name any of the model's values.
//!
//! What the section's other settings mean (optimizers, schedule, data, metrics) is read
//! from the section by [`super::build`]; the built-in losses are [`super::losses`].

use crate::elaborate::value::Value;
use crate::elaborate::{Elaborator, Env, Stop};
use crate::ir::{BinaryOp, DType, Op, ValueId};
use crate::source::{Diagnostic, ErrorCode, Span};
use crate::syntax::ast::{Expr, Ident, TrainDef, TrainItem};

/// A model's `train` section, elaborated into the model's graph.
#[derive(Clone, Debug)]
pub struct TrainElab {
    /// The section as written (settings other than the loss are read by `train::`).
    pub section: TrainDef,
    /// The first label input's name; None for label-free training (an autoencoder's
    /// loss compares the model's output with its own input).
    pub label: Option<String>,
    /// The section's other labels (`label s: f32[batch, 8]` after the first), in order.
    pub extra_labels: Vec<String>,
    /// The section declares a label whose type failed to elaborate (the mistake is
    /// recorded): `label` is None, but the section is not label-free.
    pub label_failed: bool,
    /// Names of the model whose definition failed (the mistakes are recorded): a
    /// setting that names one (`predict`, `features`) is not checked again.
    pub failed: Vec<String>,
    /// The scalar loss; with `step`s, the sum of theirs (what logs and `val.loss` show).
    pub loss: ValueId,
    /// The section's `step NAME { … }` blocks, in order (none for a one-loss section).
    pub steps: Vec<StepElab>,
    /// The model's own outputs (the graph's outputs also hold `loss`).
    pub model_outputs: Vec<(String, ValueId)>,
    /// The model's trainable parameters, in creation order (not batch norm's running
    /// statistics).
    pub params: Vec<ValueId>,
    /// The section's `term NAME = …` scalars, in order (those that elaborated).
    pub terms: Vec<(String, ValueId)>,
}

/// One `step NAME { … }` of a train section: its name, its loss in the model's graph,
/// and its other settings (read by `train::`).
#[derive(Clone, Debug)]
pub struct StepElab {
    pub name: Ident,
    pub loss: ValueId,
    pub items: Vec<TrainItem>,
    pub span: Span,
}

impl Elaborator<'_> {
    /// Binds the label input (if the section declares one) and `params`/`weights`, then
    /// builds the loss. Each part recovers from its mistake (recorded in the
    /// elaborator): a label whose type fails is poisoned, and a loss that fails is a
    /// constant 0 here, so the section's other settings are still checked (the model
    /// then has errors, so no graph of it is ever compiled).
    pub(crate) fn train_section(
        &mut self,
        section: &TrainDef,
        env: &mut Env,
        outputs: &[(String, ValueId)],
    ) -> Result<TrainElab, Stop> {
        let mut label = None;
        let mut extra_labels: Vec<String> = Vec::new();
        let mut label_failed = false;
        let mut loss_expr = None;
        let mut step_defs = Vec::new();
        let mut term_defs: Vec<(&Ident, &Expr)> = Vec::new();
        for item in &section.items {
            match item {
                TrainItem::Term { name, value, .. } => {
                    if let Some((first, _)) = term_defs.iter().find(|(n, _)| n.name == name.name) {
                        let twice = Diagnostic::error(
                            ErrorCode::DuplicateBinding,
                            format!("term `{}` is defined twice", name.name),
                            name.span,
                        )
                        .with_label("defined again here")
                        .with_secondary(first.span, "first defined here");
                        self.record::<()>(Err(twice));
                        continue;
                    }
                    term_defs.push((name, value));
                }
                TrainItem::Label { name, ty, span } => {
                    // A section may declare several labels (a multi-task model's); the
                    // first is the one the prediction is scored against by default.
                    let first = label.is_none() && !label_failed;
                    let tt = self.tensor_type(ty, env);
                    let Some(tt) = self.record_or_stop(tt)? else {
                        env.poison(name);
                        label_failed |= first;
                        continue;
                    };
                    let v = self.graph.add_leaf(
                        Op::Input {
                            name: name.name.clone(),
                        },
                        tt,
                        *span,
                    );
                    let bound = env.bind(name, Value::Tensor(v));
                    match (self.record(bound).is_some(), first) {
                        (true, true) => label = Some(name.name.clone()),
                        (true, false) => extra_labels.push(name.name.clone()),
                        (false, true) => label_failed = true,
                        (false, false) => {}
                    }
                }
                TrainItem::Setting { key, value, span } if key.name == "loss" => {
                    loss_expr = Some((key, value, *span))
                }
                TrainItem::Step { name, items, span } => {
                    if let Some((_, _, first)) = step_defs
                        .iter()
                        .find(|(n, _, _): &&(&Ident, _, Span)| n.name == name.name)
                    {
                        let twice = Diagnostic::error(
                            ErrorCode::DuplicateBinding,
                            format!("step `{}` is defined twice", name.name),
                            name.span,
                        )
                        .with_label("defined again here")
                        .with_secondary(*first, "first defined here");
                        self.record::<()>(Err(twice));
                        continue;
                    }
                    step_defs.push((name, items, *span));
                }
                _ => {}
            }
        }
        let params: Vec<ValueId> = self
            .graph
            .params()
            .into_iter()
            .filter(|(_, p)| !self.non_trainable.contains(*p))
            .map(|(v, _)| v)
            .collect();
        let weights: Vec<Value> = self
            .graph
            .params()
            .into_iter()
            .filter(|(_, p)| p.ends_with(".weight"))
            .map(|(v, _)| Value::Tensor(v))
            .collect();
        let at = |name: &str| Ident {
            name: name.to_string(),
            span: section.model.span,
        };
        let bound = env.bind(
            &at("params"),
            Value::List(params.iter().map(|v| Value::Tensor(*v)).collect()),
        );
        self.record(bound);
        let bound = env.bind(&at("weights"), Value::List(weights));
        self.record(bound);
        let mut terms = Vec::new();
        for (name, value) in term_defs {
            if let Some(v) = self.term(name, value, env)? {
                terms.push((name.name.clone(), v));
            }
        }
        let mut steps = Vec::new();
        for (name, items, span) in step_defs {
            let mut step_loss = None;
            for item in items {
                match item {
                    TrainItem::Setting { key, value, span } if key.name == "loss" => {
                        if step_loss.is_some() {
                            self.record::<()>(Err(Diagnostic::error(
                                ErrorCode::DuplicateBinding,
                                format!("step `{}` sets `loss` twice", name.name),
                                *span,
                            )));
                            continue;
                        }
                        step_loss = Some(self.loss_or_placeholder(value, env)?);
                    }
                    _ => {}
                }
            }
            let loss = match step_loss {
                Some(loss) => loss,
                None => {
                    self.record::<()>(Err(Diagnostic::error(
                        ErrorCode::MissingOutput,
                        format!("step `{}` has no `loss`", name.name),
                        name.span,
                    )
                    .with_label("this step")
                    .with_help("every step minimizes its own loss, e.g. `loss = binary_cross_entropy(fake_logit, 1)`")));
                    self.constant(0.0, name.span)
                }
            };
            steps.push(StepElab {
                name: name.clone(),
                loss,
                items: items.clone(),
                span,
            });
        }
        let loss = match (loss_expr, steps.is_empty()) {
            (Some((_, value, _)), true) => self.loss_or_placeholder(value, env)?,
            (Some((_, _, span)), false) => {
                self.record::<()>(Err(Diagnostic::error(
                    ErrorCode::Misplaced,
                    "with `step`s, each step has its own `loss`",
                    span,
                )
                .with_label("a loss for the whole section")
                .with_help("move it into the step it belongs to")));
                self.step_losses_sum(&steps)
            }
            (None, true) => {
                self.record::<()>(Err(Diagnostic::error(
                    ErrorCode::MissingOutput,
                    "the train section has no `loss`",
                    section.model.span,
                )
                .with_help("e.g. `loss = cross_entropy(logits, y)`")));
                self.constant(0.0, section.model.span)
            }
            (None, false) => self.step_losses_sum(&steps),
        };
        Ok(TrainElab {
            section: section.clone(),
            label,
            extra_labels,
            label_failed,
            failed: env.poisoned_names(),
            loss,
            steps,
            model_outputs: outputs.to_vec(),
            params,
            terms,
        })
    }

    /// `term NAME = EXPR`: the scalar, bound to `NAME` for the losses; None (the name
    /// poisoned, the mistake recorded) if it fails.
    fn term(&mut self, name: &Ident, value: &Expr, env: &mut Env) -> Result<Option<ValueId>, Stop> {
        let reserved =
            name.name == "loss" || strata_artifact::Metric::from_name(&name.name).is_some();
        if reserved {
            self.record::<()>(Err(Diagnostic::error(
                ErrorCode::DuplicateBinding,
                format!("a term cannot be called `{}`", name.name),
                name.span,
            )
            .with_label("a name training logs already")
            .with_note(
                "the loss and the metrics have their own columns; pick another name",
            )));
            env.poison(name);
            return Ok(None);
        }
        let v = self.scalar_loss(value, env, "a term");
        let Some(v) = self.record_or_stop(v)? else {
            env.poison(name);
            return Ok(None);
        };
        let bound = env.bind(name, Value::Tensor(v));
        Ok(self.record(bound).map(|()| v))
    }

    /// The sum of the steps' losses (what logs and `val.loss` show).
    fn step_losses_sum(&mut self, steps: &[StepElab]) -> ValueId {
        let mut total = steps[0].loss;
        for step in &steps[1..] {
            let sum = self.op(Op::Binary(BinaryOp::Add), &[total, step.loss], step.span);
            // Two scalars always add.
            total = self.record(sum).unwrap_or(total);
        }
        total
    }

    /// The loss `expr`, or (its mistake recorded) a constant 0 in its place.
    fn loss_or_placeholder(&mut self, expr: &Expr, env: &mut Env) -> Result<ValueId, Stop> {
        let loss = self.scalar_loss(expr, env, "the loss");
        Ok(match self.record_or_stop(loss)? {
            Some(v) => v,
            None => self.constant(0.0, expr.span),
        })
    }

    /// Elaborates a loss or term expression (`what`, for messages), which must be a
    /// scalar f32[]; reductions in it may fold the batch.
    fn scalar_loss(
        &mut self,
        expr: &Expr,
        env: &mut Env,
        what: &str,
    ) -> Result<ValueId, Diagnostic> {
        let outer = std::mem::replace(&mut self.reduces_batch, true);
        let loss = self.expr(expr, env);
        self.reduces_batch = outer;
        let loss = loss?;
        let Value::Tensor(loss_v) = loss.value else {
            if let Value::Number { .. } = loss.value {
                return Err(Diagnostic::error(
                    ErrorCode::BadArgument,
                    format!("{what} is a number that no parameter changes"),
                    loss.span,
                )
                .with_label("a constant")
                .with_help("write it from the model's outputs, e.g. `mse(y_hat, y)`"));
            }
            return Err(Diagnostic::error(
                ErrorCode::BadArgument,
                format!("{what} must be a tensor"),
                loss.span,
            ));
        };
        let ty = self.graph.ty(loss_v).clone();
        if ty.dtype != DType::F32 {
            return Err(Diagnostic::error(
                ErrorCode::DTypeMismatch,
                format!("{what} must be a scalar f32[], got {ty}"),
                loss.span,
            )
            .with_label(format!("this is {ty}"))
            .with_help("`float(x)` converts integers to f32"));
        }
        if ty.shape.rank() != 0 {
            let axes: Vec<String> = ty
                .shape
                .dims()
                .iter()
                .enumerate()
                .map(|(i, d)| format!("{i} ({d})"))
                .collect();
            let remain = match axes.len() {
                1 => format!("axis {} remains", axes[0]),
                _ => format!("axes {} remain", axes.join(", ")),
            };
            return Err(Diagnostic::error(
                ErrorCode::ShapeMismatch,
                format!("{what} must be a scalar f32[], got {ty}: {remain}"),
                loss.span,
            )
            .with_label(format!("this is {ty}"))
            .with_help(
                "reduce what remains, e.g. `mean(x)` averages every element and \
                 `mean(sum(x, axis = -1))` sums each sample's then averages over the batch",
            ));
        }
        Ok(loss_v)
    }
}

//! AST -> graph IR: resolves names, hyper-parameters, blocks, `repeat` and layer
//! instances, builds layers out of primitive ops, and checks shapes and dtypes, reporting
//! every mistake as a [`Diagnostic`] at its source span.
//!
//! # Parameter names
//! Every parameter gets a stable dotted path, its safetensors key. A layer call gets the
//! name of its kind and a counter in its scope (`dense0`, `dense1`); a `layer enc = …`
//! instance is named `enc`; a block call opens a scope named after the block
//! (`residual0`), and `repeat N` numbers its copies (`residual0.2`). So the weight of the
//! first dense layer of the third copy is `residual0.2.dense0.weight`. A path used twice
//! (an instance called twice) is one shared parameter; a `layer d = Block(…)` instance
//! opens the scope `d` at every call, so all its calls share every parameter inside.
//! A declared `param w` takes its name in its scope (`w`, `residual0.w`), and `enc.weight`
//! names an instance's parameter by its path (`declared_params.rs`).

mod activations;
pub mod args;
mod attention;
mod augment;
mod conv1d;
mod conv_transpose;
mod convolution;
mod declared_params;
pub mod layers;
mod math;
mod normalization;
mod padding;
mod random;
mod recurrent;
mod scan_call;
pub mod stdlib;
mod transformer;
pub mod value;

use crate::ir::{DType, Dim, Graph, Init, Op, TensorType, ValueId};
use crate::limits::{Limits, MAX_BLOCK_DEPTH};
use crate::source::Span;
use crate::source::{Diagnostic, ErrorCode};
use crate::syntax::ast::*;
pub use crate::train::section_graph::{StepElab, TrainElab};
use std::collections::{HashMap, HashSet};
use value::{Spanned, Value};

/// What to elaborate and with which hyper-parameter values.
#[derive(Clone, Debug, Default)]
pub struct ElaborateOptions {
    /// The model to build; the file's only (or first) model when `None`.
    pub model: Option<String>,
    /// `--set name=value` overrides of the model's hyper-parameters.
    pub overrides: Vec<(String, String)>,
    /// Also elaborate the model's `train` section, if it has one: its label input and
    /// its loss.
    pub train: bool,
    /// Build layers with their training behaviour: dropout draws masks (from a `step`
    /// input) and batch norm uses batch statistics and updates its running averages.
    /// Without it they behave as at inference.
    pub training_mode: bool,
    /// How large the graph and the parameters may grow.
    pub limits: Limits,
}

/// The result of elaboration: the graph and the hyper-parameter values it was built with.
#[derive(Clone, Debug)]
pub struct Elaborated {
    pub graph: Graph,
    pub hyper_params: Vec<(String, Value)>,
    /// With [`ElaborateOptions::train`]: the loss and label, in `graph`.
    pub train: Option<TrainElab>,
}

/// Builds the graph of one model of `program`; its first mistake if it has any.
pub fn elaborate(program: &Program, options: &ElaborateOptions) -> Result<Elaborated, Diagnostic> {
    let model = select_model(program, options.model.as_deref())?;
    let outcome = elaborate_model(program, model, options);
    match outcome.errors.into_iter().next() {
        Some(first) => Err(first),
        None => Ok(outcome.elaborated),
    }
}

/// A model elaborated with recovery: every mistake found, and the graph of what did
/// elaborate (complete when there are no mistakes).
pub struct Outcome {
    pub elaborated: Elaborated,
    /// In the order met; none is a follow-up of another.
    pub errors: Vec<Diagnostic>,
}

/// Builds the graph of `model`, recovering from a mistake at each hyper-parameter,
/// statement of the model's body, and part of its train section: the names a failed
/// statement binds are poisoned, so what depends on them fails silently instead of
/// repeating the mistake. A mistake that makes everything after it meaningless (the
/// graph or the parameters past their budget) ends the model.
pub fn elaborate_model(program: &Program, model: &ModelDef, options: &ElaborateOptions) -> Outcome {
    let mut blocks = HashMap::new();
    let mut errors = Vec::new();
    for b in &program.blocks {
        if blocks.insert(b.name.name.clone(), b).is_some() {
            errors.push(
                Diagnostic::error(
                    ErrorCode::DuplicateBinding,
                    format!("block `{}` is defined twice", b.name.name),
                    b.name.span,
                )
                .with_label("defined again here"),
            );
        }
    }
    // The standard library's blocks, unless the file defines one of the same name.
    for b in &stdlib::program().blocks {
        blocks.entry(b.name.name.clone()).or_insert(b);
    }
    let mut e = Elaborator {
        graph: Graph::new(model.name.name.clone()),
        blocks,
        params: HashMap::new(),
        param_order: Vec::new(),
        instances: HashMap::new(),
        scopes: vec![NameScope::default()],
        block_stack: Vec::new(),
        training: options.training_mode,
        non_trainable: HashSet::new(),
        step: None,
        cell: None,
        limits: options.limits,
        parameter_bytes: 0,
        repeat_copies: 1,
        reduces_batch: false,
        errors,
    };
    let mut env = Env::default();
    let (hyper_params, outputs, train) = e.model_body(model, program, options, &mut env);
    let mut graph = std::mem::replace(&mut e.graph, Graph::new(String::new()));
    graph.outputs = outputs;
    if e.errors.is_empty() {
        // An input whose users failed is no wiring mistake.
        e.record(check_inputs_used(&graph));
    }
    prune_unreachable(&mut graph);
    Outcome {
        elaborated: Elaborated {
            graph,
            hyper_params,
            train,
        },
        errors: e.errors,
    }
}

/// Why [`Elaborator::model_body`] stopped early: a mistake after which nothing more is
/// worth checking (it is recorded).
pub(crate) struct Stop;

impl<'p> Elaborator<'p> {
    /// Keeps `r`'s value, or records its mistake (unless it follows an earlier one).
    pub(crate) fn record<T>(&mut self, r: Result<T, Diagnostic>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(d) => {
                if !d.is_follow_up() && !self.errors.contains(&d) {
                    self.errors.push(d);
                }
                None
            }
        }
    }

    /// [`Elaborator::record`], and [`Stop`] when the mistake ends the model.
    pub(crate) fn record_or_stop<T>(
        &mut self,
        r: Result<T, Diagnostic>,
    ) -> Result<Option<T>, Stop> {
        let ends = matches!(&r, Err(d) if d.code == ErrorCode::TooLarge);
        let kept = self.record(r);
        match ends {
            true => Err(Stop),
            false => Ok(kept),
        }
    }

    /// The model's hyper-parameters, outputs and (with `options.train`) train section.
    #[allow(clippy::type_complexity)]
    fn model_body(
        &mut self,
        model: &ModelDef,
        program: &Program,
        options: &ElaborateOptions,
        env: &mut Env,
    ) -> (
        Vec<(String, Value)>,
        Vec<(String, ValueId)>,
        Option<TrainElab>,
    ) {
        let mut hyper_params = Vec::new();
        let mut outputs = Vec::new();
        let mut train = None;
        let _ = self.model_body_parts(
            model,
            program,
            options,
            env,
            (&mut hyper_params, &mut outputs, &mut train),
        );
        (hyper_params, outputs, train)
    }

    #[allow(clippy::type_complexity)]
    fn model_body_parts(
        &mut self,
        model: &ModelDef,
        program: &Program,
        options: &ElaborateOptions,
        env: &mut Env,
        (hyper_params, outputs, train): (
            &mut Vec<(String, Value)>,
            &mut Vec<(String, ValueId)>,
            &mut Option<TrainElab>,
        ),
    ) -> Result<(), Stop> {
        for (name, _) in &options.overrides {
            if !model.params.iter().any(|p| &p.name.name == name) {
                let known: Vec<&str> = model.params.iter().map(|p| p.name.name.as_str()).collect();
                self.record::<()>(Err(Diagnostic::error(
                    ErrorCode::BadHyperParam,
                    format!(
                        "model `{}` has no hyper-parameter `{name}`",
                        model.name.name
                    ),
                    model.name.span,
                )
                .with_label("in this model")
                .with_note(format!("its hyper-parameters are: {}", known.join(", ")))));
            }
        }
        for p in &model.params {
            let value = self.hyper_param(p, options, env);
            match self.record_or_stop(value)? {
                Some(value) => {
                    hyper_params.push((p.name.name.clone(), value.clone()));
                    let bound = env.bind(&p.name, value);
                    self.record(bound);
                }
                None => env.poison(&p.name),
            }
        }
        let mut any_output = false;
        for stmt in &model.body {
            match stmt {
                Stmt::Input { name, ty, span } => {
                    let tt = self.tensor_type(ty, env);
                    let Some(tt) = self.record_or_stop(tt)? else {
                        env.poison(name);
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
                    self.record(bound);
                }
                Stmt::Output { name, value, .. } => {
                    any_output = true;
                    let made = self.output(name, value.as_ref(), env, outputs);
                    if self.record_or_stop(made)?.is_none() && value.is_some() {
                        env.poison(name);
                    }
                }
                other => {
                    let made = self.stmt(other, env).and_then(|ret| match ret {
                        None => Ok(()),
                        Some((_, sp)) => Err(Diagnostic::error(
                            ErrorCode::Misplaced,
                            "`return` belongs in a block; a model declares `output`s",
                            sp,
                        )),
                    });
                    if self.record_or_stop(made)?.is_none() {
                        if let Stmt::Let { name, more, .. } = other {
                            std::iter::once(name)
                                .chain(more)
                                .for_each(|n| env.poison(n));
                        }
                        if let Stmt::Layer { name, .. } | Stmt::Param { name, .. } = other {
                            env.poison(name);
                        }
                    }
                }
            }
        }
        if !any_output {
            self.record::<()>(Err(Diagnostic::error(
                ErrorCode::MissingOutput,
                format!("model `{}` has no outputs", model.name.name),
                model.name.span,
            )
            .with_label("this model")
            .with_help("declare one with `output name = expr`")));
        }
        let section = program
            .trains
            .iter()
            .find(|t| t.model.name == model.name.name);
        if let (true, Some(section), false) = (options.train, section, outputs.is_empty()) {
            let t = self.train_section(section, env, outputs)?;
            outputs.push(("loss".to_string(), t.loss));
            *train = Some(t);
        }
        Ok(())
    }

    /// A hyper-parameter's value: from `--set`, else its default.
    fn hyper_param(
        &mut self,
        p: &HyperParam,
        options: &ElaborateOptions,
        env: &mut Env,
    ) -> Result<Value, Diagnostic> {
        let value = match options
            .overrides
            .iter()
            .rev()
            .find(|(n, _)| n == &p.name.name)
        {
            Some((_, text)) => value::parse_override(text),
            None => match &p.default {
                Some(d) => self.expr(d, env)?.value,
                None => {
                    return Err(Diagnostic::error(
                        ErrorCode::BadHyperParam,
                        format!("hyper-parameter `{}` has no value", p.name.name),
                        p.name.span,
                    )
                    .with_label("no default")
                    .with_help(format!(
                        "give it a default (`{} = …`) or set it with `--set {}=…`",
                        p.name.name, p.name.name
                    )));
                }
            },
        };
        if matches!(value, Value::Tensor(_)) {
            return Err(Diagnostic::error(
                ErrorCode::BadHyperParam,
                "a model's hyper-parameters must be constants",
                p.name.span,
            ));
        }
        Ok(value)
    }

    /// `output name = expr` (or `output name` of a binding), added to `outputs`.
    fn output(
        &mut self,
        name: &Ident,
        value: Option<&Expr>,
        env: &mut Env,
        outputs: &mut Vec<(String, ValueId)>,
    ) -> Result<(), Diagnostic> {
        let (v, vspan) = match value {
            Some(expr) => {
                let s = self.expr(expr, env)?;
                (s.value, s.span)
            }
            None => (env.lookup(name)?.value, name.span),
        };
        let Value::Tensor(id) = v else {
            return Err(Diagnostic::error(
                ErrorCode::BadArgument,
                format!("output `{}` must be a tensor, got {}", name.name, v.kind()),
                vspan,
            ));
        };
        if outputs.iter().any(|(n, _)| n == &name.name) {
            return Err(Diagnostic::error(
                ErrorCode::DuplicateBinding,
                format!("output `{}` is declared twice", name.name),
                name.span,
            )
            .with_label("declared again here"));
        }
        if value.is_some() {
            env.bind(name, Value::Tensor(id))?;
        }
        outputs.push((name.name.clone(), id));
        Ok(())
    }
}

/// The model `name` of `program`, or its first when `name` is None.
pub fn select_model<'p>(
    program: &'p Program,
    name: Option<&str>,
) -> Result<&'p ModelDef, Diagnostic> {
    match name {
        Some(n) => program
            .models
            .iter()
            .find(|m| m.name.name == n)
            .ok_or_else(|| {
                let known: Vec<&str> = program
                    .models
                    .iter()
                    .map(|m| m.name.name.as_str())
                    .collect();
                Diagnostic::error(
                    ErrorCode::NoModel,
                    format!("no model named `{n}`"),
                    Span::default(),
                )
                .with_note(format!("models in this file: {}", known.join(", ")))
            }),
        None => program.models.first().ok_or_else(|| {
            Diagnostic::error(
                ErrorCode::NoModel,
                "this file defines no model",
                Span::default(),
            )
            .with_help("start one with `model Name { … }`")
        }),
    }
}

/// A `train X` section for a model the file does not define: `strata train` would find
/// no section for the model it trains. One mistake per such section.
pub fn check_train_targets(program: &Program) -> Vec<Diagnostic> {
    let models = || program.models.iter().map(|m| m.name.name.as_str());
    program
        .trains
        .iter()
        .filter(|t| !models().any(|m| m == t.model.name))
        .map(|t| {
            let d = Diagnostic::error(
                ErrorCode::NoModel,
                format!("`train {}` names no model of this file", t.model.name),
                t.model.span,
            )
            .with_label("no model of this name");
            match closest(&t.model.name, models()) {
                Some(close) => d.with_help(format!("did you mean `{close}`?")),
                None => d.with_note(format!(
                    "models in this file: {}",
                    models().collect::<Vec<_>>().join(", ")
                )),
            }
        })
        .collect()
}

/// Every input must reach an output: an unused input is almost always a wiring mistake.
fn check_inputs_used(graph: &Graph) -> Result<(), Diagnostic> {
    let live = reachable_from_outputs(graph);
    for &i in &graph.inputs {
        if !live.contains(&i) {
            let name = match &graph.node(i).op {
                Op::Input { name } => name.clone(),
                _ => i.to_string(),
            };
            return Err(Diagnostic::error(
                ErrorCode::UnusedInput,
                format!("input `{name}` is not used by any output"),
                graph.node(i).span,
            )
            .with_label("declared here")
            .with_help("use it, or remove the declaration"));
        }
    }
    Ok(())
}

fn reachable_from_outputs(graph: &Graph) -> HashSet<ValueId> {
    let mut live = HashSet::new();
    let mut stack: Vec<ValueId> = graph.outputs.iter().map(|(_, v)| *v).collect();
    while let Some(v) = stack.pop() {
        if live.insert(v) {
            stack.extend(graph.operands(v));
        }
    }
    live
}

/// Drops values no output or update depends on (bindings computed but never used).
fn prune_unreachable(graph: &mut Graph) {
    crate::passes::dce::eliminate_dead_code(graph, false);
}

/// Names bound in one model or block body.
#[derive(Default)]
pub(crate) struct Env {
    bindings: HashMap<String, Spanned>,
    /// Names whose definition failed (the mistake is reported): a use of one fails
    /// silently ([`Diagnostic::follow_up`]), so the mistake is not reported again.
    poisoned: HashSet<String>,
}

impl Env {
    pub(crate) fn bind(&mut self, name: &Ident, value: Value) -> Result<(), Diagnostic> {
        self.refuse_rebinding(name)?;
        self.bindings.insert(
            name.name.clone(),
            Spanned {
                value,
                span: name.span,
            },
        );
        Ok(())
    }

    /// Marks `name` as a binding whose definition failed, unless it is bound already
    /// (then the failure was a second binding, and the first stands).
    pub(crate) fn poison(&mut self, name: &Ident) {
        if !self.bindings.contains_key(&name.name) {
            self.poisoned.insert(name.name.clone());
        }
    }

    /// Refuses to bind `name` a second time (see [`Env::bind`]), before what it would
    /// be bound to is made.
    pub(crate) fn refuse_rebinding(&self, name: &Ident) -> Result<(), Diagnostic> {
        match self.bindings.get(&name.name) {
            None => Ok(()),
            Some(prev) => Err(Diagnostic::error(
                ErrorCode::DuplicateBinding,
                format!("`{}` is already bound", name.name),
                name.span,
            )
            .with_label("bound again here")
            .with_secondary(prev.span, "first bound here")
            .with_help("every name is bound once; pick a new name for the new value")),
        }
    }

    /// The names bound to layer instances, for suggestions.
    pub(crate) fn instance_names(&self) -> impl Iterator<Item = &str> {
        self.bindings
            .iter()
            .filter(|(_, b)| matches!(b.value, Value::Instance(_)))
            .map(|(n, _)| n.as_str())
    }

    /// The names whose definition failed, sorted.
    pub(crate) fn poisoned_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.poisoned.iter().cloned().collect();
        names.sort_unstable();
        names
    }

    /// Fails silently when `name` is a binding whose definition failed.
    pub(crate) fn refuse_poisoned(&self, name: &Ident) -> Result<(), Diagnostic> {
        match self.poisoned.contains(&name.name) {
            true => Err(Diagnostic::follow_up(name.span)),
            false => Ok(()),
        }
    }

    /// The value bound to `name`, if any. Elaboration asks this for every name it
    /// meets, layers included, so it must not build the "did you mean" of an error.
    pub(crate) fn get(&self, name: &str) -> Option<&Spanned> {
        self.bindings.get(name)
    }

    pub(crate) fn lookup(&self, name: &Ident) -> Result<Spanned, Diagnostic> {
        self.refuse_poisoned(name)?;
        self.get(&name.name).cloned().ok_or_else(|| {
            let mut d = Diagnostic::error(
                ErrorCode::UnknownName,
                format!("`{}` is not defined", name.name),
                name.span,
            )
            .with_label("not found in this scope");
            if let Some(close) = closest(&name.name, self.bindings.keys().map(|s| s.as_str())) {
                d = d.with_help(format!("did you mean `{close}`?"));
            }
            d
        })
    }
}

/// The known name closest to `name` by edit distance, if close enough to be a typo.
pub(crate) fn closest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    }
    known
        .map(|k| (distance(name, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3) && *d < name.len().max(1))
        .min()
        .map(|(_, k)| k)
}

/// Naming state of one scope: its dotted prefix and per-kind counters.
#[derive(Default)]
struct NameScope {
    prefix: String,
    counters: HashMap<String, usize>,
}

/// A `layer name = call(…)` declaration: the call (without its input) and the path its
/// parameters live under.
#[derive(Clone)]
struct InstanceDecl {
    call: Call,
    path: String,
}

pub(crate) struct Elaborator<'p> {
    pub(crate) graph: Graph,
    blocks: HashMap<String, &'p ModelDef>,
    /// Parameters by path, so a path used twice is one shared parameter.
    params: HashMap<String, ValueId>,
    /// The paths of `params` in the order they were created, so a call can name the
    /// parameters it created without copying every earlier path.
    param_order: Vec<String>,
    instances: HashMap<String, InstanceDecl>,
    scopes: Vec<NameScope>,
    block_stack: Vec<String>,
    /// Whether layers take their training behaviour (see [`ElaborateOptions`]).
    training: bool,
    /// Persistent values that are not trained (batch norm's running statistics).
    pub(crate) non_trainable: HashSet<String>,
    /// The `step` input, created by the first layer that draws random numbers.
    step: Option<ValueId>,
    /// While a `scan` cell is elaborated: `graph` is the cell's body, and this holds
    /// the model's graph and the parameters the body reads as operands.
    cell: Option<scan_call::CellFrame>,
    limits: Limits,
    /// The bytes of the parameters made so far, against `limits.parameter_bytes`.
    parameter_bytes: u64,
    /// How many copies the `repeat`s being elaborated make of what is inside them (the
    /// product of their counts), against `limits.graph_nodes`.
    repeat_copies: u64,
    /// The mistakes recovered from so far (see [`elaborate_model`]).
    errors: Vec<Diagnostic>,
    /// While a train section's loss or term is elaborated: reductions may fold the batch
    /// (a loss averages over samples, where a model's outputs may not mix them).
    pub(crate) reduces_batch: bool,
}

impl<'p> Elaborator<'p> {
    /// The training step number (f32[], 1-based), an input of the `train_step` entry.
    fn step_input(&mut self, span: Span) -> ValueId {
        if let Some(v) = self.step {
            return v;
        }
        let v = self.graph.add_leaf(
            Op::Input {
                name: "step".into(),
            },
            TensorType::new(DType::F32, vec![]),
            span,
        );
        self.step = Some(v);
        v
    }

    fn scope(&mut self) -> &mut NameScope {
        self.scopes
            .last_mut()
            .expect("the root scope is never popped")
    }

    /// A fresh name `kindN` in the current scope, as a full dotted path.
    fn fresh_path(&mut self, kind: &str) -> String {
        let scope = self.scope();
        let n = scope.counters.entry(kind.to_string()).or_insert(0);
        let name = format!("{kind}{n}");
        *n += 1;
        self.qualify(&name)
    }

    fn qualify(&mut self, name: &str) -> String {
        let prefix = &self.scope().prefix;
        if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        }
    }

    fn push_scope(&mut self, path: String) {
        self.scopes.push(NameScope {
            prefix: path,
            counters: HashMap::new(),
        });
    }

    fn pop_scope(&mut self) {
        self.scopes.pop();
    }

    /// The parameter at `path`, created on first use; a later use must agree on shape.
    fn param(
        &mut self,
        path: String,
        dims: Vec<u64>,
        init: Init,
        span: Span,
    ) -> Result<ValueId, Diagnostic> {
        let ty = TensorType::new(DType::F32, dims.iter().map(|&d| Dim::Fixed(d)).collect());
        if self.cell.is_some() {
            // Parameters live in the model's graph; a cell reads them as operands.
            let frame = self.enter_model_graph();
            let made = self.param(path.clone(), dims, init, span);
            self.leave_model_graph(frame);
            return self.cell_operand(made?, &path);
        }
        if let Some(&v) = self.params.get(&path) {
            let existing = self.graph.ty(v).clone();
            if existing != ty {
                return Err(Diagnostic::error(
                    ErrorCode::ShapeMismatch,
                    format!("shared parameter `{path}` is {existing} but this use needs {ty}"),
                    span,
                )
                .with_label(format!("needs {ty}"))
                .with_secondary(self.graph.node(v).span, format!("first created here as {existing}"))
                .with_note("a layer instance called twice shares its weights, so its inputs must have the same feature size"));
            }
            return Ok(v);
        }
        let bytes = dims
            .iter()
            .try_fold(4u64, |acc, &d| acc.checked_mul(d))
            .unwrap_or(u64::MAX);
        self.parameter_bytes = self.parameter_bytes.saturating_add(bytes);
        if self.parameter_bytes > self.limits.parameter_bytes {
            return Err(Diagnostic::error(
                ErrorCode::TooLarge,
                format!(
                    "the parameters need {} bytes, more than the budget of {} bytes",
                    self.parameter_bytes, self.limits.parameter_bytes
                ),
                span,
            )
            .with_label(format!("`{path}` ({ty}) crosses the budget"))
            .with_help(format!(
                "make the layers smaller, or raise the budget with the environment variable {}",
                crate::limits::PARAMETER_BYTES_VAR
            )));
        }
        let v = self.graph.add_leaf(
            Op::Param {
                path: path.clone(),
                init,
            },
            ty,
            span,
        );
        self.param_order.push(path.clone());
        self.params.insert(path, v);
        Ok(v)
    }

    /// Adds an op, turning a typing error into a diagnostic at `span` that shows the
    /// operands' types where they were made.
    pub(crate) fn op(
        &mut self,
        op: Op,
        operands: &[ValueId],
        span: Span,
    ) -> Result<ValueId, Diagnostic> {
        let needs_float = !matches!(
            op,
            Op::Reshape { .. }
                | Op::Transpose { .. }
                | Op::Concat { .. }
                | Op::Slice { .. }
                | Op::StopGradient
                | Op::OneHot { .. }
                | Op::Gather
                | Op::ScatterAdd { .. }
                | Op::Cast { .. }
        );
        if needs_float
            && let Some(bad) = operands
                .iter()
                .find(|v| self.graph.ty(**v).dtype != DType::F32)
        {
            let ty = self.graph.ty(*bad).clone();
            return Err(Diagnostic::error(
                ErrorCode::DTypeMismatch,
                format!("`{}` needs f32 values, got {ty}", op.mnemonic()),
                span,
            )
            .with_label("this needs f32")
            .with_secondary(self.graph.node(*bad).span, format!("this is {ty}"))
            .with_help("`float(x)` converts integers to f32"));
        }
        if self.graph.len() >= self.limits.graph_nodes {
            return Err(self.too_many_nodes(span));
        }
        let mnemonic = op.mnemonic();
        let result = self.graph.add(op, operands, span);
        if let Ok(v) = result {
            check_size(self.graph.ty(v), span)?;
        }
        result.map_err(|msg| {
            let mut d = Diagnostic::error(ErrorCode::ShapeMismatch, msg, span)
                .with_label(format!("in this `{mnemonic}`"));
            for o in operands {
                let node = self.graph.node(*o);
                if node.span != span && node.span != Span::default() {
                    d = d.with_secondary(node.span, format!("this is {}", node.ty));
                }
            }
            d
        })
    }

    /// The graph budget is spent: refused at the op (or `repeat`) that would pass it.
    fn too_many_nodes(&self, span: Span) -> Diagnostic {
        Diagnostic::error(
            ErrorCode::TooLarge,
            format!(
                "the model elaborates to more than {} values",
                self.limits.graph_nodes
            ),
            span,
        )
        .with_label("the graph passes its budget here")
        .with_note("every `repeat` copy and block call adds its operations to the graph")
        .with_help(format!(
            "use fewer or smaller `repeat`s, or raise the budget with the environment variable {}",
            crate::limits::GRAPH_NODES_VAR
        ))
    }

    pub(crate) fn tensor_type(
        &mut self,
        ty_expr: &TypeExpr,
        env: &mut Env,
    ) -> Result<TensorType, Diagnostic> {
        let ty = ty_expr;
        let Some(dtype) = DType::parse(&ty.dtype.name) else {
            return Err(Diagnostic::error(
                ErrorCode::UnknownName,
                format!("unknown element type `{}`", ty.dtype.name),
                ty.dtype.span,
            )
            .with_label("not an element type")
            .with_note("element types are f32 and i32"));
        };
        let mut dims = Vec::new();
        for d in &ty.dims {
            if let ExprKind::Path(p) = &d.kind
                && p.len() == 1
                && p[0].name == "batch"
            {
                if dims.contains(&Dim::Batch) {
                    return Err(Diagnostic::error(
                        ErrorCode::ShapeMismatch,
                        "`batch` may appear only once in a shape",
                        d.span,
                    ));
                }
                dims.push(Dim::Batch);
                continue;
            }
            match self.expr(d, env)?.value {
                Value::Number {
                    value,
                    integer: true,
                } if value >= 1.0 => dims.push(Dim::Fixed(value as u64)),
                v => {
                    return Err(Diagnostic::error(
                        ErrorCode::BadHyperParam,
                        format!(
                            "a dimension must be a positive integer or `batch`, got {}",
                            describe(&v)
                        ),
                        d.span,
                    )
                    .with_label("not a valid dimension"));
                }
            }
        }
        let ty = TensorType::new(dtype, dims);
        check_size(&ty, ty_expr.span)?;
        Ok(ty)
    }

    /// Elaborates one body statement (not `input`/`output`). Returns the value of a
    /// `return`.
    fn stmt(&mut self, stmt: &Stmt, env: &mut Env) -> Result<Option<(Spanned, Span)>, Diagnostic> {
        match stmt {
            Stmt::Let {
                name, more, value, ..
            } if more.is_empty() => {
                let v = self.expr(value, env)?;
                env.bind(name, v.value)?;
                Ok(None)
            }
            Stmt::Let {
                name, more, value, ..
            } => {
                let v = self.expr(value, env)?;
                let names: Vec<&Ident> = std::iter::once(name).chain(more).collect();
                let parts = match v.value {
                    Value::List(parts) if parts.len() == names.len() => parts,
                    other => {
                        let got = match &other {
                            Value::List(p) => format!("a list of {}", p.len()),
                            o => o.kind().to_string(),
                        };
                        return Err(Diagnostic::error(
                            ErrorCode::Arity,
                            format!("{} names are bound to {got}", names.len()),
                            v.span,
                        )
                        .with_label(format!("this gives {got}"))
                        .with_help("`a, b = split(x, 2)` takes a list apart into as many names as it has parts"));
                    }
                };
                for (n, part) in names.into_iter().zip(parts) {
                    env.bind(n, part)?;
                }
                Ok(None)
            }
            Stmt::Layer { name, call, .. } => {
                if layers::lookup(&call.callee.name).is_none()
                    && !self.blocks.contains_key(&call.callee.name)
                {
                    return Err(layers::unknown_layer(
                        &call.callee,
                        self.blocks.keys().map(|s| s.as_str()),
                    ));
                }
                let path = self.qualify(&name.name);
                env.bind(name, Value::Instance(path.clone()))?;
                self.instances.insert(
                    path.clone(),
                    InstanceDecl {
                        call: call.clone(),
                        path,
                    },
                );
                Ok(None)
            }
            Stmt::Param {
                name,
                ty,
                init,
                options,
                span,
            } => {
                let v = self.declared_param(name, ty, init, options, *span, env)?;
                env.bind(name, Value::Tensor(v))?;
                Ok(None)
            }
            Stmt::Return { value, span } => Ok(Some((self.expr(value, env)?, *span))),
            Stmt::Input { span, .. } | Stmt::Output { span, .. } => Err(Diagnostic::error(
                ErrorCode::Misplaced,
                "a block has no `input`s or `output`s: its inputs are its arguments and it ends with `return`",
                *span,
            )),
        }
    }

    pub(crate) fn expr(&mut self, expr: &Expr, env: &mut Env) -> Result<Spanned, Diagnostic> {
        let span = expr.span;
        let value = match &expr.kind {
            ExprKind::Number { value, integer } => Value::Number {
                value: *value,
                integer: *integer,
            },
            ExprKind::Str(s) => Value::Str(s.clone()),
            ExprKind::List(items) => Value::List(
                items
                    .iter()
                    .map(|i| self.expr(i, env).map(|s| s.value))
                    .collect::<Result<_, _>>()?,
            ),
            ExprKind::Path(parts) => return self.path(parts, env, span),
            ExprKind::Neg(x) => {
                let x = self.expr(x, env)?;
                match x.value {
                    Value::Number { value, integer } => Value::Number {
                        value: -value,
                        integer,
                    },
                    Value::Tensor(t) => {
                        Value::Tensor(self.op(Op::Unary(crate::ir::UnaryOp::Neg), &[t], span)?)
                    }
                    v => {
                        return Err(Diagnostic::error(
                            ErrorCode::BadArgument,
                            format!("cannot negate {}", v.kind()),
                            x.span,
                        ));
                    }
                }
            }
            ExprKind::Binary(op, a, b) => {
                let a = self.expr(a, env)?;
                let b = self.expr(b, env)?;
                self.arith(*op, a, b, span)?
            }
            ExprKind::Call(call) => return self.call(call, None, env),
            ExprKind::Pipe(input, stage) => {
                let input = self.expr(input, env)?;
                return self.stage(stage, input, env, None);
            }
        };
        Ok(Spanned { value, span })
    }

    fn path(&mut self, parts: &[Ident], env: &mut Env, span: Span) -> Result<Spanned, Diagnostic> {
        let first = &parts[0];
        if parts.len() > 1 {
            let value = self.layer_param_ref(parts, env, span)?;
            return Ok(Spanned {
                value: Value::Tensor(value),
                span,
            });
        }
        env.refuse_poisoned(first)?;
        if let Some(v) = env.get(&first.name) {
            return Ok(Spanned {
                value: v.value.clone(),
                span,
            });
        }
        let value = match first.name.as_str() {
            "true" => Value::Bool(true),
            "batch" => Value::Symbol("batch".into()),
            "false" => Value::Bool(false),
            name if layers::lookup(name).is_some()
                || self.blocks.contains_key(name)
                || Init::parse(name).is_some() =>
            {
                Value::Symbol(name.to_string())
            }
            _ => return Err(env.lookup(first).expect_err("not bound")),
        };
        Ok(Spanned { value, span })
    }

    fn arith(
        &mut self,
        op: BinOp,
        a: Spanned,
        b: Spanned,
        span: Span,
    ) -> Result<Value, Diagnostic> {
        use crate::ir::BinaryOp as B;
        let ir_op = match op {
            BinOp::Add => B::Add,
            BinOp::Sub => B::Sub,
            BinOp::Mul => B::Mul,
            BinOp::Div => B::Div,
        };
        match (&a.value, &b.value) {
            (
                Value::Number {
                    value: x,
                    integer: ix,
                },
                Value::Number {
                    value: y,
                    integer: iy,
                },
            ) => {
                let (x, y) = (*x, *y);
                let r = match op {
                    BinOp::Add => x + y,
                    BinOp::Sub => x - y,
                    BinOp::Mul => x * y,
                    BinOp::Div => {
                        if y == 0.0 {
                            return Err(Diagnostic::error(
                                ErrorCode::BadHyperParam,
                                "division by zero",
                                b.span,
                            ));
                        }
                        x / y
                    }
                };
                if !r.is_finite() {
                    return Err(Diagnostic::error(
                        ErrorCode::BadHyperParam,
                        format!("{x} {} {y} overflows to infinity", op.symbol()),
                        span,
                    )
                    .with_label("too large for a number"));
                }
                let integer = *ix && *iy && (op != BinOp::Div || r.fract() == 0.0);
                Ok(Value::Number { value: r, integer })
            }
            _ => {
                let ta = self.as_tensor(&a, op.symbol())?;
                let tb = self.as_tensor(&b, op.symbol())?;
                Ok(Value::Tensor(self.op(
                    Op::Binary(ir_op),
                    &[ta, tb],
                    span,
                )?))
            }
        }
    }

    /// A tensor operand: a tensor, or a number made into a constant.
    fn as_tensor(&mut self, s: &Spanned, context: &str) -> Result<ValueId, Diagnostic> {
        match &s.value {
            Value::Tensor(t) => Ok(*t),
            Value::Number { value, .. } if (*value as f32).is_infinite() => Err(Diagnostic::error(
                ErrorCode::BadHyperParam,
                format!("{value:e} is too large for an f32 tensor"),
                s.span,
            )
            .with_label("overflows to infinity as f32")
            .with_note(format!("the largest f32 is about {:e}", f32::MAX))),
            Value::Number { value, .. } => Ok(self.constant(*value, s.span)),
            v => Err(Diagnostic::error(
                ErrorCode::BadArgument,
                format!("`{context}` needs a tensor or a number, got {}", v.kind()),
                s.span,
            )
            .with_label(format!("this is {}", describe(v)))),
        }
    }

    pub(crate) fn constant(&mut self, value: f64, span: Span) -> ValueId {
        self.graph
            .add(Op::Const { value }, &[], span)
            .expect("a constant always types")
    }

    /// `input |> stage`. `forced_path` names the stage's scope (used by `repeat`).
    fn stage(
        &mut self,
        stage: &Stage,
        input: Spanned,
        env: &mut Env,
        forced_path: Option<String>,
    ) -> Result<Spanned, Diagnostic> {
        match stage {
            Stage::Call(call) => {
                let start = input.span.start;
                let mut s = self.call_named(call, Some(input), env, forced_path)?;
                s.span = Span {
                    start,
                    end: s.span.end,
                };
                Ok(s)
            }
            Stage::Name(name) => {
                let call = Call {
                    callee: name.clone(),
                    args: Vec::new(),
                    span: name.span,
                };
                let mut s = self.call_named(&call, Some(input.clone()), env, forced_path)?;
                s.span = Span {
                    start: input.span.start,
                    end: name.span.end,
                };
                Ok(s)
            }
            Stage::Repeat { count, stage, span } => {
                let c = self.expr(count, env)?;
                let n = match c.value {
                    Value::Number {
                        value,
                        integer: true,
                    } if (1.0..=10_000.0).contains(&value) => value as u64,
                    v => {
                        return Err(Diagnostic::error(
                            ErrorCode::BadHyperParam,
                            format!(
                                "`repeat` needs a count between 1 and 10000, got {}",
                                describe(&v)
                            ),
                            c.span,
                        )
                        .with_label("not a valid count"));
                    }
                };
                // Nested repeats multiply: refused before the first copy when they
                // would make more copies than the graph may hold values.
                let outer = self.repeat_copies;
                let copies = outer.saturating_mul(n);
                if copies > self.limits.graph_nodes as u64 {
                    return Err(self
                        .too_many_nodes(*span)
                        .with_label(format!("these repeats make {copies} copies")));
                }
                let kind = stage_kind(stage);
                let base = self.fresh_path(&kind);
                let mut value = input;
                self.repeat_copies = copies;
                let result = (0..n).try_fold(value, |value, i| {
                    self.stage(stage, value, env, Some(format!("{base}.{i}")))
                });
                self.repeat_copies = outer;
                value = result?;
                value.span = Span {
                    start: value.span.start.min(span.start),
                    end: span.end,
                };
                Ok(value)
            }
        }
    }

    fn call(
        &mut self,
        call: &Call,
        piped: Option<Spanned>,
        env: &mut Env,
    ) -> Result<Spanned, Diagnostic> {
        self.call_named(call, piped, env, None)
    }

    /// A call of a layer, block or instance, with an optional piped first argument.
    fn call_named(
        &mut self,
        call: &Call,
        piped: Option<Spanned>,
        env: &mut Env,
        forced_path: Option<String>,
    ) -> Result<Spanned, Diagnostic> {
        let callee = &call.callee;
        env.refuse_poisoned(callee)?;
        // A layer instance: its declaration's arguments after the call's own.
        if let Some(Spanned {
            value: Value::Instance(path),
            ..
        }) = env.get(&callee.name)
        {
            let decl = self.instances[path].clone();
            let mut positional: Vec<Spanned> = piped.into_iter().collect();
            let mut named = Vec::new();
            for a in &call.args {
                let v = self.expr(&a.value, env)?;
                match &a.name {
                    Some(n) => named.push((n.name.clone(), n.span, v)),
                    None => positional.push(v),
                }
            }
            for a in &decl.call.args {
                let v = self.expr(&a.value, env)?;
                match &a.name {
                    Some(n) => named.push((n.name.clone(), n.span, v)),
                    None => positional.push(v),
                }
            }
            // A block instance: every call opens the same scope, so its layers take the
            // same paths and share their parameters.
            let value = match self.blocks.get(&decl.call.callee.name).copied() {
                Some(block) => {
                    self.call_block(block, call, positional, named, Some(decl.path.clone()))?
                }
                None => layers::call_layer(
                    self,
                    &decl.call.callee,
                    call.span,
                    positional,
                    named,
                    Some(decl.path.clone()),
                )?,
            };
            return Ok(Spanned {
                value,
                span: call.span,
            });
        }
        let mut positional: Vec<Spanned> = piped.into_iter().collect();
        let mut named = Vec::new();
        for a in &call.args {
            let v = self.expr(&a.value, env)?;
            match &a.name {
                Some(n) => named.push((n.name.clone(), n.span, v)),
                None => positional.push(v),
            }
        }
        if callee.name == "scan" && !self.blocks.contains_key("scan") {
            let value = self.scan_call(call, positional, named)?;
            return Ok(Spanned {
                value,
                span: call.span,
            });
        }
        if let Some(block) = self.blocks.get(&callee.name).copied() {
            let value = self.call_block(block, call, positional, named, forced_path)?;
            return Ok(Spanned {
                value,
                span: call.span,
            });
        }
        if layers::lookup(&callee.name).is_none() {
            return Err(layers::unknown_layer(
                callee,
                self.blocks.keys().map(|s| s.as_str()),
            ));
        }
        let value = layers::call_layer(self, callee, call.span, positional, named, forced_path)?;
        Ok(Spanned {
            value,
            span: call.span,
        })
    }

    fn call_block(
        &mut self,
        block: &'p ModelDef,
        call: &Call,
        positional: Vec<Spanned>,
        named: Vec<(String, Span, Spanned)>,
        forced_path: Option<String>,
    ) -> Result<Value, Diagnostic> {
        if !stdlib::contains(block) {
            return self.call_block_body(block, call, positional, named, forced_path);
        }
        // A standard-library block: what it builds, and what goes wrong in it, is put at
        // the call (its own spans are offsets into the library's text).
        // Elaboration never removes a value, so the block's are those past the mark
        // (looked up without visiting the whole graph: a model of n blocks stays O(n)).
        let mark = self.graph.index_bound();
        let result = self.call_block_body(block, call, positional, named, forced_path);
        let made: Vec<ValueId> = self.graph.values_since(mark).collect();
        for v in made {
            self.graph.set_span(v, call.span);
        }
        result.map_err(|d| {
            if d.is_follow_up() {
                return d;
            }
            let mut moved = Diagnostic::error(
                d.code,
                format!("in `{}`: {}", block.name.name, d.message),
                call.span,
            )
            .with_label(if d.label.is_empty() {
                "in this standard-library block".to_string()
            } else {
                d.label
            });
            moved.notes = d.notes;
            moved.with_note(format!(
                "`{}` is a block of the standard library (docs/language.md, \"Standard library\")",
                block.name.name
            ))
        })
    }

    fn call_block_body(
        &mut self,
        block: &'p ModelDef,
        call: &Call,
        positional: Vec<Spanned>,
        named: Vec<(String, Span, Spanned)>,
        forced_path: Option<String>,
    ) -> Result<Value, Diagnostic> {
        let name = &block.name.name;
        if self.block_stack.len() == MAX_BLOCK_DEPTH {
            return Err(Diagnostic::error(
                ErrorCode::TooLarge,
                format!("blocks call blocks more than {MAX_BLOCK_DEPTH} deep"),
                call.span,
            )
            .with_label(format!("call {} of one nest", MAX_BLOCK_DEPTH + 1))
            .with_note(format!(
                "`{}` calls … `{}`, which makes this call",
                self.block_stack[0],
                self.block_stack[MAX_BLOCK_DEPTH - 1],
            ))
            .with_help(format!(
                "flatten the chain: blocks may call each other at most {MAX_BLOCK_DEPTH} deep"
            )));
        }
        if self.block_stack.contains(name) {
            return Err(Diagnostic::error(
                ErrorCode::Recursion,
                format!("block `{name}` calls itself"),
                call.span,
            )
            .with_label("recursive call")
            .with_secondary(block.name.span, "block defined here")
            .with_help("use `repeat N` to stack copies of a block"));
        }
        let specs: Vec<args::ParamSpec> = block
            .params
            .iter()
            .map(|p| args::ParamSpec {
                name: p.name.name.clone().into(),
                required: p.default.is_none(),
            })
            .collect();
        let bound = args::BoundArgs::bind(name, call.span, &specs, positional, named, false)?;
        let path = forced_path.unwrap_or_else(|| self.fresh_path(&name.to_lowercase()));
        let mut env = Env::default();
        self.block_stack.push(name.clone());
        self.push_scope(path);
        let result = (|| {
            for p in &block.params {
                let v = match bound.get(&p.name.name) {
                    Some(v) => v.value.clone(),
                    None => {
                        let d = p.default.as_ref().expect("unbound params are required");
                        self.expr(d, &mut env)?.value
                    }
                };
                env.bind(&p.name, v)?;
            }
            let mut ret = None;
            for stmt in &block.body {
                if let Some((v, sp)) = self.stmt(stmt, &mut env)? {
                    if ret.is_some() {
                        return Err(Diagnostic::error(
                            ErrorCode::Misplaced,
                            "a block returns once, at its end",
                            sp,
                        ));
                    }
                    ret = Some(v.value);
                }
            }
            ret.ok_or_else(|| {
                Diagnostic::error(
                    ErrorCode::MissingOutput,
                    format!("block `{name}` has no `return`"),
                    block.name.span,
                )
                .with_label("this block")
                .with_help("end it with `return expr`")
            })
        })();
        self.pop_scope();
        self.block_stack.pop();
        result
    }
}

/// The scope name a stage's copies are numbered under.
fn stage_kind(stage: &Stage) -> String {
    match stage {
        Stage::Call(c) => c.callee.name.to_lowercase(),
        Stage::Name(n) => n.name.to_lowercase(),
        Stage::Repeat { stage, .. } => stage_kind(stage),
    }
}

/// The most elements one tensor may hold (per batch row, for batched tensors): 2^31,
/// so every index fits the generated code's arithmetic with room to spare.
pub const MAX_ELEMENTS: u64 = 1 << 31;

/// Refuses tensors too large to index, before any later stage multiplies their sizes.
fn check_size(ty: &TensorType, span: Span) -> Result<(), Diagnostic> {
    let elements = ty
        .shape
        .dims()
        .iter()
        .try_fold(1u64, |acc, d| acc.checked_mul(d.fixed().unwrap_or(1)));
    match elements {
        Some(n) if n <= MAX_ELEMENTS => Ok(()),
        _ => Err(Diagnostic::error(
            ErrorCode::BadHyperParam,
            format!("{ty} is too large: a tensor holds at most 2^31 elements per batch row"),
            span,
        )
        .with_label("too large")),
    }
}

/// A value in words, for messages.
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Number { value, .. } => format!("{value}"),
        Value::Str(s) => format!("\"{s}\""),
        Value::Bool(b) => b.to_string(),
        Value::Symbol(s) => format!("`{s}`"),
        other => other.kind().to_string(),
    }
}

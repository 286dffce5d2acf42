//! From a model with a `train` section to the graphs of its three entries:
//!
//! - `train_step`: forward, loss, backward (autodiff), gradient clipping and the
//!   optimizer update, as ONE graph whose updates replace the parameters and optimizer
//!   state in place; a section with `step` blocks gets one such entry per block,
//!   `train_<name>`, over its own loss and parameters ([`steps`]);
//! - `eval`: forward and loss, plus the prediction output the metrics use;
//! - `infer`: the model alone.
//!
//! plus the [`TrainConfig`] the runtime's training driver follows.
//!
//! Everything a `train` section means is here: [`section_graph`] elaborates its label
//! and loss inside the model's graph, [`losses`] are the built-in losses and penalties,
//! [`section`] reads its settings, [`optimizer`] and [`steps`] build the updates, and
//! [`images`] the picture it may ask for.

pub mod images;
pub mod losses;
pub mod normalize;
pub mod optimizer;
pub mod ranges;
pub mod section;
pub mod section_graph;
pub mod steps;

use crate::elaborate::{Elaborated, TrainElab};
use crate::ir::{DType, Dim, Graph, Op, TensorType};
use crate::passes::{autodiff, dce};
use crate::source::{Diagnostic, ErrorCode};
use ranges::{Origin, ValidRange};
use section::Setting;
use std::collections::HashMap;
use strata_artifact::Metric;
use strata_artifact::train_config::{Schedule, Task, TrainConfig, TrainStep};

/// The graphs of a trainable model's entries.
pub struct TrainingGraphs {
    /// One training entry per update, in order: `train_step`, or `train_<name>` per
    /// `step` block.
    pub steps: Vec<(String, Graph)>,
    pub eval: Graph,
    pub infer: Graph,
    pub config: TrainConfig,
}

/// Settings the command line may override (`--set lr=3e-3`): these keys belong to the
/// `train` section, not to the model's hyper-parameters.
pub const OVERRIDABLE: &[&str] = &["lr", "epochs", "batch", "seed", "patience", "data"];

fn err(span: crate::source::Span, msg: impl Into<String>) -> Diagnostic {
    Diagnostic::error(ErrorCode::BadArgument, msg, span)
}

/// Builds the entries' graphs from the model elaborated for inference (`elab`: eval
/// and infer) and for training (`training`: the train step; dropout and batch norm take
/// their training behaviour). `overrides` are the command line's train settings;
/// `gradient_outputs` adds each update's gradients to its entry's outputs (`grad.PATH`).
pub fn build(
    elab: &Elaborated,
    training: &Elaborated,
    overrides: &[(String, String)],
    gradient_outputs: bool,
) -> Result<TrainingGraphs, Diagnostic> {
    let t: &TrainElab = elab.train.as_ref().expect("elaborated with train = true");
    let tt: &TrainElab = training
        .train
        .as_ref()
        .expect("elaborated with train = true");
    let hyper: HashMap<String, crate::elaborate::value::Value> =
        elab.hyper_params.iter().cloned().collect();
    let settings = section::settings(&t.section, &hyper)?;
    let at = t.section.model.span;
    let get = |k: &str| settings.get(k);
    // A numeric setting, from the command line or the file, and where it came from.
    let number = |k: &str, default: f64| -> Result<(f64, Origin), Diagnostic> {
        if let Some((_, v)) = overrides.iter().rev().find(|(key, _)| key == k) {
            return v
                .parse()
                .map(|n| (n, Origin::Override(at)))
                .map_err(|_| err(at, format!("--set {k}={v}: not a number")));
        }
        match get(k) {
            None => Ok((default, Origin::File(at))),
            Some((Setting::Number(v), span)) => Ok((*v, Origin::File(*span))),
            Some((_, span)) => Err(err(*span, format!("`{k}` must be a number"))),
        }
    };
    let integer = |k: &str, default: f64, range: ValidRange| -> Result<u64, Diagnostic> {
        let (v, origin) = number(k, default)?;
        range.check_integer(k, v, origin)
    };
    let batch = integer("batch", 32.0, ValidRange::BATCH)?;
    let epochs = integer("epochs", 10.0, ValidRange::COUNT)?;
    let seed = integer("seed", 0.0, ValidRange::NON_NEGATIVE_INTEGER)?;
    let data = match overrides.iter().rev().find(|(k, _)| k == "data") {
        Some((_, v)) => v.clone(),
        None => match get("data") {
            None => "digits".to_string(),
            Some((Setting::Word(w), _)) => w.clone(),
            Some((Setting::Call { name, args }, span)) => {
                let parts: Vec<String> = args
                    .iter()
                    .map(|(k, v)| match (k, v) {
                        (None, Setting::Word(w)) => Ok(w.clone()),
                        (Some(k), Setting::Word(w)) => Ok(format!("{k}={w}")),
                        (Some(k), Setting::Number(n)) => Ok(format!("{k}={n}")),
                        (None, Setting::Number(n)) => Ok(format!("{n}")),
                        _ => Err(err(*span, "data source arguments are paths and options")),
                    })
                    .collect::<Result<_, _>>()?;
                // A built-in takes options after a comma (`sunspots,window=20`), a file
                // kind its path after a colon (`csv:f.csv,label=-1`).
                let builtin =
                    strata_artifact::train_config::BUILTIN_DATASETS.contains(&name.as_str());
                format!(
                    "{name}{}{}",
                    if builtin { "," } else { ":" },
                    parts.join(",")
                )
            }
            Some((_, span)) => {
                return Err(err(
                    *span,
                    "`data` is a dataset name or a source like csv(\"file.csv\")",
                ));
            }
        },
    };
    let split = match get("split") {
        None => [0.8, 0.1, 0.1],
        Some((Setting::List(items), span)) if items.len() == 3 => {
            let mut out = [0.0; 3];
            for (o, i) in out.iter_mut().zip(items) {
                let Setting::Number(v) = i else {
                    return Err(err(*span, "split fractions are numbers"));
                };
                *o = *v;
            }
            if out.iter().any(|f| !(f.is_finite() && *f >= 0.0))
                || (out.iter().sum::<f64>() - 1.0).abs() > 1e-6
                || out[0] <= 0.0
            {
                return Err(Diagnostic::error(
                    ErrorCode::BadHyperParam,
                    "split fractions must be >= 0, sum to 1, and train on something",
                    *span,
                ));
            }
            out
        }
        Some((_, span)) => {
            return Err(err(
                *span,
                "`split` is train / val / test fractions, e.g. 0.8 / 0.1 / 0.1",
            ));
        }
    };
    let lr_override: Option<f64> = match overrides.iter().rev().find(|(k, _)| k == "lr") {
        None => None,
        Some((_, v)) => {
            let lr = v
                .parse()
                .map_err(|_| err(at, format!("--set lr={v}: not a number")))?;
            Some(ValidRange::POSITIVE.check("lr", lr, Origin::Override(at))?)
        }
    };
    let schedule = match get("schedule") {
        None => Schedule::Constant,
        Some((s, span)) => section::schedule(s, *span)?,
    };
    let metrics = match get("metrics") {
        None => Vec::new(),
        Some((Setting::List(items), span)) => items
            .iter()
            .map(|i| match i {
                Setting::Word(w) => Metric::from_name(w)
                    .ok_or_else(|| err(*span, format!("metrics are: {}", Metric::names_list()))),
                _ => Err(err(*span, format!("metrics are: {}", Metric::names_list()))),
            })
            .collect::<Result<_, _>>()?,
        Some((_, span)) => return Err(err(*span, "`metrics` is a list, e.g. [accuracy, f1]")),
    };
    let mut early_stop = match get("early_stop") {
        None => None,
        Some((s, span)) => Some(section::early_stop(s, *span)?),
    };
    if let (Some(es), Some((_, v))) = (
        early_stop.as_mut(),
        overrides.iter().rev().find(|(k, _)| k == "patience"),
    ) {
        let patience = v
            .parse()
            .map_err(|_| err(at, format!("--set patience={v}: not an integer")))?;
        es.patience =
            ValidRange::COUNT.check_integer("patience", patience, Origin::Override(at))?;
    }
    let normalize_span = get("normalize").map_or(at, |(_, span)| *span);
    let normalize = match get("normalize") {
        None => "none".to_string(),
        Some((Setting::Word(w), _)) if ["none", "standardize", "minmax"].contains(&w.as_str()) => {
            w.clone()
        }
        Some((Setting::Call { name, args }, _)) if name == "scale" && args.len() == 1 => {
            match &args[0].1 {
                Setting::Number(k) if ValidRange::POSITIVE.contains(*k) => format!("scale:{k}"),
                _ => return Err(err(at, "scale(K) divides features by K")),
            }
        }
        Some((_, span)) => {
            return Err(err(
                *span,
                "`normalize` is none, standardize, minmax or scale(K)",
            ));
        }
    };
    let checkpoint_every = integer("checkpoint_every", 0.0, ValidRange::NON_NEGATIVE_INTEGER)?;
    let sequential_split = match get("split_order") {
        None => false,
        Some((Setting::Word(w), _)) if w == "shuffled" => false,
        Some((Setting::Word(w), _)) if w == "sequential" => true,
        Some((_, span)) => {
            return Err(err(
                *span,
                "`split_order` is shuffled (the default) or sequential (in the data's order, for series)",
            ));
        }
    };

    // Which model input gets the features, which output the metrics read.
    let graph = &elab.graph;
    let model_inputs: Vec<(String, crate::ir::ValueId)> = graph
        .inputs
        .iter()
        .filter_map(|&i| match &graph.node(i).op {
            // `step` feeds dropout in a training-mode build; it is not the model's.
            Op::Input { name } if Some(name) != t.label.as_ref() && name != "step" => {
                Some((name.clone(), i))
            }
            _ => None,
        })
        .collect();
    let features_input = match get("features") {
        Some((Setting::Word(w), span)) => {
            if !model_inputs.iter().any(|(n, _)| n == w) {
                return Err(err(*span, format!("the model has no input `{w}`")));
            }
            w.clone()
        }
        _ if model_inputs.len() == 1 => model_inputs[0].0.clone(),
        _ => {
            return Err(err(
                at,
                "the model has several inputs: say which takes the data with `features = NAME`",
            ));
        }
    };
    let prediction = match get("predict") {
        Some((Setting::Word(w), span)) => {
            if !t.model_outputs.iter().any(|(n, _)| n == w) {
                return Err(err(*span, format!("the model has no output `{w}`")));
            }
            w.clone()
        }
        _ => t.model_outputs[0].0.clone(),
    };
    let label_v = t.label.as_ref().map(|label| {
        graph
            .inputs
            .iter()
            .copied()
            .find(|&i| matches!(&graph.node(i).op, Op::Input { name } if name == label))
            .expect("the label is an input")
    });
    let pred_v = t
        .model_outputs
        .iter()
        .find(|(n, _)| *n == prediction)
        .map(|(_, v)| *v)
        .expect("checked above");
    let pred_ty = graph.ty(pred_v).clone();
    let features_v = model_inputs
        .iter()
        .find(|(n, _)| *n == features_input)
        .map(|(_, v)| *v)
        .expect("checked above");
    // The features' normalization is part of every entry (see [`normalize`]).
    let normalization =
        normalize::FeatureNormalization::of_config(&normalize).ok_or_else(|| {
            err(
                normalize_span,
                format!("unknown normalization `{normalize}`"),
            )
        })?;
    let mut model_graph = graph.clone();
    normalize::normalize_features(&mut model_graph, features_v, &normalization, normalize_span)?;
    let mut training_graph = training.graph.clone();
    if let Some(training_features) = training_graph.inputs.iter().copied().find(
        |&i| matches!(&training_graph.node(i).op, Op::Input { name } if *name == features_input),
    ) {
        normalize::normalize_features(
            &mut training_graph,
            training_features,
            &normalization,
            normalize_span,
        )?;
    }
    let task = match label_v.map(|v| graph.ty(v).clone()) {
        Some(label_ty) if label_ty.dtype == DType::I32 => {
            let classes = match pred_ty.shape.dims().last() {
                Some(Dim::Fixed(1)) => 2,
                Some(Dim::Fixed(c)) => *c,
                _ => {
                    return Err(err(
                        at,
                        format!(
                            "the prediction `{prediction}` needs a class dimension, got {pred_ty}"
                        ),
                    ));
                }
            };
            Task::Classification { classes }
        }
        Some(label_ty) => Task::Regression {
            width: label_ty.shape.fixed_elements(),
        },
        // A section with several steps (a GAN) is judged by its losses alone, even when
        // an output happens to have the features' shape.
        None => Task::Unlabelled {
            reconstruction: tt.steps.len() <= 1 && pred_ty == *graph.ty(features_v),
        },
    };
    if let Some((Setting::List(_), span)) = get("metrics")
        && let Some(m) = metrics.iter().find(|m| !m.applies_to(&task))
    {
        let mut d = err(
            *span,
            format!(
                "metric `{m}` does not apply to this {} model",
                task.describe()
            ),
        );
        if matches!(task, Task::Unlabelled { .. }) {
            d = d.with_note(format!(
                "without a `label`, `mae` and `mse` compare the prediction `{prediction}` \
                 ({pred_ty}) with the features `{features_input}` ({}); other metrics need labels",
                graph.ty(features_v)
            ));
        }
        return Err(d);
    }
    let images = match get("images") {
        None => None,
        Some((s, span)) => Some(images::image_grid(
            s,
            *span,
            graph,
            &features_input,
            &t.model_outputs,
        )?),
    };

    let params: Vec<(crate::ir::ValueId, String)> = tt
        .params
        .iter()
        .map(|&p| match &training.graph.node(p).op {
            Op::Param { path, .. } => (p, path.clone()),
            _ => unreachable!("params are Param ops"),
        })
        .collect();
    let plans = steps::plan_steps(t, tt, &params, &settings, &hyper)?;
    let mut step_entries = Vec::with_capacity(plans.len());
    for plan in &plans {
        step_entries.push((
            plan.entry.clone(),
            step_graph(&training_graph, plan, at, gradient_outputs)?,
        ));
    }

    let mut eval = model_graph.clone();
    eval.outputs = vec![("loss".into(), t.loss), (prediction.clone(), pred_v)];
    let several = plans.len() > 1;
    if several {
        for plan in &plans {
            eval.outputs
                .push((format!("loss.{}", plan.name), plan.eval_loss));
        }
    }
    dce::eliminate_dead_code(&mut eval, false);

    let mut infer = model_graph;
    infer.outputs = t.model_outputs.clone();
    dce::eliminate_dead_code(&mut infer, false);
    if let Some(label_v) = label_v
        && infer.contains(label_v)
        && infer.users(label_v).is_empty()
    {
        infer.remove(label_v);
    }

    Ok(TrainingGraphs {
        steps: step_entries,
        eval,
        infer,
        config: TrainConfig {
            data,
            features_input,
            label_input: t.label.clone(),
            prediction,
            task,
            batch,
            epochs,
            split,
            sequential_split,
            seed,
            normalize,
            steps: plans
                .iter()
                .map(|p| TrainStep {
                    name: p.name.clone(),
                    entry: p.entry.clone(),
                    optimizer: p.optimizer.name().to_string(),
                    lr: lr_override.unwrap_or(p.lr),
                    eval_loss: several.then(|| format!("loss.{}", p.name)),
                })
                .collect(),
            schedule,
            metrics,
            early_stop,
            checkpoint_every,
            images,
        },
    })
}

/// One update's entry: the training-mode graph, its loss differentiated with respect to
/// the update's parameters, clipped, and the optimizer's update appended. Its output is
/// the loss, and with `gradient_outputs` each parameter's gradient (`grad.PATH`, before
/// clipping) too.
fn step_graph(
    training: &Graph,
    plan: &steps::StepPlan,
    at: crate::source::Span,
    gradient_outputs: bool,
) -> Result<Graph, Diagnostic> {
    let mut graph = training.clone();
    let scalar = TensorType::new(DType::F32, vec![]);
    let lr_v = graph.add_leaf(Op::Input { name: "lr".into() }, scalar.clone(), at);
    // Dropout or a random source already made the `step` input in the training build.
    let existing_step = graph
        .inputs
        .iter()
        .copied()
        .find(|&i| matches!(&graph.node(i).op, Op::Input { name } if name == "step"));
    let step_v = match existing_step {
        Some(v) => v,
        None => graph.add_leaf(
            Op::Input {
                name: "step".into(),
            },
            scalar,
            at,
        ),
    };
    let wrt: Vec<crate::ir::ValueId> = plan.params.iter().map(|(v, _)| *v).collect();
    let internal = |e: String| {
        Diagnostic::error(
            ErrorCode::ShapeMismatch,
            format!("cannot differentiate this model: {e}"),
            at,
        )
    };
    let mut grads = autodiff::gradients(&mut graph, plan.train_loss, &wrt).map_err(internal)?;
    let mut outputs = vec![("loss".to_string(), plan.train_loss)];
    if gradient_outputs {
        for ((_, path), g) in plan.params.iter().zip(&grads) {
            outputs.push((format!("grad.{path}"), *g));
        }
    }
    if let Some(max_norm) = plan.clip {
        grads =
            optimizer::clip_by_global_norm(&mut graph, &grads, max_norm, at).map_err(internal)?;
    }
    let triples: Vec<_> = plan
        .params
        .iter()
        .zip(&grads)
        .map(|((w, p), g)| (*w, p.clone(), *g))
        .collect();
    optimizer::apply(&mut graph, &plan.optimizer, &triples, lr_v, step_v, at).map_err(internal)?;
    graph.outputs = outputs;
    dce::eliminate_dead_code(&mut graph, false);
    Ok(graph)
}

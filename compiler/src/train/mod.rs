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
use crate::ir::{DType, Dim, Graph, Op, TensorType, ValueId};
use crate::passes::{autodiff, dce};
use crate::source::{Diagnostic, ErrorCode, Span};
use ranges::{Origin, ValidRange};
use section::Setting;
use std::collections::HashMap;
use strata_artifact::Metric;
use strata_artifact::train_config::{
    BUILTIN_DATASETS, DATA_SOURCE_KINDS, EarlyStop, GENERATED_DATASETS, Schedule, ScoredHead, Task,
    TrainConfig, TrainStep,
};

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

/// `r`'s value, or `None` with its mistake added to `errors`.
fn keep<T>(errors: &mut Vec<Diagnostic>, r: Result<T, Diagnostic>) -> Option<T> {
    r.map_err(|d| errors.push(d)).ok()
}

/// The params of an elaborated model's train section, with their paths: those still in
/// its graph (a parameter only an unused binding reads was pruned with it, and nothing
/// it could change reaches the loss).
fn section_params(elab: &Elaborated, t: &TrainElab) -> Vec<(ValueId, String)> {
    t.params
        .iter()
        .filter(|&&p| elab.graph.contains(p))
        .map(|&p| match &elab.graph.node(p).op {
            Op::Param { path, .. } => (p, path.clone()),
            _ => unreachable!("params are Param ops"),
        })
        .collect()
}

/// A section's settings, read and checked against the model: what the entries and the
/// [`TrainConfig`] are built from, short of the graphs.
struct SectionPlan {
    settings: HashMap<String, (Setting, Span)>,
    hyper: HashMap<String, crate::elaborate::value::Value>,
    data: String,
    batch: u64,
    epochs: u64,
    seed: u64,
    split: [f64; 3],
    sequential_split: bool,
    lr_override: Option<f64>,
    schedule: Schedule,
    metrics: Vec<Metric>,
    early_stop: Option<EarlyStop>,
    normalize: String,
    normalize_span: Span,
    normalization: normalize::FeatureNormalization,
    checkpoint_every: u64,
    features_input: String,
    features_v: ValueId,
    prediction: String,
    pred_v: ValueId,
    label_v: Option<ValueId>,
    task: Task,
    /// The other inputs the data fills (a named-array source) and the other labels.
    extra_inputs: Vec<String>,
    extra_label_vs: Vec<ValueId>,
    heads: Vec<(ScoredHead, ValueId)>,
    images: Option<strata_artifact::train_config::ImageGrid>,
}

/// Every mistake in the train section of `elab` (elaborated with its section, in
/// inference mode) that [`build`] would refuse short of building the graphs: each
/// setting is checked on its own, and a check that needs a setting that failed (the
/// metrics need the task, which needs the prediction) is skipped, not repeated.
pub fn check_section(elab: &Elaborated, overrides: &[(String, String)]) -> Vec<Diagnostic> {
    match read_section(elab, overrides) {
        Ok(_) => Vec::new(),
        Err(errors) => errors,
    }
}

fn read_section(
    elab: &Elaborated,
    overrides: &[(String, String)],
) -> Result<SectionPlan, Vec<Diagnostic>> {
    let t: &TrainElab = elab.train.as_ref().expect("elaborated with train = true");
    let hyper: HashMap<String, crate::elaborate::value::Value> =
        elab.hyper_params.iter().cloned().collect();
    let mut errors = Vec::new();
    let settings = section::settings(&t.section, &hyper, &mut errors);
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
    let batch = keep(&mut errors, integer("batch", 32.0, ValidRange::BATCH)).unwrap_or(32);
    let epochs = keep(&mut errors, integer("epochs", 10.0, ValidRange::COUNT)).unwrap_or(10);
    let seed = keep(
        &mut errors,
        integer("seed", 0.0, ValidRange::NON_NEGATIVE_INTEGER),
    )
    .unwrap_or(0);
    let data = match overrides.iter().rev().find(|(k, _)| k == "data") {
        Some((_, v)) => v.clone(),
        None => keep(&mut errors, data_spec(get("data"), &t.section)).unwrap_or_default(),
    };
    let split = keep(&mut errors, split_fractions(get("split"))).unwrap_or([0.8, 0.1, 0.1]);
    let lr_override: Option<f64> = match overrides.iter().rev().find(|(k, _)| k == "lr") {
        None => None,
        Some((_, v)) => keep(
            &mut errors,
            v.parse()
                .map_err(|_| err(at, format!("--set lr={v}: not a number")))
                .and_then(|lr| ValidRange::POSITIVE.check("lr", lr, Origin::Override(at))),
        ),
    };
    let schedule = match get("schedule") {
        None => Schedule::Constant,
        Some((s, span)) => {
            keep(&mut errors, section::schedule(s, *span)).unwrap_or(Schedule::Constant)
        }
    };
    // The output the metrics name for each label (`accuracy(logits, y)`), if they name
    // one, and what they may score it against: the labels, or without one the features
    // (an input).
    let mut scored: Vec<ScoredBy> = Vec::new();
    let labels: Vec<String> = t.label.iter().chain(&t.extra_labels).cloned().collect();
    let references: Vec<String> = match &t.label {
        Some(_) => labels.clone(),
        None => elab
            .graph
            .inputs
            .iter()
            .filter_map(|&i| match &elab.graph.node(i).op {
                Op::Input { name } if name != "step" => Some(name.clone()),
                _ => None,
            })
            .collect(),
    };
    // Each metric with the label it scores (None: the first label's prediction).
    let labelled_metrics: Vec<(Metric, Option<String>)> = match get("metrics") {
        None => Vec::new(),
        Some((Setting::List(items), span)) => items
            .iter()
            .filter_map(|i| {
                let metric = metric_named(i, *span, &t.section).and_then(|(m, target)| {
                    let label = match target {
                        Some(target) => {
                            scored_output(&target, t, &references, &mut scored)?;
                            Some(target.label)
                        }
                        None => None,
                    };
                    Ok((m, label))
                });
                keep(&mut errors, metric)
            })
            .collect(),
        Some((_, span)) => {
            errors.push(err(*span, "`metrics` is a list, e.g. [accuracy, f1]"));
            Vec::new()
        }
    };
    let primary_label = |l: &Option<String>| l.is_none() || *l == t.label;
    let metrics: Vec<Metric> = labelled_metrics
        .iter()
        .filter(|(_, l)| primary_label(l))
        .map(|(m, _)| *m)
        .collect();
    // The first label's output, as the metrics name it.
    let primary_scored: Option<(String, Span)> = scored
        .iter()
        .find(|s| t.label.is_none() || Some(&s.label) == t.label.as_ref())
        .map(|s| (s.output.clone(), s.output_span));
    let mut early_stop = match get("early_stop") {
        None => None,
        Some((s, span)) => keep(&mut errors, section::early_stop(s, *span)),
    };
    if let (Some(es), Some((_, v))) = (
        early_stop.as_mut(),
        overrides.iter().rev().find(|(k, _)| k == "patience"),
    ) {
        let patience = v
            .parse()
            .map_err(|_| err(at, format!("--set patience={v}: not an integer")))
            .and_then(|p| ValidRange::COUNT.check_integer("patience", p, Origin::Override(at)));
        if let Some(p) = keep(&mut errors, patience) {
            es.patience = p;
        }
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
                _ => {
                    errors.push(err(normalize_span, "scale(K) divides features by K"));
                    "none".to_string()
                }
            }
        }
        Some((_, span)) => {
            errors.push(err(
                *span,
                "`normalize` is none, standardize, minmax or scale(K)",
            ));
            "none".to_string()
        }
    };
    let checkpoint_every = keep(
        &mut errors,
        integer("checkpoint_every", 0.0, ValidRange::NON_NEGATIVE_INTEGER),
    )
    .unwrap_or(0);
    let sequential_split = match get("split_order") {
        None => false,
        Some((Setting::Word(w), _)) if w == "shuffled" => false,
        Some((Setting::Word(w), _)) if w == "sequential" => true,
        Some((_, span)) => {
            errors.push(err(
                *span,
                "`split_order` is shuffled (the default) or sequential (in the data's order, for series)",
            ));
            false
        }
    };

    // Which model input gets the features, which output the metrics read.
    let graph = &elab.graph;
    let model_inputs: Vec<(String, ValueId)> = graph
        .inputs
        .iter()
        .filter_map(|&i| match &graph.node(i).op {
            // `step` feeds dropout in a training-mode build; it is not the model's.
            Op::Input { name } if !labels.contains(name) && name != "step" => {
                Some((name.clone(), i))
            }
            _ => None,
        })
        .collect();
    let failed = |name: &str| t.failed.iter().any(|f| f == name);
    let named_data = strata_artifact::train_config::names_arrays(&data);
    if !named_data {
        for extra in &t.extra_labels {
            let span = t
                .section
                .items
                .iter()
                .find_map(|i| match i {
                    crate::syntax::ast::TrainItem::Label { name, span, .. }
                        if name.name == *extra =>
                    {
                        Some(*span)
                    }
                    _ => None,
                })
                .unwrap_or(at);
            errors.push(
                err(span, format!("label `{extra}` gets no data in training"))
                    .with_label("never filled")
                    .with_secondary(data_span_of(get("data"), at), "this data has one label")
                    .with_note(
                        "several labels come from a file of named arrays: \
                         npz(\"f.npz\"), safetensors(\"f.safetensors\") or npy(\"DIR\")",
                    ),
            );
        }
    }
    let features_input = match get("features") {
        Some((Setting::Word(w), span)) => match model_inputs.iter().any(|(n, _)| n == w) {
            true => Some(w.clone()),
            false if failed(w) => None,
            false => {
                let mut d = err(*span, format!("the model has no input `{w}`"));
                let names = model_inputs.iter().map(|(n, _)| n.as_str());
                if let Some(close) = crate::elaborate::closest(w, names) {
                    d = d.with_help(format!("did you mean `{close}`?"));
                }
                errors.push(d);
                None
            }
        },
        _ if model_inputs.len() == 1 => Some(model_inputs[0].0.clone()),
        // Named arrays fill every input; the first is the one `normalize` applies to.
        _ if named_data && !model_inputs.is_empty() => Some(model_inputs[0].0.clone()),
        _ if model_inputs.is_empty() => {
            errors.push(err(at, "the model has no input for the data to fill"));
            None
        }
        _ => {
            errors.push(err(
                at,
                "the model has several inputs: say which takes the data with `features = NAME`",
            ));
            None
        }
    };
    // Other data fills the features and the label: another input would be missing when
    // the first batch runs.
    let data_span = get("data").map_or(at, |(_, span)| *span);
    if named_data {
        keep(
            &mut errors,
            array_mapping(&data, &model_inputs, &labels, t, data_span),
        );
    } else if let Some(features) = &features_input {
        for (name, v) in model_inputs.iter().filter(|(n, _)| n != features) {
            let label = match &t.label {
                Some(l) => format!(" and `{l}` (the label)"),
                None => String::new(),
            };
            errors.push(
                err(
                    graph.node(*v).span,
                    format!("input `{name}` gets no data in training"),
                )
                .with_label("never filled")
                .with_secondary(at, "this section trains the model")
                .with_note(format!(
                    "the data fills `{features}` (the features){label}, and nothing else"
                ))
                .with_help(
                    "a file of named arrays fills every input by name: \
                     npz(\"f.npz\"), safetensors(\"f.safetensors\") or npy(\"DIR\")",
                ),
            );
        }
    }
    let prediction = match get("predict") {
        Some((Setting::Word(w), span)) => match t.model_outputs.iter().any(|(n, _)| n == w) {
            true => Some(w.clone()),
            false if failed(w) => None,
            false => {
                let mut d = err(*span, format!("the model has no output `{w}`"));
                let names = t.model_outputs.iter().map(|(n, _)| n.as_str());
                if let Some(close) = crate::elaborate::closest(w, names) {
                    d = d.with_help(format!("did you mean `{close}`?"));
                }
                errors.push(d);
                None
            }
        },
        _ => match &primary_scored {
            Some((output, _)) => Some(output.clone()),
            None => t.model_outputs.first().map(|(n, _)| n.clone()),
        },
    };
    if let (Some((output, at)), Some((Setting::Word(predicted), _))) =
        (&primary_scored, get("predict"))
        && output != predicted
    {
        errors.push(
            err(
                *at,
                format!("the metrics score `{output}`, but `predict` names `{predicted}`"),
            )
            .with_note("the metrics score the prediction: name the same output"),
        );
    }
    let label_v = t.label.as_ref().map(|label| {
        graph
            .inputs
            .iter()
            .copied()
            .find(|&i| matches!(&graph.node(i).op, Op::Input { name } if name == label))
            .expect("the label is an input")
    });
    let pred_v = prediction.as_ref().map(|prediction| {
        t.model_outputs
            .iter()
            .find(|(n, _)| n == prediction)
            .map(|(_, v)| *v)
            .expect("checked above")
    });
    let features_v = features_input.as_ref().map(|features| {
        model_inputs
            .iter()
            .find(|(n, _)| n == features)
            .map(|(_, v)| *v)
            .expect("checked above")
    });
    // The features' normalization is part of every entry (see [`normalize`]).
    let normalization = keep(
        &mut errors,
        normalize::FeatureNormalization::of_config(&normalize).ok_or_else(|| {
            err(
                normalize_span,
                format!("unknown normalization `{normalize}`"),
            )
        }),
    );
    // The task needs the prediction and the label (or, without one, the features).
    let input_v = |label: &str| {
        graph
            .inputs
            .iter()
            .copied()
            .find(|&i| matches!(&graph.node(i).op, Op::Input { name } if name == label))
    };
    let task = match (pred_v, features_v, t.label_failed) {
        (Some(pred_v), Some(features_v), false) => match label_v {
            Some(label_v) => keep(
                &mut errors,
                task_of(
                    graph.ty(pred_v),
                    graph.ty(label_v),
                    prediction.as_deref().unwrap_or_default(),
                    at,
                ),
            ),
            // A section with several steps (a GAN) is judged by its losses alone,
            // even when an output happens to have the features' shape.
            None => Some(Task::Unlabelled {
                reconstruction: t.steps.len() <= 1 && graph.ty(pred_v) == graph.ty(features_v),
            }),
        },
        _ => None,
    };
    // The outputs the metrics score against the other labels.
    let mut heads = Vec::new();
    for by in scored.iter().filter(|s| t.extra_labels.contains(&s.label)) {
        let output_v = t
            .model_outputs
            .iter()
            .find(|(n, _)| *n == by.output)
            .map(|(_, v)| *v)
            .expect("checked by scored_output");
        let Some(label_v) = input_v(&by.label) else {
            continue;
        };
        let Some(task) = keep(
            &mut errors,
            task_of(
                graph.ty(output_v),
                graph.ty(label_v),
                &by.output,
                by.output_span,
            ),
        ) else {
            continue;
        };
        let metrics: Vec<Metric> = labelled_metrics
            .iter()
            .filter(|(_, l)| l.as_ref() == Some(&by.label))
            .map(|(m, _)| *m)
            .collect();
        if let Some(m) = metrics.iter().find(|m| !m.applies_to(&task)) {
            errors.push(err(
                by.output_span,
                format!(
                    "metric `{m}` does not apply to `{}` against `{}`, a {} head",
                    by.output,
                    by.label,
                    task.describe()
                ),
            ));
        }
        heads.push((
            ScoredHead {
                output: by.output.clone(),
                label: by.label.clone(),
                task,
                metrics,
            },
            output_v,
        ));
    }
    if let (Some(task), Some((Setting::List(_), span))) = (&task, get("metrics"))
        && let Some(m) = metrics.iter().find(|m| !m.applies_to(task))
    {
        let mut d = err(
            *span,
            format!(
                "metric `{m}` does not apply to this {} model",
                task.describe()
            ),
        );
        if let (Task::Unlabelled { .. }, Some(pred_v), Some(features_v)) =
            (task, pred_v, features_v)
        {
            d = d.with_note(format!(
                "without a `label`, `mae` and `mse` compare the prediction `{}` \
                 ({}) with the features `{}` ({}); other metrics need labels",
                prediction.as_deref().unwrap_or_default(),
                graph.ty(pred_v),
                features_input.as_deref().unwrap_or_default(),
                graph.ty(features_v)
            ));
        }
        errors.push(d);
    }
    if let (Some(es), Some((_, span))) = (&early_stop, get("early_stop")) {
        if let Some(task) = &task {
            let span =
                section::word_span(&t.section.items, "early_stop", &es.monitor).unwrap_or(*span);
            keep(&mut errors, monitored(&es.monitor, task, span));
        }
        if split[1] == 0.0 {
            errors.push(
                err(
                    *span,
                    "early stopping watches the validation split, which is empty",
                )
                .with_note(format!(
                    "split is {} / {} / {} (train / val / test)",
                    split[0], split[1], split[2]
                )),
            );
        }
    }
    let images = match (get("images"), &features_input) {
        (Some((s, span)), Some(features_input)) => keep(
            &mut errors,
            images::image_grid(s, *span, graph, features_input, &t.model_outputs),
        ),
        _ => None,
    };
    let extra_inputs: Vec<String> = match (&features_input, named_data) {
        (Some(features), true) => model_inputs
            .iter()
            .filter(|(n, _)| n != features)
            .map(|(n, _)| n.clone())
            .collect(),
        _ => Vec::new(),
    };
    let extra_label_vs: Vec<ValueId> = t.extra_labels.iter().filter_map(|l| input_v(l)).collect();
    // The updates: optimizers, clipping and each step's parameters.
    if let Err(mut step_errors) =
        steps::plan_steps(t, t, &section_params(elab, t), &settings, &hyper)
    {
        errors.append(&mut step_errors);
    }
    match (
        features_input,
        features_v,
        prediction,
        pred_v,
        task,
        normalization,
    ) {
        (
            Some(features_input),
            Some(features_v),
            Some(prediction),
            Some(pred_v),
            Some(task),
            Some(normalization),
        ) if errors.is_empty() => Ok(SectionPlan {
            settings,
            hyper,
            data,
            batch,
            epochs,
            seed,
            split,
            sequential_split,
            lr_override,
            schedule,
            metrics,
            early_stop,
            normalize,
            normalize_span,
            normalization,
            checkpoint_every,
            features_input,
            features_v,
            prediction,
            pred_v,
            label_v,
            task,
            extra_inputs,
            extra_label_vs,
            heads,
            images,
        }),
        // Without errors here, a part is missing because the model's elaboration
        // failed (its label), and that mistake is reported there.
        _ => Err(errors),
    }
}

/// What a model learns from an output of type `pred` against a label of type `label`:
/// classes for an `i32` label (the output's last dimension, or 2 for one logit), values
/// for an `f32` one.
fn task_of(
    pred: &TensorType,
    label: &TensorType,
    output: &str,
    at: Span,
) -> Result<Task, Diagnostic> {
    if label.dtype != DType::I32 {
        return Ok(Task::Regression {
            width: label.shape.fixed_elements(),
        });
    }
    match pred.shape.dims().last() {
        Some(Dim::Fixed(1)) => Ok(Task::Classification { classes: 2 }),
        Some(Dim::Fixed(c)) => Ok(Task::Classification { classes: *c }),
        _ => Err(err(
            at,
            format!("the prediction `{output}` needs a class dimension, got {pred}"),
        )),
    }
}

/// Where the `data` setting is written, or `at` without one.
fn data_span_of(setting: Option<&(Setting, Span)>, at: Span) -> Span {
    setting.map_or(at, |(_, span)| *span)
}

/// Checks the `NAME = "ARRAY"` pairs of a named-array source (`npz("f.npz", a = "left")`):
/// each names a model input or a label. (Whether the arrays exist is the file's to say,
/// when `train` loads it.)
fn array_mapping(
    data: &str,
    inputs: &[(String, ValueId)],
    labels: &[String],
    t: &TrainElab,
    span: Span,
) -> Result<(), Diagnostic> {
    let names: Vec<&str> = inputs
        .iter()
        .map(|(n, _)| n.as_str())
        .chain(labels.iter().map(|l| l.as_str()))
        .collect();
    for (name, array) in strata_artifact::train_config::array_names(data) {
        // A label whose declaration failed is reported there.
        if names.contains(&name.as_str()) || t.failed.contains(&name) {
            continue;
        }
        let at = section::word_span(&t.section.items, "data", &array).unwrap_or(span);
        let mut d = err(
            at,
            format!("`{name} = \"{array}\"` names no input or label of this section"),
        )
        .with_label("not an input or label");
        if let Some(close) = crate::elaborate::closest(&name, names.iter().copied()) {
            d = d.with_help(format!("did you mean `{close}`?"));
        }
        return Err(d.with_note(format!("inputs and labels: {}", names.join(", "))));
    }
    Ok(())
}

/// `data = …` as the training driver's source spec (`digits`, `sunspots,window=20`,
/// `csv:f.csv,label=-1`), with the dataset's name or the source's kind checked.
fn data_spec(
    setting: Option<&(Setting, Span)>,
    section: &crate::syntax::ast::TrainDef,
) -> Result<String, Diagnostic> {
    let spec = match setting {
        None => return Ok("digits".to_string()),
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
            let builtin = BUILTIN_DATASETS.contains(&name.as_str());
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
    };
    let span = setting.map_or(section.model.span, |(_, s)| *s);
    // `kind:rest` names a kind of source; a bare spec starts with a dataset's name.
    let (name, known, what): (&str, Vec<&str>, &str) = match spec.split_once(':') {
        Some((kind, _)) => (
            kind,
            DATA_SOURCE_KINDS
                .iter()
                .chain(GENERATED_DATASETS)
                .copied()
                .collect(),
            "kind of data source",
        ),
        None => (
            spec.split(',').next().unwrap_or_default().trim(),
            BUILTIN_DATASETS
                .iter()
                .chain(GENERATED_DATASETS)
                .copied()
                .collect(),
            "dataset",
        ),
    };
    if known.contains(&name) {
        return Ok(spec);
    }
    let span = section::word_span(&section.items, "data", name).unwrap_or(span);
    let mut d = Diagnostic::error(
        ErrorCode::UnknownName,
        format!("unknown {what} `{name}`"),
        span,
    )
    .with_label(format!("not a {what}"));
    if let Some(close) = crate::elaborate::closest(name, known.iter().copied()) {
        d = d.with_help(format!("did you mean `{close}`?"));
    }
    Err(d.with_note(format!(
        "built-in datasets: {}; generated: {}; files: {}",
        BUILTIN_DATASETS.join(", "),
        GENERATED_DATASETS.join(", "),
        DATA_SOURCE_KINDS
            .iter()
            .map(|k| format!("{k}(\"PATH\")"))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// `split = train / val / test` fractions.
fn split_fractions(setting: Option<&(Setting, Span)>) -> Result<[f64; 3], Diagnostic> {
    match setting {
        None => Ok([0.8, 0.1, 0.1]),
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
            Ok(out)
        }
        Some((_, span)) => Err(err(
            *span,
            "`split` is train / val / test fractions, e.g. 0.8 / 0.1 / 0.1",
        )),
    }
}

/// The output and label a metric names (`accuracy(logits, y)`), with the call's span.
struct MetricTarget {
    output: String,
    label: String,
    /// Where the output's and the label's names are written.
    output_span: Span,
    label_span: Span,
}

/// One item of `metrics = […]` (a name, or a call naming the output and label it
/// scores), at its own span when it is a name.
fn metric_named(
    item: &Setting,
    span: Span,
    section: &crate::syntax::ast::TrainDef,
) -> Result<(Metric, Option<MetricTarget>), Diagnostic> {
    let (w, target) = match item {
        Setting::Word(w) => (w, None),
        Setting::Call { name, args } => {
            let at = section::word_span(&section.items, "metrics", name).unwrap_or(span);
            let [(None, Setting::Word(output)), (None, Setting::Word(label))] = &args[..] else {
                return Err(err(
                    at,
                    format!(
                        "`{name}(…)` names the output and the label it scores, e.g. `{name}(logits, y)`"
                    ),
                ));
            };
            let word = |w: &str| section::word_span(&section.items, "metrics", w).unwrap_or(at);
            let target = MetricTarget {
                output: output.clone(),
                label: label.clone(),
                output_span: word(output),
                label_span: word(label),
            };
            (name, Some(target))
        }
        _ => return Err(err(span, format!("metrics are: {}", Metric::names_list()))),
    };
    let metric = Metric::from_name(w).ok_or_else(|| {
        let span = section::word_span(&section.items, "metrics", w).unwrap_or(span);
        let mut d = Diagnostic::error(
            ErrorCode::UnknownName,
            format!("unknown metric `{w}`"),
            span,
        )
        .with_label("not a metric");
        if let Some(close) = crate::elaborate::closest(w, Metric::ALL.iter().map(|m| m.name())) {
            d = d.with_help(format!("did you mean `{close}`?"));
        }
        d.with_note(format!("metrics are: {}", Metric::names_list()))
    })?;
    Ok((metric, target))
}

/// The output the metrics score against one label, where the first metric naming that
/// label names it.
struct ScoredBy {
    label: String,
    output: String,
    output_span: Span,
}

/// Checks what a metric names against the section: a model output, the same one as
/// every other metric of the same label (`scored` holds the first per label), and one of
/// `references` (the section's labels, or without one the inputs a reconstruction may be
/// compared with).
fn scored_output(
    target: &MetricTarget,
    t: &TrainElab,
    references: &[String],
    scored: &mut Vec<ScoredBy>,
) -> Result<(), Diagnostic> {
    let outputs = t.model_outputs.iter().map(|(n, _)| n.as_str());
    if !t.model_outputs.iter().any(|(n, _)| *n == target.output) {
        let mut d = err(
            target.output_span,
            format!(
                "a metric scores a model output; `{}` is none",
                target.output
            ),
        )
        .with_label("not an output");
        if let Some(close) = crate::elaborate::closest(&target.output, outputs) {
            d = d.with_help(format!("did you mean `{close}`?"));
        }
        return Err(d);
    }
    // A label whose declaration failed is reported there, not again here.
    if t.failed.contains(&target.label) {
        return Ok(());
    }
    if !references.contains(&target.label) {
        let what = match (&t.label, t.extra_labels.is_empty()) {
            (Some(label), true) => format!("the section's label `{label}`"),
            (Some(_), false) => format!("one of the section's labels ({})", references.join(", ")),
            (None, _) => "the features input (the section has no label)".to_string(),
        };
        let mut d = err(
            target.label_span,
            format!("a metric scores against {what}, not `{}`", target.label),
        )
        .with_label(match references.len() {
            1 => "not the label",
            _ => "not a label",
        });
        if let Some(close) =
            crate::elaborate::closest(&target.label, references.iter().map(|s| s.as_str()))
        {
            d = d.with_help(format!("did you mean `{close}`?"));
        }
        return Err(d);
    }
    // Without labels, every metric compares one output with the features.
    let same_label = |s: &&ScoredBy| t.label.is_none() || s.label == target.label;
    match scored.iter().find(same_label) {
        Some(first) if first.output != target.output => Err(err(
            target.output_span,
            match t.extra_labels.is_empty() {
                true => format!(
                    "the metrics score one output; this one names `{}`, an earlier one `{}`",
                    target.output, first.output
                ),
                false => format!(
                    "the metrics of label `{}` score one output; this one names `{}`, an \
                     earlier one `{}`",
                    target.label, target.output, first.output
                ),
            },
        )
        .with_secondary(first.output_span, format!("`{}` here", first.output))),
        Some(_) => Ok(()),
        None => {
            scored.push(ScoredBy {
                label: target.label.clone(),
                output: target.output.clone(),
                output_span: target.output_span,
            });
            Ok(())
        }
    }
}

/// What `early_stop(on = …)` watches, checked against what a model of `task` computes
/// (the training driver's monitor accepts the same).
fn monitored(monitor: &str, task: &Task, span: Span) -> Result<(), Diagnostic> {
    let watchable: Vec<String> = std::iter::once("val.loss".to_string())
        .chain(task.metrics().iter().map(|m| format!("val.{}", m.name())))
        .collect();
    if watchable.iter().any(|w| w == monitor) {
        return Ok(());
    }
    let mut d = err(
        span,
        format!(
            "early stopping watches `{monitor}`, which this {} model does not compute",
            task.describe()
        ),
    )
    .with_label("not computed");
    if let Some(close) = crate::elaborate::closest(monitor, watchable.iter().map(|s| s.as_str())) {
        d = d.with_help(format!("did you mean `{close}`?"));
    }
    Err(d.with_note(format!("it can watch: {}", watchable.join(", "))))
}

/// The first of a section's mistakes in the file, as `strata check` lists them. None
/// listed means a part of the model the section names failed to elaborate, which a
/// compile reports before it gets here; said plainly rather than assumed.
fn first_in_file(errors: Vec<Diagnostic>, t: &TrainElab) -> Diagnostic {
    errors
        .into_iter()
        .min_by_key(|d| d.span.start)
        .unwrap_or_else(|| {
            err(
                t.section.model.span,
                "this train section names a part of the model that failed to elaborate",
            )
        })
}

/// Builds the entries' graphs from the model elaborated for inference (`elab`: eval
/// and infer) and for training (`training`: the train step; dropout and batch norm take
/// their training behaviour). `overrides` are the command line's train settings;
/// `gradient_outputs` adds each update's gradients to its entry's outputs (`grad.PATH`).
/// The section's first mistake in the file (of those [`check_section`] lists) if it has any.
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
    let SectionPlan {
        settings,
        hyper,
        data,
        batch,
        epochs,
        seed,
        split,
        sequential_split,
        lr_override,
        schedule,
        metrics,
        early_stop,
        normalize,
        normalize_span,
        normalization,
        checkpoint_every,
        features_input,
        features_v,
        prediction,
        pred_v,
        label_v,
        task,
        extra_inputs,
        extra_label_vs,
        heads,
        images,
    } = read_section(elab, overrides).map_err(|errors| first_in_file(errors, t))?;
    let at = t.section.model.span;
    let graph = &elab.graph;
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
    let params = section_params(training, tt);
    let plans = steps::plan_steps(t, tt, &params, &settings, &hyper)
        .map_err(|errors| first_in_file(errors, t))?;
    let mut step_entries = Vec::with_capacity(plans.len());
    for (i, plan) in plans.iter().enumerate() {
        // The terms are logged from the first update of each batch (before any update).
        let terms = if i == 0 { &tt.terms[..] } else { &[] };
        step_entries.push((
            plan.entry.clone(),
            step_graph(&training_graph, plan, terms, at, gradient_outputs)?,
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
    for (name, v) in &t.terms {
        eval.outputs.push((term_output(name), *v));
    }
    for (head, v) in &heads {
        if !eval.outputs.iter().any(|(n, _)| *n == head.output) {
            eval.outputs.push((head.output.clone(), *v));
        }
    }
    dce::eliminate_dead_code(&mut eval, false);

    let mut infer = model_graph;
    infer.outputs = t.model_outputs.clone();
    dce::eliminate_dead_code(&mut infer, false);
    for label_v in label_v.iter().chain(&extra_label_vs) {
        if infer.contains(*label_v) && infer.users(*label_v).is_empty() {
            infer.remove(*label_v);
        }
    }

    Ok(TrainingGraphs {
        steps: step_entries,
        eval,
        infer,
        config: TrainConfig {
            data,
            features_input,
            label_input: t.label.clone(),
            extra_inputs,
            extra_labels: t.extra_labels.clone(),
            heads: heads.into_iter().map(|(h, _)| h).collect(),
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
            terms: t.terms.iter().map(|(name, _)| name.clone()).collect(),
        },
    })
}

/// The output of `eval` and of the first training entry that holds term `name`.
fn term_output(name: &str) -> String {
    strata_artifact::train_config::term_output(name)
}

/// One update's entry: the training-mode graph, its loss differentiated with respect to
/// the update's parameters, clipped, and the optimizer's update appended. Its output is
/// the loss, each of `terms` (`term.NAME`), and with `gradient_outputs` each parameter's gradient (`grad.PATH`, before
/// clipping) too.
fn step_graph(
    training: &Graph,
    plan: &steps::StepPlan,
    terms: &[(String, ValueId)],
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
    outputs.extend(terms.iter().map(|(name, v)| (term_output(name), *v)));
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

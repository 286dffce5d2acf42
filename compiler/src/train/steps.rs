//! The updates a training step makes: one for a plain section, or one per
//! `step NAME { … }` block, each with its own loss, optimizer and parameters (a GAN's
//! discriminator and generator). Every batch runs them in the section's order, each as
//! its own entry (`train_NAME`), so a later step sees the parameters an earlier one just
//! updated (Goodfellow et al. 2014, Algorithm 1, with k = 1).
//!
//! A step's parameters are named by `updates = [prefix, …]`: a prefix is a dotted path
//! (a layer or block instance's name, a block call's scope like `generator0`) and selects
//! the parameter at that path and every one under it. Every trainable parameter must be
//! updated by exactly one step: two optimizers on one parameter would fight over it (and
//! share its optimizer state, which is named after the parameter), and a parameter no
//! step updates is almost always a misspelled prefix.

use super::optimizer::Optimizer;
use super::ranges::ValidRange;
use super::section::{self, Setting};
use crate::elaborate::value::Value;
use crate::elaborate::{StepElab, TrainElab};
use crate::ir::ValueId;
use crate::source::Span;
use crate::source::{Diagnostic, ErrorCode};
use crate::syntax::ast::TrainItem;
use std::collections::HashMap;

/// The entry of a section without steps.
pub const SINGLE_ENTRY: &str = "train_step";

/// One update, resolved against the training-mode graph.
pub struct StepPlan {
    /// The step's name (`train` for a section without steps).
    pub name: String,
    /// Its entry: [`SINGLE_ENTRY`] or `train_<name>`.
    pub entry: String,
    /// Its loss in the training-mode graph, and in the inference-mode graph (for `eval`).
    pub train_loss: ValueId,
    pub eval_loss: ValueId,
    /// The parameters it updates (training-mode graph) with their paths.
    pub params: Vec<(ValueId, String)>,
    pub optimizer: Optimizer,
    pub lr: f64,
    pub clip: Option<f64>,
}

fn err(span: Span, msg: impl Into<String>) -> Diagnostic {
    Diagnostic::error(ErrorCode::BadArgument, msg, span)
}

fn misplaced(span: Span, msg: impl Into<String>) -> Diagnostic {
    Diagnostic::error(ErrorCode::Misplaced, msg, span)
}

/// The default optimizer: Adam with PyTorch's defaults.
fn default_optimizer() -> (Optimizer, f64) {
    (
        Optimizer::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        },
        1e-3,
    )
}

/// `optimizer` and `clip` from `settings` (a section's or a step's); each that is
/// wrong adds its mistake to `errors` and takes its default.
fn optimizer_and_clip(
    settings: &HashMap<String, (Setting, Span)>,
    errors: &mut Vec<Diagnostic>,
) -> (Optimizer, f64, Option<f64>) {
    let (opt, lr) = match settings.get("optimizer") {
        None => default_optimizer(),
        Some((s, span)) => section::optimizer(s, *span).unwrap_or_else(|d| {
            errors.push(d);
            default_optimizer()
        }),
    };
    let clip = match settings.get("clip") {
        None => None,
        Some((Setting::Number(v), _)) if ValidRange::POSITIVE.contains(*v) => Some(*v),
        Some((_, span)) => {
            errors.push(err(*span, "`clip` is a positive maximum gradient norm"));
            None
        }
    };
    (opt, lr, clip)
}

/// The section's updates. `t` and `tt` are the section elaborated in inference and in
/// training mode (same steps, same parameter paths); `params` are `tt`'s trainable
/// parameters with their paths; `section_settings` are the section's own settings.
/// Every mistake is listed, each step's on its own.
pub fn plan_steps(
    t: &TrainElab,
    tt: &TrainElab,
    params: &[(ValueId, String)],
    section_settings: &HashMap<String, (Setting, Span)>,
    hyper: &HashMap<String, Value>,
) -> Result<Vec<StepPlan>, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    if tt.steps.is_empty() {
        let (optimizer, lr, clip) = optimizer_and_clip(section_settings, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        return Ok(vec![StepPlan {
            name: "train".into(),
            entry: SINGLE_ENTRY.into(),
            train_loss: tt.loss,
            eval_loss: t.loss,
            params: params.to_vec(),
            optimizer,
            lr,
            clip,
        }]);
    }
    for key in ["optimizer", "clip", "updates"] {
        if let Some((_, span)) = section_settings.get(key) {
            errors.push(misplaced(
                *span,
                format!("with `step`s, `{key}` belongs inside each step"),
            ));
        }
    }
    if let Some((_, span)) = section_settings.get("early_stop") {
        errors.push(misplaced(
            *span,
            "early stopping watches one loss; a section with steps has one per step",
        )
        .with_note("the losses of an adversarial game do not measure progress; train a fixed number of epochs"));
    }
    let mut owner: HashMap<String, &str> = HashMap::new();
    let mut plans = Vec::new();
    let mut every_update_read = true;
    for (step, eval_step) in tt.steps.iter().zip(&t.steps) {
        let settings = step_settings(step, hyper, &mut errors);
        let (optimizer, lr, clip) = optimizer_and_clip(&settings, &mut errors);
        let chosen = match updated_params(step, &settings, params) {
            Ok(chosen) => chosen,
            Err(d) => {
                errors.push(d);
                every_update_read = false;
                continue;
            }
        };
        for (_, path) in &chosen {
            if let Some(other) = owner.insert(path.clone(), step.name.name.as_str()) {
                let span = settings.get("updates").map_or(step.name.span, |(_, s)| *s);
                errors.push(
                    err(
                        span,
                        format!(
                            "parameter `{path}` is updated by step `{other}` and by step `{}`",
                            step.name.name
                        ),
                    )
                    .with_note(
                        "each parameter belongs to one step: give the steps disjoint prefixes",
                    ),
                );
                break;
            }
        }
        plans.push(StepPlan {
            name: step.name.name.clone(),
            entry: format!("train_{}", step.name.name),
            train_loss: step.loss,
            eval_loss: eval_step.loss,
            params: chosen,
            optimizer,
            lr,
            clip,
        });
    }
    // With an `updates` that could not be read, its parameters would be reported too.
    if every_update_read
        && let Some((_, path)) = params.iter().find(|(_, p)| !owner.contains_key(p))
    {
        let names: Vec<&str> = tt.steps.iter().map(|s| s.name.name.as_str()).collect();
        errors.push(
            err(
                tt.section.model.span,
                format!("no step updates parameter `{path}`"),
            )
            .with_note(format!(
                "every parameter is updated by one of the steps ({}): add its prefix to an `updates`",
                names.join(", ")
            )),
        );
    }
    match errors.is_empty() {
        true => Ok(plans),
        false => Err(errors),
    }
}

/// A step's settings; only `loss`, `optimizer`, `updates` and `clip` belong there (a
/// setting that does not is left out, its mistake in `errors`).
fn step_settings(
    step: &StepElab,
    hyper: &HashMap<String, Value>,
    errors: &mut Vec<Diagnostic>,
) -> HashMap<String, (Setting, Span)> {
    const IN_STEP: [&str; 4] = ["loss", "optimizer", "updates", "clip"];
    let mut kept = Vec::new();
    for item in &step.items {
        let (key, span) = match item {
            TrainItem::Setting { key, span, .. } => (key.name.as_str(), *span),
            TrainItem::Call(call) => (call.callee.name.as_str(), call.span),
            TrainItem::Label { span, .. }
            | TrainItem::Step { span, .. }
            | TrainItem::Term { span, .. } => ("", *span),
        };
        if !IN_STEP.contains(&key) {
            let what = if key.is_empty() {
                "this".to_string()
            } else {
                format!("`{key}`")
            };
            errors.push(
                misplaced(
                    span,
                    format!(
                        "{what} is a setting of the whole section, not of step `{}`",
                        step.name.name
                    ),
                )
                .with_note("a step sets its loss, optimizer, updates and clip"),
            );
            continue;
        }
        kept.push(item.clone());
    }
    section::settings_of(&kept, hyper, errors)
}

/// The parameters `updates = [prefix, …]` selects, in creation order.
fn updated_params(
    step: &StepElab,
    settings: &HashMap<String, (Setting, Span)>,
    params: &[(ValueId, String)],
) -> Result<Vec<(ValueId, String)>, Diagnostic> {
    let Some((setting, span)) = settings.get("updates") else {
        return Err(Diagnostic::error(
            ErrorCode::MissingOutput,
            format!(
                "step `{}` does not say which parameters it updates",
                step.name.name
            ),
            step.name.span,
        )
        .with_label("this step")
        .with_help("name them by prefix, e.g. `updates = [generator]`"));
    };
    let words = match setting {
        Setting::Word(w) => vec![w.clone()],
        Setting::List(items) if !items.is_empty() => items
            .iter()
            .map(|i| match i {
                Setting::Word(w) => Ok(w.clone()),
                _ => Err(err(*span, "`updates` lists parameter prefixes by name")),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(err(
                *span,
                "`updates` names parameter prefixes, e.g. `updates = [generator]`",
            ));
        }
    };
    let under = |prefix: &str, path: &str| {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('.'))
    };
    for prefix in &words {
        if !params.iter().any(|(_, p)| under(prefix, p)) {
            let mut tops: Vec<&str> = params
                .iter()
                .map(|(_, p)| p.split('.').next().unwrap_or(p))
                .collect();
            tops.sort_unstable();
            tops.dedup();
            return Err(
                err(*span, format!("`{prefix}` is the prefix of no parameter")).with_note(format!(
                    "the model's parameters are under: {}",
                    tops.join(", ")
                )),
            );
        }
    }
    Ok(params
        .iter()
        .filter(|(_, p)| words.iter().any(|w| under(w, p)))
        .cloned()
        .collect())
}

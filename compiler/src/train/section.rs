//! Reading a `train` section's settings: every value is a compile-time constant, a name,
//! a list, or a call with named arguments (`adam(lr = 1e-3)`); mistakes are diagnostics
//! at the setting's span.

use super::optimizer::Optimizer;
use super::ranges::{Origin, ValidRange};
use crate::elaborate::value::Value;
use crate::source::Span;
use crate::source::{Diagnostic, ErrorCode};
use crate::syntax::ast::{BinOp, Expr, ExprKind, TrainDef, TrainItem};
use std::collections::HashMap;
use strata_artifact::Metric;
use strata_artifact::train_config::{EarlyStop, Schedule};

/// A setting's value, evaluated.
#[derive(Clone, Debug, PartialEq)]
pub enum Setting {
    Number(f64),
    Word(String),
    List(Vec<Setting>),
    Call {
        name: String,
        args: Vec<(Option<String>, Setting)>,
    },
}

fn bad(span: Span, msg: impl Into<String>) -> Diagnostic {
    Diagnostic::error(ErrorCode::BadArgument, msg, span)
}

/// Evaluates a setting expression; names that are hyper-parameters become their values.
pub fn eval(expr: &Expr, hyper: &HashMap<String, Value>) -> Result<Setting, Diagnostic> {
    Ok(match &expr.kind {
        ExprKind::Number { value, .. } => Setting::Number(*value),
        ExprKind::Str(s) => Setting::Word(s.clone()),
        ExprKind::Path(parts) => {
            let name: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
            let name = name.join(".");
            match hyper.get(&name) {
                Some(Value::Number { value, .. }) => Setting::Number(*value),
                Some(Value::Str(s)) => Setting::Word(s.clone()),
                _ => Setting::Word(name),
            }
        }
        ExprKind::List(items) => Setting::List(
            items
                .iter()
                .map(|i| eval(i, hyper))
                .collect::<Result<_, _>>()?,
        ),
        ExprKind::Neg(x) => match eval(x, hyper)? {
            Setting::Number(v) => Setting::Number(-v),
            _ => return Err(bad(expr.span, "only numbers can be negated")),
        },
        ExprKind::Binary(op, a, b) => {
            let (a, b) = (eval(a, hyper)?, eval(b, hyper)?);
            match (a, b) {
                (Setting::Number(x), Setting::Number(y)) if *op != BinOp::Div => {
                    Setting::Number(match op {
                        BinOp::Add => x + y,
                        BinOp::Sub => x - y,
                        _ => x * y,
                    })
                }
                // `split = 0.8 / 0.1 / 0.1` reads as a list of fractions.
                (a, Setting::Number(y)) if *op == BinOp::Div => {
                    let mut items = match a {
                        Setting::List(items) => items,
                        other => vec![other],
                    };
                    items.push(Setting::Number(y));
                    Setting::List(items)
                }
                _ => return Err(bad(expr.span, "arithmetic on settings takes numbers")),
            }
        }
        ExprKind::Call(call) => Setting::Call {
            name: call.callee.name.clone(),
            args: call
                .args
                .iter()
                .map(|a| {
                    Ok((
                        a.name.as_ref().map(|n| n.name.clone()),
                        eval(&a.value, hyper)?,
                    ))
                })
                .collect::<Result<_, Diagnostic>>()?,
        },
        ExprKind::Pipe(..) => return Err(bad(expr.span, "a setting cannot be a pipeline")),
    })
}

/// The settings of a section by key, with their spans (the loss, the label and the
/// `step` blocks excluded). A setting that cannot be read, or that is no train setting,
/// is left out, its mistake added to `errors`.
pub fn settings(
    section: &TrainDef,
    hyper: &HashMap<String, Value>,
    errors: &mut Vec<Diagnostic>,
) -> HashMap<String, (Setting, Span)> {
    let mut settings = settings_of(&section.items, hyper, errors);
    let mut keys: Vec<(String, Span)> =
        settings.iter().map(|(k, (_, s))| (k.clone(), *s)).collect();
    keys.sort_by_key(|(_, s)| s.start);
    for (key, span) in keys
        .into_iter()
        .filter(|(k, _)| !SECTION_KEYS.contains(&k.as_str()))
    {
        let mut d = Diagnostic::error(
            ErrorCode::BadArgument,
            format!("`{key}` is not a train setting"),
            span,
        )
        .with_label("unknown setting");
        d = match crate::elaborate::closest(&key, SECTION_KEYS.iter().copied()) {
            Some(close) => d.with_help(format!("did you mean `{close}`?")),
            None => d.with_note(format!("train settings: {}", SECTION_KEYS.join(", "))),
        };
        errors.push(d);
        settings.remove(&key);
    }
    settings
}

/// Where `word` is written in the value of setting `key` among `items` (a name in a
/// list, a call's name, a string): a finer span for a mistake about that word.
pub fn word_span(items: &[TrainItem], key: &str, word: &str) -> Option<Span> {
    fn find(expr: &Expr, word: &str) -> Option<Span> {
        match &expr.kind {
            ExprKind::Path(parts) => {
                let name: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
                (name.join(".") == word).then_some(expr.span)
            }
            ExprKind::Str(s) => (s == word).then_some(expr.span),
            ExprKind::List(items) => items.iter().find_map(|i| find(i, word)),
            ExprKind::Call(call) => match call.callee.name == word {
                true => Some(call.callee.span),
                false => call.args.iter().find_map(|a| find(&a.value, word)),
            },
            _ => None,
        }
    }
    items.iter().find_map(|item| match item {
        TrainItem::Setting { key: k, value, .. } if k.name == key => find(value, word),
        TrainItem::Call(call) if call.callee.name == key => {
            call.args.iter().find_map(|a| find(&a.value, word))
        }
        _ => None,
    })
}

/// Every setting a section may hold (besides `loss`, `label` and `step` blocks).
pub const SECTION_KEYS: &[&str] = &[
    "data",
    "normalize",
    "optimizer",
    "schedule",
    "clip",
    "batch",
    "epochs",
    "split",
    "split_order",
    "seed",
    "metrics",
    "early_stop",
    "checkpoint_every",
    "features",
    "predict",
    "images",
];

/// The settings among `items` (a section's or a step's) by key, with their spans; one
/// that cannot be read, or is set a second time, is left out with its mistake in `errors`.
pub fn settings_of(
    items: &[TrainItem],
    hyper: &HashMap<String, Value>,
    errors: &mut Vec<Diagnostic>,
) -> HashMap<String, (Setting, Span)> {
    let mut out = HashMap::new();
    for item in items {
        let (key, value, span) = match item {
            TrainItem::Setting { key, value, span } if key.name != "loss" => {
                (key.name.clone(), eval(value, hyper), *span)
            }
            TrainItem::Call(call) => {
                let e = Expr {
                    kind: ExprKind::Call(call.clone()),
                    span: call.span,
                };
                (call.callee.name.clone(), eval(&e, hyper), call.span)
            }
            _ => continue,
        };
        if out.contains_key(&key) {
            errors.push(Diagnostic::error(
                ErrorCode::DuplicateBinding,
                format!("`{key}` is set twice"),
                span,
            ));
            continue;
        }
        match value {
            Ok(value) => {
                out.insert(key, (value, span));
            }
            Err(d) => errors.push(d),
        }
    }
    out
}

/// Named numeric arguments of a call setting, with defaults; unknown names are errors.
pub fn call_args(
    name: &str,
    args: &[(Option<String>, Setting)],
    allowed: &[(&str, f64)],
    span: Span,
) -> Result<HashMap<String, f64>, Diagnostic> {
    let mut out: HashMap<String, f64> = allowed.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    for (i, (key, value)) in args.iter().enumerate() {
        let key = match key {
            Some(k) => k.clone(),
            None => match allowed.get(i) {
                Some((k, _)) => k.to_string(),
                None => {
                    return Err(bad(
                        span,
                        format!("`{name}` takes at most {} arguments", allowed.len()),
                    ));
                }
            },
        };
        if !out.contains_key(&key) {
            let names: Vec<&str> = allowed.iter().map(|(k, _)| *k).collect();
            return Err(bad(span, format!("`{name}` has no argument `{key}`"))
                .with_note(format!("`{name}` takes ({})", names.join(", "))));
        }
        let v = match value {
            Setting::Number(v) => *v,
            Setting::Word(w) if w == "true" => 1.0,
            Setting::Word(w) if w == "false" => 0.0,
            _ => {
                return Err(bad(
                    span,
                    format!("argument `{key}` of `{name}` must be a number"),
                ));
            }
        };
        out.insert(key, v);
    }
    Ok(out)
}

/// Argument `key` of `m` (what [`call_args`] read), checked against `range`.
fn ranged(
    m: &HashMap<String, f64>,
    key: &str,
    range: ValidRange,
    span: Span,
) -> Result<f64, Diagnostic> {
    range.check(key, m[key], Origin::File(span))
}

/// The optimizers [`optimizer`] knows.
pub const OPTIMIZERS: &[&str] = &["sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad"];

/// The schedules [`schedule`] knows.
pub const SCHEDULES: &[&str] = &["constant", "step", "cosine"];

/// `d` with a "did you mean" for the name among `known` closest to `name`, if any is.
fn did_you_mean(d: Diagnostic, name: &str, known: &[&str]) -> Diagnostic {
    match crate::elaborate::closest(name, known.iter().copied()) {
        Some(close) => d.with_help(format!("did you mean `{close}`?")),
        None => d,
    }
}

/// `optimizer = adam(lr = 1e-3)` → the rule and its learning rate.
pub fn optimizer(setting: &Setting, span: Span) -> Result<(Optimizer, f64), Diagnostic> {
    let (name, args) = match setting {
        Setting::Call { name, args } => (name.as_str(), args.as_slice()),
        Setting::Word(w) => (w.as_str(), &[][..]),
        _ => {
            return Err(bad(
                span,
                "`optimizer` must be a call like `adam(lr = 1e-3)`",
            ));
        }
    };
    let a = |allowed: &[(&str, f64)]| call_args(name, args, allowed, span);
    Ok(match name {
        "sgd" => {
            let m = a(&[
                ("lr", 0.01),
                ("momentum", 0.0),
                ("nesterov", 0.0),
                ("weight_decay", 0.0),
            ])?;
            (
                Optimizer::Sgd {
                    momentum: ranged(&m, "momentum", ValidRange::DECAY, span)?,
                    nesterov: m["nesterov"] != 0.0,
                    weight_decay: ranged(&m, "weight_decay", ValidRange::NON_NEGATIVE, span)?,
                },
                ranged(&m, "lr", ValidRange::POSITIVE, span)?,
            )
        }
        "momentum" => {
            let m = a(&[
                ("lr", 0.01),
                ("momentum", 0.9),
                ("nesterov", 0.0),
                ("weight_decay", 0.0),
            ])?;
            (
                Optimizer::Sgd {
                    momentum: ranged(&m, "momentum", ValidRange::DECAY, span)?,
                    nesterov: m["nesterov"] != 0.0,
                    weight_decay: ranged(&m, "weight_decay", ValidRange::NON_NEGATIVE, span)?,
                },
                ranged(&m, "lr", ValidRange::POSITIVE, span)?,
            )
        }
        "adam" | "adamw" => {
            let wd_default = if name == "adamw" { 0.01 } else { 0.0 };
            let m = a(&[
                ("lr", 1e-3),
                ("beta1", 0.9),
                ("beta2", 0.999),
                ("eps", 1e-8),
                ("weight_decay", wd_default),
            ])?;
            (
                Optimizer::Adam {
                    beta1: ranged(&m, "beta1", ValidRange::DECAY, span)?,
                    beta2: ranged(&m, "beta2", ValidRange::DECAY, span)?,
                    eps: ranged(&m, "eps", ValidRange::POSITIVE, span)?,
                    weight_decay: ranged(&m, "weight_decay", ValidRange::NON_NEGATIVE, span)?,
                    decoupled: name == "adamw",
                },
                ranged(&m, "lr", ValidRange::POSITIVE, span)?,
            )
        }
        "rmsprop" => {
            let m = a(&[
                ("lr", 1e-2),
                ("alpha", 0.99),
                ("eps", 1e-8),
                ("weight_decay", 0.0),
            ])?;
            (
                Optimizer::RmsProp {
                    alpha: ranged(&m, "alpha", ValidRange::DECAY, span)?,
                    eps: ranged(&m, "eps", ValidRange::POSITIVE, span)?,
                    weight_decay: ranged(&m, "weight_decay", ValidRange::NON_NEGATIVE, span)?,
                },
                ranged(&m, "lr", ValidRange::POSITIVE, span)?,
            )
        }
        "adagrad" => {
            let m = a(&[("lr", 1e-2), ("eps", 1e-10), ("weight_decay", 0.0)])?;
            (
                Optimizer::Adagrad {
                    eps: ranged(&m, "eps", ValidRange::POSITIVE, span)?,
                    weight_decay: ranged(&m, "weight_decay", ValidRange::NON_NEGATIVE, span)?,
                },
                ranged(&m, "lr", ValidRange::POSITIVE, span)?,
            )
        }
        other => {
            let d = Diagnostic::error(
                ErrorCode::UnknownLayer,
                format!("unknown optimizer `{other}`"),
                span,
            )
            .with_label("not an optimizer");
            return Err(did_you_mean(d, other, OPTIMIZERS)
                .with_note(format!("optimizers: {}", OPTIMIZERS.join(", "))));
        }
    })
}

/// `schedule = cosine(warmup = 100)`, `step(every = 10, gamma = 0.5)`, `constant`.
pub fn schedule(setting: &Setting, span: Span) -> Result<Schedule, Diagnostic> {
    let (name, args) = match setting {
        Setting::Call { name, args } => (name.as_str(), args.as_slice()),
        Setting::Word(w) => (w.as_str(), &[][..]),
        _ => {
            return Err(bad(
                span,
                "`schedule` must be `constant`, `step(…)` or `cosine(…)`",
            ));
        }
    };
    Ok(match name {
        "constant" => Schedule::Constant,
        "step" => {
            let m = call_args(name, args, &[("every", 10.0), ("gamma", 0.1)], span)?;
            Schedule::Step {
                every: ValidRange::COUNT.check_integer("every", m["every"], Origin::File(span))?,
                gamma: ranged(&m, "gamma", ValidRange::POSITIVE, span)?,
            }
        }
        "cosine" => {
            let m = call_args(name, args, &[("warmup", 0.0)], span)?;
            Schedule::Cosine {
                warmup: ValidRange::NON_NEGATIVE_INTEGER.check_integer(
                    "warmup",
                    m["warmup"],
                    Origin::File(span),
                )?,
            }
        }
        other => {
            let d = bad(span, format!("unknown schedule `{other}`")).with_label("not a schedule");
            return Err(did_you_mean(d, other, SCHEDULES)
                .with_note(format!("schedules: {}", SCHEDULES.join(", "))));
        }
    })
}

/// `early_stop(on = val.loss, patience = 3, restore = true, min_delta = 0)`.
pub fn early_stop(setting: &Setting, span: Span) -> Result<EarlyStop, Diagnostic> {
    let Setting::Call { args, .. } = setting else {
        return Err(bad(
            span,
            "`early_stop` takes named arguments: early_stop(on = val.loss, patience = 3)",
        ));
    };
    let mut monitor = "val.loss".to_string();
    let mut rest = Vec::new();
    for (k, v) in args {
        match (k.as_deref(), v) {
            (Some("on"), Setting::Word(w)) => monitor = w.clone(),
            (Some("on"), _) => {
                return Err(bad(
                    span,
                    "`on` names what to watch: `val.loss` or `val.<metric>`",
                ));
            }
            _ => rest.push((k.clone(), v.clone())),
        }
    }
    let m = call_args(
        "early_stop",
        &rest,
        &[("patience", 5.0), ("min_delta", 0.0), ("restore", 1.0)],
        span,
    )?;
    if !(monitor == "val.loss" || monitor.starts_with("val.")) {
        return Err(bad(
            span,
            format!("early stopping watches `val.loss` or `val.<metric>`, not `{monitor}`"),
        ));
    }
    Ok(EarlyStop {
        // Losses and errors go down; scores go up.
        maximize: monitor
            .strip_prefix("val.")
            .and_then(Metric::from_name)
            .is_some_and(Metric::maximize),
        monitor,
        patience: ValidRange::COUNT.check_integer("patience", m["patience"], Origin::File(span))?,
        min_delta: ranged(&m, "min_delta", ValidRange::NON_NEGATIVE, span)?,
        restore_best: m["restore"] != 0.0,
    })
}

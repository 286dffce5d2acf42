//! A model file's `sweep` section: the search space and options of `strata sweep`,
//! written next to the model instead of on the command line.
//!
//! ```text
//! sweep Mlp {
//!     lr     = log(1e-4, 1e-1)
//!     hidden = [64, 128, 256]
//!     method = halving   trials = 20   metric = val.accuracy
//! }
//! ```
//!
//! Each setting is `NAME = RANGE` (what `--space NAME=RANGE` takes, see [`space`]) or
//! one of the sweep's [`OPTIONS`]. `strata check` reports a section's mistakes
//! ([`check_sections`]); `strata sweep` reads it with [`section`].

pub mod space;

use crate::elaborate::closest;
use crate::source::{Diagnostic, ErrorCode, SourceFile, Span};
use crate::syntax::ast::Program;
use crate::syntax::parse;
use crate::train::OVERRIDABLE;

/// The options a `sweep` section may set besides its ranges.
pub const OPTIONS: &[&str] = &[
    "method",
    "trials",
    "metric",
    "eta",
    "grid_points",
    "search_seed",
];

/// The search methods `method` names.
pub const METHODS: &[&str] = &["grid", "random", "halving"];

/// One `key = value` of a sweep section.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepSetting {
    pub key: String,
    /// The value as written.
    pub value: String,
    pub key_span: Span,
    pub value_span: Span,
}

/// The `sweep` section of `model` in `source`, if it has one, after the checks of
/// [`check_sections`] (the first mistake is the error).
pub fn section(source: &SourceFile, model: &str) -> Result<Option<Vec<SweepSetting>>, Diagnostic> {
    let program = parse(&source.text)?;
    if let Some(first) = check_sections(&program, &source.text).into_iter().next() {
        return Err(first);
    }
    Ok(program
        .sweeps
        .iter()
        .find(|s| s.model.name == model)
        .map(|s| settings(s, &source.text)))
}

fn settings(section: &crate::syntax::ast::SweepDef, text: &str) -> Vec<SweepSetting> {
    section
        .settings
        .iter()
        .map(|(key, value)| SweepSetting {
            key: key.name.clone(),
            value: text[value.start as usize..value.end as usize].to_string(),
            key_span: key.span,
            value_span: *value,
        })
        .collect()
}

/// The mistakes of a file's `sweep` sections, as `strata check` reports them: a section
/// for no model, a range or option the sweep cannot read, a name that is neither a
/// hyper-parameter of the model nor a train setting `--set` takes, a name set twice.
pub fn check_sections(program: &Program, text: &str) -> Vec<Diagnostic> {
    let mut errors = Vec::new();
    let models = || program.models.iter().map(|m| m.name.name.as_str());
    for section in &program.sweeps {
        let Some(model) = program
            .models
            .iter()
            .find(|m| m.name.name == section.model.name)
        else {
            let d = Diagnostic::error(
                ErrorCode::NoModel,
                format!("`sweep {}` names no model of this file", section.model.name),
                section.model.span,
            )
            .with_label("no model of this name");
            errors.push(match closest(&section.model.name, models()) {
                Some(close) => d.with_help(format!("did you mean `{close}`?")),
                None => d,
            });
            continue;
        };
        let names: Vec<&str> = model
            .params
            .iter()
            .map(|p| p.name.name.as_str())
            .chain(OVERRIDABLE.iter().copied())
            .collect();
        let mut seen: Vec<&str> = Vec::new();
        for (setting, (key, _)) in settings(section, text).iter().zip(&section.settings) {
            let bad =
                |why: String| Diagnostic::error(ErrorCode::BadArgument, why, setting.value_span);
            if seen.contains(&key.name.as_str()) {
                errors.push(
                    Diagnostic::error(
                        ErrorCode::DuplicateSection,
                        format!("`{}` is set twice in this sweep section", key.name),
                        key.span,
                    )
                    .with_label("set again here"),
                );
                continue;
            }
            seen.push(&key.name);
            let value = setting.value.as_str();
            match key.name.as_str() {
                "method" => {
                    if !METHODS.contains(&value) {
                        errors.push(bad(format!("`method` is one of {}", METHODS.join(", "))));
                    }
                }
                "trials" | "eta" | "grid_points" | "search_seed" => {
                    let least = match key.name.as_str() {
                        "search_seed" => 0,
                        "eta" => 2,
                        _ => 1,
                    };
                    if !value.parse::<u64>().is_ok_and(|n| n >= least) {
                        errors.push(bad(format!(
                            "`{}` is a whole number of at least {least}",
                            key.name
                        )));
                    }
                }
                "metric" => {
                    if let Err(why) = space::metric_direction(value) {
                        errors.push(bad(why));
                    }
                }
                name if !names.contains(&name) => {
                    let d = Diagnostic::error(
                        ErrorCode::UnknownName,
                        format!(
                            "`{name}` is neither a hyper-parameter of `{}` nor a train setting",
                            model.name.name
                        ),
                        key.span,
                    )
                    .with_label("not a name `--set` takes");
                    errors.push(
                        match closest(name, names.iter().copied().chain(OPTIONS.iter().copied())) {
                            Some(close) => d.with_help(format!("did you mean `{close}`?")),
                            None => d.with_note(format!(
                                "a sweep ranges over {} and sets {}",
                                names.join(", "),
                                OPTIONS.join(", ")
                            )),
                        },
                    );
                }
                name => {
                    if let Err(why) = space::Dimension::parse_range(name, value) {
                        errors.push(bad(why));
                    }
                }
            }
        }
    }
    errors
}

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
//! The section is kept as text: each setting is `NAME = RANGE` (what `--space
//! NAME=RANGE` takes) or one of the sweep's options; `strata sweep` interprets it and
//! reports a bad range at the value's span.

use crate::source::{Diagnostic, ErrorCode, SourceFile, Span};
use crate::syntax::parse;

/// The options a `sweep` section may set besides its ranges.
pub const OPTIONS: &[&str] = &[
    "method",
    "trials",
    "metric",
    "eta",
    "grid_points",
    "search_seed",
];

/// One `key = value` of a sweep section.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepSetting {
    pub key: String,
    /// The value as written.
    pub value: String,
    pub key_span: Span,
    pub value_span: Span,
}

/// The `sweep` section of `model` in `source`, if it has one. A section for a model the
/// file does not define is an error.
pub fn section(source: &SourceFile, model: &str) -> Result<Option<Vec<SweepSetting>>, Diagnostic> {
    let program = parse(&source.text)?;
    if let Some(orphan) = program
        .sweeps
        .iter()
        .find(|s| !program.models.iter().any(|m| m.name.name == s.model.name))
    {
        return Err(Diagnostic::error(
            ErrorCode::UnknownName,
            format!(
                "sweep section for `{}`, which is not a model of this file",
                orphan.model.name
            ),
            orphan.model.span,
        ));
    }
    Ok(program
        .sweeps
        .iter()
        .find(|s| s.model.name == model)
        .map(|s| {
            s.settings
                .iter()
                .map(|(key, value)| SweepSetting {
                    key: key.name.clone(),
                    value: source.text[value.start as usize..value.end as usize].to_string(),
                    key_span: key.span,
                    value_span: *value,
                })
                .collect()
        }))
}

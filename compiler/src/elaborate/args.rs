//! Binding a call's arguments to a callee's parameter list, with clear errors.

use super::value::{Spanned, Value};
use crate::source::{Diagnostic, ErrorCode, Span};
use std::borrow::Cow;

/// A callee's parameter: its name and whether it may be left out.
#[derive(Clone, Debug)]
pub struct ParamSpec {
    pub name: Cow<'static, str>,
    pub required: bool,
}

pub const fn req(name: &'static str) -> ParamSpec {
    ParamSpec {
        name: Cow::Borrowed(name),
        required: true,
    }
}

pub const fn opt(name: &'static str) -> ParamSpec {
    ParamSpec {
        name: Cow::Borrowed(name),
        required: false,
    }
}

/// The arguments of one call, bound by name.
pub struct BoundArgs {
    pub callee: String,
    pub call_span: Span,
    slots: Vec<(Cow<'static, str>, Option<Spanned>)>,
    /// Extra positional arguments, for variadic callees (`concat`).
    pub rest: Vec<Spanned>,
}

impl BoundArgs {
    /// Binds positional arguments in order, then named ones. With `variadic`, extra
    /// positional arguments go to `rest` instead of being an error.
    pub fn bind(
        callee: &str,
        call_span: Span,
        specs: &[ParamSpec],
        positional: Vec<Spanned>,
        named: Vec<(String, Span, Spanned)>,
        variadic: bool,
    ) -> Result<BoundArgs, Diagnostic> {
        let mut slots: Vec<(Cow<'static, str>, Option<Spanned>)> =
            specs.iter().map(|s| (s.name.clone(), None)).collect();
        let mut rest = Vec::new();
        let n_positional = positional.len();
        for (i, arg) in positional.into_iter().enumerate() {
            if variadic && i >= 1 {
                rest.push(arg);
            } else if i < slots.len() {
                slots[i].1 = Some(arg);
            } else {
                let names: Vec<&str> = specs.iter().map(|s| s.name.as_ref()).collect();
                return Err(Diagnostic::error(
                    ErrorCode::Arity,
                    format!(
                        "`{callee}` takes at most {} argument(s), got {n_positional}",
                        specs.len()
                    ),
                    arg.span,
                )
                .with_label("unexpected argument")
                .with_secondary(call_span, "in this call")
                .with_note(format!("`{callee}` takes ({})", names.join(", "))));
            }
        }
        for (name, name_span, arg) in named {
            let Some(slot) = slots.iter_mut().find(|(n, _)| *n == name.as_str()) else {
                let names: Vec<&str> = specs.iter().map(|s| s.name.as_ref()).collect();
                return Err(Diagnostic::error(
                    ErrorCode::BadArgument,
                    format!("`{callee}` has no argument named `{name}`"),
                    name_span,
                )
                .with_label("unknown argument")
                .with_note(format!("`{callee}` takes ({})", names.join(", "))));
            };
            if slot.1.is_some() {
                return Err(Diagnostic::error(
                    ErrorCode::BadArgument,
                    format!("argument `{name}` of `{callee}` is given twice"),
                    name_span,
                )
                .with_label("given again here"));
            }
            slot.1 = Some(arg);
        }
        for (spec, (_, slot)) in specs.iter().zip(&slots) {
            if spec.required && slot.is_none() {
                let names: Vec<&str> = specs.iter().map(|s| s.name.as_ref()).collect();
                return Err(Diagnostic::error(
                    ErrorCode::Arity,
                    format!("`{callee}` is missing its argument `{}`", spec.name),
                    call_span,
                )
                .with_label(format!("`{}` not given", spec.name))
                .with_note(format!("`{callee}` takes ({})", names.join(", "))));
            }
        }
        Ok(BoundArgs {
            callee: callee.to_string(),
            call_span,
            slots,
            rest,
        })
    }

    /// The argument bound to `name`, if given.
    pub fn get(&self, name: &str) -> Option<&Spanned> {
        self.slots
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_ref())
    }

    fn wrong_kind(&self, name: &str, arg: &Spanned, want: &str) -> Diagnostic {
        Diagnostic::error(
            ErrorCode::BadArgument,
            format!(
                "argument `{name}` of `{}` must be {want}, got {}",
                self.callee,
                arg.value.kind()
            ),
            arg.span,
        )
        .with_label(format!("expected {want}"))
    }

    /// A required tensor argument.
    pub fn tensor(&self, name: &str) -> Result<(crate::ir::ValueId, Span), Diagnostic> {
        match self.get(name) {
            Some(Spanned {
                value: Value::Tensor(v),
                span,
            }) => Ok((*v, *span)),
            Some(arg) => Err(self.wrong_kind(name, arg, "a tensor")),
            None => Err(Diagnostic::error(
                ErrorCode::Arity,
                format!("`{}` is missing its argument `{name}`", self.callee),
                self.call_span,
            )),
        }
    }

    /// A positive integer (sizes, counts), or `default` if not given.
    pub fn positive_int(&self, name: &str, default: Option<u64>) -> Result<u64, Diagnostic> {
        match self.get(name) {
            None => default.ok_or_else(|| {
                Diagnostic::error(
                    ErrorCode::Arity,
                    format!("`{}` is missing its argument `{name}`", self.callee),
                    self.call_span,
                )
            }),
            Some(arg) => match arg.value {
                Value::Number {
                    value,
                    integer: true,
                } if value >= 1.0 => Ok(value as u64),
                Value::Number { value, .. } => Err(Diagnostic::error(
                    ErrorCode::BadHyperParam,
                    format!(
                        "argument `{name}` of `{}` must be a positive integer, got {value}",
                        self.callee
                    ),
                    arg.span,
                )
                .with_label("must be a positive integer")),
                _ => Err(self.wrong_kind(name, arg, "a positive integer")),
            },
        }
    }

    /// An integer (may be negative, e.g. an axis counted from the end).
    pub fn int(&self, name: &str, default: i64) -> Result<i64, Diagnostic> {
        match self.get(name) {
            None => Ok(default),
            Some(arg) => match arg.value {
                Value::Number {
                    value,
                    integer: true,
                } => Ok(value as i64),
                _ => Err(self.wrong_kind(name, arg, "an integer")),
            },
        }
    }

    pub fn bool(&self, name: &str, default: bool) -> Result<bool, Diagnostic> {
        match self.get(name) {
            None => Ok(default),
            Some(Spanned {
                value: Value::Bool(b),
                ..
            }) => Ok(*b),
            Some(arg) => Err(self.wrong_kind(name, arg, "`true` or `false`")),
        }
    }

    /// A name or string argument (`init = he_normal`).
    pub fn word(&self, name: &str) -> Option<(String, Span)> {
        match self.get(name) {
            Some(Spanned {
                value: Value::Symbol(s) | Value::Str(s),
                span,
            }) => Some((s.clone(), *span)),
            _ => None,
        }
    }

    /// An initializer argument (`init = he_normal`), or `default` if not given.
    pub fn init(
        &self,
        name: &str,
        default: crate::ir::Init,
    ) -> Result<crate::ir::Init, Diagnostic> {
        use crate::ir::Init;
        self.check_word(name)?;
        match self.word(name) {
            None => Ok(default),
            Some((word, span)) => Init::parse(&word).ok_or_else(|| {
                Diagnostic::error(
                    ErrorCode::BadArgument,
                    format!("unknown initializer `{word}`"),
                    span,
                )
                .with_label("not an initializer")
                .with_note(format!("initializers: {}", Init::NAMES.join(", ")))
            }),
        }
    }

    /// Errors if `name` was given but is not a name or string.
    pub fn check_word(&self, name: &str) -> Result<(), Diagnostic> {
        match self.get(name) {
            Some(arg) if !matches!(arg.value, Value::Symbol(_) | Value::Str(_)) => {
                Err(self.wrong_kind(name, arg, "a name"))
            }
            _ => Ok(()),
        }
    }
}

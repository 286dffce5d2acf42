//! Parameters a model names itself: `param w: f32[64, 32] = xavier_uniform` declares
//! one, and `enc.weight` names a parameter a layer instance created.
//!
//! A declared parameter is an [`Op::Param`](crate::ir::Op::Param) like a layer's: its
//! path is its name in the current scope (`w` in a model, `residual0.w` in a block
//! call), so it is trained, saved and loaded exactly as a layer's parameters are, and a
//! block instance called twice shares it. A reference `enc.weight` is the very value
//! the instance's calls use, so gradients from every use add up in one parameter (a
//! tied-weight decoder).

use super::value::Value;
use super::{Elaborator, Env, closest, describe};
use crate::ir::{DType, Dim, Init, ValueId};
use crate::source::Span;
use crate::source::{Diagnostic, ErrorCode};
use crate::syntax::ast::{Expr, ExprKind, Ident, TypeExpr};

/// What a `param`'s initializer may be, for messages.
const INITIALIZER_FORMS: &str = "a parameter starts as one of zeros, ones, xavier_uniform, \
     xavier_normal, he_uniform, he_normal, as a number, or as `normal(std)` or `uniform(a)`";

impl Elaborator<'_> {
    /// `param name: ty = init, options…`: the parameter at `name`'s path in the current
    /// scope (created, or the one an earlier call of the same block instance created).
    /// With `trainable = false` it is frozen as a layer's parameters are.
    pub(super) fn declared_param(
        &mut self,
        name: &Ident,
        ty: &TypeExpr,
        init: &Expr,
        options: &[(Ident, Expr)],
        span: Span,
        env: &mut Env,
    ) -> Result<ValueId, Diagnostic> {
        // Refused before anything is made: a second `param w` is a duplicate, not a use
        // of the first `w`'s path.
        env.refuse_rebinding(name)?;
        let tt = self.tensor_type(ty, env)?;
        if tt.dtype != DType::F32 {
            return Err(Diagnostic::error(
                ErrorCode::DTypeMismatch,
                format!("a parameter is f32, not {}", tt.dtype),
                ty.dtype.span,
            )
            .with_label("parameters are f32")
            .with_note("a parameter is trained by its gradient, which only f32 values have"));
        }
        let mut dims = Vec::new();
        for (d, written) in tt.shape.dims().iter().zip(&ty.dims) {
            match d {
                Dim::Fixed(n) => dims.push(*n),
                Dim::Batch => {
                    return Err(Diagnostic::error(
                        ErrorCode::ShapeMismatch,
                        "a parameter's shape cannot hold `batch`",
                        written.span,
                    )
                    .with_label("the batch size is not known when parameters are made")
                    .with_help(
                        "declare one row (`f32[1, 64]`) and let broadcasting repeat it over the batch",
                    ));
                }
            }
        }
        let init = self.param_init(init, env)?;
        let trainable = self.param_trainable(options, env)?;
        let path = self.qualify(&name.name);
        let v = self.param(path.clone(), dims, init, span)?;
        if !trainable {
            self.non_trainable.insert(path);
        }
        Ok(v)
    }

    /// The options after a `param`'s initializer; `trainable` is the only one.
    fn param_trainable(
        &mut self,
        options: &[(Ident, Expr)],
        env: &mut Env,
    ) -> Result<bool, Diagnostic> {
        let mut trainable = None;
        for (key, value) in options {
            if key.name != "trainable" {
                let d = Diagnostic::error(
                    ErrorCode::BadArgument,
                    format!("a parameter declaration has no option `{}`", key.name),
                    key.span,
                )
                .with_label("not an option")
                .with_note("its one option is `trainable = false` (frozen: never updated)");
                return Err(match closest(&key.name, ["trainable"].into_iter()) {
                    Some(close) => d.with_help(format!("did you mean `{close}`?")),
                    None => d,
                });
            }
            if trainable.is_some() {
                return Err(Diagnostic::error(
                    ErrorCode::DuplicateBinding,
                    "`trainable` is given twice",
                    key.span,
                )
                .with_label("given again here"));
            }
            let v = self.expr(value, env)?;
            match v.value {
                Value::Bool(b) => trainable = Some(b),
                _ => {
                    return Err(Diagnostic::error(
                        ErrorCode::BadArgument,
                        "`trainable` is `true` or `false`",
                        v.span,
                    )
                    .with_label("not a boolean"));
                }
            }
        }
        Ok(trainable.unwrap_or(true))
    }

    /// A `param`'s initializer.
    fn param_init(&mut self, init: &Expr, env: &mut Env) -> Result<Init, Diagnostic> {
        match &init.kind {
            ExprKind::Path(parts) if parts.len() == 1 && env.get(&parts[0].name).is_none() => {
                let word = &parts[0];
                env.refuse_poisoned(word)?;
                Init::parse(&word.name).ok_or_else(|| {
                    let d = Diagnostic::error(
                        ErrorCode::BadArgument,
                        format!("unknown initializer `{}`", word.name),
                        word.span,
                    )
                    .with_label("not an initializer")
                    .with_note(INITIALIZER_FORMS);
                    let known = Init::NAMES.iter().copied().chain(["normal", "uniform"]);
                    match closest(&word.name, known) {
                        Some(close) => d.with_help(format!("did you mean `{close}`?")),
                        None => d,
                    }
                })
            }
            ExprKind::Call(call)
                if matches!(call.callee.name.as_str(), "normal" | "uniform")
                    && env.get(&call.callee.name).is_none() =>
            {
                let what = match call.callee.name.as_str() {
                    "normal" => "standard deviation",
                    _ => "bound",
                };
                let scale = match call.args.as_slice() {
                    [arg] if arg.name.is_none() => {
                        let v = self.expr(&arg.value, env)?;
                        match v.value {
                            Value::Number { value, .. }
                                if value > 0.0 && (value as f32).is_finite() =>
                            {
                                Some(value)
                            }
                            _ => None,
                        }
                    }
                    _ => None,
                };
                match (scale, call.callee.name.as_str()) {
                    (Some(s), "normal") => Ok(Init::Normal(s)),
                    (Some(a), _) => Ok(Init::Uniform(a)),
                    (None, callee) => Err(Diagnostic::error(
                        ErrorCode::BadArgument,
                        format!(
                            "`{callee}(…)` as an initializer takes one positive number, its {what}"
                        ),
                        call.span,
                    )
                    .with_label(format!("needs one positive {what}"))
                    .with_note(
                        "`normal(0.02)` draws from N(0, 0.02²); `uniform(0.1)` from U(-0.1, 0.1)",
                    )),
                }
            }
            _ => {
                let v = self.expr(init, env)?;
                match v.value {
                    Value::Number { value, .. } if (value as f32).is_finite() => {
                        Ok(Init::Constant(value))
                    }
                    other => Err(Diagnostic::error(
                        ErrorCode::BadArgument,
                        format!("a parameter cannot start as {}", describe(&other)),
                        v.span,
                    )
                    .with_label("not an initializer")
                    .with_note(INITIALIZER_FORMS)),
                }
            }
        }
    }

    /// `enc.weight`: the parameter `weight` of the layer instance `enc` (any dotted path
    /// under the instance, `critic.dense0.bias` for a block instance's layers).
    pub(super) fn layer_param_ref(
        &mut self,
        parts: &[Ident],
        env: &mut Env,
        span: Span,
    ) -> Result<ValueId, Diagnostic> {
        let first = &parts[0];
        let rest = parts[1..]
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(".");
        let written = format!("{}.{rest}", first.name);
        env.refuse_poisoned(first)?;
        let Some(binding) = env.get(&first.name) else {
            let d = Diagnostic::error(
                ErrorCode::UnknownName,
                format!("`{written}` is not defined: there is no layer instance `{}`", first.name),
                first.span,
            )
            .with_label("no layer instance of this name")
            .with_note(
                "a dotted name is a layer instance's parameter: `layer enc = dense(32)` makes `enc.weight` and `enc.bias`",
            );
            return Err(match closest(&first.name, env.instance_names()) {
                Some(close) => d.with_help(format!("did you mean `{close}.{rest}`?")),
                None => d,
            });
        };
        let Value::Instance(instance) = binding.value.clone() else {
            return Err(Diagnostic::error(
                ErrorCode::BadArgument,
                format!(
                    "`{}` is {}, not a layer instance: it has no parameter `{rest}`",
                    first.name,
                    binding.value.kind()
                ),
                first.span,
            )
            .with_label(format!("this is {}", binding.value.kind()))
            .with_secondary(binding.span, "bound here")
            .with_note("only a layer instance (`layer enc = dense(32)`) has parameters to name"));
        };
        let path = format!("{instance}.{rest}");
        if let Some(&v) = self.params.get(&path) {
            return match self.cell.is_some() {
                // Parameters live in the model's graph; a cell reads them as operands.
                true => self.cell_operand(v, &path),
                false => Ok(v),
            };
        }
        let prefix = format!("{instance}.");
        let known: Vec<&str> = self
            .param_order
            .iter()
            .filter_map(|p| p.strip_prefix(&prefix))
            .collect();
        if known.is_empty() {
            return Err(Diagnostic::error(
                ErrorCode::UnknownName,
                format!("layer instance `{}` has no parameters yet", first.name),
                span,
            )
            .with_label("used before the instance's first call")
            .with_secondary(binding.span, "declared here")
            .with_note(
                "an instance creates its parameters at its first call, where its input gives their shapes",
            )
            .with_help(format!("call `{}` before naming `{written}`", first.name)));
        }
        let d = Diagnostic::error(
            ErrorCode::UnknownName,
            format!("layer instance `{}` has no parameter `{rest}`", first.name),
            span,
        )
        .with_label("no parameter of this name")
        .with_note(format!("its parameters: {}", known.join(", ")));
        Err(match closest(&rest, known.iter().copied()) {
            Some(close) => d.with_help(format!("did you mean `{}.{close}`?", first.name)),
            None => d,
        })
    }
}

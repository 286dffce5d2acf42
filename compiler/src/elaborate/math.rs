//! Element-wise functions and conversions a loss is written with (and that any model
//! may use): `float`/`int` casts, `one_hot`, `maximum`/`minimum`, `clip`, `square` and
//! `pow`. Each is one or two primitive ops; where an argument may be a number
//! (`maximum(x, 0)`), the number becomes a constant and broadcasts.

use super::Elaborator;
use super::args::{BoundArgs, ParamSpec, req};
use super::value::{Spanned, Value};
use crate::ir::{BinaryOp, DType, Op, ValueId};
use crate::source::{Diagnostic, ErrorCode, Span};

pub(super) static X: &[ParamSpec] = &[req("x")];
pub(super) static TWO: &[ParamSpec] = &[req("a"), req("b")];
pub(super) static ONE_HOT: &[ParamSpec] = &[req("labels"), req("classes")];
pub(super) static CLIP: &[ParamSpec] = &[req("x"), req("min"), req("max")];
pub(super) static POW: &[ParamSpec] = &[req("x"), req("exponent")];

/// The functions of this module, for suggestions.
pub(super) const NAMES: &[&str] = &[
    "float", "int", "one_hot", "maximum", "minimum", "clip", "square", "pow",
];

/// The parameter list of `name` if it is a function of this module.
pub(super) fn lookup(name: &str) -> Option<&'static [ParamSpec]> {
    Some(match name {
        "float" | "int" | "square" => X,
        "maximum" | "minimum" => TWO,
        "one_hot" => ONE_HOT,
        "clip" => CLIP,
        "pow" => POW,
        _ => return None,
    })
}

/// Calls the function `name` of this module (one [`lookup`] knows).
pub(super) fn call(
    e: &mut Elaborator,
    name: &str,
    args: &BoundArgs,
    span: Span,
) -> Result<Value, Diagnostic> {
    let v = match name {
        "float" => cast(e, args, span, DType::F32)?,
        "int" => cast(e, args, span, DType::I32)?,
        "square" => {
            let x = float_operand(e, args, "x")?;
            e.op(Op::Binary(BinaryOp::Mul), &[x, x], span)?
        }
        "pow" => {
            let x = float_operand(e, args, "x")?;
            let p = float_operand(e, args, "exponent")?;
            e.op(Op::Binary(BinaryOp::Pow), &[x, p], span)?
        }
        "maximum" | "minimum" => {
            let a = float_operand(e, args, "a")?;
            let b = float_operand(e, args, "b")?;
            let op = if name == "maximum" {
                BinaryOp::Max
            } else {
                BinaryOp::Min
            };
            e.op(Op::Binary(op), &[a, b], span)?
        }
        "clip" => clip(e, args, span)?,
        "one_hot" => one_hot(e, args, span)?,
        _ => unreachable!("`{name}` is not a function of this module"),
    };
    Ok(Value::Tensor(v))
}

/// Argument `name` as a value: a tensor, or a number as a constant.
fn float_operand(e: &mut Elaborator, args: &BoundArgs, name: &str) -> Result<ValueId, Diagnostic> {
    match args.get(name) {
        Some(Spanned {
            value: Value::Number { value, .. },
            span,
        }) => Ok(e.constant(*value, *span)),
        _ => Ok(args.tensor(name)?.0),
    }
}

/// `float(x)`, `int(x)`: `x`'s elements as `f32` or `i32` (`int` truncates toward zero).
fn cast(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
    to: DType,
) -> Result<ValueId, Diagnostic> {
    let x = float_operand(e, args, "x")?;
    if e.graph.ty(x).dtype == to {
        return Ok(x);
    }
    e.op(Op::Cast { to }, &[x], span)
}

/// `clip(x, min, max)`: `x` limited to `[min, max]` (PyTorch's `clamp`): `min(max(x,
/// min), max)`; the gradient flows where `x` is inside.
fn clip(e: &mut Elaborator, args: &BoundArgs, span: Span) -> Result<ValueId, Diagnostic> {
    let x = float_operand(e, args, "x")?;
    let lo = float_operand(e, args, "min")?;
    let hi = float_operand(e, args, "max")?;
    let constant = |v: ValueId| match e.graph.node(v).op {
        Op::Const { value } => Some(value),
        _ => None,
    };
    if let (Some(lo_v), Some(hi_v)) = (constant(lo), constant(hi))
        && lo_v > hi_v
    {
        let at = args.get("max").map_or(span, |s| s.span);
        return Err(Diagnostic::error(
            ErrorCode::BadArgument,
            format!("`clip` needs min <= max, got min {lo_v} and max {hi_v}"),
            at,
        )
        .with_label("below `min`"));
    }
    let above = e.op(Op::Binary(BinaryOp::Max), &[x, lo], span)?;
    e.op(Op::Binary(BinaryOp::Min), &[above, hi], span)
}

/// `one_hot(labels, classes)`: integer labels `i32[...]` to rows `f32[..., classes]`
/// (a label outside `0..classes` gives a row of zeros).
fn one_hot(e: &mut Elaborator, args: &BoundArgs, span: Span) -> Result<ValueId, Diagnostic> {
    let (labels, lspan) = args.tensor("labels")?;
    let classes = args.positive_int("classes", None)?;
    let ty = e.graph.ty(labels).clone();
    if ty.dtype != DType::I32 {
        return Err(Diagnostic::error(
            ErrorCode::DTypeMismatch,
            format!("`one_hot` takes integer labels, got {ty}"),
            lspan,
        )
        .with_label(format!("this is {ty}"))
        .with_help("`int(x)` converts to i32"));
    }
    e.op(Op::OneHot { classes }, &[labels], span)
}

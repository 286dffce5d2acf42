//! Activations beyond the IR's unary ops, built from them: `leaky_relu` and `softplus`
//! (PyTorch's definitions), and nearest-neighbour upsampling for decoders.

use super::Elaborator;
use super::args::BoundArgs;
use super::normalization::number;
use super::value::Value;
use crate::ir::{BinaryOp, Dim, Op, Shape, UnaryOp};
use crate::source::{Diagnostic, ErrorCode, Span};

/// `leaky_relu(x, slope = 0.01)`: `x` where positive, `slope * x` elsewhere, computed as
/// `max(x, slope * x)` (exact for `0 <= slope <= 1`).
pub(super) fn leaky_relu(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
) -> Result<Value, Diagnostic> {
    let (x, _) = args.tensor("x")?;
    let slope = number(
        args,
        "slope",
        0.01,
        |s| (0.0..=1.0).contains(&s),
        "in [0, 1]",
    )?;
    let k = e.constant(slope, span);
    let scaled = e.op(Op::Binary(BinaryOp::Mul), &[x, k], span)?;
    Ok(Value::Tensor(e.op(
        Op::Binary(BinaryOp::Max),
        &[x, scaled],
        span,
    )?))
}

/// `softplus(x)`: `log(1 + exp(x))`, computed as `relu(x) + log(1 + exp(-|x|))` so that
/// it never overflows. The IR has no `log1p`, so the result is exact to an absolute
/// error of one rounding of `1 + e^-|x|`: for very negative `x` (below about -17 in
/// f32) it is 0 where the true value is a tiny positive number.
pub(super) fn softplus(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
) -> Result<Value, Diagnostic> {
    let (x, _) = args.tensor("x")?;
    let pos = e.op(Op::Unary(UnaryOp::Relu), &[x], span)?;
    let abs = e.op(Op::Unary(UnaryOp::Abs), &[x], span)?;
    let neg = e.op(Op::Unary(UnaryOp::Neg), &[abs], span)?;
    let ex = e.op(Op::Unary(UnaryOp::Exp), &[neg], span)?;
    let one = e.constant(1.0, span);
    let sum = e.op(Op::Binary(BinaryOp::Add), &[ex, one], span)?;
    let log = e.op(Op::Unary(UnaryOp::Log), &[sum], span)?;
    Ok(Value::Tensor(e.op(
        Op::Binary(BinaryOp::Add),
        &[pos, log],
        span,
    )?))
}

/// `upsample2d(x, factor = 2)`: nearest-neighbour upsampling of an image
/// `[batch, C, H, W]` to `[batch, C, H * f, W * f]` (every pixel repeated `f x f`), as
/// PyTorch's `Upsample(mode = "nearest")`: a reshape, a broadcast and a reshape.
pub(super) fn upsample2d(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
) -> Result<Value, Diagnostic> {
    let (x, xspan) = args.tensor("x")?;
    let f = args.positive_int("factor", Some(2))?;
    let ty = e.graph.ty(x).clone();
    let [n, Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)] = *ty.shape.dims() else {
        return Err(Diagnostic::error(
            ErrorCode::ShapeMismatch,
            format!("`upsample2d` needs an image `[batch, channels, height, width]`, got {ty}"),
            xspan,
        )
        .with_label(format!("this is {ty}")));
    };
    let fixed = |v: u64| Dim::Fixed(v);
    let spread = e.op(
        Op::Reshape {
            shape: Shape(vec![n, fixed(c), fixed(h), fixed(1), fixed(w), fixed(1)]),
        },
        &[x],
        span,
    )?;
    let repeated = e.op(
        Op::Broadcast {
            shape: Shape(vec![n, fixed(c), fixed(h), fixed(f), fixed(w), fixed(f)]),
        },
        &[spread],
        span,
    )?;
    let (Some(hf), Some(wf)) = (h.checked_mul(f), w.checked_mul(f)) else {
        return Err(Diagnostic::error(
            ErrorCode::ShapeMismatch,
            format!("upsampling {ty} by {f} overflows"),
            span,
        ));
    };
    Ok(Value::Tensor(e.op(
        Op::Reshape {
            shape: Shape(vec![n, fixed(c), fixed(hf), fixed(wf)]),
        },
        &[repeated],
        span,
    )?))
}

//! Activations beyond the IR's unary ops, built from them: `gelu`, `leaky_relu` and
//! `softplus` (PyTorch's definitions), and nearest-neighbour upsampling for decoders.

use super::Elaborator;
use super::args::BoundArgs;
use super::normalization::number;
use super::value::Value;
use crate::ir::{BinaryOp, Dim, Op, Shape, UnaryOp, ValueId};
use crate::source::{Diagnostic, ErrorCode, Span};

/// Which GELU: PyTorch's `approximate` argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum GeluForm {
    /// `x Φ(x) = 0.5 x (1 + erf(x / √2))`, PyTorch's default (`approximate = "none"`).
    Exact,
    /// `0.5 x (1 + tanh(sqrt(2/π) (x + 0.044715 x³)))` (Hendrycks & Gimpel 2016;
    /// `approximate = "tanh"`).
    Tanh,
}

/// `gelu(x, approximate = "none")`: the exact GELU, or with `approximate = tanh` its tanh
/// approximation (see [`GeluForm`]).
pub(super) fn gelu(e: &mut Elaborator, args: &BoundArgs, span: Span) -> Result<Value, Diagnostic> {
    let (x, _) = args.tensor("x")?;
    args.check_word("approximate")?;
    let form = match args.word("approximate") {
        None => GeluForm::Exact,
        Some((word, wspan)) => match word.as_str() {
            "none" => GeluForm::Exact,
            "tanh" => GeluForm::Tanh,
            _ => {
                return Err(Diagnostic::error(
                    ErrorCode::BadArgument,
                    format!("unknown GELU approximation `{word}`"),
                    wspan,
                )
                .with_label("not an approximation")
                .with_note("`approximate` is \"none\" (the exact GELU, the default) or tanh"));
            }
        },
    };
    Ok(Value::Tensor(gelu_of(e, x, form, span)?))
}

pub(super) fn gelu_of(
    e: &mut Elaborator,
    x: ValueId,
    form: GeluForm,
    span: Span,
) -> Result<ValueId, Diagnostic> {
    let mul = |e: &mut Elaborator, a, b| e.op(Op::Binary(BinaryOp::Mul), &[a, b], span);
    let inner = match form {
        GeluForm::Exact => {
            let k = e.constant(std::f64::consts::FRAC_1_SQRT_2, span);
            let scaled = mul(e, x, k)?;
            e.op(Op::Unary(UnaryOp::Erf), &[scaled], span)?
        }
        GeluForm::Tanh => {
            let x2 = mul(e, x, x)?;
            let x3 = mul(e, x2, x)?;
            let c = e.constant(0.044715, span);
            let cx3 = mul(e, x3, c)?;
            let sum = e.op(Op::Binary(BinaryOp::Add), &[x, cx3], span)?;
            let k = e.constant((2.0 / std::f64::consts::PI).sqrt(), span);
            let scaled = mul(e, sum, k)?;
            e.op(Op::Unary(UnaryOp::Tanh), &[scaled], span)?
        }
    };
    let one = e.constant(1.0, span);
    let t1 = e.op(Op::Binary(BinaryOp::Add), &[inner, one], span)?;
    let half = e.constant(0.5, span);
    let hx = mul(e, x, half)?;
    mul(e, hx, t1)
}

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

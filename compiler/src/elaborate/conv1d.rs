//! Convolution and pooling over sequences `[batch, C, L]` (PyTorch's `Conv1d`,
//! `MaxPool1d`, `AvgPool1d` layouts): an image of height 1 for the 2-D code, with the
//! padding written out as zeros concatenated along the length, so it can differ between
//! the two ends (`padding = [left, right]`, or `"same"`) and the window's gather stays
//! free of masks.

use super::Elaborator;
use super::args::BoundArgs;
use super::convolution::{Convolution, convolve, pool_windows};
use super::padding::{pad_axis, read_padding};
use super::value::Value;
use crate::ir::{ConvWindow, Dim, Init, Op, Shape, ValueId};
use crate::source::{Diagnostic, ErrorCode, Span};

/// The `[C, L]` of a sequence argument `[batch, C, L]`, or a diagnostic.
fn sequence(e: &Elaborator, args: &BoundArgs) -> Result<(ValueId, [u64; 2]), Diagnostic> {
    let (x, xspan) = args.tensor("x")?;
    let ty = e.graph.ty(x).clone();
    match *ty.shape.dims() {
        [_, Dim::Fixed(c), Dim::Fixed(l)] => Ok((x, [c, l])),
        _ => Err(Diagnostic::error(
            ErrorCode::ShapeMismatch,
            format!(
                "`{}` needs a sequence `[batch, channels, length]`, got {ty}",
                args.callee
            ),
            xspan,
        )
        .with_label(format!("this is {ty}"))
        .with_help("sequences are NCL: `transpose(x, [0, 2, 1])` turns `[batch, L, C]` around")),
    }
}

/// `[batch, C, L]` as the image `[batch, C, 1, L]`, or back from `[batch, C, 1, L]`.
fn with_shape(
    e: &mut Elaborator,
    x: ValueId,
    dims: &[u64],
    span: Span,
) -> Result<ValueId, Diagnostic> {
    let batch = e.graph.ty(x).shape.dims()[0];
    let mut shape = vec![batch];
    shape.extend(dims.iter().map(|&d| Dim::Fixed(d)));
    e.op(
        Op::Reshape {
            shape: Shape(shape),
        },
        &[x],
        span,
    )
}

/// `conv1d(x, out_channels, kernel, stride = 1, padding = 0, dilation = 1, bias = true,
/// init = he_uniform, groups = 1)`: `[batch, C, L]` -> `[batch, O, OL]` with parameters
/// `NAME.weight` `[O, C / groups, kernel]` and `NAME.bias` `[O]`, as PyTorch's `Conv1d`;
/// `padding` is a count for both ends, `[left, right]` or `"same"`.
pub(super) fn conv1d(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
    path: Option<String>,
) -> Result<Value, Diagnostic> {
    let (x, [c, l]) = sequence(e, args)?;
    let out = args.positive_int("out_channels", None)?;
    let k = args.positive_int("kernel", None)?;
    let stride = args.positive_int("stride", Some(1))?;
    let dilation = args.positive_int("dilation", Some(1))?;
    let groups = args.positive_int("groups", Some(1))?;
    let bias = args.bool("bias", true)?;
    let init = args.init("init", Init::HeUniform)?;
    if c % groups != 0 || out % groups != 0 {
        return Err(Diagnostic::error(
            ErrorCode::ShapeMismatch,
            format!(
                "`conv1d` with {groups} groups needs input channels ({c}) and out_channels ({out}) divisible by it"
            ),
            args.get("groups").map_or(span, |s| s.span),
        )
        .with_label(format!("{groups} groups")));
    }
    let reach = (k - 1).saturating_mul(dilation);
    let [(left, right)] = read_padding(args, stride, &[reach])?.sides(1)[..] else {
        return Err(Diagnostic::error(
            ErrorCode::BadArgument,
            "conv1d padding",
            span,
        ));
    };
    let padded = l + left + right;
    if padded <= reach {
        return Err(Diagnostic::error(
            ErrorCode::ShapeMismatch,
            format!("a `conv1d` kernel spanning {} steps does not fit a sequence of {l} (padded to {padded})", reach + 1),
            args.get("kernel").map_or(span, |s| s.span),
        )
        .with_label("kernel longer than the sequence")
        .with_help("use a smaller kernel or add padding"));
    }
    let path = path.unwrap_or_else(|| e.fresh_path("conv1d"));
    let weight = e.param(
        format!("{path}.weight"),
        vec![out, c / groups, k],
        init,
        span,
    )?;
    let x = pad_axis(e, x, 2, (left, right), span)?;
    let image = with_shape(e, x, &[c, 1, padded], span)?;
    let conv = Convolution {
        out,
        groups,
        window: ConvWindow {
            kh: 1,
            kw: k,
            stride,
            padding: 0,
            dilation,
        },
        bias: bias.then(|| format!("{path}.bias")),
    };
    let y = convolve(e, image, weight, [c, 1, padded], &conv, span)?;
    let ol = e.graph.ty(y).shape.dims()[3]
        .fixed()
        .ok_or_else(|| Diagnostic::error(ErrorCode::ShapeMismatch, "conv1d output", span))?;
    Ok(Value::Tensor(with_shape(e, y, &[out, ol], span)?))
}

/// `max_pool1d(x, kernel, stride = kernel)` and `avg_pool1d`: the maximum or mean of each
/// window of `kernel` steps of `[batch, C, L]` (PyTorch's `ceil_mode = False`: a window
/// that would run past the end is dropped).
pub(super) fn pool1d(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
    max: bool,
) -> Result<Value, Diagnostic> {
    let (x, [c, l]) = sequence(e, args)?;
    let k = args.positive_int("kernel", None)?;
    let s = args.positive_int("stride", Some(k))?;
    let image = with_shape(e, x, &[c, 1, l], span)?;
    // Windows that tile the sequence are a reshape and a reduction; others (one stride
    // for both axes of the image, which has height 1) go through im2col.
    let stride = if s == k && l % k == 0 { [1, k] } else { [s, s] };
    let y = pool_windows(e, args, span, max, image, [c, 1, l], [1, k], stride)?;
    let ol = e.graph.ty(y).shape.dims()[3]
        .fixed()
        .ok_or_else(|| Diagnostic::error(ErrorCode::ShapeMismatch, "pool1d output", span))?;
    Ok(Value::Tensor(with_shape(e, y, &[c, ol], span)?))
}

//! Convolution and pooling layers over NCHW images (PyTorch's layouts).
//!
//! `conv2d` is im2col followed by one matrix product of the OIHW weight seen as
//! `[O, C kh kw]` with the columns seen as `[batch, C kh kw, OH OW]`, so autodiff, fusion and the backends need only [`Op::Im2Col`] and its
//! adjoint beyond what a dense layer uses. Pooling over non-overlapping windows is a
//! reshape that splits each window into its own axes followed by a reduction over them;
//! overlapping or ragged windows are rejected with a diagnostic for now.

use super::Elaborator;
use super::args::BoundArgs;
use super::padding::{Padding, pad_axis, read_padding};
use super::value::Value;
use crate::ir::{BinaryOp, ConvWindow, Dim, Init, Op, ReduceOp, Shape, ValueId};
use crate::source::{Diagnostic, ErrorCode, Span};

/// The `[C, H, W]` of an image argument `[batch, C, H, W]`, or a diagnostic.
pub(super) fn image(
    e: &Elaborator,
    args: &BoundArgs,
    name: &str,
) -> Result<(ValueId, [u64; 3]), Diagnostic> {
    let (x, xspan) = args.tensor(name)?;
    let ty = e.graph.ty(x).clone();
    match *ty.shape.dims() {
        [_, Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)] => Ok((x, [c, h, w])),
        _ => Err(Diagnostic::error(
            ErrorCode::ShapeMismatch,
            format!(
                "`{}` needs an image `[batch, channels, height, width]`, got {ty}",
                args.callee
            ),
            xspan,
        )
        .with_label(format!("this is {ty}"))
        .with_help("images are NCHW: reshape a flat input with `reshape(x, [batch, 1, 8, 8])`")),
    }
}

/// A kernel size: `3` for 3x3 or `[kh, kw]`.
pub(super) fn pair(
    args: &BoundArgs,
    name: &str,
    default: Option<[u64; 2]>,
) -> Result<[u64; 2], Diagnostic> {
    let Some(arg) = args.get(name) else {
        return default.ok_or_else(|| {
            Diagnostic::error(
                ErrorCode::Arity,
                format!("`{}` is missing its argument `{name}`", args.callee),
                args.call_span,
            )
        });
    };
    let positive = |v: &Value| match v {
        Value::Number {
            value,
            integer: true,
        } if *value >= 1.0 => Some(*value as u64),
        _ => None,
    };
    let sizes = match &arg.value {
        Value::List(items) if items.len() == 2 => positive(&items[0])
            .zip(positive(&items[1]))
            .map(|(a, b)| [a, b]),
        v => positive(v).map(|k| [k, k]),
    };
    sizes.ok_or_else(|| {
        Diagnostic::error(
            ErrorCode::BadArgument,
            format!(
                "argument `{name}` of `{}` must be a positive integer or a list of two",
                args.callee
            ),
            arg.span,
        )
        .with_label("expected e.g. `3` or `[3, 5]`")
    })
}

/// `conv2d(x, out_channels, kernel, stride = 1, padding = 0, dilation = 1, bias = true,
/// init = he_uniform)`: `[batch, C, H, W]` -> `[batch, O, OH, OW]` with parameters
/// `NAME.weight` `[O, C, kh, kw]` and `NAME.bias` `[O]`, as PyTorch's `Conv2d`
/// (`groups = 1`).
pub(super) fn conv2d(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
    path: Option<String>,
) -> Result<Value, Diagnostic> {
    let (x, [c, h, w]) = image(e, args, "x")?;
    let out = args.positive_int("out_channels", None)?;
    let [kh, kw] = pair(args, "kernel", None)?;
    let stride = args.positive_int("stride", Some(1))?;
    let dilation = args.positive_int("dilation", Some(1))?;
    // One count pads all four sides inside the window (masked taps, as before);
    // `[h, w]`, `[top, bottom, left, right]` and `"same"` are written out as zeros.
    let reach = [(kh - 1) * dilation, (kw - 1) * dilation];
    let (x, padding, [h, w]) = match read_padding(args, stride, &reach)? {
        Padding::Every(p) => (x, p, [h, w]),
        sides => {
            let [(top, bottom), (left, right)] = sides.sides(2)[..] else {
                return Err(Diagnostic::error(
                    ErrorCode::BadArgument,
                    "conv2d padding",
                    span,
                ));
            };
            let x = pad_axis(e, x, 2, (top, bottom), span)?;
            let x = pad_axis(e, x, 3, (left, right), span)?;
            (x, 0, [h + top + bottom, w + left + right])
        }
    };
    let bias = args.bool("bias", true)?;
    let init = args.init("init", Init::HeUniform)?;
    let groups = args.positive_int("groups", Some(1))?;
    if c % groups != 0 || out % groups != 0 {
        return Err(Diagnostic::error(
            ErrorCode::ShapeMismatch,
            format!(
                "`conv2d` with {groups} groups needs input channels ({c}) and out_channels ({out}) divisible by it"
            ),
            args.get("groups").map_or(span, |s| s.span),
        )
        .with_label(format!("{groups} groups")));
    }
    let window = ConvWindow {
        kh,
        kw,
        stride,
        padding,
        dilation,
    };
    window.out_size(h, w).map_err(|why| {
        Diagnostic::error(
            ErrorCode::ShapeMismatch,
            format!("a {kh}x{kw} `conv2d` kernel does not fit a {h}x{w} image: {why}"),
            args.get("kernel").map_or(span, |s| s.span),
        )
        .with_label("kernel larger than the input")
        .with_help("use a smaller kernel or add padding")
    })?;
    let path = path.unwrap_or_else(|| e.fresh_path("conv2d"));
    let weight = e.param(
        format!("{path}.weight"),
        vec![out, c / groups, kh, kw],
        init,
        span,
    )?;
    let conv = Convolution {
        out,
        groups,
        window,
        bias: bias.then(|| format!("{path}.bias")),
    };
    convolve(e, x, weight, [c, h, w], &conv, span).map(Value::Tensor)
}

/// What [`convolve`] computes besides its operands.
pub(super) struct Convolution {
    pub out: u64,
    pub groups: u64,
    pub window: ConvWindow,
    /// The bias parameter's name, if the convolution has one.
    pub bias: Option<String>,
}

/// The convolution of an image `x` `[batch, C, H, W]` with `weight` (any shape holding
/// `[O, C / groups, kh, kw]` in that order: conv2d's OIHW, conv1d's `[O, C, k]`), plus
/// the bias: `[batch, O, OH, OW]`.
pub(super) fn convolve(
    e: &mut Elaborator,
    x: ValueId,
    weight: ValueId,
    [c, h, w]: [u64; 3],
    conv: &Convolution,
    span: Span,
) -> Result<ValueId, Diagnostic> {
    let Convolution {
        out,
        groups,
        window,
        ref bias,
    } = *conv;
    let (oh, ow) = window.out_size(h, w).map_err(|why| {
        Diagnostic::error(
            ErrorCode::ShapeMismatch,
            format!("the convolution does not fit its input: {why}"),
            span,
        )
    })?;
    let batch = e.graph.ty(x).shape.dims()[0];
    let (cg, og) = (c / groups, out / groups);
    let taps = cg * window.kh * window.kw;
    let flat = e.op(
        Op::Reshape {
            shape: Shape(vec![Dim::Fixed(out), Dim::Fixed(taps)]),
        },
        &[weight],
        span,
    )?;
    // Group `i` convolves input channels `i cg..(i + 1) cg` into outputs
    // `i og..(i + 1) og` (PyTorch's `groups`); one group is the plain convolution.
    let mut parts = Vec::with_capacity(groups as usize);
    for i in 0..groups {
        let (xi, wi) = if groups == 1 {
            (x, flat)
        } else {
            let slice = |axis, start, len| Op::Slice { axis, start, len };
            (
                e.op(slice(1, i * cg, cg), &[x], span)?,
                e.op(slice(0, i * og, og), &[flat], span)?,
            )
        };
        let windows = e.op(Op::Im2Col { window }, &[xi], span)?;
        let columns = e.op(
            Op::Reshape {
                shape: Shape(vec![batch, Dim::Fixed(taps), Dim::Fixed(oh * ow)]),
            },
            &[windows],
            span,
        )?;
        // [og, cg kh kw] x [batch, cg kh kw, OH OW] -> [batch, og, OH OW]: channels first,
        // so the result is already NCHW.
        parts.push(e.op(Op::MatMul, &[wi, columns], span)?);
    }
    let mut y = if groups == 1 {
        parts[0]
    } else {
        e.op(Op::Concat { axis: 1 }, &parts, span)?
    };
    if let Some(name) = bias {
        let b = e.param(name.clone(), vec![out], Init::Zeros, span)?;
        let column = e.op(
            Op::Reshape {
                shape: Shape(vec![Dim::Fixed(out), Dim::Fixed(1)]),
            },
            &[b],
            span,
        )?;
        y = e.op(Op::Binary(BinaryOp::Add), &[y, column], span)?;
    }
    let nchw = Shape(vec![batch, Dim::Fixed(out), Dim::Fixed(oh), Dim::Fixed(ow)]);
    e.op(Op::Reshape { shape: nchw }, &[y], span)
}

/// `max_pool2d(x, kernel, stride = kernel)` and `avg_pool2d`: the maximum or mean of each
/// `kh x kw` window. Windows tiling the image (stride == kernel, dividing height and
/// width) are a reshape to `[batch, C, OH, kh, OW, kw]` and a reduction over the window
/// axes; overlapping or ragged ones go through im2col (see [`sliding_pool2d`]).
pub(super) fn pool2d(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
    max: bool,
) -> Result<Value, Diagnostic> {
    let (x, image) = image(e, args, "x")?;
    let kernel = pair(args, "kernel", None)?;
    let stride = pair(args, "stride", Some(kernel))?;
    pool_windows(e, args, span, max, x, image, kernel, stride).map(Value::Tensor)
}

/// Pooling of image `x` over `[kh, kw]` windows at `[sh, sw]` strides (see [`pool2d`]);
/// `args` locate the errors.
#[allow(clippy::too_many_arguments)]
pub(super) fn pool_windows(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
    max: bool,
    x: ValueId,
    [c, h, w]: [u64; 3],
    [kh, kw]: [u64; 2],
    [sh, sw]: [u64; 2],
) -> Result<ValueId, Diagnostic> {
    if [sh, sw] != [kh, kw] || h % kh != 0 || w % kw != 0 {
        return sliding_pool2d(e, args, span, max, x, [c, h, w], [kh, kw], [sh, sw]);
    }
    let batch = e.graph.ty(x).shape.dims()[0];
    let (oh, ow) = (h / kh, w / kw);
    let windows = e.op(
        Op::Reshape {
            shape: Shape([c, oh, kh, ow, kw].iter().map(|&n| Dim::Fixed(n)).fold(
                vec![batch],
                |mut v, d| {
                    v.push(d);
                    v
                },
            )),
        },
        &[x],
        span,
    )?;
    let op = if max { ReduceOp::Max } else { ReduceOp::Sum };
    let reduce = Op::Reduce {
        op,
        axes: vec![3, 5],
        keep_dims: false,
    };
    let mut y = e.op(reduce, &[windows], span)?;
    if !max {
        let scale = e.constant(1.0 / (kh * kw) as f64, span);
        y = e.op(Op::Binary(BinaryOp::Mul), &[y, scale], span)?;
    }
    Ok(y)
}

/// Pooling over overlapping or ragged windows (PyTorch's default `ceil_mode = False`:
/// windows that would run past the image are dropped): the windows as im2col columns
/// `[batch, C, kh, kw, OH, OW]`, reduced over the taps.
#[allow(clippy::too_many_arguments)]
fn sliding_pool2d(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
    max: bool,
    x: crate::ir::ValueId,
    [_, h, w]: [u64; 3],
    [kh, kw]: [u64; 2],
    [sh, sw]: [u64; 2],
) -> Result<ValueId, Diagnostic> {
    let name = &args.callee;
    if sh != sw {
        return Err(Diagnostic::error(
            ErrorCode::BadHyperParam,
            format!(
                "`{name}` over overlapping windows takes one stride for both axes, got {sh}x{sw}"
            ),
            args.get("stride").map_or(span, |s| s.span),
        )
        .with_label("use the same stride along height and width"));
    }
    let window = ConvWindow {
        kh,
        kw,
        stride: sh,
        padding: 0,
        dilation: 1,
    };
    // The windows must fit (im2col's typing would refuse them without the span).
    window.out_size(h, w).map_err(|why| {
        Diagnostic::error(
            ErrorCode::ShapeMismatch,
            format!("a {kh}x{kw} `{name}` window does not fit a {h}x{w} image: {why}"),
            args.get("kernel").map_or(span, |s| s.span),
        )
        .with_label("window larger than the image")
    })?;
    let columns = e.op(Op::Im2Col { window }, &[x], span)?;
    // [batch, C, kh, kw, OH, OW] reduced over the taps: [batch, C, OH, OW].
    let op = if max { ReduceOp::Max } else { ReduceOp::Sum };
    let reduce = Op::Reduce {
        op,
        axes: vec![2, 3],
        keep_dims: false,
    };
    let mut y = e.op(reduce, &[columns], span)?;
    if !max {
        let scale = e.constant(1.0 / (kh * kw) as f64, span);
        y = e.op(Op::Binary(BinaryOp::Mul), &[y, scale], span)?;
    }
    Ok(y)
}

/// `global_avg_pool(x)`: `[batch, C, H, W]` -> `[batch, C]`, the mean over each channel.
pub(super) fn global_avg_pool(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
) -> Result<Value, Diagnostic> {
    let (x, [_, h, w]) = image(e, args, "x")?;
    let reduce = Op::Reduce {
        op: ReduceOp::Sum,
        axes: vec![2, 3],
        keep_dims: false,
    };
    let sum = e.op(reduce, &[x], span)?;
    let scale = e.constant(1.0 / (h * w) as f64, span);
    Ok(Value::Tensor(e.op(
        Op::Binary(BinaryOp::Mul),
        &[sum, scale],
        span,
    )?))
}

//! `conv_transpose2d`, the transposed convolution of decoders (PyTorch's
//! `ConvTranspose2d`), built as the adjoint of `conv2d`'s im2col.
//!
//! Each input pixel spreads its channels through the weight `[C, O, kh, kw]` over a
//! `kh x kw` window of the output, windows `stride` apart: one matrix product makes every
//! pixel's window of contributions, `[batch, O kh kw, H W]`, and [`Op::Col2Im`] (the
//! adjoint of im2col, which `conv2d`'s gradient already uses) sums the overlapping
//! windows into the full output `(H - 1) stride + dilation (kh - 1) + 1` high. PyTorch's
//! `padding` then crops that many rows and columns from each side, and `output_padding`
//! adds zeros past the last window at the bottom and right (where no tap reaches), so
//! the output is `(H - 1) stride - 2 padding + dilation (kh - 1) + output_padding + 1`
//! high: the input size of the `conv2d` with the same settings that maps it back.

use super::Elaborator;
use super::args::BoundArgs;
use super::convolution::{image, pair};
use super::padding::pad_axis;
use super::value::Value;
use crate::ir::{BinaryOp, ConvWindow, Dim, Init, Op, Shape};
use crate::source::{Diagnostic, ErrorCode, Span};

/// A count for both axes, `1` or `[h, w]` (zero allowed), or `[0, 0]` when not given.
fn counts(args: &BoundArgs, name: &str) -> Result<[u64; 2], Diagnostic> {
    let Some(arg) = args.get(name) else {
        return Ok([0, 0]);
    };
    let count = |v: &Value| match v {
        Value::Number {
            value,
            integer: true,
        } if *value >= 0.0 => Some(*value as u64),
        _ => None,
    };
    let counts = match &arg.value {
        Value::List(items) if items.len() == 2 => count(&items[0]).zip(count(&items[1])),
        v => count(v).map(|c| (c, c)),
    };
    counts.map(|(h, w)| [h, w]).ok_or_else(|| {
        Diagnostic::error(
            ErrorCode::BadArgument,
            format!(
                "argument `{name}` of `{}` must be a non-negative integer or a list of two",
                args.callee
            ),
            arg.span,
        )
        .with_label("expected e.g. `1` or `[1, 0]`")
    })
}

/// `conv_transpose2d(x, out_channels, kernel, stride = 1, padding = 0, output_padding = 0,
/// dilation = 1, bias = true, init = he_uniform)`: `[batch, C, H, W]` -> `[batch, O, OH,
/// OW]` (see the module docs for the size), with parameters `NAME.weight` `[C, O, kh,
/// kw]` and `NAME.bias` `[O]`, PyTorch's layout.
pub(super) fn conv_transpose2d(
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
    let padding = counts(args, "padding")?;
    let output_padding = counts(args, "output_padding")?;
    if output_padding.iter().any(|&p| p >= stride.max(dilation)) {
        return Err(Diagnostic::error(
            ErrorCode::BadArgument,
            format!(
                "`output_padding` must be smaller than the stride ({stride}) or the dilation ({dilation})"
            ),
            args.get("output_padding").map_or(span, |s| s.span),
        )
        .with_label("too large")
        .with_note("it only picks between the output sizes a stride leaves open, as in PyTorch"));
    }
    let bias = args.bool("bias", true)?;
    let init = args.init("init", Init::HeUniform)?;
    let full = [
        (h - 1) * stride + dilation * (kh - 1) + 1,
        (w - 1) * stride + dilation * (kw - 1) + 1,
    ];
    let mut size = [0; 2];
    for a in 0..2 {
        size[a] = (full[a] + output_padding[a])
            .checked_sub(2 * padding[a])
            .filter(|&n| n >= 1)
            .ok_or_else(|| {
                Diagnostic::error(
                    ErrorCode::ShapeMismatch,
                    format!(
                        "`conv_transpose2d` of a {h}x{w} image with padding {} leaves no output: the output is {}x{} before padding crops it",
                        padding[a], full[0] + output_padding[0], full[1] + output_padding[1]
                    ),
                    args.get("padding").map_or(span, |s| s.span),
                )
                .with_label("crops everything")
            })?;
    }
    let path = path.unwrap_or_else(|| e.fresh_path("conv_transpose2d"));
    let weight = e.param(format!("{path}.weight"), vec![c, out, kh, kw], init, span)?;
    let batch = e.graph.ty(x).shape.dims()[0];
    let fixed = |dims: &[u64]| dims.iter().map(|&d| Dim::Fixed(d)).collect::<Vec<_>>();
    let reshape = |e: &mut Elaborator, v, dims: Vec<Dim>| {
        e.op(Op::Reshape { shape: Shape(dims) }, &[v], span)
    };
    let taps = out * kh * kw;
    let flat = reshape(e, weight, fixed(&[c, taps]))?;
    let flat = e.op(Op::Transpose { perm: vec![1, 0] }, &[flat], span)?;
    let pixels = reshape(e, x, [vec![batch], fixed(&[c, h * w])].concat())?;
    // [O kh kw, C] x [batch, C, H W]: every pixel's window of contributions.
    let windows = e.op(Op::MatMul, &[flat, pixels], span)?;
    let windows = reshape(
        e,
        windows,
        [vec![batch], fixed(&[out, kh, kw, h, w])].concat(),
    )?;
    let window = ConvWindow {
        kh,
        kw,
        stride,
        padding: 0,
        dilation,
    };
    let summed = Op::Col2Im {
        window,
        channels: out,
        height: full[0],
        width: full[1],
    };
    let mut y = e.op(summed, &[windows], span)?;
    for a in 0..2 {
        let axis = 2 + a;
        y = pad_axis(e, y, axis, (0, output_padding[a]), span)?;
        if size[a] != full[a] + output_padding[a] {
            let crop = Op::Slice {
                axis,
                start: padding[a],
                len: size[a],
            };
            y = e.op(crop, &[y], span)?;
        }
    }
    if bias {
        let b = e.param(format!("{path}.bias"), vec![out], Init::Zeros, span)?;
        let column = reshape(e, b, fixed(&[out, 1, 1]))?;
        y = e.op(Op::Binary(BinaryOp::Add), &[y, column], span)?;
    }
    Ok(Value::Tensor(y))
}

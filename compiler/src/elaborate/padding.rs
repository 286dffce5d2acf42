//! The `padding` argument of convolutions, shared by `conv1d` and `conv2d`, and padding
//! written out as zeros.
//!
//! One count pads every side; it can stay inside the window's gather (conv2d's masked
//! taps). The other forms differ between sides, which the window cannot say, so they are
//! written out: zeros concatenated along each spatial axis, after which the gather needs
//! no mask at all.

use super::Elaborator;
use super::args::BoundArgs;
use super::value::Value;
use crate::ir::{Dim, Op, Shape, ValueId};
use crate::source::{Diagnostic, ErrorCode, Span};

/// How a convolution pads its input.
pub(super) enum Padding {
    /// The same count on every side.
    Every(u64),
    /// `(before, after)` per spatial axis.
    Sides(Vec<(u64, u64)>),
}

impl Padding {
    /// `(before, after)` per spatial axis, for `axes` of them.
    pub fn sides(self, axes: usize) -> Vec<(u64, u64)> {
        match self {
            Padding::Every(p) => vec![(p, p); axes],
            Padding::Sides(s) => s,
        }
    }
}

/// `padding` of a convolution over `reach.len()` spatial axes, `reach` being the
/// kernel's span minus 1 along each: a count; a list of `(before, after)` per axis
/// (`[left, right]`, `[top, bottom, left, right]`); with two or more axes, one count per
/// axis (`[h, w]`); or `"same"` (stride 1: the output as large as the input, an odd
/// total's extra zero after, as PyTorch does).
pub(super) fn read_padding(
    args: &BoundArgs,
    stride: u64,
    reach: &[u64],
) -> Result<Padding, Diagnostic> {
    let Some(arg) = args.get("padding") else {
        return Ok(Padding::Every(0));
    };
    let count = |v: &Value| match v {
        Value::Number {
            value,
            integer: true,
        } if *value >= 0.0 => Some(*value as u64),
        _ => None,
    };
    let bad = |why: &str| {
        Diagnostic::error(
            ErrorCode::BadArgument,
            format!("argument `padding` of `{}` {why}", args.callee),
            arg.span,
        )
    };
    let axes = reach.len();
    let (forms, example) = if axes == 1 {
        ("`[left, right]`", "`2`, `[2, 0]`")
    } else {
        ("`[h, w]`, `[top, bottom, left, right]`", "`1`, `[1, 2]`")
    };
    match &arg.value {
        Value::Str(s) if s == "same" => {
            if stride != 1 {
                return Err(bad("can be \"same\" only at stride 1")
                    .with_label(format!("stride is {stride}")));
            }
            Ok(Padding::Sides(
                reach.iter().map(|r| (r / 2, r - r / 2)).collect(),
            ))
        }
        Value::List(items) => {
            let counts: Option<Vec<u64>> = items.iter().map(count).collect();
            match counts {
                Some(c) if c.len() == 2 * axes => {
                    Ok(Padding::Sides(c.chunks(2).map(|p| (p[0], p[1])).collect()))
                }
                Some(c) if c.len() == axes && axes > 1 => {
                    Ok(Padding::Sides(c.iter().map(|&p| (p, p)).collect()))
                }
                _ => Err(bad(&format!(
                    "must be a non-negative integer, {forms} or \"same\""
                ))
                .with_label(format!("expected e.g. {example} or `\"same\"`"))),
            }
        }
        v => count(v).map(Padding::Every).ok_or_else(|| {
            bad(&format!(
                "must be a non-negative integer, {forms} or \"same\""
            ))
            .with_label(format!("expected e.g. {example} or `\"same\"`"))
        }),
    }
}

/// `x` with `before` and `after` zeros along `axis`.
pub(super) fn pad_axis(
    e: &mut Elaborator,
    x: ValueId,
    axis: usize,
    (before, after): (u64, u64),
    span: Span,
) -> Result<ValueId, Diagnostic> {
    if before == 0 && after == 0 {
        return Ok(x);
    }
    let dims = e.graph.ty(x).shape.dims().to_vec();
    let zeros = |e: &mut Elaborator, n: u64| -> Result<ValueId, Diagnostic> {
        let zero = e.constant(0.0, span);
        let mut shape = dims.clone();
        shape[axis] = Dim::Fixed(n);
        e.op(
            Op::Broadcast {
                shape: Shape(shape),
            },
            &[zero],
            span,
        )
    };
    let mut parts = Vec::new();
    if before > 0 {
        parts.push(zeros(e, before)?);
    }
    parts.push(x);
    if after > 0 {
        parts.push(zeros(e, after)?);
    }
    e.op(Op::Concat { axis }, &parts, span)
}

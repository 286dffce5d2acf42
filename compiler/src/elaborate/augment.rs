//! Data augmentation inside a model: `random_flip`, `random_shift` and `noise`, drawn in
//! the training step and the identity in `eval` and `infer` (see `random.rs`, "Modes").
//!
//! Each is built from the ops every backend already runs: Philox uniforms
//! ([`Op::RandomUniform`]), one per sample (or per element for `noise`), turned into 0/1
//! masks by comparisons that select between slices of the input. The masks carry no
//! gradient (the draws are not differentiable); the data path does, so an augmentation
//! may sit anywhere in a model, e.g. on a hidden layer's features. A mask times a slice
//! is exact (a product with 0 or 1), so the backends agree with the interpreter to the
//! last bit on the selection itself.

use super::Elaborator;
use super::args::BoundArgs;
use super::layers::axis;
use super::normalization::number;
use super::padding::pad_axis;
use super::random::{draws, normal_from, seed, uniforms};
use super::value::Value;
use crate::ir::{BinaryOp, Dim, Op, Shape, ValueId};
use crate::source::{Diagnostic, ErrorCode, Span};

/// The shape of an augmented tensor: the batch first, so each sample draws its own.
fn samples(e: &Elaborator, args: &BoundArgs) -> Result<(ValueId, Vec<Dim>), Diagnostic> {
    let (x, xspan) = args.tensor("x")?;
    let ty = e.graph.ty(x).clone();
    let dims = ty.shape.dims().to_vec();
    if dims.first() != Some(&Dim::Batch) || dims.len() < 2 {
        return Err(Diagnostic::error(
            ErrorCode::ShapeMismatch,
            format!(
                "`{}` draws per sample and needs a batch `[batch, …]`, got {ty}",
                args.callee
            ),
            xspan,
        )
        .with_label(format!("this is {ty}")));
    }
    Ok((x, dims))
}

/// One uniform per sample of a rank-`rank` tensor, `[batch, 1, …]`, with `columns` draws
/// per sample side by side along axis 1 when more than one is needed.
fn per_sample(
    e: &mut Elaborator,
    seed: u64,
    rank: usize,
    columns: u64,
    span: Span,
) -> Result<Vec<ValueId>, Diagnostic> {
    let u = uniforms(e, seed, Shape(vec![Dim::Batch, Dim::Fixed(columns)]), span)?;
    let mut shape = vec![Dim::Batch];
    shape.resize(rank, Dim::Fixed(1));
    (0..columns)
        .map(|i| {
            let column = match columns {
                1 => u,
                _ => e.op(
                    Op::Slice {
                        axis: 1,
                        start: i,
                        len: 1,
                    },
                    &[u],
                    span,
                )?,
            };
            let shape = Shape(shape.clone());
            e.op(Op::Reshape { shape }, &[column], span)
        })
        .collect()
}

fn bin(
    e: &mut Elaborator,
    op: BinaryOp,
    a: ValueId,
    b: ValueId,
    span: Span,
) -> Result<ValueId, Diagnostic> {
    e.op(Op::Binary(op), &[a, b], span)
}

/// `x` reversed along `axis` (fixed, of `n` elements): its slices in reverse order.
fn reversed(
    e: &mut Elaborator,
    x: ValueId,
    axis: usize,
    n: u64,
    span: Span,
) -> Result<ValueId, Diagnostic> {
    if n == 1 {
        return Ok(x);
    }
    let slices = (0..n)
        .rev()
        .map(|start| {
            e.op(
                Op::Slice {
                    axis,
                    start,
                    len: 1,
                },
                &[x],
                span,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    e.op(Op::Concat { axis }, &slices, span)
}

/// `random_flip(x, p = 0.5, axis = -1, seed, at_inference = false)`: each sample of
/// `x` `[batch, …]` reversed along `axis` (the width of an NCHW image: torchvision's
/// `RandomHorizontalFlip`) with probability `p`.
pub(super) fn random_flip(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
    path: Option<String>,
) -> Result<Value, Diagnostic> {
    let (x, dims) = samples(e, args)?;
    let p = number(args, "p", 0.5, |p| (0.0..=1.0).contains(&p), "in [0, 1]")?;
    let ax = axis(args, "axis", dims.len(), -1)?;
    let Dim::Fixed(n) = dims[ax] else {
        return Err(Diagnostic::error(
            ErrorCode::BadArgument,
            "`random_flip` flips each sample, not the batch",
            args.get("axis").map_or(span, |s| s.span),
        )
        .with_label("this is the batch axis"));
    };
    let seed = seed(e, args, "random_flip", path)?;
    if !draws(e, args)? || p == 0.0 {
        return Ok(Value::Tensor(x));
    }
    let flipped = reversed(e, x, ax, n, span)?;
    let u = per_sample(e, seed, dims.len(), 1, span)?[0];
    let pc = e.constant(p, span);
    let flip = bin(e, BinaryOp::Lt, u, pc, span)?;
    let keep = bin(e, BinaryOp::Ge, u, pc, span)?;
    let a = bin(e, BinaryOp::Mul, flipped, flip, span)?;
    let b = bin(e, BinaryOp::Mul, x, keep, span)?;
    Ok(Value::Tensor(bin(e, BinaryOp::Add, a, b, span)?))
}

/// `random_shift(x, pixels, seed, at_inference = false)`: each sample of `x`
/// `[batch, C, …]` moved by a whole number of steps drawn uniformly from `-pixels` to
/// `pixels` along every axis after the channels (height and width of an image, each its
/// own draw), the vacated places zeros: torchvision's `RandomCrop(size, padding =
/// pixels)`. Along an axis, the input padded with `pixels` zeros on both sides is cut at
/// each of the `2 pixels + 1` offsets; a one-hot mask of the sample's offset picks one.
pub(super) fn random_shift(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
    path: Option<String>,
) -> Result<Value, Diagnostic> {
    let (x, dims) = samples(e, args)?;
    if dims.len() < 3 {
        let ty = e.graph.ty(x).clone();
        return Err(Diagnostic::error(
            ErrorCode::ShapeMismatch,
            format!("`random_shift` moves images `[batch, C, H, W]` or sequences `[batch, C, L]`, got {ty}"),
            args.get("x").map_or(span, |s| s.span),
        )
        .with_label(format!("this is {ty}"))
        .with_help("reshape flat samples first, e.g. `reshape(x, [batch, 1, 8, 8])`"));
    }
    let pixels = args.positive_int("pixels", None)?;
    let seed = seed(e, args, "random_shift", path)?;
    if !draws(e, args)? {
        return Ok(Value::Tensor(x));
    }
    let spatial: Vec<(usize, u64)> = dims
        .iter()
        .enumerate()
        .skip(2)
        .filter_map(|(a, d)| d.fixed().map(|n| (a, n)))
        .collect();
    let draws = per_sample(e, seed, dims.len(), spatial.len() as u64, span)?;
    let offsets = 2 * pixels + 1;
    let mut y = x;
    for (&(ax, n), &u) in spatial.iter().zip(&draws) {
        // at[k] = (u >= k / offsets) for k = 1..offsets; the mask of offset k is
        // at[k] - at[k + 1] (with at[0] = 1 and at[offsets] = 0): exactly one is 1.
        let at = (1..offsets)
            .map(|k| {
                let c = e.constant(k as f64 / offsets as f64, span);
                bin(e, BinaryOp::Ge, u, c, span)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let padded = pad_axis(e, y, ax, (pixels, pixels), span)?;
        let mut sum = None;
        for k in 0..offsets as usize {
            let mask = match k {
                0 => {
                    let one = e.constant(1.0, span);
                    bin(e, BinaryOp::Sub, one, at[0], span)?
                }
                k if k == at.len() => at[k - 1],
                k => bin(e, BinaryOp::Sub, at[k - 1], at[k], span)?,
            };
            let window = e.op(
                Op::Slice {
                    axis: ax,
                    start: k as u64,
                    len: n,
                },
                &[padded],
                span,
            )?;
            let picked = bin(e, BinaryOp::Mul, window, mask, span)?;
            sum = Some(match sum {
                None => picked,
                Some(s) => bin(e, BinaryOp::Add, s, picked, span)?,
            });
        }
        y = sum.expect("at least three offsets");
    }
    Ok(Value::Tensor(y))
}

/// `noise(x, std, seed, at_inference = false)`: `x` plus independent N(0, std²) draws
/// of its shape (a denoising autoencoder's corruption, Gaussian noise augmentation).
pub(super) fn noise(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
    path: Option<String>,
) -> Result<Value, Diagnostic> {
    let (x, _) = args.tensor("x")?;
    let std = number(
        args,
        "std",
        0.0,
        |s| s.is_finite() && s >= 0.0,
        "a number >= 0",
    )?;
    let seed = seed(e, args, "noise", path)?;
    if !draws(e, args)? || std == 0.0 {
        return Ok(Value::Tensor(x));
    }
    let shape = e.graph.ty(x).shape.clone();
    let u = uniforms(e, seed, shape, span)?;
    let z = normal_from(e, u, 0.0, std, span)?;
    Ok(Value::Tensor(bin(e, BinaryOp::Add, x, z, span)?))
}

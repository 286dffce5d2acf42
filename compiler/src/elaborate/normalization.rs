//! Layers whose behaviour depends on training: batch normalization and dropout.
//!
//! Elaboration builds each model twice when it trains: in training mode for the
//! `train_step` entry (batch statistics, running-average updates, random masks) and in
//! inference mode for `eval` and `infer` (running averages, no masks). Both builds name
//! parameters identically, so the entries share them.

use super::Elaborator;
use super::args::BoundArgs;
use super::value::Value;
use crate::ir::{BinaryOp, Dim, Init, Op, ReduceOp, Shape, UnaryOp, ValueId};
use crate::source::{Diagnostic, ErrorCode, Span};
use crate::train::losses::row_count;

pub(super) fn number(
    args: &BoundArgs,
    name: &str,
    default: f64,
    ok: impl Fn(f64) -> bool,
    what: &str,
) -> Result<f64, Diagnostic> {
    match args.get(name) {
        None => Ok(default),
        Some(s) => match s.value {
            Value::Number { value, .. } if ok(value) => Ok(value),
            _ => Err(Diagnostic::error(
                ErrorCode::BadHyperParam,
                format!("argument `{name}` of `{}` must be {what}", args.callee),
                s.span,
            )
            .with_label(format!("must be {what}"))),
        },
    }
}

/// `batch_norm(x, momentum = 0.1, eps = 1e-5, frozen = false)` over channel axis 1
/// (`[batch, C]` or NCHW `[batch, C, H, W]`), as PyTorch's BatchNorm: learned `weight`
/// (ones) and `bias` (zeros); in training, normalization by the batch's biased variance
/// and running averages updated with the unbiased one; at inference, the running
/// averages. `frozen = true` keeps it in inference mode while the rest trains (PyTorch's
/// `bn.eval()` during fine-tuning): the running averages normalize and stay as they are.
pub(super) fn batch_norm(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
    path: Option<String>,
) -> Result<Value, Diagnostic> {
    let (x, xspan) = args.tensor("x")?;
    let momentum = number(
        args,
        "momentum",
        0.1,
        |m| (0.0..=1.0).contains(&m),
        "in [0, 1]",
    )?;
    let eps = number(args, "eps", 1e-5, |v| v > 0.0, "positive")?;
    // Frozen: the running averages normalize in training too, and are not updated.
    let frozen = args.bool("frozen", false)?;
    let ty = e.graph.ty(x).clone();
    let dims = ty.shape.dims().to_vec();
    let channels = match dims.get(1) {
        Some(Dim::Fixed(c)) if dims[0] == Dim::Batch => *c,
        _ => {
            return Err(Diagnostic::error(
                ErrorCode::ShapeMismatch,
                format!("`batch_norm` needs `[batch, channels, …]`, got {ty}"),
                xspan,
            )
            .with_label(format!("this is {ty}")));
        }
    };
    let path = path.unwrap_or_else(|| e.fresh_path("batch_norm"));
    let weight = e.param(format!("{path}.weight"), vec![channels], Init::Ones, span)?;
    let bias = e.param(format!("{path}.bias"), vec![channels], Init::Zeros, span)?;
    let running_mean = e.param(
        format!("{path}.running_mean"),
        vec![channels],
        Init::Zeros,
        span,
    )?;
    let running_var = e.param(
        format!("{path}.running_var"),
        vec![channels],
        Init::Ones,
        span,
    )?;
    e.non_trainable.insert(format!("{path}.running_mean"));
    e.non_trainable.insert(format!("{path}.running_var"));
    // Per-channel values broadcast as [C, 1, …, 1] against [batch, C, …].
    let mut bshape = vec![Dim::Fixed(channels)];
    bshape.extend(std::iter::repeat_n(Dim::Fixed(1), dims.len() - 2));
    let bcast = |e: &mut Elaborator, v: ValueId| {
        e.op(
            Op::Reshape {
                shape: Shape(bshape.clone()),
            },
            &[v],
            span,
        )
    };
    let bin = |e: &mut Elaborator, op, a, b| e.op(Op::Binary(op), &[a, b], span);
    let (mean, var) = if e.training && !frozen {
        let axes: Vec<usize> = (0..dims.len()).filter(|&a| a != 1).collect();
        let mut per_channel = dims.clone();
        per_channel.remove(1);
        let n = row_count(e, &per_channel, span)?;
        let s = e.op(
            Op::Reduce {
                op: ReduceOp::Sum,
                axes: axes.clone(),
                keep_dims: false,
            },
            &[x],
            span,
        )?;
        let mean = bin(e, BinaryOp::Div, s, n)?;
        let mb = bcast(e, mean)?;
        let centered = bin(e, BinaryOp::Sub, x, mb)?;
        let sq = bin(e, BinaryOp::Mul, centered, centered)?;
        let ss = e.op(
            Op::Reduce {
                op: ReduceOp::Sum,
                axes,
                keep_dims: false,
            },
            &[sq],
            span,
        )?;
        let var = bin(e, BinaryOp::Div, ss, n)?;
        // Running averages: (1 - m) r + m s, the variance unbiased by n / (n - 1).
        let one = e.constant(1.0, span);
        let n1 = bin(e, BinaryOp::Sub, n, one)?;
        let unbias = bin(e, BinaryOp::Div, n, n1)?;
        let var_u = bin(e, BinaryOp::Mul, var, unbias)?;
        for (running, batch_stat) in [(running_mean, mean), (running_var, var_u)] {
            let keep = e.constant(1.0 - momentum, span);
            let take = e.constant(momentum, span);
            let stat = e.op(Op::StopGradient, &[batch_stat], span)?;
            let a = bin(e, BinaryOp::Mul, keep, running)?;
            let b = bin(e, BinaryOp::Mul, take, stat)?;
            let new = bin(e, BinaryOp::Add, a, b)?;
            e.graph.updates.push((running, new));
        }
        (mean, var)
    } else {
        (running_mean, running_var)
    };
    let mb = bcast(e, mean)?;
    let vb = bcast(e, var)?;
    let eps_c = e.constant(eps, span);
    let ve = bin(e, BinaryOp::Add, vb, eps_c)?;
    let sd = e.op(Op::Unary(UnaryOp::Sqrt), &[ve], span)?;
    let centered = bin(e, BinaryOp::Sub, x, mb)?;
    let normed = bin(e, BinaryOp::Div, centered, sd)?;
    let wb = bcast(e, weight)?;
    let bb = bcast(e, bias)?;
    let scaled = bin(e, BinaryOp::Mul, normed, wb)?;
    Ok(Value::Tensor(bin(e, BinaryOp::Add, scaled, bb)?))
}

/// `dropout(x, p, at_inference = false)`: in training, each element is zeroed with
/// probability `p` and the rest scaled by `1 / (1 - p)` (inverted dropout), the mask
/// drawn by Philox from the layer's seed, the step and the element's index, so every
/// backend draws the same mask; at inference, the identity, unless `at_inference = true`
/// keeps drawing masks (Monte Carlo dropout, Gal & Ghahramani 2016).
pub(super) fn dropout(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
    path: Option<String>,
) -> Result<Value, Diagnostic> {
    let (x, _) = args.tensor("x")?;
    let p = number(args, "p", 0.5, |p| (0.0..1.0).contains(&p), "in [0, 1)")?;
    let path = path.unwrap_or_else(|| e.fresh_path("dropout"));
    if !super::random::draws(e, args)? || p == 0.0 {
        return Ok(Value::Tensor(x));
    }
    let step = e.step_input(span);
    let shape = e.graph.ty(x).shape.clone();
    let seed = crate::ir::init::path_hash(&path);
    let r = e.op(Op::RandomUniform { seed, shape }, &[step], span)?;
    let pc = e.constant(p, span);
    let keep = e.op(Op::Binary(BinaryOp::Ge), &[r, pc], span)?;
    let scale = e.constant(1.0 / (1.0 - p), span);
    let kept = e.op(Op::Binary(BinaryOp::Mul), &[x, keep], span)?;
    Ok(Value::Tensor(e.op(
        Op::Binary(BinaryOp::Mul),
        &[kept, scale],
        span,
    )?))
}

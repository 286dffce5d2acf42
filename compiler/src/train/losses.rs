//! Losses and penalties, built from primitive ops. Every loss is a scalar: the mean over
//! the batch (and any other leading dimensions) of a per-row loss; penalties are sums
//! over the parameters they are given.
//!
//! [`LOSSES`] is the one list of them: a loss's name, its parameters and its builder.
//! Adding a loss is a function here and its line in that table; the rest of the compiler
//! (argument binding, suggestions for misspelled names, autodiff) needs nothing else.

use crate::elaborate::Elaborator;
use crate::elaborate::args::{BoundArgs, ParamSpec, req};
use crate::elaborate::value::Value;
use crate::ir::{BinaryOp, DType, Dim, Op, ReduceOp, Shape, UnaryOp, ValueId};
use crate::source::{Diagnostic, ErrorCode, Span};

/// A built-in loss or penalty, callable by name in a model file.
pub(crate) struct Loss {
    pub name: &'static str,
    pub params: &'static [ParamSpec],
    pub build: fn(&mut Elaborator, &BoundArgs, Span) -> Result<Value, Diagnostic>,
}

const LOGITS_LABELS: &[ParamSpec] = &[req("logits"), req("labels")];
const LOGITS_TARGETS: &[ParamSpec] = &[req("logits"), req("targets")];
const PREDICTIONS_TARGETS: &[ParamSpec] = &[req("predictions"), req("targets")];
const PARAMS: &[ParamSpec] = &[req("params")];

/// Every built-in loss and penalty.
pub(crate) static LOSSES: &[Loss] = &[
    Loss {
        name: "cross_entropy",
        params: LOGITS_LABELS,
        build: cross_entropy,
    },
    Loss {
        name: "binary_cross_entropy",
        params: LOGITS_TARGETS,
        build: binary_cross_entropy,
    },
    Loss {
        name: "mse",
        params: PREDICTIONS_TARGETS,
        build: |e, args, span| regression(e, args, span, true),
    },
    Loss {
        name: "mae",
        params: PREDICTIONS_TARGETS,
        build: |e, args, span| regression(e, args, span, false),
    },
    Loss {
        name: "l1",
        params: PARAMS,
        build: |e, args, span| penalty(e, args, span, false),
    },
    Loss {
        name: "l2",
        params: PARAMS,
        build: |e, args, span| penalty(e, args, span, true),
    },
];

/// The built-in loss or penalty called `name`.
pub(crate) fn find(name: &str) -> Option<&'static Loss> {
    LOSSES.iter().find(|l| l.name == name)
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

fn un(e: &mut Elaborator, op: UnaryOp, a: ValueId, span: Span) -> Result<ValueId, Diagnostic> {
    e.op(Op::Unary(op), &[a], span)
}

/// The sum of every element: f32[].
pub(crate) fn sum_all(e: &mut Elaborator, x: ValueId, span: Span) -> Result<ValueId, Diagnostic> {
    let rank = e.graph.ty(x).shape.rank();
    if rank == 0 {
        return Ok(x);
    }
    e.op(
        Op::Reduce {
            op: ReduceOp::Sum,
            axes: (0..rank).collect(),
            keep_dims: false,
        },
        &[x],
        span,
    )
}

/// The number of rows of a tensor of shape `dims` as an f32[] value: the product of the
/// fixed dims times the batch size (counted at run time, so a last partial batch is
/// averaged over its own size).
pub(crate) fn row_count(
    e: &mut Elaborator,
    dims: &[Dim],
    span: Span,
) -> Result<ValueId, Diagnostic> {
    let fixed: u64 = dims.iter().filter_map(|d| d.fixed()).product();
    let c = e.constant(fixed as f64, span);
    if !dims.contains(&Dim::Batch) {
        return Ok(c);
    }
    let one = e.constant(1.0, span);
    let ones = e.op(
        Op::Broadcast {
            shape: Shape(vec![Dim::Batch]),
        },
        &[one],
        span,
    )?;
    let batch = sum_all(e, ones, span)?;
    bin(e, BinaryOp::Mul, batch, c, span)
}

/// The mean of a per-element loss over every element.
fn mean_all(e: &mut Elaborator, x: ValueId, span: Span) -> Result<ValueId, Diagnostic> {
    let dims = e.graph.ty(x).shape.dims().to_vec();
    let total = sum_all(e, x, span)?;
    let n = row_count(e, &dims, span)?;
    bin(e, BinaryOp::Div, total, n, span)
}

fn same_shape(
    e: &Elaborator,
    a: (ValueId, Span),
    b: (ValueId, Span),
    what: &str,
) -> Result<(), Diagnostic> {
    let (ta, tb) = (e.graph.ty(a.0).clone(), e.graph.ty(b.0).clone());
    if ta.shape != tb.shape || tb.dtype != DType::F32 {
        return Err(Diagnostic::error(
            ErrorCode::ShapeMismatch,
            format!("`{what}` compares values of one shape, got {ta} and {tb}"),
            b.1,
        )
        .with_label(format!("this is {tb}"))
        .with_secondary(a.1, format!("this is {ta}")));
    }
    Ok(())
}

/// `cross_entropy(logits, labels)`: softmax cross-entropy from logits `[..., classes]`
/// and integer labels `[...]`, with log-sum-exp for stability.
fn cross_entropy(e: &mut Elaborator, args: &BoundArgs, span: Span) -> Result<Value, Diagnostic> {
    let (logits, lspan) = args.tensor("logits")?;
    let (labels, yspan) = args.tensor("labels")?;
    let lt = e.graph.ty(logits).clone();
    let yt = e.graph.ty(labels).clone();
    let rank = lt.shape.rank();
    let classes = match lt.shape.dims().last() {
        Some(Dim::Fixed(c)) if rank >= 1 => *c,
        _ => {
            return Err(Diagnostic::error(
                ErrorCode::ShapeMismatch,
                format!("`cross_entropy` needs logits with a class dimension last, got {lt}"),
                lspan,
            ));
        }
    };
    if yt.dtype != DType::I32 || yt.shape.dims() != &lt.shape.dims()[..rank - 1] {
        let want = Shape(lt.shape.dims()[..rank - 1].to_vec());
        return Err(Diagnostic::error(
            ErrorCode::ShapeMismatch,
            format!("`cross_entropy` needs integer labels i32{want} for logits {lt}, got {yt}"),
            yspan,
        )
        .with_label(format!("this is {yt}"))
        .with_secondary(lspan, format!("logits are {lt}")));
    }
    let ax = rank - 1;
    let m = e.op(
        Op::Reduce {
            op: ReduceOp::Max,
            axes: vec![ax],
            keep_dims: true,
        },
        &[logits],
        span,
    )?;
    let m = e.op(Op::StopGradient, &[m], span)?;
    let shifted = bin(e, BinaryOp::Sub, logits, m, span)?;
    let ex = un(e, UnaryOp::Exp, shifted, span)?;
    let s = e.op(
        Op::Reduce {
            op: ReduceOp::Sum,
            axes: vec![ax],
            keep_dims: true,
        },
        &[ex],
        span,
    )?;
    let lse = un(e, UnaryOp::Log, s, span)?;
    let logp = bin(e, BinaryOp::Sub, shifted, lse, span)?;
    let onehot = e.op(Op::OneHot { classes }, &[labels], span)?;
    let picked = bin(e, BinaryOp::Mul, onehot, logp, span)?;
    let total = sum_all(e, picked, span)?;
    let n = row_count(e, &lt.shape.dims()[..rank - 1], span)?;
    let mean = bin(e, BinaryOp::Div, total, n, span)?;
    Ok(Value::Tensor(un(e, UnaryOp::Neg, mean, span)?))
}

/// `binary_cross_entropy(logits, targets)`: sigmoid cross-entropy from logits, targets
/// in [0, 1] of the same shape (or one number for all): `max(x, 0) - x t +
/// log(1 + exp(-|x|))`.
fn binary_cross_entropy(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
) -> Result<Value, Diagnostic> {
    let x = args.tensor("logits")?;
    // A number target (a GAN's 1 for real, 0 for fake) holds for every logit.
    if let Some(target) = args.get("targets")
        && let Value::Number { value, .. } = target.value
    {
        if !(0.0..=1.0).contains(&value) {
            return Err(Diagnostic::error(
                ErrorCode::BadArgument,
                format!("a `binary_cross_entropy` target is in [0, 1], got {value}"),
                target.span,
            ));
        }
        let t = e.constant(value, target.span);
        return Ok(Value::Tensor(bce_mean(e, x.0, t, span)?));
    }
    let mut t = args.tensor("targets")?;
    // Integer labels `i32[batch]` with logits `f32[batch, 1]` are classes 0 and 1.
    let (xt, tt) = (e.graph.ty(x.0).clone(), e.graph.ty(t.0).clone());
    let rank = xt.shape.rank();
    if tt.dtype == DType::I32
        && rank >= 1
        && xt.shape.dims()[rank - 1] == Dim::Fixed(1)
        && tt.shape.dims() == &xt.shape.dims()[..rank - 1]
    {
        let onehot = e.op(Op::OneHot { classes: 2 }, &[t.0], span)?;
        t.0 = e.op(
            Op::Slice {
                axis: rank - 1,
                start: 1,
                len: 1,
            },
            &[onehot],
            span,
        )?;
    }
    same_shape(e, x, t, "binary_cross_entropy")?;
    Ok(Value::Tensor(bce_mean(e, x.0, t.0, span)?))
}

/// The mean over every logit of `max(x, 0) - x t + log(1 + exp(-|x|))` (`t` of the
/// logits' shape, or a constant).
fn bce_mean(e: &mut Elaborator, x: ValueId, t: ValueId, span: Span) -> Result<ValueId, Diagnostic> {
    let zero = e.constant(0.0, span);
    let one = e.constant(1.0, span);
    let relu = bin(e, BinaryOp::Max, x, zero, span)?;
    let xt = bin(e, BinaryOp::Mul, x, t, span)?;
    let ax = un(e, UnaryOp::Abs, x, span)?;
    let nax = un(e, UnaryOp::Neg, ax, span)?;
    let ex = un(e, UnaryOp::Exp, nax, span)?;
    let onep = bin(e, BinaryOp::Add, one, ex, span)?;
    let softplus = un(e, UnaryOp::Log, onep, span)?;
    let a = bin(e, BinaryOp::Sub, relu, xt, span)?;
    let per = bin(e, BinaryOp::Add, a, softplus, span)?;
    mean_all(e, per, span)
}

/// `mse(predictions, targets)` and `mae(predictions, targets)`: the mean squared or
/// absolute error over every element.
fn regression(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
    squared: bool,
) -> Result<Value, Diagnostic> {
    let p = args.tensor("predictions")?;
    let t = args.tensor("targets")?;
    same_shape(e, p, t, if squared { "mse" } else { "mae" })?;
    let d = bin(e, BinaryOp::Sub, p.0, t.0, span)?;
    let per = if squared {
        bin(e, BinaryOp::Mul, d, d, span)?
    } else {
        un(e, UnaryOp::Abs, d, span)?
    };
    Ok(Value::Tensor(mean_all(e, per, span)?))
}

/// `l2(params)` = Σ w², `l1(params)` = Σ |w| over a list of parameters (`params`: all of
/// them, `weights`: those named `*.weight`, i.e. without biases).
fn penalty(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
    squared: bool,
) -> Result<Value, Diagnostic> {
    let arg = args.get("params").cloned().expect("required argument");
    let items = match &arg.value {
        Value::List(items) => items.clone(),
        Value::Tensor(t) => vec![Value::Tensor(*t)],
        v => {
            return Err(Diagnostic::error(
                ErrorCode::BadArgument,
                format!(
                    "a penalty takes a list of parameters (`params`, `weights`), got {}",
                    v.kind()
                ),
                arg.span,
            ));
        }
    };
    let mut total = e.constant(0.0, span);
    for item in items {
        let Value::Tensor(w) = item else {
            return Err(Diagnostic::error(
                ErrorCode::BadArgument,
                "a penalty takes tensors",
                arg.span,
            ));
        };
        let per = if squared {
            bin(e, BinaryOp::Mul, w, w, span)?
        } else {
            un(e, UnaryOp::Abs, w, span)?
        };
        let s = sum_all(e, per, span)?;
        total = bin(e, BinaryOp::Add, total, s, span)?;
    }
    Ok(Value::Tensor(total))
}

//! Losses and penalties, built from primitive ops. Every loss is a scalar: the mean over
//! the batch (and any other leading dimensions) of a per-row loss, PyTorch's definitions
//! with `reduction = "mean"`; penalties are sums over the parameters they are given.
//!
//! [`LOSSES`] is the one list of them: a loss's name, its parameters and its builder.
//! Adding a loss is a function here and its line in that table; the rest of the compiler
//! (argument binding, suggestions for misspelled names, autodiff) needs nothing else.

use crate::elaborate::Elaborator;
use crate::elaborate::args::{BoundArgs, ParamSpec, opt, req};
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
const MEAN_LOG_VAR: &[ParamSpec] = &[req("mean"), req("log_var")];
const HUBER: &[ParamSpec] = &[req("predictions"), req("targets"), opt("delta")];
const FOCAL: &[ParamSpec] = &[req("logits"), req("labels"), opt("gamma")];
const TWO_VECTORS: &[ParamSpec] = &[req("a"), req("b")];

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
        name: "kl_divergence",
        params: MEAN_LOG_VAR,
        build: kl_divergence,
    },
    Loss {
        name: "huber",
        params: HUBER,
        build: huber,
    },
    Loss {
        name: "hinge",
        params: LOGITS_LABELS,
        build: hinge,
    },
    Loss {
        name: "focal",
        params: FOCAL,
        build: focal,
    },
    Loss {
        name: "cosine",
        params: TWO_VECTORS,
        build: cosine,
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
    let ClassRows {
        logits,
        labels,
        classes,
        rows,
    } = class_rows(e, args, "cross_entropy")?;
    let rank = rows.len() + 1;
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
    let n = row_count(e, &rows, span)?;
    let mean = bin(e, BinaryOp::Div, total, n, span)?;
    Ok(Value::Tensor(un(e, UnaryOp::Neg, mean, span)?))
}

/// The logits `[..., classes]` and integer labels `[...]` of a classification loss.
struct ClassRows {
    logits: ValueId,
    labels: ValueId,
    classes: u64,
    /// The dimensions of the rows (the logits' without the class dimension).
    rows: Vec<Dim>,
}

/// Arguments `logits` and `labels` of loss `what`, checked to fit each other.
fn class_rows(e: &Elaborator, args: &BoundArgs, what: &str) -> Result<ClassRows, Diagnostic> {
    let (logits, lspan) = args.tensor("logits")?;
    let (labels, yspan) = args.tensor("labels")?;
    let lt = e.graph.ty(logits).clone();
    let yt = e.graph.ty(labels).clone();
    let rank = lt.shape.rank();
    let classes = match lt.shape.dims().last() {
        Some(Dim::Fixed(c)) if rank >= 1 && lt.dtype == DType::F32 => *c,
        _ => {
            return Err(Diagnostic::error(
                ErrorCode::ShapeMismatch,
                format!("`{what}` needs logits with a class dimension last, got {lt}"),
                lspan,
            )
            .with_label(format!("this is {lt}")));
        }
    };
    if yt.dtype != DType::I32 || yt.shape.dims() != &lt.shape.dims()[..rank - 1] {
        let want = Shape(lt.shape.dims()[..rank - 1].to_vec());
        return Err(Diagnostic::error(
            ErrorCode::ShapeMismatch,
            format!("`{what}` needs integer labels i32{want} for logits {lt}, got {yt}"),
            yspan,
        )
        .with_label(format!("this is {yt}"))
        .with_secondary(lspan, format!("logits are {lt}")));
    }
    Ok(ClassRows {
        logits,
        labels,
        classes,
        rows: lt.shape.dims()[..rank - 1].to_vec(),
    })
}

/// `reduce_sum` of `x` over its last axis, kept as a dimension of 1 when `keep`.
fn sum_last(e: &mut Elaborator, x: ValueId, keep: bool, span: Span) -> Result<ValueId, Diagnostic> {
    let rank = e.graph.ty(x).shape.rank();
    e.op(
        Op::Reduce {
            op: ReduceOp::Sum,
            axes: vec![rank - 1],
            keep_dims: keep,
        },
        &[x],
        span,
    )
}

/// A non-negative number argument, or `default`.
fn non_negative(args: &BoundArgs, name: &str, default: f64) -> Result<f64, Diagnostic> {
    let Some(arg) = args.get(name) else {
        return Ok(default);
    };
    match arg.value {
        Value::Number { value, .. } if value.is_finite() && value >= 0.0 => Ok(value),
        _ => Err(Diagnostic::error(
            ErrorCode::BadArgument,
            format!("`{name}` of `{}` is a number >= 0", args.callee),
            arg.span,
        )
        .with_label("expected a number >= 0")),
    }
}

/// `kl_divergence(mean, log_var)`: the KL divergence of the diagonal Gaussian
/// `N(mean, exp(log_var))` from the standard normal, a VAE's regularizer (Kingma & Welling
/// 2014, appendix B): `-0.5 Σ (1 + log_var - mean² - exp(log_var))` summed over the last
/// (latent) axis and averaged over the rows.
fn kl_divergence(e: &mut Elaborator, args: &BoundArgs, span: Span) -> Result<Value, Diagnostic> {
    let mu = args.tensor("mean")?;
    let lv = args.tensor("log_var")?;
    same_shape(e, mu, lv, "kl_divergence")?;
    let dims = e.graph.ty(mu.0).shape.dims().to_vec();
    if dims.is_empty() {
        return Err(Diagnostic::error(
            ErrorCode::ShapeMismatch,
            "`kl_divergence` needs a latent axis last, got a scalar",
            mu.1,
        ));
    }
    let one = e.constant(1.0, span);
    let sq = bin(e, BinaryOp::Mul, mu.0, mu.0, span)?;
    let var = un(e, UnaryOp::Exp, lv.0, span)?;
    let a = bin(e, BinaryOp::Add, one, lv.0, span)?;
    let b = bin(e, BinaryOp::Sub, a, sq, span)?;
    let per = bin(e, BinaryOp::Sub, b, var, span)?;
    let total = sum_all(e, per, span)?;
    let n = row_count(e, &dims[..dims.len() - 1], span)?;
    let mean = bin(e, BinaryOp::Div, total, n, span)?;
    let half = e.constant(-0.5, span);
    Ok(Value::Tensor(bin(e, BinaryOp::Mul, half, mean, span)?))
}

/// `huber(predictions, targets, delta = 1)`: PyTorch's `HuberLoss`, `0.5 d²` where
/// `|d| < delta` and `delta (|d| - 0.5 delta)` elsewhere (`d` the difference), averaged
/// over every element.
fn huber(e: &mut Elaborator, args: &BoundArgs, span: Span) -> Result<Value, Diagnostic> {
    let p = args.tensor("predictions")?;
    let t = args.tensor("targets")?;
    same_shape(e, p, t, "huber")?;
    let delta = non_negative(args, "delta", 1.0)?;
    if delta == 0.0 {
        let at = args.get("delta").map_or(span, |a| a.span);
        return Err(Diagnostic::error(
            ErrorCode::BadArgument,
            "`delta` of `huber` is a number > 0",
            at,
        )
        .with_help("`delta = 0` would be the mean absolute error: use `mae`"));
    }
    // 0.5 c² + delta (|d| - c), with c = min(|d|, delta): both branches in one.
    let d = bin(e, BinaryOp::Sub, p.0, t.0, span)?;
    let ad = un(e, UnaryOp::Abs, d, span)?;
    let dl = e.constant(delta, span);
    let c = bin(e, BinaryOp::Min, ad, dl, span)?;
    let c2 = bin(e, BinaryOp::Mul, c, c, span)?;
    let half = e.constant(0.5, span);
    let quad = bin(e, BinaryOp::Mul, half, c2, span)?;
    let over = bin(e, BinaryOp::Sub, ad, c, span)?;
    let lin = bin(e, BinaryOp::Mul, dl, over, span)?;
    let per = bin(e, BinaryOp::Add, quad, lin, span)?;
    Ok(Value::Tensor(mean_all(e, per, span)?))
}

/// `hinge(logits, labels)`: PyTorch's `MultiMarginLoss` (margin 1, p = 1), the multi-class
/// hinge loss of Weston & Watkins / Crammer & Singer as PyTorch averages it: for each row,
/// `Σ_{i ≠ y} max(0, 1 - x_y + x_i) / classes`, averaged over the rows.
fn hinge(e: &mut Elaborator, args: &BoundArgs, span: Span) -> Result<Value, Diagnostic> {
    let ClassRows {
        logits,
        labels,
        classes,
        rows,
    } = class_rows(e, args, "hinge")?;
    let onehot = e.op(Op::OneHot { classes }, &[labels], span)?;
    let picked = bin(e, BinaryOp::Mul, onehot, logits, span)?;
    let xy = sum_last(e, picked, true, span)?;
    let one = e.constant(1.0, span);
    let zero = e.constant(0.0, span);
    let m = bin(e, BinaryOp::Sub, one, xy, span)?;
    let m = bin(e, BinaryOp::Add, m, logits, span)?;
    let m = bin(e, BinaryOp::Max, m, zero, span)?;
    let others = bin(e, BinaryOp::Sub, one, onehot, span)?;
    let per = bin(e, BinaryOp::Mul, m, others, span)?;
    let total = sum_all(e, per, span)?;
    let n = row_count(e, &rows, span)?;
    let c = e.constant(classes as f64, span);
    let n = bin(e, BinaryOp::Mul, n, c, span)?;
    Ok(Value::Tensor(bin(e, BinaryOp::Div, total, n, span)?))
}

/// `focal(logits, labels, gamma = 2)`: the focal loss of Lin et al. 2017 over a softmax,
/// `-(1 - p_y)^gamma log p_y` per row (no class weight α), averaged over the rows;
/// `gamma = 0` is `cross_entropy`.
fn focal(e: &mut Elaborator, args: &BoundArgs, span: Span) -> Result<Value, Diagnostic> {
    let gamma = non_negative(args, "gamma", 2.0)?;
    let ClassRows {
        logits,
        labels,
        classes,
        rows,
    } = class_rows(e, args, "focal")?;
    let ax = rows.len();
    let logp = crate::elaborate::layers::log_softmax(e, logits, ax, span)?;
    let onehot = e.op(Op::OneHot { classes }, &[labels], span)?;
    let picked = bin(e, BinaryOp::Mul, onehot, logp, span)?;
    let logp_y = sum_last(e, picked, false, span)?;
    let mut per = logp_y;
    if gamma != 0.0 {
        let p_y = un(e, UnaryOp::Exp, logp_y, span)?;
        let one = e.constant(1.0, span);
        // 1 - p never below 0, where rounding could make it -1e-8 and a power NaN.
        let zero = e.constant(0.0, span);
        let q = bin(e, BinaryOp::Sub, one, p_y, span)?;
        let q = bin(e, BinaryOp::Max, q, zero, span)?;
        let g = e.constant(gamma, span);
        let w = bin(e, BinaryOp::Pow, q, g, span)?;
        per = bin(e, BinaryOp::Mul, w, logp_y, span)?;
    }
    let total = sum_all(e, per, span)?;
    let n = row_count(e, &rows, span)?;
    let mean = bin(e, BinaryOp::Div, total, n, span)?;
    Ok(Value::Tensor(un(e, UnaryOp::Neg, mean, span)?))
}

/// `cosine(a, b)`: `1 - cos(a, b)` along the last axis, averaged over the rows (PyTorch's
/// `CosineEmbeddingLoss` with every target 1); `cos = a·b / max(|a| |b|, 1e-8)`.
fn cosine(e: &mut Elaborator, args: &BoundArgs, span: Span) -> Result<Value, Diagnostic> {
    let a = args.tensor("a")?;
    let b = args.tensor("b")?;
    same_shape(e, a, b, "cosine")?;
    let dims = e.graph.ty(a.0).shape.dims().to_vec();
    if dims.is_empty() {
        return Err(Diagnostic::error(
            ErrorCode::ShapeMismatch,
            "`cosine` compares vectors along the last axis, got scalars",
            a.1,
        ));
    }
    let ab = bin(e, BinaryOp::Mul, a.0, b.0, span)?;
    let dot = sum_last(e, ab, false, span)?;
    let aa = bin(e, BinaryOp::Mul, a.0, a.0, span)?;
    let na = sum_last(e, aa, false, span)?;
    let bb = bin(e, BinaryOp::Mul, b.0, b.0, span)?;
    let nb = sum_last(e, bb, false, span)?;
    let n2 = bin(e, BinaryOp::Mul, na, nb, span)?;
    let eps2 = e.constant(1e-16, span);
    let n2 = bin(e, BinaryOp::Max, n2, eps2, span)?;
    let norm = un(e, UnaryOp::Sqrt, n2, span)?;
    let cos = bin(e, BinaryOp::Div, dot, norm, span)?;
    let one = e.constant(1.0, span);
    let per = bin(e, BinaryOp::Sub, one, cos, span)?;
    Ok(Value::Tensor(mean_all(e, per, span)?))
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

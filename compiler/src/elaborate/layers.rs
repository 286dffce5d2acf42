//! The built-in layers and functions, each built from the IR's primitive ops.
//!
//! Layouts follow PyTorch so weights move between the two by renaming alone: a dense
//! layer's weight is `[out, in]` and computes `y = x Wᵀ + b`.

use super::args::{BoundArgs, ParamSpec, opt, req};
use super::value::{Spanned, Value};
use super::{Elaborator, closest, describe};
use crate::ir::{BinaryOp, Dim, Init, Op, ReduceOp, Shape, UnaryOp, ValueId};
use crate::source::Span;
use crate::source::{Diagnostic, ErrorCode};
use crate::syntax::ast::Ident;

static X: &[ParamSpec] = &[req("x")];
static AXIS: &[ParamSpec] = &[req("x"), opt("axis")];
static REDUCE: &[ParamSpec] = &[req("x"), opt("axis"), opt("keepdims")];
static DENSE: &[ParamSpec] = &[req("x"), req("units"), opt("bias"), opt("init")];
static MATMUL: &[ParamSpec] = &[req("a"), req("b")];
static RESHAPE: &[ParamSpec] = &[req("x"), req("shape")];
static SHAPE: &[ParamSpec] = &[req("shape")];
static TRANSPOSE: &[ParamSpec] = &[req("x"), opt("perm")];
static BATCH_NORM: &[ParamSpec] = &[req("x"), opt("momentum"), opt("eps"), opt("frozen")];
static DROPOUT: &[ParamSpec] = &[req("x"), req("p"), opt("at_inference")];
static CONV2D: &[ParamSpec] = &[
    req("x"),
    req("out_channels"),
    req("kernel"),
    opt("stride"),
    opt("padding"),
    opt("dilation"),
    opt("bias"),
    opt("init"),
    opt("groups"),
];
static POOL2D: &[ParamSpec] = &[req("x"), req("kernel"), opt("stride")];
static LAYER_NORM: &[ParamSpec] = &[req("x"), opt("eps")];
static EMBEDDING: &[ParamSpec] = &[req("ids"), req("vocab"), req("dim")];
static POSITIONAL: &[ParamSpec] = &[req("x"), opt("kind")];
static LEAKY_RELU: &[ParamSpec] = &[req("x"), opt("slope")];
static GELU: &[ParamSpec] = &[req("x"), opt("approximate")];
static UPSAMPLE: &[ParamSpec] = &[req("x"), opt("factor")];
static RECURRENT: &[ParamSpec] = &[
    req("x"),
    req("hidden"),
    opt("layers"),
    opt("bidirectional"),
    opt("return_sequences"),
];
static SLICE: &[ParamSpec] = &[req("x"), req("start"), req("len"), opt("axis")];
static SPLIT: &[ParamSpec] = &[req("x"), req("parts"), opt("axis")];
static SELF_ATTENTION: &[ParamSpec] = &[req("x"), req("heads"), opt("causal"), opt("key_mask")];
static CROSS_ATTENTION: &[ParamSpec] = &[req("x"), req("memory"), req("heads"), opt("key_mask")];
static RANDOM_UNIFORM: &[ParamSpec] = &[
    req("shape"),
    opt("low"),
    opt("high"),
    opt("seed"),
    opt("at_inference"),
];
static RANDOM_NORMAL: &[ParamSpec] = &[
    req("shape"),
    opt("mean"),
    opt("std"),
    opt("seed"),
    opt("at_inference"),
];
static RANDOM_FLIP: &[ParamSpec] = &[
    req("x"),
    opt("p"),
    opt("axis"),
    opt("seed"),
    opt("at_inference"),
];
static RANDOM_SHIFT: &[ParamSpec] = &[req("x"), req("pixels"), opt("seed"), opt("at_inference")];
static NOISE: &[ParamSpec] = &[req("x"), req("std"), opt("seed"), opt("at_inference")];
static CONV_TRANSPOSE2D: &[ParamSpec] = &[
    req("x"),
    req("out_channels"),
    req("kernel"),
    opt("stride"),
    opt("padding"),
    opt("output_padding"),
    opt("dilation"),
    opt("bias"),
    opt("init"),
];
static ENCODER_LAYER: &[ParamSpec] = &[
    req("x"),
    req("heads"),
    req("ff"),
    opt("norm_first"),
    opt("eps"),
    opt("key_mask"),
    opt("activation"),
];
static DECODER_LAYER: &[ParamSpec] = &[
    req("x"),
    req("memory"),
    req("heads"),
    req("ff"),
    opt("causal"),
    opt("norm_first"),
    opt("eps"),
    opt("memory_mask"),
    opt("activation"),
];

/// The parameter list of a built-in, or None if `name` is not one.
pub fn lookup(name: &str) -> Option<&'static [ParamSpec]> {
    if let Some(loss) = crate::train::losses::find(name) {
        return Some(loss.params);
    }
    if let Some(params) = super::math::lookup(name) {
        return Some(params);
    }
    Some(match name {
        "dense" => DENSE,
        "matmul" => MATMUL,
        "relu" | "sigmoid" | "tanh" | "exp" | "log" | "sqrt" | "abs" | "flatten" => X,
        "stop_gradient" => X,
        "uniform" => RANDOM_UNIFORM,
        "normal" => RANDOM_NORMAL,
        "random_flip" => RANDOM_FLIP,
        "random_shift" => RANDOM_SHIFT,
        "noise" => NOISE,
        "softmax" | "log_softmax" => AXIS,
        "sum" | "mean" | "max" | "min" => REDUCE,
        "reshape" => RESHAPE,
        "zeros" => SHAPE,
        "transpose" => TRANSPOSE,
        "slice" => SLICE,
        "split" => SPLIT,
        "concat" => AXIS,
        "batch_norm" => BATCH_NORM,
        "dropout" => DROPOUT,
        "conv2d" | "conv1d" => CONV2D,
        "conv_transpose2d" => CONV_TRANSPOSE2D,
        "max_pool2d" | "avg_pool2d" | "max_pool1d" | "avg_pool1d" => POOL2D,
        "global_avg_pool" => X,
        "layer_norm" => LAYER_NORM,
        "gelu" => GELU,
        "softplus" | "erf" => X,
        "leaky_relu" => LEAKY_RELU,
        "upsample2d" => UPSAMPLE,
        "embedding" => EMBEDDING,
        "positional" => POSITIONAL,
        "self_attention" => SELF_ATTENTION,
        "cross_attention" => CROSS_ATTENTION,
        "transformer_encoder_layer" => ENCODER_LAYER,
        "transformer_decoder_layer" => DECODER_LAYER,
        "rnn" | "lstm" | "gru" => RECURRENT,
        _ => return None,
    })
}

/// Every built-in's name but the losses' ([`crate::train::losses::LOSSES`]), for suggestions.
const NAMES: &[&str] = &[
    "dense",
    "matmul",
    "relu",
    "sigmoid",
    "tanh",
    "erf",
    "exp",
    "log",
    "sqrt",
    "abs",
    "flatten",
    "stop_gradient",
    "uniform",
    "normal",
    "random_flip",
    "random_shift",
    "noise",
    "softmax",
    "log_softmax",
    "sum",
    "mean",
    "max",
    "min",
    "reshape",
    "zeros",
    "transpose",
    "slice",
    "split",
    "concat",
    "batch_norm",
    "dropout",
    "conv2d",
    "conv1d",
    "conv_transpose2d",
    "max_pool2d",
    "avg_pool2d",
    "max_pool1d",
    "avg_pool1d",
    "global_avg_pool",
    "layer_norm",
    "gelu",
    "leaky_relu",
    "softplus",
    "upsample2d",
    "embedding",
    "positional",
    "self_attention",
    "cross_attention",
    "transformer_encoder_layer",
    "transformer_decoder_layer",
    "rnn",
    "lstm",
    "gru",
];

pub fn unknown_layer<'a>(callee: &Ident, blocks: impl Iterator<Item = &'a str>) -> Diagnostic {
    let blocks: Vec<&str> = blocks.collect();
    let mut d = Diagnostic::error(
        ErrorCode::UnknownLayer,
        format!("unknown layer or function `{}`", callee.name),
        callee.span,
    )
    .with_label("not a layer, block or function");
    let losses = crate::train::losses::LOSSES.iter().map(|l| l.name);
    let candidates = NAMES
        .iter()
        .chain(super::math::NAMES)
        .copied()
        .chain(losses)
        .chain(blocks.iter().copied());
    if let Some(c) = closest(&callee.name, candidates) {
        d = d.with_help(format!("did you mean `{c}`?"));
    }
    d
}

/// Calls the built-in `callee`. `path` names its parameters (an instance's or a repeat
/// copy's); layers with parameters take a fresh name otherwise.
pub(super) fn call_layer(
    e: &mut Elaborator,
    callee: &Ident,
    span: Span,
    positional: Vec<Spanned>,
    named: Vec<(String, Span, Spanned)>,
    path: Option<String>,
) -> Result<Value, Diagnostic> {
    let name = callee.name.as_str();
    let specs = lookup(name).ok_or_else(|| unknown_layer(callee, std::iter::empty()))?;
    let mut named = named;
    let trainable = take_trainable(&mut named)?;
    // Counted, not copied: copying every earlier path made a model of n layers O(n²).
    let params_before = e.param_order.len();
    let args = BoundArgs::bind(name, span, specs, positional, named, name == "concat")?;
    let value = built_in(e, callee, &args, span, path)?;
    if let Some((false, at)) = trainable {
        let created: Vec<String> = e.param_order[params_before..].to_vec();
        if created.is_empty() {
            return Err(Diagnostic::error(
                ErrorCode::BadArgument,
                format!("`{name}` has no parameters of its own to freeze here"),
                at,
            )
            .with_label("`trainable = false` freezes the parameters this call creates")
            .with_note(
                "a layer instance called again shares the parameters its first call created: \
                 freeze it there",
            ));
        }
        e.non_trainable.extend(created);
    }
    Ok(value)
}

/// A named argument of a call: its name, the name's span, and its value.
type NamedArg = (String, Span, Spanned);

/// Takes the `trainable = true|false` argument every built-in accepts out of `named`:
/// with `false`, the parameters the call creates are frozen (no gradient, no optimizer
/// state, never updated by a training step).
fn take_trainable(named: &mut Vec<NamedArg>) -> Result<Option<(bool, Span)>, Diagnostic> {
    let Some(at) = named.iter().position(|(key, _, _)| key == "trainable") else {
        return Ok(None);
    };
    let (_, _, arg) = named.remove(at);
    match arg.value {
        Value::Bool(b) => Ok(Some((b, arg.span))),
        _ => Err(Diagnostic::error(
            ErrorCode::BadArgument,
            "`trainable` is `true` or `false`",
            arg.span,
        )
        .with_label("not a boolean")),
    }
}

/// The built-in `callee` on bound arguments.
fn built_in(
    e: &mut Elaborator,
    callee: &Ident,
    args: &BoundArgs,
    span: Span,
    path: Option<String>,
) -> Result<Value, Diagnostic> {
    let name = callee.name.as_str();
    let unary = match name {
        "relu" => Some(UnaryOp::Relu),
        "sigmoid" => Some(UnaryOp::Sigmoid),
        "tanh" => Some(UnaryOp::Tanh),
        "erf" => Some(UnaryOp::Erf),
        "exp" => Some(UnaryOp::Exp),
        "log" => Some(UnaryOp::Log),
        "sqrt" => Some(UnaryOp::Sqrt),
        "abs" => Some(UnaryOp::Abs),
        _ => None,
    };
    if let Some(op) = unary {
        let (x, _) = args.tensor("x")?;
        return Ok(Value::Tensor(e.op(Op::Unary(op), &[x], span)?));
    }
    if let Some(loss) = crate::train::losses::find(name) {
        return (loss.build)(e, args, span);
    }
    if super::math::lookup(name).is_some() {
        return super::math::call(e, name, args, span);
    }
    match name {
        "dense" => dense(e, args, span, path),
        "matmul" => {
            let (a, _) = args.tensor("a")?;
            let (b, _) = args.tensor("b")?;
            Ok(Value::Tensor(e.op(Op::MatMul, &[a, b], span)?))
        }
        "stop_gradient" => {
            let (x, _) = args.tensor("x")?;
            Ok(Value::Tensor(e.op(Op::StopGradient, &[x], span)?))
        }
        "uniform" => super::random::uniform(e, args, span, path),
        "normal" => super::random::normal(e, args, span, path),
        "random_flip" => super::augment::random_flip(e, args, span, path),
        "random_shift" => super::augment::random_shift(e, args, span, path),
        "noise" => super::augment::noise(e, args, span, path),
        "softmax" | "log_softmax" => softmax(e, args, span, name == "log_softmax"),
        "sum" | "mean" | "max" | "min" => reduce(e, args, span, name),
        "flatten" => flatten(e, args, span),
        "reshape" => reshape(e, args, span),
        "zeros" => zeros(e, args, span),
        "transpose" => transpose(e, args, span),
        "slice" => slice(e, args, span),
        "split" => split(e, args, span),
        "concat" => concat(e, args, span),
        "batch_norm" => super::normalization::batch_norm(e, args, span, path),
        "dropout" => super::normalization::dropout(e, args, span, path),
        "conv2d" => super::convolution::conv2d(e, args, span, path),
        "max_pool2d" | "avg_pool2d" => {
            super::convolution::pool2d(e, args, span, name == "max_pool2d")
        }
        "conv1d" => super::conv1d::conv1d(e, args, span, path),
        "conv_transpose2d" => super::conv_transpose::conv_transpose2d(e, args, span, path),
        "max_pool1d" | "avg_pool1d" => super::conv1d::pool1d(e, args, span, name == "max_pool1d"),
        "global_avg_pool" => super::convolution::global_avg_pool(e, args, span),
        "layer_norm" => super::attention::layer_norm(e, args, span, path),
        "gelu" => super::activations::gelu(e, args, span),
        "leaky_relu" => super::activations::leaky_relu(e, args, span),
        "softplus" => super::activations::softplus(e, args, span),
        "upsample2d" => super::activations::upsample2d(e, args, span),
        "embedding" => super::attention::embedding(e, args, span, path),
        "positional" => super::attention::positional(e, args, span, path),
        "self_attention" => super::attention::self_attention(e, args, span, path),
        "cross_attention" => super::attention::cross_attention(e, args, span, path),
        "transformer_encoder_layer" => super::transformer::encoder_layer(e, args, span, path),
        "transformer_decoder_layer" => super::transformer::decoder_layer(e, args, span, path),
        "rnn" | "lstm" | "gru" => match super::recurrent::Cell::parse(name) {
            Some(cell) => super::recurrent::recurrent(e, cell, args, span, path),
            None => Err(unknown_layer(callee, std::iter::empty())),
        },
        _ => Err(unknown_layer(callee, std::iter::empty())),
    }
}

fn dense(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
    path: Option<String>,
) -> Result<Value, Diagnostic> {
    let (x, xspan) = args.tensor("x")?;
    let units = args.positive_int("units", None)?;
    let bias = args.bool("bias", true)?;
    let init = args.init("init", Init::XavierUniform)?;
    let xty = e.graph.ty(x).clone();
    let Some(&last) = xty.shape.dims().last() else {
        return Err(Diagnostic::error(
            ErrorCode::ShapeMismatch,
            format!("`dense` needs an input with a feature dimension, got {xty}"),
            xspan,
        )
        .with_label(format!("this is {xty}")));
    };
    let Dim::Fixed(inputs) = last else {
        return Err(Diagnostic::error(
            ErrorCode::ShapeMismatch,
            format!("`dense` needs a fixed feature size as the last dimension, got {xty}"),
            xspan,
        )
        .with_label(format!("this is {xty}"))
        .with_help("the batch dimension comes first: `f32[batch, features]`"));
    };
    if xty.shape.rank() < 2 {
        return Err(Diagnostic::error(
            ErrorCode::ShapeMismatch,
            format!("`dense` needs an input of rank >= 2 (`[batch, features]`), got {xty}"),
            xspan,
        )
        .with_label(format!("this is {xty}")));
    }
    let path = path.unwrap_or_else(|| e.fresh_path("dense"));
    let w = e.param(format!("{path}.weight"), vec![units, inputs], init, span)?;
    let wt = e.op(Op::Transpose { perm: vec![1, 0] }, &[w], span)?;
    let mut y = e.op(Op::MatMul, &[x, wt], span)?;
    if bias {
        let b = e.param(format!("{path}.bias"), vec![units], Init::Zeros, span)?;
        y = e.op(Op::Binary(BinaryOp::Add), &[y, b], span)?;
    }
    Ok(Value::Tensor(y))
}

/// An axis argument, negative counting from the end, checked against `rank`.
pub(super) fn axis(
    args: &BoundArgs,
    name: &str,
    rank: usize,
    default: i64,
) -> Result<usize, Diagnostic> {
    let a = args.int(name, default)?;
    let r = rank as i64;
    if a < -r || a >= r {
        let span = args.get(name).map_or(args.call_span, |s| s.span);
        return Err(Diagnostic::error(
            ErrorCode::BadArgument,
            format!("axis {a} is out of range for a tensor of rank {rank}"),
            span,
        )
        .with_label(format!("valid axes are {} to {}", -r, r - 1)));
    }
    Ok(if a < 0 { (a + r) as usize } else { a as usize })
}

fn softmax(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
    log: bool,
) -> Result<Value, Diagnostic> {
    let (x, _) = args.tensor("x")?;
    let rank = e.graph.ty(x).shape.rank();
    let ax = axis(args, "axis", rank, -1)?;
    Ok(Value::Tensor(stable_softmax(e, x, ax, log, span)?))
}

/// Log-softmax of `x` along `ax`.
pub(crate) fn log_softmax(
    e: &mut Elaborator,
    x: ValueId,
    ax: usize,
    span: Span,
) -> Result<ValueId, Diagnostic> {
    stable_softmax(e, x, ax, true, span)
}

/// Softmax (or log-softmax) of `x` along `ax`.
pub(super) fn stable_softmax(
    e: &mut Elaborator,
    x: ValueId,
    ax: usize,
    log: bool,
    span: Span,
) -> Result<ValueId, Diagnostic> {
    // Subtracting the maximum keeps exp from overflowing; it cancels in the ratio.
    let m = e.op(
        Op::Reduce {
            op: ReduceOp::Max,
            axes: vec![ax],
            keep_dims: true,
        },
        &[x],
        span,
    )?;
    let shifted = e.op(Op::Binary(BinaryOp::Sub), &[x, m], span)?;
    let ex = e.op(Op::Unary(UnaryOp::Exp), &[shifted], span)?;
    let s = e.op(
        Op::Reduce {
            op: ReduceOp::Sum,
            axes: vec![ax],
            keep_dims: true,
        },
        &[ex],
        span,
    )?;
    if log {
        let ls = e.op(Op::Unary(UnaryOp::Log), &[s], span)?;
        e.op(Op::Binary(BinaryOp::Sub), &[shifted, ls], span)
    } else {
        e.op(Op::Binary(BinaryOp::Div), &[ex, s], span)
    }
}

/// `sum`, `mean`, `max`, `min` over `axis` (an axis, a list of them, or every axis when
/// not given), keeping the reduced axes as 1s with `keepdims`. Only a train section's
/// loss may fold the batch; there `mean` divides by the rows the batch has at run time.
fn reduce(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
    name: &str,
) -> Result<Value, Diagnostic> {
    let (x, xspan) = args.tensor("x")?;
    let ty = e.graph.ty(x).clone();
    let rank = ty.shape.rank();
    let mut axes = match args.get("axis").map(|s| s.value.clone()) {
        None => (0..rank).collect(),
        Some(Value::List(items)) => {
            let mut axes = Vec::new();
            for it in items {
                let Value::Number {
                    value,
                    integer: true,
                } = it
                else {
                    return Err(Diagnostic::error(
                        ErrorCode::BadArgument,
                        "axes must be integers",
                        args.call_span,
                    ));
                };
                let a = value as i64;
                if a < -(rank as i64) || a >= rank as i64 {
                    return Err(Diagnostic::error(
                        ErrorCode::BadArgument,
                        format!("axis {a} is out of range for a tensor of rank {rank}"),
                        args.get("axis").map_or(span, |s| s.span),
                    ));
                }
                axes.push(if a < 0 {
                    (a + rank as i64) as usize
                } else {
                    a as usize
                });
            }
            axes
        }
        Some(_) => vec![axis(args, "axis", rank, -1)?],
    };
    axes.sort();
    axes.dedup();
    // The sum of a scalar is itself.
    if axes.is_empty() {
        return Ok(Value::Tensor(x));
    }
    let folds_batch = axes.iter().any(|&a| ty.shape.dims()[a] == Dim::Batch);
    if folds_batch && !e.reduces_batch {
        let mut d = Diagnostic::error(
            ErrorCode::ShapeMismatch,
            format!("`{name}` over the batch dimension would mix samples of {ty}"),
            xspan,
        )
        .with_label(format!("this is {ty}"));
        if args.get("axis").is_none() {
            d = d.with_help("without `axis`, every axis is reduced: give the axes within a sample, e.g. `axis = -1`");
        }
        return Err(d.with_note("only a train section's `loss` and `term`s reduce over the batch"));
    }
    let keep_dims = args.bool("keepdims", false)?;
    let op = match name {
        "max" => ReduceOp::Max,
        "min" => ReduceOp::Min,
        _ => ReduceOp::Sum,
    };
    let mut y = e.op(
        Op::Reduce {
            op,
            axes: axes.clone(),
            keep_dims,
        },
        &[x],
        span,
    )?;
    if name == "mean" {
        let reduced: Vec<Dim> = axes.iter().map(|&a| ty.shape.dims()[a]).collect();
        y = if folds_batch {
            // Counted at run time, so a last partial batch is averaged over its own size.
            let n = crate::train::losses::row_count(e, &reduced, span)?;
            e.op(Op::Binary(BinaryOp::Div), &[y, n], span)?
        } else {
            let n: u64 = reduced.iter().filter_map(|d| d.fixed()).product();
            let c = e.constant(1.0 / n as f64, span);
            e.op(Op::Binary(BinaryOp::Mul), &[y, c], span)?
        };
    }
    Ok(Value::Tensor(y))
}

fn flatten(e: &mut Elaborator, args: &BoundArgs, span: Span) -> Result<Value, Diagnostic> {
    let (x, xspan) = args.tensor("x")?;
    let ty = e.graph.ty(x).clone();
    let dims = ty.shape.dims();
    if dims.is_empty() {
        return Err(Diagnostic::error(
            ErrorCode::ShapeMismatch,
            "cannot flatten a scalar",
            xspan,
        ));
    }
    if dims[1..].contains(&Dim::Batch) {
        return Err(Diagnostic::error(
            ErrorCode::ShapeMismatch,
            format!("`flatten` keeps the first dimension and needs the batch there, got {ty}"),
            xspan,
        ));
    }
    let rest: u64 = dims[1..].iter().filter_map(|d| d.fixed()).product();
    let shape = Shape(vec![dims[0], Dim::Fixed(rest)]);
    Ok(Value::Tensor(e.op(Op::Reshape { shape }, &[x], span)?))
}

/// A shape argument: a list of positive integers and at most one `batch`.
pub(super) fn shape_list(shape_arg: &Spanned, callee: &str) -> Result<Vec<Dim>, Diagnostic> {
    let Value::List(items) = &shape_arg.value else {
        return Err(Diagnostic::error(
            ErrorCode::BadArgument,
            format!(
                "`{callee}` needs a shape list like `[batch, 8, 8]`, got {}",
                describe(&shape_arg.value)
            ),
            shape_arg.span,
        ));
    };
    let mut dims = Vec::new();
    for it in items {
        match it {
            Value::Symbol(s) if s == "batch" && !dims.contains(&Dim::Batch) => {
                dims.push(Dim::Batch)
            }
            Value::Number {
                value,
                integer: true,
            } if *value >= 1.0 => dims.push(Dim::Fixed(*value as u64)),
            v => {
                return Err(Diagnostic::error(
                    ErrorCode::BadArgument,
                    format!(
                        "a dimension must be a positive integer or `batch` (once), got {}",
                        describe(v)
                    ),
                    shape_arg.span,
                ));
            }
        }
    }
    Ok(dims)
}

fn reshape(e: &mut Elaborator, args: &BoundArgs, span: Span) -> Result<Value, Diagnostic> {
    let (x, _) = args.tensor("x")?;
    let shape_arg = args.get("shape").cloned().expect("required argument");
    let dims = shape_list(&shape_arg, "reshape")?;
    Ok(Value::Tensor(e.op(
        Op::Reshape { shape: Shape(dims) },
        &[x],
        span,
    )?))
}

/// `zeros(shape)`: a tensor of zeros, `batch` rows of them when the shape holds it (a
/// loop's first carry, padding). A constant stretched to the shape, as a recurrent
/// layer's zero state is: nothing is stored or trained.
fn zeros(e: &mut Elaborator, args: &BoundArgs, span: Span) -> Result<Value, Diagnostic> {
    let shape_arg = args.get("shape").cloned().expect("required argument");
    let dims = shape_list(&shape_arg, "zeros")?;
    let zero = e.constant(0.0, span);
    Ok(Value::Tensor(e.op(
        Op::Broadcast { shape: Shape(dims) },
        &[zero],
        span,
    )?))
}

fn transpose(e: &mut Elaborator, args: &BoundArgs, span: Span) -> Result<Value, Diagnostic> {
    let (x, _) = args.tensor("x")?;
    let rank = e.graph.ty(x).shape.rank();
    let perm = match args.get("perm") {
        None => {
            if rank < 2 {
                return Err(Diagnostic::error(
                    ErrorCode::ShapeMismatch,
                    "`transpose` needs rank >= 2",
                    span,
                ));
            }
            let mut p: Vec<usize> = (0..rank).collect();
            p.swap(rank - 2, rank - 1);
            p
        }
        Some(Spanned {
            value: Value::List(items),
            span: pspan,
        }) => items
            .iter()
            .map(|v| match v {
                Value::Number {
                    value,
                    integer: true,
                } if *value >= 0.0 => Ok(*value as usize),
                _ => Err(Diagnostic::error(
                    ErrorCode::BadArgument,
                    "a permutation lists axes as integers",
                    *pspan,
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(s) => {
            return Err(Diagnostic::error(
                ErrorCode::BadArgument,
                "`perm` must be a list of axes",
                s.span,
            ));
        }
    };
    Ok(Value::Tensor(e.op(Op::Transpose { perm }, &[x], span)?))
}

/// `slice(x, start, len, axis = -1)`: the `len` elements of `axis` from `start` on (any
/// element type; not along `batch`).
fn slice(e: &mut Elaborator, args: &BoundArgs, span: Span) -> Result<Value, Diagnostic> {
    let (x, _) = args.tensor("x")?;
    let rank = e.graph.ty(x).shape.rank();
    let ax = axis(args, "axis", rank, -1)?;
    let start = args.int("start", 0)?;
    let Ok(start) = u64::try_from(start) else {
        let sspan = args.get("start").map_or(span, |s| s.span);
        return Err(Diagnostic::error(
            ErrorCode::BadArgument,
            format!("`slice` starts at an index >= 0, got {start}"),
            sspan,
        )
        .with_label("must be >= 0"));
    };
    let len = args.positive_int("len", None)?;
    Ok(Value::Tensor(e.op(
        Op::Slice {
            axis: ax,
            start,
            len,
        },
        &[x],
        span,
    )?))
}

/// `split(x, parts, axis = -1)`: `x` cut along an axis into `parts` equal pieces, or
/// into pieces of the sizes listed (`[2, 3]`); a list of tensors, taken apart by a
/// binding `a, b = split(…)`. The inverse of `concat`.
fn split(e: &mut Elaborator, args: &BoundArgs, span: Span) -> Result<Value, Diagnostic> {
    let (x, xspan) = args.tensor("x")?;
    let ty = e.graph.ty(x).clone();
    let ax = axis(args, "axis", ty.shape.rank(), -1)?;
    let pspan = args.get("parts").map_or(span, |s| s.span);
    let bad = |msg: String| {
        Diagnostic::error(ErrorCode::BadArgument, msg, pspan).with_label("how to cut")
    };
    let Dim::Fixed(n) = ty.shape.dims()[ax] else {
        return Err(Diagnostic::error(
            ErrorCode::ShapeMismatch,
            "`split` cannot cut the batch dimension",
            xspan,
        )
        .with_label(format!("this is {ty}")));
    };
    let sizes: Vec<u64> = match args.get("parts").map(|s| &s.value) {
        Some(Value::Number {
            value,
            integer: true,
        }) if *value >= 1.0 => {
            let k = *value as u64;
            if n % k != 0 {
                return Err(bad(format!(
                    "`split` into {k} equal parts needs a size divisible by {k}, got {n}"
                )));
            }
            vec![n / k; k as usize]
        }
        Some(Value::List(items)) if !items.is_empty() => {
            let mut sizes = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::Number {
                        value,
                        integer: true,
                    } if *value >= 1.0 => sizes.push(*value as u64),
                    _ => return Err(bad("`split` sizes are positive integers".into())),
                }
            }
            if sizes.iter().sum::<u64>() != n {
                return Err(bad(format!(
                    "`split` sizes {sizes:?} add up to {}, not the axis size {n}",
                    sizes.iter().sum::<u64>()
                )));
            }
            sizes
        }
        _ => {
            return Err(bad(
                "`parts` of `split` is a count of equal parts or a list of sizes".into(),
            ));
        }
    };
    let mut start = 0;
    let mut parts = Vec::with_capacity(sizes.len());
    for len in sizes {
        let part = e.op(
            Op::Slice {
                axis: ax,
                start,
                len,
            },
            &[x],
            span,
        )?;
        parts.push(Value::Tensor(part));
        start += len;
    }
    Ok(Value::List(parts))
}

fn concat(e: &mut Elaborator, args: &BoundArgs, span: Span) -> Result<Value, Diagnostic> {
    let (first, _) = args.tensor("x")?;
    let mut parts = vec![first];
    for r in &args.rest {
        match r.value {
            Value::Tensor(t) => parts.push(t),
            ref v => {
                return Err(Diagnostic::error(
                    ErrorCode::BadArgument,
                    format!("`concat` joins tensors, got {}", v.kind()),
                    r.span,
                ));
            }
        }
    }
    let rank = e.graph.ty(first).shape.rank();
    let ax = axis(args, "axis", rank, -1)?;
    Ok(Value::Tensor(e.op(
        Op::Concat { axis: ax },
        &parts,
        span,
    )?))
}

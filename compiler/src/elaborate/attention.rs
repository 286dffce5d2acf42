//! Transformer encoder building blocks (Vaswani et al. 2017), each built from the IR's
//! primitive ops: layer normalization, GELU, token embeddings, positional encodings,
//! multi-head self-attention and the encoder layer that combines them.
//!
//! Layouts and names follow PyTorch so weights move over by renaming: projections are
//! dense layers (`weight` `[out, in]`), `embedding.weight` is `[vocab, dim]`, and the
//! encoder layer's parts are `self_attn`, `linear1`, `linear2`, `norm1`, `norm2` as in
//! `nn.TransformerEncoderLayer`. Unlike PyTorch's packed `in_proj_weight`, the query, key
//! and value projections are separate dense layers (`q`, `k`, `v`, `out`).
//!
//! There is no constant-tensor op, so the few tables these layers need (the causal
//! mask's positions, the sinusoidal encoding) are built from scalar constants joined by
//! `concat`: cheap for the short sequences they serve, one small kernel per element.

use super::Elaborator;
use super::args::BoundArgs;
use super::value::Value;
use crate::ir::{BinaryOp, DType, Dim, Init, Op, ReduceOp, Shape, Span, UnaryOp, ValueId};
use crate::syntax::{Diagnostic, ErrorCode};

fn bin(
    e: &mut Elaborator,
    op: BinaryOp,
    a: ValueId,
    b: ValueId,
    span: Span,
) -> Result<ValueId, Diagnostic> {
    e.op(Op::Binary(op), &[a, b], span)
}

fn sum_last(e: &mut Elaborator, x: ValueId, span: Span) -> Result<ValueId, Diagnostic> {
    let rank = e.graph.ty(x).shape.rank();
    e.op(
        Op::Reduce {
            op: ReduceOp::Sum,
            axes: vec![rank - 1],
            keep_dims: true,
        },
        &[x],
        span,
    )
}

/// The fixed size of `x`'s last dimension, or a diagnostic naming `what` needs it.
fn features(e: &Elaborator, x: ValueId, xspan: Span, what: &str) -> Result<u64, Diagnostic> {
    let ty = e.graph.ty(x).clone();
    match ty.shape.dims().last() {
        Some(Dim::Fixed(n)) if ty.shape.rank() >= 2 => Ok(*n),
        _ => Err(Diagnostic::error(
            ErrorCode::ShapeMismatch,
            format!("`{what}` needs `[batch, …, features]` with fixed features, got {ty}"),
            xspan,
        )
        .with_label(format!("this is {ty}"))),
    }
}

/// `x [..., d]` checked to be `[batch, T, d]`, returning `(T, d)`.
fn sequence(e: &Elaborator, x: ValueId, xspan: Span, what: &str) -> Result<(u64, u64), Diagnostic> {
    let ty = e.graph.ty(x).clone();
    match ty.shape.dims() {
        [Dim::Batch, Dim::Fixed(t), Dim::Fixed(d)] => Ok((*t, *d)),
        _ => Err(Diagnostic::error(
            ErrorCode::ShapeMismatch,
            format!("`{what}` needs a sequence `[batch, T, d]`, got {ty}"),
            xspan,
        )
        .with_label(format!("this is {ty}"))),
    }
}

/// A constant `f32[shape]` holding `values` in row-major order.
fn table(
    e: &mut Elaborator,
    values: &[f64],
    shape: Vec<u64>,
    span: Span,
) -> Result<ValueId, Diagnostic> {
    let one = Shape(vec![Dim::Fixed(1)]);
    let mut parts = Vec::with_capacity(values.len());
    for &v in values {
        let c = e.constant(v, span);
        parts.push(e.op(Op::Reshape { shape: one.clone() }, &[c], span)?);
    }
    let flat = e.op(Op::Concat { axis: 0 }, &parts, span)?;
    let shape = Shape(shape.into_iter().map(Dim::Fixed).collect());
    e.op(Op::Reshape { shape }, &[flat], span)
}

/// `y = x Wᵀ + b` with `path.weight` `[units, in]` and `path.bias` `[units]`, as `dense`.
fn linear(
    e: &mut Elaborator,
    x: ValueId,
    inputs: u64,
    units: u64,
    path: &str,
    span: Span,
) -> Result<ValueId, Diagnostic> {
    let y = linear_no_bias(e, x, inputs, units, path, span)?;
    let b = e.param(format!("{path}.bias"), vec![units], Init::Zeros, span)?;
    bin(e, BinaryOp::Add, y, b, span)
}

/// `y = x Wᵀ` with `path.weight` `[units, in]`.
fn linear_no_bias(
    e: &mut Elaborator,
    x: ValueId,
    inputs: u64,
    units: u64,
    path: &str,
    span: Span,
) -> Result<ValueId, Diagnostic> {
    let w = e.param(
        format!("{path}.weight"),
        vec![units, inputs],
        Init::XavierUniform,
        span,
    )?;
    let wt = e.op(Op::Transpose { perm: vec![1, 0] }, &[w], span)?;
    e.op(Op::MatMul, &[x, wt], span)
}

fn eps_arg(args: &BoundArgs) -> Result<f64, Diagnostic> {
    match args.get("eps") {
        None => Ok(1e-5),
        Some(s) => match s.value {
            Value::Number { value, .. } if value > 0.0 => Ok(value),
            _ => Err(Diagnostic::error(
                ErrorCode::BadHyperParam,
                format!("argument `eps` of `{}` must be positive", args.callee),
                s.span,
            )
            .with_label("must be positive")),
        },
    }
}

/// `layer_norm(x, eps = 1e-5)` over the last dimension, as PyTorch's `LayerNorm`:
/// `(x - mean) / sqrt(var + eps) * weight + bias` with the biased variance; `weight`
/// starts at ones and `bias` at zeros.
pub(super) fn layer_norm(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
    path: Option<String>,
) -> Result<Value, Diagnostic> {
    let (x, xspan) = args.tensor("x")?;
    let eps = eps_arg(args)?;
    let d = features(e, x, xspan, "layer_norm")?;
    let path = path.unwrap_or_else(|| e.fresh_path("layer_norm"));
    Ok(Value::Tensor(normalize(e, x, d, eps, &path, span)?))
}

fn normalize(
    e: &mut Elaborator,
    x: ValueId,
    d: u64,
    eps: f64,
    path: &str,
    span: Span,
) -> Result<ValueId, Diagnostic> {
    let weight = e.param(format!("{path}.weight"), vec![d], Init::Ones, span)?;
    let bias = e.param(format!("{path}.bias"), vec![d], Init::Zeros, span)?;
    let inv_d = e.constant(1.0 / d as f64, span);
    let s = sum_last(e, x, span)?;
    let mean = bin(e, BinaryOp::Mul, s, inv_d, span)?;
    let centered = bin(e, BinaryOp::Sub, x, mean, span)?;
    let sq = bin(e, BinaryOp::Mul, centered, centered, span)?;
    let ss = sum_last(e, sq, span)?;
    let var = bin(e, BinaryOp::Mul, ss, inv_d, span)?;
    let eps_c = e.constant(eps, span);
    let ve = bin(e, BinaryOp::Add, var, eps_c, span)?;
    let sd = e.op(Op::Unary(UnaryOp::Sqrt), &[ve], span)?;
    let normed = bin(e, BinaryOp::Div, centered, sd, span)?;
    let scaled = bin(e, BinaryOp::Mul, normed, weight, span)?;
    bin(e, BinaryOp::Add, scaled, bias, span)
}

/// `gelu(x)`, the tanh approximation (Hendrycks & Gimpel 2016; PyTorch's
/// `approximate="tanh"`): `0.5 x (1 + tanh(sqrt(2/π) (x + 0.044715 x³)))`.
pub(super) fn gelu(e: &mut Elaborator, args: &BoundArgs, span: Span) -> Result<Value, Diagnostic> {
    let (x, _) = args.tensor("x")?;
    Ok(Value::Tensor(gelu_of(e, x, span)?))
}

fn gelu_of(e: &mut Elaborator, x: ValueId, span: Span) -> Result<ValueId, Diagnostic> {
    let x2 = bin(e, BinaryOp::Mul, x, x, span)?;
    let x3 = bin(e, BinaryOp::Mul, x2, x, span)?;
    let c = e.constant(0.044715, span);
    let cx3 = bin(e, BinaryOp::Mul, x3, c, span)?;
    let inner = bin(e, BinaryOp::Add, x, cx3, span)?;
    let k = e.constant((2.0 / std::f64::consts::PI).sqrt(), span);
    let scaled = bin(e, BinaryOp::Mul, inner, k, span)?;
    let t = e.op(Op::Unary(UnaryOp::Tanh), &[scaled], span)?;
    let one = e.constant(1.0, span);
    let t1 = bin(e, BinaryOp::Add, t, one, span)?;
    let half = e.constant(0.5, span);
    let hx = bin(e, BinaryOp::Mul, x, half, span)?;
    bin(e, BinaryOp::Mul, hx, t1, span)
}

/// `embedding(ids, vocab, dim)`: integer ids `i32[batch, …]` to rows of `weight`
/// `[vocab, dim]` (PyTorch's `Embedding`, initialized N(0, 1)), computed as
/// `one_hot(ids) x weight`. An id outside `0..vocab` gives a row of zeros.
pub(super) fn embedding(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
    path: Option<String>,
) -> Result<Value, Diagnostic> {
    let (ids, ids_span) = args.tensor("ids")?;
    let vocab = args.positive_int("vocab", None)?;
    let dim = args.positive_int("dim", None)?;
    let ty = e.graph.ty(ids).clone();
    if ty.dtype != DType::I32 || ty.shape.rank() < 1 {
        return Err(Diagnostic::error(
            ErrorCode::DTypeMismatch,
            format!("`embedding` needs integer ids `i32[batch, …]`, got {ty}"),
            ids_span,
        )
        .with_label(format!("this is {ty}")));
    }
    let path = path.unwrap_or_else(|| e.fresh_path("embedding"));
    let w = e.param(
        format!("{path}.weight"),
        vec![vocab, dim],
        Init::Normal(1.0),
        span,
    )?;
    let hot = e.op(Op::OneHot { classes: vocab }, &[ids], span)?;
    Ok(Value::Tensor(e.op(Op::MatMul, &[hot, w], span)?))
}

/// `positional(x, kind = "learned")` adds a position code to a sequence `[batch, T, d]`:
/// `learned`, a trained `weight` `[T, d]` (initialized N(0, 0.02²)); `sinusoidal`, the
/// fixed table of Vaswani et al.: `sin(t / 10000^(2i/d))` at even features `2i`, `cos`
/// at odd ones.
pub(super) fn positional(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
    path: Option<String>,
) -> Result<Value, Diagnostic> {
    let (x, xspan) = args.tensor("x")?;
    args.check_word("kind")?;
    let (t, d) = sequence(e, x, xspan, "positional")?;
    let kind = args.word("kind");
    let code = match kind.as_ref().map(|(w, s)| (w.as_str(), *s)) {
        None | Some(("learned", _)) => {
            let path = path.unwrap_or_else(|| e.fresh_path("positional"));
            e.param(
                format!("{path}.weight"),
                vec![t, d],
                Init::Normal(0.02),
                span,
            )?
        }
        Some(("sinusoidal", _)) => {
            let mut values = Vec::with_capacity((t * d) as usize);
            for pos in 0..t {
                for f in 0..d {
                    let rate = 10000f64.powf(-((f - f % 2) as f64) / d as f64);
                    let angle = pos as f64 * rate;
                    values.push(if f % 2 == 0 { angle.sin() } else { angle.cos() });
                }
            }
            table(e, &values, vec![t, d], span)?
        }
        Some((other, wspan)) => {
            return Err(Diagnostic::error(
                ErrorCode::BadArgument,
                format!("unknown positional encoding `{other}`"),
                wspan,
            )
            .with_label("not an encoding")
            .with_note("encodings: \"learned\", \"sinusoidal\""));
        }
    };
    Ok(Value::Tensor(bin(e, BinaryOp::Add, x, code, span)?))
}

/// `self_attention(x, heads, causal = false)` over a sequence `[batch, T, d]`:
/// multi-head scaled dot-product attention with query, key, value and output projections
/// `q`, `k`, `v`, `out` (dense `[d, d]` each; `k` without a bias, which the softmax would
/// cancel). Each head sees `d / heads` features;
/// scores are scaled by `1 / sqrt(d / heads)`; `causal` lets position `i` attend only to
/// positions `j <= i`.
pub(super) fn self_attention(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
    path: Option<String>,
) -> Result<Value, Diagnostic> {
    let (x, xspan) = args.tensor("x")?;
    let heads = args.positive_int("heads", None)?;
    let causal = args.bool("causal", false)?;
    let (t, d) = sequence(e, x, xspan, "self_attention")?;
    check_heads(args, heads, d, span)?;
    let path = path.unwrap_or_else(|| e.fresh_path("self_attention"));
    let y = attend(e, x, t, d, heads, causal, &path, span)?;
    Ok(Value::Tensor(y))
}

#[allow(clippy::too_many_arguments)]
fn attend(
    e: &mut Elaborator,
    x: ValueId,
    t: u64,
    d: u64,
    heads: u64,
    causal: bool,
    path: &str,
    span: Span,
) -> Result<ValueId, Diagnostic> {
    let dh = d / heads;
    let split = Shape(vec![
        Dim::Batch,
        Dim::Fixed(t),
        Dim::Fixed(heads),
        Dim::Fixed(dh),
    ]);
    // [batch, T, d] -> [batch, T, h, d/h] -> `perm`.
    let project = |e: &mut Elaborator, name: &str, perm: Vec<usize>| {
        let path = format!("{path}.{name}");
        // A key bias adds `q · b` to every score of a query alike, which the softmax
        // cancels: its gradient is identically zero, so the key projection has none
        // (as Whisper's attention).
        let p = if name == "k" {
            linear_no_bias(e, x, d, d, &path, span)?
        } else {
            linear(e, x, d, d, &path, span)?
        };
        let p = e.op(
            Op::Reshape {
                shape: split.clone(),
            },
            &[p],
            span,
        )?;
        e.op(Op::Transpose { perm }, &[p], span)
    };
    let q = project(e, "q", vec![0, 2, 1, 3])?; // [batch, h, T, d/h]
    let kt = project(e, "k", vec![0, 2, 3, 1])?; // [batch, h, d/h, T]
    let v = project(e, "v", vec![0, 2, 1, 3])?; // [batch, h, T, d/h]
    let scores = e.op(Op::MatMul, &[q, kt], span)?; // [batch, h, T, T]
    let scale = e.constant(1.0 / (dh as f64).sqrt(), span);
    let mut scores = bin(e, BinaryOp::Mul, scores, scale, span)?;
    if causal {
        // Query i may not see key j > i: -1e9 there, so its weight underflows to zero.
        let positions: Vec<f64> = (0..t).map(|i| i as f64).collect();
        let keys = table(e, &positions, vec![1, t], span)?;
        let queries = table(e, &positions, vec![t, 1], span)?;
        let future = bin(e, BinaryOp::Gt, keys, queries, span)?; // [T, T]
        let big = e.constant(-1e9, span);
        let mask = bin(e, BinaryOp::Mul, future, big, span)?;
        scores = bin(e, BinaryOp::Add, scores, mask, span)?;
    }
    let weights = super::layers::stable_softmax(e, scores, 3, false, span)?;
    let mixed = e.op(Op::MatMul, &[weights, v], span)?; // [batch, h, T, d/h]
    let mixed = e.op(
        Op::Transpose {
            perm: vec![0, 2, 1, 3],
        },
        &[mixed],
        span,
    )?;
    let joined = e.op(
        Op::Reshape {
            shape: Shape(vec![Dim::Batch, Dim::Fixed(t), Dim::Fixed(d)]),
        },
        &[mixed],
        span,
    )?;
    linear(e, joined, d, d, &format!("{path}.out"), span)
}

/// `transformer_encoder_layer(x, heads, ff, norm_first = false, eps = 1e-5)` over
/// `[batch, T, d]`, PyTorch's `TransformerEncoderLayer` without dropout: self-attention
/// and a feed-forward network `linear2(gelu(linear1(x)))` (`ff` hidden units), each with
/// a residual connection and a layer norm. Post-norm by default (`x = norm(x + f(x))`,
/// the original Transformer); `norm_first = true` is pre-norm (`x = x + f(norm(x))`).
pub(super) fn encoder_layer(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
    path: Option<String>,
) -> Result<Value, Diagnostic> {
    let (x, xspan) = args.tensor("x")?;
    let heads = args.positive_int("heads", None)?;
    let ff = args.positive_int("ff", None)?;
    let norm_first = args.bool("norm_first", false)?;
    let eps = eps_arg(args)?;
    let (t, d) = sequence(e, x, xspan, "transformer_encoder_layer")?;
    check_heads(args, heads, d, span)?;
    let path = path.unwrap_or_else(|| e.fresh_path("transformer_encoder_layer"));
    let attention = |e: &mut Elaborator, h: ValueId| {
        attend(e, h, t, d, heads, false, &format!("{path}.self_attn"), span)
    };
    let feed_forward = |e: &mut Elaborator, h: ValueId| {
        let h = linear(e, h, d, ff, &format!("{path}.linear1"), span)?;
        let h = gelu_of(e, h, span)?;
        linear(e, h, ff, d, &format!("{path}.linear2"), span)
    };
    let norm1 = format!("{path}.norm1");
    let norm2 = format!("{path}.norm2");
    let y = if norm_first {
        let n = normalize(e, x, d, eps, &norm1, span)?;
        let a = attention(e, n)?;
        let h = bin(e, BinaryOp::Add, x, a, span)?;
        let n = normalize(e, h, d, eps, &norm2, span)?;
        let f = feed_forward(e, n)?;
        bin(e, BinaryOp::Add, h, f, span)?
    } else {
        let a = attention(e, x)?;
        let h = bin(e, BinaryOp::Add, x, a, span)?;
        let h = normalize(e, h, d, eps, &norm1, span)?;
        let f = feed_forward(e, h)?;
        let h2 = bin(e, BinaryOp::Add, h, f, span)?;
        normalize(e, h2, d, eps, &norm2, span)?
    };
    Ok(Value::Tensor(y))
}

/// Heads split the features evenly: `heads` must divide `d`.
fn check_heads(args: &BoundArgs, heads: u64, d: u64, span: Span) -> Result<(), Diagnostic> {
    if d % heads == 0 {
        return Ok(());
    }
    let hspan = args.get("heads").map_or(span, |s| s.span);
    Err(Diagnostic::error(
        ErrorCode::ShapeMismatch,
        format!("{heads} heads do not divide the {d} features of the sequence"),
        hspan,
    )
    .with_label(format!("must divide {d}")))
}

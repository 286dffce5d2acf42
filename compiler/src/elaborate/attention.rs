//! Transformer building blocks (Vaswani et al. 2017), each built from the IR's primitive
//! ops: layer normalization, token embeddings, positional encodings, and
//! multi-head self- and cross-attention. The encoder and decoder layers that combine
//! them are in [`super::transformer`].
//!
//! Layouts and names are PyTorch's, so a `state_dict` loads unchanged: attention has
//! `nn.MultiheadAttention`'s packed `in_proj_weight` `[3d, d]` and `in_proj_bias` `[3d]`
//! and its `out_proj` (a dense layer, `weight` `[out, in]`); `embedding.weight` is
//! `[vocab, dim]`.
//!
//! There is no constant-tensor op, so the few tables these layers need (the causal
//! mask's positions, the sinusoidal encoding's rates) are built from scalar constants
//! joined by `concat`: cheap for the short sequences they serve, one small kernel per
//! element. The sinusoidal table itself is computed from its rates by rotation.

use super::Elaborator;
use super::args::BoundArgs;
use super::value::Value;
use crate::ir::{BinaryOp, DType, Dim, Init, Op, ReduceOp, Shape, TensorType, UnaryOp, ValueId};
use crate::source::{Diagnostic, ErrorCode, Span};

pub(super) fn bin(
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
pub(super) fn linear(
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

pub(super) fn eps_arg(args: &BoundArgs) -> Result<f64, Diagnostic> {
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

pub(super) fn normalize(
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

/// `embedding(ids, vocab, dim)`: integer ids `i32[batch, …]` to rows of `weight`
/// `[vocab, dim]` (PyTorch's `Embedding`, initialized N(0, 1)), one [`Op::Gather`]: its
/// gradient is a scatter-add of the output's, O(ids x dim) rather than the product of a
/// one-hot matrix. An id outside `0..vocab` gives a row of zeros.
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
    Ok(Value::Tensor(e.op(Op::Gather, &[w, ids], span)?))
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
        Some(("sinusoidal", _)) => sinusoidal_table(e, t, d, span)?,
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

/// The sinusoidal table `[T, d]` of Vaswani et al.: `sin(t w_i)` at feature `2i`,
/// `cos(t w_i)` at `2i + 1`, with `w_i = 10000^(-2i/d)`. Built by doubling: rows
/// `n..2n` are rows `0..n` rotated by the angles `n w_i`
/// (`sin((t+n)w) = sin(tw) cos(nw) + cos(tw) sin(nw)`, and `cos` alike), so the graph
/// holds `O(d log T)` constants instead of `T·d`, and each level reads the previous
/// one's rows from a buffer (a `concat`) rather than recomputing them. In f32 a row is
/// off the exact values by about `log2 T` rounding errors.
fn sinusoidal_table(e: &mut Elaborator, t: u64, d: u64, span: Span) -> Result<ValueId, Diagnostic> {
    let pairs = d.div_ceil(2);
    let rates: Vec<f64> = (0..pairs)
        .map(|i| 10000f64.powf(-((2 * i) as f64) / d as f64))
        .collect();
    let row = Shape(vec![Dim::Fixed(1), Dim::Fixed(pairs)]);
    let filled = |e: &mut Elaborator, value: f64| {
        let c = e.constant(value, span);
        e.op(Op::Broadcast { shape: row.clone() }, &[c], span)
    };
    let (mut sin, mut cos) = (filled(e, 0.0)?, filled(e, 1.0)?);
    let mut rows = 1;
    while rows < t {
        let angles: Vec<f64> = rates.iter().map(|w| rows as f64 * w).collect();
        let cos_n: Vec<f64> = angles.iter().map(|a| a.cos()).collect();
        let sin_n: Vec<f64> = angles.iter().map(|a| a.sin()).collect();
        let cos_n = table(e, &cos_n, vec![1, pairs], span)?;
        let sin_n = table(e, &sin_n, vec![1, pairs], span)?;
        let a = bin(e, BinaryOp::Mul, sin, cos_n, span)?;
        let b = bin(e, BinaryOp::Mul, cos, sin_n, span)?;
        let c = bin(e, BinaryOp::Mul, cos, cos_n, span)?;
        let f = bin(e, BinaryOp::Mul, sin, sin_n, span)?;
        let next_sin = bin(e, BinaryOp::Add, a, b, span)?;
        let next_cos = bin(e, BinaryOp::Sub, c, f, span)?;
        sin = e.op(Op::Concat { axis: 0 }, &[sin, next_sin], span)?;
        cos = e.op(Op::Concat { axis: 0 }, &[cos, next_cos], span)?;
        rows *= 2;
    }
    let first = |e: &mut Elaborator, v: ValueId| {
        if rows == t {
            return Ok(v);
        }
        e.op(
            Op::Slice {
                axis: 0,
                start: 0,
                len: t,
            },
            &[v],
            span,
        )
    };
    let (sins, coss) = (first(e, sin)?, first(e, cos)?);
    // [T, pairs] twice -> [T, pairs, 2] -> [T, 2 pairs], interleaving sin and cos.
    let column = Shape(vec![Dim::Fixed(t), Dim::Fixed(pairs), Dim::Fixed(1)]);
    let mut halves = Vec::with_capacity(2);
    for rows in [sins, coss] {
        halves.push(e.op(
            Op::Reshape {
                shape: column.clone(),
            },
            &[rows],
            span,
        )?);
    }
    let pairs_of = e.op(Op::Concat { axis: 2 }, &halves, span)?;
    let flat = Shape(vec![Dim::Fixed(t), Dim::Fixed(2 * pairs)]);
    let flat = e.op(Op::Reshape { shape: flat }, &[pairs_of], span)?;
    if 2 * pairs == d {
        return Ok(flat);
    }
    e.op(
        Op::Slice {
            axis: 1,
            start: 0,
            len: d,
        },
        &[flat],
        span,
    )
}

/// What one multi-head attention computes, beside its queries and memory.
pub(super) struct AttentionSpec<'a> {
    /// The parameters' path prefix: `PATH.in_proj_weight`, `PATH.in_proj_bias`,
    /// `PATH.out_proj` (see [`project_qkv`]).
    pub path: &'a str,
    /// The model width: queries and the output are `[batch, Tq, d]`.
    pub d: u64,
    pub heads: u64,
    /// Query `i` sees only keys `j <= i`.
    pub causal: bool,
    /// `f32[batch, Tk]`: 1 where a key may be attended, 0 where it is padding.
    pub key_mask: Option<ValueId>,
}

/// A sequence `[batch, T, d]` and its two sizes.
#[derive(Clone, Copy)]
pub(super) struct Sequence {
    pub value: ValueId,
    pub len: u64,
    pub features: u64,
}

impl Sequence {
    /// `x` checked to be `[batch, T, d]`; `what` names the layer in the diagnostic.
    pub(super) fn of(
        e: &Elaborator,
        x: ValueId,
        xspan: Span,
        what: &str,
    ) -> Result<Sequence, Diagnostic> {
        let (len, features) = sequence(e, x, xspan, what)?;
        Ok(Sequence {
            value: x,
            len,
            features,
        })
    }
}

/// `self_attention(x, heads, causal = false, key_mask = none)` over a sequence
/// `[batch, T, d]`: multi-head scaled dot-product attention with PyTorch's
/// `nn.MultiheadAttention` parameters: the query, key and value projections packed in
/// `in_proj_weight` `[3d, d]` and `in_proj_bias` `[3d]`, and the output projection
/// `out_proj` (dense `[d, d]`). Each head sees `d / heads` features; scores are
/// scaled by `1 / sqrt(d / heads)`; `causal` lets position `i` attend only to positions
/// `j <= i`; `key_mask` (`f32[batch, T]`, 1 or 0) hides the positions marked 0.
pub(super) fn self_attention(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
    path: Option<String>,
) -> Result<Value, Diagnostic> {
    let (x, xspan) = args.tensor("x")?;
    let heads = args.positive_int("heads", None)?;
    let causal = args.bool("causal", false)?;
    let x = Sequence::of(e, x, xspan, "self_attention")?;
    check_heads(args, heads, x.features, span)?;
    let key_mask = key_mask_arg(e, args, "key_mask", x.len)?;
    let path = path.unwrap_or_else(|| e.fresh_path("self_attention"));
    let spec = AttentionSpec {
        path: &path,
        d: x.features,
        heads,
        causal,
        key_mask,
    };
    Ok(Value::Tensor(attend(e, &spec, x, x, span)?))
}

/// `cross_attention(x, memory, heads, key_mask = none)`: multi-head attention whose
/// queries come from `x` `[batch, Tq, d]` and whose keys and values come from `memory`
/// `[batch, Tk, dm]` (an encoder's output; `Tk` and `dm` may differ from `Tq` and `d`).
/// Projections as in [`self_attention`] when `dm = d`, else separate `q_proj_weight`
/// `[d, d]`, `k_proj_weight` and `v_proj_weight` `[d, dm]` (see [`project_qkv`]);
/// `key_mask` (`f32[batch, Tk]`, 1 or 0) hides the memory positions marked 0. The
/// result is `[batch, Tq, d]`.
pub(super) fn cross_attention(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
    path: Option<String>,
) -> Result<Value, Diagnostic> {
    let (x, xspan) = args.tensor("x")?;
    let (memory, mspan) = args.tensor("memory")?;
    let heads = args.positive_int("heads", None)?;
    let x = Sequence::of(e, x, xspan, "cross_attention")?;
    let memory = Sequence::of(e, memory, mspan, "cross_attention")?;
    check_heads(args, heads, x.features, span)?;
    let key_mask = key_mask_arg(e, args, "key_mask", memory.len)?;
    let path = path.unwrap_or_else(|| e.fresh_path("cross_attention"));
    let spec = AttentionSpec {
        path: &path,
        d: x.features,
        heads,
        causal: false,
        key_mask,
    };
    Ok(Value::Tensor(attend(e, &spec, x, memory, span)?))
}

/// The optional key mask argument `name`: `f32[batch, keys]` of ones and zeros.
pub(super) fn key_mask_arg(
    e: &Elaborator,
    args: &BoundArgs,
    name: &str,
    keys: u64,
) -> Result<Option<ValueId>, Diagnostic> {
    let Some(arg) = args.get(name) else {
        return Ok(None);
    };
    let Value::Tensor(m) = arg.value else {
        return Err(Diagnostic::error(
            ErrorCode::BadArgument,
            format!(
                "argument `{name}` of `{}` must be a tensor, got {}",
                args.callee,
                arg.value.kind()
            ),
            arg.span,
        )
        .with_label("expected a tensor `f32[batch, keys]`"));
    };
    let ty = e.graph.ty(m).clone();
    let want = TensorType::new(DType::F32, vec![Dim::Batch, Dim::Fixed(keys)]);
    if ty != want {
        return Err(Diagnostic::error(
            ErrorCode::ShapeMismatch,
            format!("`{name}` must be {want} (1 for a key to attend, 0 for padding), got {ty}"),
            arg.span,
        )
        .with_label(format!("this is {ty}")));
    }
    Ok(Some(m))
}

/// Multi-head attention of `queries` over `memory` (the same sequence for
/// self-attention), as [`AttentionSpec`] says: `[batch, Tq, d]`.
pub(super) fn attend(
    e: &mut Elaborator,
    spec: &AttentionSpec,
    queries: Sequence,
    memory: Sequence,
    span: Span,
) -> Result<ValueId, Diagnostic> {
    let (d, heads, path) = (spec.d, spec.heads, spec.path);
    let dh = d / heads;
    let [q, k, v] = project_qkv(e, path, d, queries, memory, span)?;
    // [batch, T, d] -> [batch, T, h, d/h] -> `perm`.
    let split = |e: &mut Elaborator, p: ValueId, len: u64, perm: Vec<usize>| {
        let shape = Shape(vec![
            Dim::Batch,
            Dim::Fixed(len),
            Dim::Fixed(heads),
            Dim::Fixed(dh),
        ]);
        let p = e.op(Op::Reshape { shape }, &[p], span)?;
        e.op(Op::Transpose { perm }, &[p], span)
    };
    let q = split(e, q, queries.len, vec![0, 2, 1, 3])?; // [batch, h, Tq, d/h]
    let kt = split(e, k, memory.len, vec![0, 2, 3, 1])?; // [batch, h, d/h, Tk]
    let v = split(e, v, memory.len, vec![0, 2, 1, 3])?; // [batch, h, Tk, d/h]
    let scores = e.op(Op::MatMul, &[q, kt], span)?; // [batch, h, Tq, Tk]
    let scale = e.constant(1.0 / (dh as f64).sqrt(), span);
    let mut scores = bin(e, BinaryOp::Mul, scores, scale, span)?;
    // A hidden key gets -1e9 added to its score, so its weight underflows to zero.
    if spec.causal {
        // Query i may not see key j > i.
        let key_positions: Vec<f64> = (0..memory.len).map(|j| j as f64).collect();
        let query_positions: Vec<f64> = (0..queries.len).map(|i| i as f64).collect();
        let keys = table(e, &key_positions, vec![1, memory.len], span)?;
        let rows = table(e, &query_positions, vec![queries.len, 1], span)?;
        let future = bin(e, BinaryOp::Gt, keys, rows, span)?; // [Tq, Tk]
        let big = e.constant(-1e9, span);
        let mask = bin(e, BinaryOp::Mul, future, big, span)?;
        scores = bin(e, BinaryOp::Add, scores, mask, span)?;
    }
    if let Some(keep) = spec.key_mask {
        // (keep - 1) * 1e9: 0 for a kept key, -1e9 for padding; [batch, 1, 1, Tk].
        let one = e.constant(1.0, span);
        let hidden = bin(e, BinaryOp::Sub, one, keep, span)?;
        let big = e.constant(-1e9, span);
        let bias = bin(e, BinaryOp::Mul, hidden, big, span)?;
        let shape = Shape(vec![
            Dim::Batch,
            Dim::Fixed(1),
            Dim::Fixed(1),
            Dim::Fixed(memory.len),
        ]);
        let bias = e.op(Op::Reshape { shape }, &[bias], span)?;
        scores = bin(e, BinaryOp::Add, scores, bias, span)?;
    }
    let weights = super::layers::stable_softmax(e, scores, 3, false, span)?;
    let mixed = e.op(Op::MatMul, &[weights, v], span)?; // [batch, h, Tq, d/h]
    let mixed = e.op(
        Op::Transpose {
            perm: vec![0, 2, 1, 3],
        },
        &[mixed],
        span,
    )?;
    let joined = e.op(
        Op::Reshape {
            shape: Shape(vec![Dim::Batch, Dim::Fixed(queries.len), Dim::Fixed(d)]),
        },
        &[mixed],
        span,
    )?;
    linear(e, joined, d, d, &format!("{path}.out_proj"), span)
}

/// `x`'s slice `start..start + len` along `axis`.
fn slice(
    e: &mut Elaborator,
    x: ValueId,
    axis: usize,
    start: u64,
    len: u64,
    span: Span,
) -> Result<ValueId, Diagnostic> {
    e.op(Op::Slice { axis, start, len }, &[x], span)
}

/// The query, key and value projections `[batch, T, d]` of `queries` and `memory`, with
/// the parameters of PyTorch's `nn.MultiheadAttention` under `path`:
/// - memory as wide as the queries (`dm = d`): `in_proj_weight` `[3d, d]` (the three
///   weights stacked, query first) and `in_proj_bias` `[3d]`; self-attention is then one
///   product `x in_proj_weightᵀ` split three ways, cross-attention a product for the
///   queries and one for the keys and values;
/// - otherwise (PyTorch's `kdim`, `vdim`): `q_proj_weight` `[d, d]`, `k_proj_weight` and
///   `v_proj_weight` `[d, dm]`, and `in_proj_bias` `[3d]`.
///
/// The key's part of `in_proj_bias` is held (so PyTorch's tensors load unchanged) but not
/// added: it adds `q · b` to every score of a query alike, which the softmax cancels.
/// Leaving it out changes no result and keeps its gradient exactly zero, where adding it
/// would give a gradient of rounding noise that Adam turns into steps of size `lr`.
fn project_qkv(
    e: &mut Elaborator,
    path: &str,
    d: u64,
    queries: Sequence,
    memory: Sequence,
    span: Span,
) -> Result<[ValueId; 3], Diagnostic> {
    let bias = e.param(
        format!("{path}.in_proj_bias"),
        vec![3 * d],
        Init::Zeros,
        span,
    )?;
    let bq = slice(e, bias, 0, 0, d, span)?;
    let bv = slice(e, bias, 0, 2 * d, d, span)?;
    let project = |e: &mut Elaborator, x: ValueId, w: ValueId| {
        let wt = e.op(Op::Transpose { perm: vec![1, 0] }, &[w], span)?;
        e.op(Op::MatMul, &[x, wt], span)
    };
    let (q, k, v) = if memory.features != d {
        let dm = memory.features;
        let weight = |e: &mut Elaborator, name: &str, inputs: u64| {
            e.param(
                format!("{path}.{name}"),
                vec![d, inputs],
                Init::XavierUniform,
                span,
            )
        };
        let wq = weight(e, "q_proj_weight", d)?;
        let wk = weight(e, "k_proj_weight", dm)?;
        let wv = weight(e, "v_proj_weight", dm)?;
        (
            project(e, queries.value, wq)?,
            project(e, memory.value, wk)?,
            project(e, memory.value, wv)?,
        )
    } else {
        let weight = e.param(
            format!("{path}.in_proj_weight"),
            vec![3 * d, d],
            Init::XavierUniform,
            span,
        )?;
        if queries.value == memory.value {
            let qkv = project(e, queries.value, weight)?; // [batch, T, 3d]
            (
                slice(e, qkv, 2, 0, d, span)?,
                slice(e, qkv, 2, d, d, span)?,
                slice(e, qkv, 2, 2 * d, d, span)?,
            )
        } else {
            let wq = slice(e, weight, 0, 0, d, span)?;
            let wkv = slice(e, weight, 0, d, 2 * d, span)?;
            let q = project(e, queries.value, wq)?;
            let kv = project(e, memory.value, wkv)?; // [batch, Tk, 2d]
            (
                q,
                slice(e, kv, 2, 0, d, span)?,
                slice(e, kv, 2, d, d, span)?,
            )
        }
    };
    let q = bin(e, BinaryOp::Add, q, bq, span)?;
    let v = bin(e, BinaryOp::Add, v, bv, span)?;
    Ok([q, k, v])
}

/// Heads split the features evenly: `heads` must divide `d`.
pub(super) fn check_heads(
    args: &BoundArgs,
    heads: u64,
    d: u64,
    span: Span,
) -> Result<(), Diagnostic> {
    if d.is_multiple_of(heads) {
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

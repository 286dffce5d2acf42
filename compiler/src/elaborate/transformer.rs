//! The Transformer's encoder and decoder layers (Vaswani et al. 2017), as PyTorch's
//! `nn.TransformerEncoderLayer` and `nn.TransformerDecoderLayer` without dropout:
//! attention and a feed-forward network `linear2(activation(linear1(x)))` (`activation =
//! relu`, PyTorch's default, or `gelu`, the exact GELU), each sub-layer with a residual connection and a layer norm. Post-norm by default
//! (`x = norm(x + f(x))`, the original Transformer); `norm_first = true` is pre-norm
//! (`x = x + f(norm(x))`, Xiong et al. 2020), which trains more stably when deep.
//!
//! Parameter names follow PyTorch: `self_attn`, `multihead_attn` (the decoder's
//! cross-attention), `linear1`, `linear2`, `norm1`, `norm2`, `norm3`; the attention
//! blocks' own parts are as in [`super::attention`].

use super::Elaborator;
use super::activations::{GeluForm, gelu_of};
use super::args::BoundArgs;
use super::attention::{
    AttentionSpec, Sequence, attend, bin, check_heads, eps_arg, key_mask_arg, linear, normalize,
};
use super::value::Value;
use crate::ir::{BinaryOp, Op, UnaryOp, ValueId};
use crate::source::{Diagnostic, ErrorCode, Span};

/// The feed-forward network's activation (PyTorch's `activation`: `"relu"` or `"gelu"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Activation {
    Relu,
    /// The exact GELU, as PyTorch's `F.gelu`.
    Gelu,
}

impl Activation {
    /// The `activation` argument: `relu` (the default) or `gelu`.
    fn of(args: &BoundArgs) -> Result<Activation, Diagnostic> {
        args.check_word("activation")?;
        match args.word("activation") {
            None => Ok(Activation::Relu),
            Some((word, span)) => match word.as_str() {
                "relu" => Ok(Activation::Relu),
                "gelu" => Ok(Activation::Gelu),
                _ => Err(Diagnostic::error(
                    ErrorCode::BadArgument,
                    format!("unknown activation `{word}` for `{}`", args.callee),
                    span,
                )
                .with_label("not relu or gelu")
                .with_note("`activation` is relu (the default, as PyTorch's) or gelu (exact)")),
            },
        }
    }

    fn apply(self, e: &mut Elaborator, h: ValueId, span: Span) -> Result<ValueId, Diagnostic> {
        match self {
            Activation::Relu => e.op(Op::Unary(UnaryOp::Relu), &[h], span),
            Activation::Gelu => gelu_of(e, h, GeluForm::Exact, span),
        }
    }
}

/// What every sub-layer of one encoder or decoder layer shares.
struct LayerSpec {
    path: String,
    /// Sequence length of the layer's input and output.
    len: u64,
    d: u64,
    heads: u64,
    ff: u64,
    norm_first: bool,
    eps: f64,
    activation: Activation,
}

impl LayerSpec {
    /// Reads `heads`, `ff`, `norm_first`, `eps` and `activation`, and checks the heads divide `x`'s
    /// features.
    fn of(
        e: &mut Elaborator,
        args: &BoundArgs,
        x: Sequence,
        kind: &str,
        path: Option<String>,
        span: Span,
    ) -> Result<LayerSpec, Diagnostic> {
        let heads = args.positive_int("heads", None)?;
        let ff = args.positive_int("ff", None)?;
        let norm_first = args.bool("norm_first", false)?;
        let eps = eps_arg(args)?;
        let activation = Activation::of(args)?;
        check_heads(args, heads, x.features, span)?;
        Ok(LayerSpec {
            path: path.unwrap_or_else(|| e.fresh_path(kind)),
            len: x.len,
            d: x.features,
            heads,
            ff,
            norm_first,
            eps,
            activation,
        })
    }

    /// `h` as a sequence of this layer's shape.
    fn sequence(&self, h: ValueId) -> Sequence {
        Sequence {
            value: h,
            len: self.len,
            features: self.d,
        }
    }

    /// `linear2(activation(linear1(h)))`.
    fn feed_forward(
        &self,
        e: &mut Elaborator,
        h: ValueId,
        span: Span,
    ) -> Result<ValueId, Diagnostic> {
        let h = linear(
            e,
            h,
            self.d,
            self.ff,
            &format!("{}.linear1", self.path),
            span,
        )?;
        let h = self.activation.apply(e, h, span)?;
        linear(
            e,
            h,
            self.ff,
            self.d,
            &format!("{}.linear2", self.path),
            span,
        )
    }

    /// One residual sub-layer `f` with the layer norm `normN`, post- or pre-norm.
    fn residual(
        &self,
        e: &mut Elaborator,
        x: ValueId,
        norm: &str,
        span: Span,
        f: impl FnOnce(&mut Elaborator, ValueId) -> Result<ValueId, Diagnostic>,
    ) -> Result<ValueId, Diagnostic> {
        let norm = format!("{}.{norm}", self.path);
        if self.norm_first {
            let n = normalize(e, x, self.d, self.eps, &norm, span)?;
            let y = f(e, n)?;
            bin(e, BinaryOp::Add, x, y, span)
        } else {
            let y = f(e, x)?;
            let h = bin(e, BinaryOp::Add, x, y, span)?;
            normalize(e, h, self.d, self.eps, &norm, span)
        }
    }

    /// The attention sub-layer `part` of the sequence `h` over `memory` (`None`: over
    /// itself).
    fn attend(
        &self,
        e: &mut Elaborator,
        h: ValueId,
        memory: Option<Sequence>,
        part: &AttentionPart,
        span: Span,
    ) -> Result<ValueId, Diagnostic> {
        let path = format!("{}.{}", self.path, part.name);
        let spec = AttentionSpec {
            path: &path,
            d: self.d,
            heads: self.heads,
            causal: part.causal,
            key_mask: part.key_mask,
        };
        let queries = self.sequence(h);
        attend(e, &spec, queries, memory.unwrap_or(queries), span)
    }
}

/// One attention sub-layer of a layer: its name and masks.
struct AttentionPart {
    name: &'static str,
    causal: bool,
    key_mask: Option<ValueId>,
}

/// `transformer_encoder_layer(x, heads, ff, norm_first = false, eps = 1e-5,
/// key_mask = none, activation = relu)` over `[batch, T, d]`: self-attention (`key_mask`, `f32[batch, T]`,
/// hides padding) then the feed-forward network, each a residual sub-layer.
pub(super) fn encoder_layer(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
    path: Option<String>,
) -> Result<Value, Diagnostic> {
    let (x, xspan) = args.tensor("x")?;
    let x = Sequence::of(e, x, xspan, "transformer_encoder_layer")?;
    let layer = LayerSpec::of(e, args, x, "transformer_encoder_layer", path, span)?;
    let key_mask = key_mask_arg(e, args, "key_mask", x.len)?;
    let self_attn = AttentionPart {
        name: "self_attn",
        causal: false,
        key_mask,
    };
    let h = layer.residual(e, x.value, "norm1", span, |e, h| {
        layer.attend(e, h, None, &self_attn, span)
    })?;
    let y = layer.residual(e, h, "norm2", span, |e, h| layer.feed_forward(e, h, span))?;
    Ok(Value::Tensor(y))
}

/// `transformer_decoder_layer(x, memory, heads, ff, causal = true, norm_first = false,
/// eps = 1e-5, memory_mask = none, activation = relu)`: over the target sequence `x` `[batch, T, d]`,
/// self-attention (causal by default: position `i` sees only positions `j <= i`), then
/// cross-attention to `memory` `[batch, S, dm]` (the encoder's output; `memory_mask`,
/// `f32[batch, S]`, hides its padding), then the feed-forward network, each a residual
/// sub-layer.
pub(super) fn decoder_layer(
    e: &mut Elaborator,
    args: &BoundArgs,
    span: Span,
    path: Option<String>,
) -> Result<Value, Diagnostic> {
    let (x, xspan) = args.tensor("x")?;
    let (memory, mspan) = args.tensor("memory")?;
    let x = Sequence::of(e, x, xspan, "transformer_decoder_layer")?;
    let memory = Sequence::of(e, memory, mspan, "transformer_decoder_layer")?;
    let causal = args.bool("causal", true)?;
    let layer = LayerSpec::of(e, args, x, "transformer_decoder_layer", path, span)?;
    let memory_mask = key_mask_arg(e, args, "memory_mask", memory.len)?;
    let self_attn = AttentionPart {
        name: "self_attn",
        causal,
        key_mask: None,
    };
    let cross_attn = AttentionPart {
        name: "multihead_attn",
        causal: false,
        key_mask: memory_mask,
    };
    let h = layer.residual(e, x.value, "norm1", span, |e, h| {
        layer.attend(e, h, None, &self_attn, span)
    })?;
    let h = layer.residual(e, h, "norm2", span, |e, h| {
        layer.attend(e, h, Some(memory), &cross_attn, span)
    })?;
    let y = layer.residual(e, h, "norm3", span, |e, h| layer.feed_forward(e, h, span))?;
    Ok(Value::Tensor(y))
}

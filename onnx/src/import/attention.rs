//! PyTorch's multi-head attention (`nn.MultiheadAttention`, as `TransformerEncoderLayer`
//! uses it) as Strata's `self_attention`.
//!
//! PyTorch computes it over `[T, batch·heads, head_dim]`, a layout the language never
//! writes (the batch stays an axis of its own), so the subgraph is recognized as a
//! whole: it starts at the packed input projection (a weight `[d, 3d]` with its bias,
//! applied to the time-major view of a batch-major `[batch, T, d]` sequence) and ends at
//! the output projection (`[d, d]`) reshaped back to `[T, batch, d]`. In between, each
//! value is tracked by its shape (the batch as a symbol, so `batch·heads` gives the head
//! count) and the constant factor it carries: the reshapes, transposes and gathers
//! that split the heads, the scale (checked to be `1/sqrt(head_dim)` at the softmax),
//! the two products and one softmax. Anything else inside (a mask added to the scores,
//! dropout with a mask read) is an error naming the node, never silently dropped.

use super::known::{Known, SymInt};
use super::{Dyn, Importer, R, Val, View};
use crate::proto::pb;

/// One attention subgraph being read.
#[derive(Clone, Debug)]
pub struct AttnCtx {
    /// The batch-major input `[batch, T, d]`.
    x: Dyn,
    d: usize,
    in_w: Known,
    in_b: Known,
    heads: Option<i64>,
    softmaxes: usize,
}

/// A value inside an attention subgraph.
#[derive(Clone, Debug)]
pub struct AttnVal {
    pub(super) ctx: usize,
    pub shape: Vec<SymInt>,
    /// The constant factor the value carries relative to the unscaled computation.
    pub(super) scale: f64,
    /// After the output projection: `[T·batch, d]`.
    pub(super) projected: bool,
}

impl Importer<'_> {
    /// The packed input projection `w` `[3d, d]` (as `[out, in]`) with bias `b` on the
    /// time-major view of `x`: the start of an attention subgraph.
    pub(super) fn attention_start(
        &mut self,
        _n: &pb::NodeProto,
        x: &Dyn,
        w: &Known,
        b: Option<&Known>,
    ) -> R<Option<Val>> {
        let (View::Perm(p), Some(b)) = (&x.view, b) else {
            return Ok(None);
        };
        let [batch, t, d] = x.actual[..] else {
            return Ok(None);
        };
        let Some(dd) = d.concrete() else {
            return Ok(None);
        };
        let d = dd as usize;
        if p != &[1, 0, 2] || batch != SymInt::BATCH || w.dims != [3 * d, d] {
            return Ok(None);
        }
        self.attention.push(AttnCtx {
            x: x.clone(),
            d,
            in_w: w.clone(),
            in_b: b.clone(),
            heads: None,
            softmaxes: 0,
        });
        Ok(Some(Val::Attn(AttnVal {
            ctx: self.attention.len() - 1,
            shape: vec![t, batch, SymInt::fixed(3 * d as i64)],
            scale: 1.0,
            projected: false,
        })))
    }

    /// A reshape inside the subgraph: records the head count, and turns the projected
    /// output back into a model tensor.
    pub(super) fn attention_reshape(&mut self, a: &AttnVal, out: Vec<SymInt>) -> R<Val> {
        let ctx = &self.attention[a.ctx];
        if a.projected {
            let t = ctx.x.actual[1];
            if out != [t, SymInt::BATCH, SymInt::fixed(ctx.d as i64)] {
                return Err("the attention's output reshaped other than to [T, batch, d]".into());
            }
            return self.attention_finish(a.ctx).map(Val::Dyn);
        }
        for s in &out {
            if s.p == 1 && s.k > 1 {
                match self.attention[a.ctx].heads {
                    None => self.attention[a.ctx].heads = Some(s.k),
                    Some(h) if h == s.k || s.k % h == 0 => {}
                    Some(h) => return Err(format!("heads {h} and {} in one attention", s.k)),
                }
            }
        }
        Ok(Val::Attn(AttnVal {
            shape: out,
            ..a.clone()
        }))
    }

    /// A product or quotient by a constant scalar inside the subgraph.
    pub(super) fn attention_scale(&mut self, a: &AttnVal, c: f32, divide: bool) -> Val {
        let c = f64::from(c);
        Val::Attn(AttnVal {
            scale: if divide { a.scale / c } else { a.scale * c },
            ..a.clone()
        })
    }

    /// The scores or the weighted values: a product of two tracked values.
    pub(super) fn attention_matmul(&mut self, x: &AttnVal, y: &AttnVal) -> R<Val> {
        if x.ctx != y.ctx {
            return Err("a product of two attention subgraphs' values".into());
        }
        let (ra, rb) = (x.shape.len(), y.shape.len());
        if ra != rb || ra < 2 || x.shape[ra - 1] != y.shape[rb - 2] {
            return Err("an attention product of shapes that do not match".into());
        }
        let mut shape = x.shape.clone();
        shape[ra - 1] = y.shape[rb - 1];
        Ok(Val::Attn(AttnVal {
            shape,
            scale: x.scale * y.scale,
            ..x.clone()
        }))
    }

    /// The softmax of the scores: the scale must be `1/sqrt(head_dim)`.
    pub(super) fn attention_softmax(&mut self, a: &AttnVal, axis: i64) -> R<Val> {
        let rank = a.shape.len();
        if super::known::norm_axis(axis, rank)? != rank - 1 {
            return Err("an attention softmax over another axis than the keys".into());
        }
        let ctx = &mut self.attention[a.ctx];
        let heads = ctx
            .heads
            .ok_or("an attention softmax before the heads are split")?;
        let head_dim = ctx.d as f64 / heads as f64;
        let want = 1.0 / head_dim.sqrt();
        if ((a.scale - want) / want).abs() > 1e-4 {
            return Err(format!(
                "attention scores scaled by {} where Strata's self_attention scales by 1/sqrt({head_dim})",
                a.scale
            ));
        }
        ctx.softmaxes += 1;
        if ctx.softmaxes > 1 {
            return Err("a second softmax in one attention subgraph".into());
        }
        Ok(Val::Attn(AttnVal {
            scale: 1.0,
            ..a.clone()
        }))
    }

    /// The output projection `w` `[d, d]` (as `[out, in]`) on the attention's heads
    /// joined again: the end of the subgraph.
    pub(super) fn attention_end(
        &mut self,
        x: &Val,
        w: &Known,
        b: Option<&Known>,
    ) -> R<Option<Val>> {
        let Val::Attn(a) = x else { return Ok(None) };
        let ctx = &self.attention[a.ctx];
        let d = ctx.d;
        if ctx.softmaxes != 1 || a.projected || (a.scale - 1.0).abs() > 1e-6 || w.dims != [d, d] {
            return Err("an attention output projection that does not follow one softmax".into());
        }
        let b = b.ok_or("an attention output projection without a bias")?;
        let t = ctx.x.actual[1];
        self.attention_out.insert(a.ctx, (w.clone(), b.clone()));
        Ok(Some(Val::Attn(AttnVal {
            projected: true,
            shape: vec![SymInt { k: t.k, p: 1 }, SymInt::fixed(d as i64)],
            ..a.clone()
        })))
    }

    /// Writes the recognized attention: `layer NAME = self_attention(heads = H)`, and
    /// its output as the time-major view of `x |> NAME`.
    fn attention_finish(&mut self, c: usize) -> R<Dyn> {
        let ctx = self.attention[c].clone();
        let (out_w, out_b) = self
            .attention_out
            .get(&c)
            .cloned()
            .ok_or("an attention subgraph without its output projection")?;
        let heads = ctx.heads.ok_or("no head count")?;
        let node_hint = pb::NodeProto {
            name: String::new(),
            ..Default::default()
        };
        let name = self.instance_name(&node_hint, Some(&ctx.in_b), "self_attention");
        self.text.layers.push(format!(
            "    layer {name} = self_attention(heads = {heads})"
        ));
        let d = ctx.d;
        self.add_weight(
            &format!("{name}.in_proj_weight"),
            &[3 * d, d],
            ctx.in_w.as_f32()?,
        )?;
        self.add_weight(
            &format!("{name}.in_proj_bias"),
            &[3 * d],
            ctx.in_b.as_f32()?,
        )?;
        self.add_weight(&format!("{name}.out_proj.weight"), &[d, d], out_w.as_f32()?)?;
        self.add_weight(&format!("{name}.out_proj.bias"), &[d], out_b.as_f32()?)?;
        let expr = self.text.pipe(ctx.x.expr.clone(), &name);
        Ok(Dyn {
            expr,
            actual: ctx.x.actual.clone(),
            view: View::Perm(vec![1, 0, 2]),
            float: true,
        })
    }
}

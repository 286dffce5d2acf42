//! Optimizers as graph ops: the parameter and state updates of one training step,
//! appended to the training graph so later passes optimize them with the rest.
//!
//! Conventions follow PyTorch's `torch.optim` (SGD with `dampening = 0`, Nesterov as in
//! Sutskever et al. 2013; Adam and AdamW per Kingma & Ba 2015 and Loshchilov & Hutter
//! 2019; RMSprop without centering; Adagrad without lr decay). Optimizer state lives in
//! persistent, zero-initialized parameters named `optim.<slot>.<param path>`, which
//! autodiff never differentiates. The step's learning rate (`lr`) and its 1-based number
//! (`step`, for Adam's bias correction) are scalar inputs of the entry.

use crate::ir::{BinaryOp, Graph, Init, Op, UnaryOp, ValueId};
use crate::source::Span;

/// Which update rule, with its hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum Optimizer {
    Sgd {
        momentum: f64,
        nesterov: bool,
        weight_decay: f64,
    },
    Adam {
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
        decoupled: bool,
    },
    RmsProp {
        alpha: f64,
        eps: f64,
        weight_decay: f64,
    },
    Adagrad {
        eps: f64,
        weight_decay: f64,
    },
}

impl Optimizer {
    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::Sgd { momentum, .. } if *momentum > 0.0 => "sgd+momentum",
            Optimizer::Sgd { .. } => "sgd",
            Optimizer::Adam {
                decoupled: true, ..
            } => "adamw",
            Optimizer::Adam { .. } => "adam",
            Optimizer::RmsProp { .. } => "rmsprop",
            Optimizer::Adagrad { .. } => "adagrad",
        }
    }
}

/// Small builder over the graph for scalar-heavy update code.
struct B<'g> {
    g: &'g mut Graph,
    span: Span,
}

impl B<'_> {
    fn op(&mut self, op: Op, xs: &[ValueId]) -> Result<ValueId, String> {
        self.g.add(op, xs, self.span)
    }
    fn c(&mut self, x: f64) -> Result<ValueId, String> {
        self.op(Op::Const { value: x }, &[])
    }
    fn bin(&mut self, op: BinaryOp, a: ValueId, b: ValueId) -> Result<ValueId, String> {
        self.op(Op::Binary(op), &[a, b])
    }
    fn add(&mut self, a: ValueId, b: ValueId) -> Result<ValueId, String> {
        self.bin(BinaryOp::Add, a, b)
    }
    fn sub(&mut self, a: ValueId, b: ValueId) -> Result<ValueId, String> {
        self.bin(BinaryOp::Sub, a, b)
    }
    fn mul(&mut self, a: ValueId, b: ValueId) -> Result<ValueId, String> {
        self.bin(BinaryOp::Mul, a, b)
    }
    fn div(&mut self, a: ValueId, b: ValueId) -> Result<ValueId, String> {
        self.bin(BinaryOp::Div, a, b)
    }
    fn scale(&mut self, k: f64, a: ValueId) -> Result<ValueId, String> {
        let k = self.c(k)?;
        self.mul(k, a)
    }
    fn sqrt(&mut self, a: ValueId) -> Result<ValueId, String> {
        self.op(Op::Unary(UnaryOp::Sqrt), &[a])
    }
    /// A persistent zero-initialized state tensor shaped like `w`.
    fn state(&mut self, slot: &str, w: ValueId, path: &str) -> ValueId {
        let ty = self.g.ty(w).clone();
        self.g.add_leaf(
            Op::Param {
                path: format!("optim.{slot}.{path}"),
                init: Init::Zeros,
            },
            ty,
            self.span,
        )
    }
}

/// Clips gradients by their global L2 norm: every gradient scaled by
/// `min(1, max_norm / (norm + 1e-6))` (PyTorch's `clip_grad_norm_`).
pub fn clip_by_global_norm(
    graph: &mut Graph,
    grads: &[ValueId],
    max_norm: f64,
    span: Span,
) -> Result<Vec<ValueId>, String> {
    let mut b = B { g: graph, span };
    let mut total = b.c(0.0)?;
    for &g in grads {
        let sq = b.mul(g, g)?;
        let rank = b.g.ty(g).shape.rank();
        let s = if rank == 0 {
            sq
        } else {
            b.op(
                Op::Reduce {
                    op: crate::ir::ReduceOp::Sum,
                    axes: (0..rank).collect(),
                    keep_dims: false,
                },
                &[sq],
            )?
        };
        total = b.add(total, s)?;
    }
    let norm = b.sqrt(total)?;
    let eps = b.c(1e-6)?;
    let denom = b.add(norm, eps)?;
    let maxn = b.c(max_norm)?;
    let ratio = b.div(maxn, denom)?;
    let one = b.c(1.0)?;
    let factor = b.bin(BinaryOp::Min, one, ratio)?;
    let factor = b.op(Op::StopGradient, &[factor])?;
    grads.iter().map(|&g| b.mul(g, factor)).collect()
}

/// Appends the update of every `(param, path, grad)` and records it in `graph.updates`.
pub fn apply(
    graph: &mut Graph,
    opt: &Optimizer,
    params: &[(ValueId, String, ValueId)],
    lr: ValueId,
    step: ValueId,
    span: Span,
) -> Result<(), String> {
    let mut updates = Vec::new();
    {
        let mut b = B { g: graph, span };
        for (w, path, g) in params {
            let (w, g) = (*w, *g);
            let with_decay = |b: &mut B, wd: f64| -> Result<ValueId, String> {
                if wd == 0.0 {
                    return Ok(g);
                }
                let d = b.scale(wd, w)?;
                b.add(g, d)
            };
            let new_w = match opt {
                Optimizer::Sgd {
                    momentum,
                    nesterov,
                    weight_decay,
                } => {
                    let g = with_decay(&mut b, *weight_decay)?;
                    let dir = if *momentum > 0.0 {
                        let v = b.state("momentum", w, path);
                        let mv = b.scale(*momentum, v)?;
                        let v_new = b.add(mv, g)?;
                        updates.push((v, v_new));
                        if *nesterov {
                            let mv2 = b.scale(*momentum, v_new)?;
                            b.add(g, mv2)?
                        } else {
                            v_new
                        }
                    } else {
                        g
                    };
                    let delta = b.mul(lr, dir)?;
                    b.sub(w, delta)?
                }
                Optimizer::Adam {
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                    decoupled,
                } => {
                    let g = if *decoupled {
                        g
                    } else {
                        with_decay(&mut b, *weight_decay)?
                    };
                    let m = b.state("adam_m", w, path);
                    let v = b.state("adam_v", w, path);
                    let m1 = b.scale(*beta1, m)?;
                    let g1 = b.scale(1.0 - beta1, g)?;
                    let m_new = b.add(m1, g1)?;
                    let v1 = b.scale(*beta2, v)?;
                    let gg = b.mul(g, g)?;
                    let g2 = b.scale(1.0 - beta2, gg)?;
                    let v_new = b.add(v1, g2)?;
                    updates.push((m, m_new));
                    updates.push((v, v_new));
                    // Bias corrections 1 - beta^step, computed once per step on scalars.
                    let one = b.c(1.0)?;
                    let b1 = b.c(*beta1)?;
                    let b2 = b.c(*beta2)?;
                    let p1 = b.bin(BinaryOp::Pow, b1, step)?;
                    let p2 = b.bin(BinaryOp::Pow, b2, step)?;
                    let c1 = b.sub(one, p1)?;
                    let c2 = b.sub(one, p2)?;
                    let lr_t = b.div(lr, c1)?;
                    // `sqrt(v) / sqrt(c2)` as a product with the scalar's reciprocal: a
                    // division per element fewer (the update is bound by the divider).
                    let sc2 = b.sqrt(c2)?;
                    let inv_sc2 = b.div(one, sc2)?;
                    let vhat = b.sqrt(v_new)?;
                    let vhat = b.mul(vhat, inv_sc2)?;
                    let e = b.c(*eps)?;
                    let denom = b.add(vhat, e)?;
                    let ratio = b.div(m_new, denom)?;
                    let delta = b.mul(lr_t, ratio)?;
                    let mut nw = b.sub(w, delta)?;
                    if *decoupled && *weight_decay != 0.0 {
                        let k = b.scale(*weight_decay, lr)?;
                        let d = b.mul(k, w)?;
                        nw = b.sub(nw, d)?;
                    }
                    nw
                }
                Optimizer::RmsProp {
                    alpha,
                    eps,
                    weight_decay,
                } => {
                    let g = with_decay(&mut b, *weight_decay)?;
                    let s = b.state("rms", w, path);
                    let s1 = b.scale(*alpha, s)?;
                    let gg = b.mul(g, g)?;
                    let g2 = b.scale(1.0 - alpha, gg)?;
                    let s_new = b.add(s1, g2)?;
                    updates.push((s, s_new));
                    let r = b.sqrt(s_new)?;
                    let e = b.c(*eps)?;
                    let denom = b.add(r, e)?;
                    let ratio = b.div(g, denom)?;
                    let delta = b.mul(lr, ratio)?;
                    b.sub(w, delta)?
                }
                Optimizer::Adagrad { eps, weight_decay } => {
                    let g = with_decay(&mut b, *weight_decay)?;
                    let s = b.state("adagrad", w, path);
                    let gg = b.mul(g, g)?;
                    let s_new = b.add(s, gg)?;
                    updates.push((s, s_new));
                    let r = b.sqrt(s_new)?;
                    let e = b.c(*eps)?;
                    let denom = b.add(r, e)?;
                    let ratio = b.div(g, denom)?;
                    let delta = b.mul(lr, ratio)?;
                    b.sub(w, delta)?
                }
            };
            updates.push((w, new_w));
        }
    }
    graph.updates.extend(updates);
    Ok(())
}

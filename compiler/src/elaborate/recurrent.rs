//! Recurrent layers, `rnn`, `lstm` and `gru`, each one `scan` per layer and direction.
//!
//! Conventions follow PyTorch (`batch_first=True`) so weights move over by renaming: the
//! input is `[batch, T, features]`; layer `k`'s parameters are `weight_ih_l{k}`
//! `[G * H, in]`, `weight_hh_l{k}` `[G * H, H]`, `bias_ih_l{k}` and `bias_hh_l{k}`
//! `[G * H]` (with a `_reverse` suffix for the backward direction of a bidirectional
//! layer), all drawn from `U(-1/sqrt(H), 1/sqrt(H))`; the gates are stacked in PyTorch's
//! order: LSTM `i, f, g, o` (G = 4), GRU `r, z, n` (G = 3), plain RNN one tanh (G = 1):
//!
//! ```text
//! rnn:  h' = tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)
//! lstm: i, f, g, o = σ, σ, tanh, σ of (x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)
//!       c' = f * c + i * g        h' = o * tanh(c')
//! gru:  r, z = σ(x W_ih,{r,z}ᵀ + b_ih,{r,z} + h W_hh,{r,z}ᵀ + b_hh,{r,z})
//!       n = tanh(x W_in ᵀ + b_in + r * (h W_hnᵀ + b_hn))     h' = (1 - z) * n + z * h
//! ```
//!
//! The input projection `x W_ihᵀ + b_ih` of every step is one matrix product over the
//! whole sequence before the loop (time-parallel, the form cuDNN uses); only
//! `h W_hhᵀ` and the gates run inside the scan's body. The LSTM carries `[h | c]` as one
//! `[batch, 2H]` state. States start at zero.
//!
//! `return_sequences = true` (the default, Keras's name) gives every step's hidden state,
//! `[batch, T, H * directions]`; `false` gives the final hidden state of each direction
//! (after the last step forward, after the first step backward), `[batch, H * directions]`,
//! PyTorch's `h_n`.

use super::Elaborator;
use super::args::BoundArgs;
use super::value::Value;
use crate::ir::{BinaryOp, Dim, Graph, Init, Op, Scan, Shape, TensorType, UnaryOp, ValueId};
use crate::source::{Diagnostic, ErrorCode, Span};

/// Which cell a recurrent layer runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    Rnn,
    Lstm,
    Gru,
}

impl Cell {
    pub fn parse(name: &str) -> Option<Cell> {
        Some(match name {
            "rnn" => Cell::Rnn,
            "lstm" => Cell::Lstm,
            "gru" => Cell::Gru,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Cell::Rnn => "rnn",
            Cell::Lstm => "lstm",
            Cell::Gru => "gru",
        }
    }

    /// Gates stacked in the weights.
    fn gates(self) -> u64 {
        match self {
            Cell::Rnn => 1,
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }

    /// Width of the carried state for hidden size `h`.
    fn state(self, h: u64) -> u64 {
        match self {
            Cell::Lstm => 2 * h,
            Cell::Rnn | Cell::Gru => h,
        }
    }
}

/// `rnn(x, hidden, layers = 1, bidirectional = false, return_sequences = true)` and likewise
/// `lstm`, `gru`.
pub(super) fn recurrent(
    e: &mut Elaborator,
    cell: Cell,
    args: &BoundArgs,
    span: Span,
    path: Option<String>,
) -> Result<Value, Diagnostic> {
    let (x, xspan) = args.tensor("x")?;
    let hidden = args.positive_int("hidden", None)?;
    let layers = args.positive_int("layers", Some(1))?;
    let bidirectional = args.bool("bidirectional", false)?;
    let keep_all = args.bool("return_sequences", true)?;
    let ty = e.graph.ty(x).clone();
    let (steps, features) = match ty.shape.dims() {
        [Dim::Batch, Dim::Fixed(t), Dim::Fixed(f)] => (*t, *f),
        _ => {
            return Err(Diagnostic::error(
                ErrorCode::ShapeMismatch,
                format!(
                    "`{}` needs a sequence `[batch, T, features]`, got {ty}",
                    cell.name()
                ),
                xspan,
            )
            .with_label(format!("this is {ty}"))
            .with_help("a single series of scalars is `[batch, T, 1]`; `reshape` adds the axis"));
        }
    };
    let path = path.unwrap_or_else(|| e.fresh_path(cell.name()));
    let directions: &[bool] = if bidirectional {
        &[false, true]
    } else {
        &[false]
    };
    // Time-major from here on: `[T, batch, features]`.
    let mut input = e.op(
        Op::Transpose {
            perm: vec![1, 0, 2],
        },
        &[x],
        span,
    )?;
    let mut width = features;
    let mut finals = Vec::new();
    for layer in 0..layers {
        let mut outs = Vec::new();
        finals.clear();
        for &reverse in directions {
            let suffix = format!("l{layer}{}", if reverse { "_reverse" } else { "" });
            let (all, last) = direction(
                e, cell, &path, &suffix, input, width, hidden, steps, reverse, span,
            )?;
            outs.push(all);
            finals.push(last);
        }
        input = if outs.len() == 1 {
            outs[0]
        } else {
            e.op(Op::Concat { axis: 2 }, &outs, span)?
        };
        width = hidden * directions.len() as u64;
    }
    let out = if keep_all {
        e.op(
            Op::Transpose {
                perm: vec![1, 0, 2],
            },
            &[input],
            span,
        )?
    } else if finals.len() == 1 {
        finals[0]
    } else {
        e.op(Op::Concat { axis: 1 }, &finals, span)?
    };
    Ok(Value::Tensor(out))
}

/// One layer in one direction over the time-major `input` `[T, batch, width]`: every
/// step's hidden state `[T, batch, H]` and the final one `[batch, H]`.
#[allow(clippy::too_many_arguments)]
fn direction(
    e: &mut Elaborator,
    cell: Cell,
    path: &str,
    suffix: &str,
    input: ValueId,
    width: u64,
    hidden: u64,
    steps: u64,
    reverse: bool,
    span: Span,
) -> Result<(ValueId, ValueId), Diagnostic> {
    let g = cell.gates() * hidden;
    let bound = 1.0 / (hidden as f64).sqrt();
    let init = Init::Uniform(bound);
    let w_ih = e.param(
        format!("{path}.weight_ih_{suffix}"),
        vec![g, width],
        init.clone(),
        span,
    )?;
    let w_hh = e.param(
        format!("{path}.weight_hh_{suffix}"),
        vec![g, hidden],
        init.clone(),
        span,
    )?;
    let b_ih = e.param(
        format!("{path}.bias_ih_{suffix}"),
        vec![g],
        init.clone(),
        span,
    )?;
    let b_hh = e.param(format!("{path}.bias_hh_{suffix}"), vec![g], init, span)?;

    // The input projection of every step at once.
    let w_ih_t = e.op(Op::Transpose { perm: vec![1, 0] }, &[w_ih], span)?;
    let projected = e.op(Op::MatMul, &[input, w_ih_t], span)?;
    let mut projected = e.op(Op::Binary(BinaryOp::Add), &[projected, b_ih], span)?;
    if cell != Cell::Gru {
        // The GRU's `b_hn` sits inside `r * (…)`; the others' two biases just add.
        projected = e.op(Op::Binary(BinaryOp::Add), &[projected, b_hh], span)?;
    }

    let state = cell.state(hidden);
    let zero = e.op(Op::Const { value: 0.0 }, &[], span)?;
    let h0 = e.op(
        Op::Broadcast {
            shape: Shape(vec![Dim::Batch, Dim::Fixed(state)]),
        },
        &[zero],
        span,
    )?;
    let body = cell_body(cell, hidden, span).map_err(|m| internal(m, span))?;
    let mut operands = vec![h0, projected, w_hh];
    if cell == Cell::Gru {
        operands.push(b_hh);
    }
    let stacked = e.op(
        Op::Scan(Box::new(Scan {
            body,
            sequences: 1,
            reverse,
            keep_all: true,
        })),
        &operands,
        span,
    )?;
    let mut all = states_after_each_step(e, stacked, steps, reverse, span)?;
    let carry = Shape(vec![Dim::Batch, Dim::Fixed(state)]);
    let mut last = final_state(e, stacked, steps, reverse, carry, span)?;
    if cell == Cell::Lstm {
        // The hidden state is the first half of `[h | c]`.
        all = e.op(
            Op::Slice {
                axis: 2,
                start: 0,
                len: hidden,
            },
            &[all],
            span,
        )?;
        last = e.op(
            Op::Slice {
                axis: 1,
                start: 0,
                len: hidden,
            },
            &[last],
            span,
        )?;
    }
    Ok((all, last))
}

/// From a scan's stacked carries `[T + 1, carry...]`, the state after reading each input,
/// `[T, carry...]`: `R[t + 1]` forward, `R[t]` reverse.
pub(super) fn states_after_each_step(
    e: &mut Elaborator,
    stacked: ValueId,
    steps: u64,
    reverse: bool,
    span: Span,
) -> Result<ValueId, Diagnostic> {
    let start = if reverse { 0 } else { 1 };
    let slice = Op::Slice {
        axis: 0,
        start,
        len: steps,
    };
    e.op(slice, &[stacked], span)
}

/// From a scan's stacked carries `[T + 1, carry...]`, the state after the last input read
/// (`R[T]` forward, `R[0]` reverse), of shape `carry`.
pub(super) fn final_state(
    e: &mut Elaborator,
    stacked: ValueId,
    steps: u64,
    reverse: bool,
    carry: Shape,
    span: Span,
) -> Result<ValueId, Diagnostic> {
    let index = if reverse { 0 } else { steps };
    let slice = Op::Slice {
        axis: 0,
        start: index,
        len: 1,
    };
    let one = e.op(slice, &[stacked], span)?;
    e.op(Op::Reshape { shape: carry }, &[one], span)
}

fn internal(message: String, span: Span) -> Diagnostic {
    Diagnostic::error(
        ErrorCode::ShapeMismatch,
        format!("internal error building a recurrent cell: {message}"),
        span,
    )
}

/// Builds a cell's scan body: inputs `state [batch, S]`, `projected [batch, G * H]`,
/// `w_hh [G * H, H]` (and `b_hh [G * H]` for the GRU); output the next state.
fn cell_body(cell: Cell, hidden: u64, span: Span) -> Result<Graph, String> {
    let h = hidden;
    let g = cell.gates() * h;
    let mut b = Body {
        graph: Graph::new(format!("{}_cell", cell.name())),
        span,
    };
    let state = b.input("state", vec![Dim::Batch, Dim::Fixed(cell.state(h))]);
    let xp = b.input("projected", vec![Dim::Batch, Dim::Fixed(g)]);
    let w_hh = b.input("weight_hh", vec![Dim::Fixed(g), Dim::Fixed(h)]);
    let prev_h = if cell == Cell::Lstm {
        b.slice(state, 0, h)?
    } else {
        state
    };
    let w_t = b.op(Op::Transpose { perm: vec![1, 0] }, &[w_hh])?;
    let hh = b.op(Op::MatMul, &[prev_h, w_t])?;
    let next = match cell {
        Cell::Rnn => {
            let z = b.bin(BinaryOp::Add, xp, hh)?;
            b.unary(UnaryOp::Tanh, z)?
        }
        Cell::Lstm => {
            let c = b.slice(state, h, h)?;
            let z = b.bin(BinaryOp::Add, xp, hh)?;
            let gate = |b: &mut Body, k: u64, f: UnaryOp| {
                let part = b.slice(z, k * h, h)?;
                b.unary(f, part)
            };
            let i = gate(&mut b, 0, UnaryOp::Sigmoid)?;
            let f = gate(&mut b, 1, UnaryOp::Sigmoid)?;
            let gg = gate(&mut b, 2, UnaryOp::Tanh)?;
            let o = gate(&mut b, 3, UnaryOp::Sigmoid)?;
            let fc = b.bin(BinaryOp::Mul, f, c)?;
            let ig = b.bin(BinaryOp::Mul, i, gg)?;
            let c2 = b.bin(BinaryOp::Add, fc, ig)?;
            let tc = b.unary(UnaryOp::Tanh, c2)?;
            let h2 = b.bin(BinaryOp::Mul, o, tc)?;
            b.op(Op::Concat { axis: 1 }, &[h2, c2])?
        }
        Cell::Gru => {
            let b_hh = b.input("bias_hh", vec![Dim::Fixed(g)]);
            let hh = b.bin(BinaryOp::Add, hh, b_hh)?;
            let part = |b: &mut Body, v: ValueId, k: u64| b.slice(v, k * h, h);
            let (xr, xz, xn) = (
                part(&mut b, xp, 0)?,
                part(&mut b, xp, 1)?,
                part(&mut b, xp, 2)?,
            );
            let (hr, hz, hn) = (
                part(&mut b, hh, 0)?,
                part(&mut b, hh, 1)?,
                part(&mut b, hh, 2)?,
            );
            let r = b.bin(BinaryOp::Add, xr, hr)?;
            let r = b.unary(UnaryOp::Sigmoid, r)?;
            let z = b.bin(BinaryOp::Add, xz, hz)?;
            let z = b.unary(UnaryOp::Sigmoid, z)?;
            let rn = b.bin(BinaryOp::Mul, r, hn)?;
            let n = b.bin(BinaryOp::Add, xn, rn)?;
            let n = b.unary(UnaryOp::Tanh, n)?;
            // h' = n + z * (h - n)
            let d = b.bin(BinaryOp::Sub, prev_h, n)?;
            let zd = b.bin(BinaryOp::Mul, z, d)?;
            b.bin(BinaryOp::Add, n, zd)?
        }
    };
    b.graph.outputs.push(("next".into(), next));
    Ok(b.graph)
}

/// A scan body under construction.
struct Body {
    graph: Graph,
    span: Span,
}

impl Body {
    fn input(&mut self, name: &str, dims: Vec<Dim>) -> ValueId {
        self.graph.add_leaf(
            Op::Input { name: name.into() },
            TensorType::f32(dims),
            self.span,
        )
    }

    fn op(&mut self, op: Op, operands: &[ValueId]) -> Result<ValueId, String> {
        self.graph.add(op, operands, self.span)
    }

    fn bin(&mut self, op: BinaryOp, a: ValueId, b: ValueId) -> Result<ValueId, String> {
        self.op(Op::Binary(op), &[a, b])
    }

    fn unary(&mut self, op: UnaryOp, x: ValueId) -> Result<ValueId, String> {
        self.op(Op::Unary(op), &[x])
    }

    /// Columns `start..start + len` of a `[batch, n]` value.
    fn slice(&mut self, x: ValueId, start: u64, len: u64) -> Result<ValueId, String> {
        self.op(
            Op::Slice {
                axis: 1,
                start,
                len,
            },
            &[x],
        )
    }
}

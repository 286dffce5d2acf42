//! `scan`: a loop over a time axis with carried state, the op recurrent layers are built
//! from. Its body is a graph run once per step, so the IR's size does not depend on the
//! sequence length.
//!
//! # Semantics
//! Operands: `init` (the first carry), then `sequences` time-major sequences
//! `[T, ...]` (all with the same fixed `T >= 1`), then any number of constants (weights,
//! closed-over values), read whole at every step. The body's inputs, in order: the carry
//! (the type of `init`), one slice `[...]` per sequence, one input per constant (its
//! type); its one output is the next carry (the type of `init`).
//!
//! With `keep = all` the result stacks every carry, `R : [T + 1, ...carry]`:
//! - forward: `R[0] = init`, `R[t + 1] = body(R[t], seq[t], consts)` for `t = 0..T`;
//! - reverse: `R[T] = init`, `R[t] = body(R[t + 1], seq[t], consts)` for `t = T-1..=0`.
//!
//! So `R[i]` is aligned with the sequence index in both directions. With `keep = last`
//! the result is only the final carry (`R[T]` forward, `R[0]` reverse): an accumulator
//! (backpropagation through time sums each step's weight gradient this way) costs one
//! carry of memory, not `T + 1`.
//!
//! # Body rules
//! A body has no parameters, no updates, no random draws and no nested scans: every
//! value it reads from outside comes in as an operand.

use super::graph::Graph;
use super::op::Op;
use super::types::{Dim, Shape, TensorType};
use std::fmt;

/// The loop of an [`Op::Scan`]: its body and how it runs.
#[derive(Clone)]
pub struct Scan {
    pub body: Graph,
    /// How many operands after `init` are sequences (the rest are constants).
    pub sequences: usize,
    /// Whether the steps run from `T - 1` down to `0`.
    pub reverse: bool,
    /// Whether the result stacks every carry (`true`) or is only the final one.
    pub keep_all: bool,
}

impl Scan {
    /// The number of steps `T`, from the operand types (the first sequence's leading dim).
    pub fn steps(operands: &[&TensorType]) -> Option<u64> {
        match operands.get(1)?.shape.dims().first()? {
            Dim::Fixed(t) => Some(*t),
            Dim::Batch => None,
        }
    }

    /// The attributes as text: `sequences=1 keep=all forward`.
    pub fn attributes(&self) -> String {
        format!(
            "sequences={} keep={} {}",
            self.sequences,
            if self.keep_all { "all" } else { "last" },
            if self.reverse { "reverse" } else { "forward" }
        )
    }

    /// The typing rule (see the module docs).
    pub fn infer(&self, operands: &[&TensorType]) -> Result<TensorType, String> {
        let Some(init) = operands.first() else {
            return Err("`scan` needs an initial carry".into());
        };
        if self.sequences == 0 || operands.len() < 1 + self.sequences {
            return Err(format!(
                "`scan` needs at least one sequence after the initial carry, got {} operand(s) for {} sequence(s)",
                operands.len(),
                self.sequences
            ));
        }
        let inputs = &self.body.inputs;
        if inputs.len() != operands.len() {
            return Err(format!(
                "the scan body takes {} input(s) but the scan has {} operand(s)",
                inputs.len(),
                operands.len()
            ));
        }
        let mut steps = None;
        for (i, seq) in operands[1..=self.sequences].iter().enumerate() {
            let dims = seq.shape.dims();
            let Some(Dim::Fixed(t)) = dims.first().copied() else {
                return Err(format!(
                    "scan sequence {i} must have a fixed time axis first, got {seq}"
                ));
            };
            if t == 0 {
                return Err(format!("scan sequence {i} is empty: {seq}"));
            }
            if steps.is_some_and(|s| s != t) {
                return Err(format!(
                    "scan sequences differ in length: {} and {t} steps",
                    steps.unwrap_or(0)
                ));
            }
            steps = Some(t);
        }
        let steps = steps.unwrap_or(0);
        for (i, (&input, operand)) in inputs.iter().zip(operands).enumerate() {
            let want = if (1..=self.sequences).contains(&i) {
                TensorType {
                    dtype: operand.dtype,
                    shape: Shape(operand.shape.dims()[1..].to_vec()),
                }
            } else {
                (*operand).clone()
            };
            let got = self.body.ty(input);
            if *got != want {
                return Err(format!(
                    "scan body input {i} has type {got} but its operand gives {want}"
                ));
            }
        }
        match self.body.outputs.as_slice() {
            [(_, out)] if self.body.ty(*out) == *init => {}
            [(_, out)] => {
                return Err(format!(
                    "the scan body returns {} but the carry is {init}",
                    self.body.ty(*out)
                ));
            }
            _ => return Err("a scan body has exactly one output, the next carry".into()),
        }
        for v in self.body.values() {
            match &self.body.node(v).op {
                Op::Param { .. } => {
                    return Err("a scan body cannot hold parameters: pass them as operands".into());
                }
                Op::RandomUniform { .. } => {
                    return Err("a scan body cannot draw random numbers".into());
                }
                Op::Scan(_) => return Err("scans cannot be nested".into()),
                _ => {}
            }
        }
        if !self.body.updates.is_empty() {
            return Err("a scan body cannot update persistent values".into());
        }
        self.body
            .verify()
            .map_err(|e| format!("in the scan body: {e}"))?;
        if !self.keep_all {
            return Ok((*init).clone());
        }
        let mut dims = vec![Dim::Fixed(steps + 1)];
        dims.extend_from_slice(init.shape.dims());
        Ok(TensorType {
            dtype: init.dtype,
            shape: Shape(dims),
        })
    }
}

impl fmt::Debug for Scan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Scan({}) {}",
            self.attributes(),
            super::print::print_graph(&self.body, None)
        )
    }
}

impl PartialEq for Scan {
    /// Two scans are equal when they print the same (their bodies are structurally equal).
    fn eq(&self, other: &Scan) -> bool {
        format!("{self:?}") == format!("{other:?}")
    }
}

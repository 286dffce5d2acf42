//! Greedy decoding: running a sequence-to-sequence model's entry autoregressively, so the
//! decoder reads its own previous predictions instead of the true target (which training
//! fed it: teacher forcing).
//!
//! The convention, which `dsl-examples/transformer_seq2seq.strata` follows: one i32
//! input holds each sample's tokens, flattened; the decoder's input is the `T` positions
//! from [`GreedyDecoding::start`] on, the first of them the start token; an f32 output
//! `[n, T, classes]` scores the next token at every decoder position, and position `t`
//! depends only on decoder inputs `0..=t` (a causal decoder). Decoding runs the entry
//! `T` times: after run `t`, the best-scoring class at position `t` is the prediction
//! `t`, written into decoder input `t + 1`. The other inputs pass through unchanged.

use crate::error::RunError;
use crate::session::Session;
use strata_artifact::tensor::{HostTensor, TensorData, argmax};

/// Which entry, input and output greedy decoding uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GreedyDecoding {
    /// The entry to run, normally `infer`.
    pub entry: String,
    /// The i32 input holding the decoder's tokens.
    pub input: String,
    /// The f32 output `[n, T, classes]` of next-token scores.
    pub output: String,
    /// Where the decoder's input starts in each sample's flattened tokens: the position
    /// of the start token.
    pub start: usize,
}

/// Why decoding failed.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Run(#[from] RunError),
    /// The inputs or the entry do not follow the convention of the module docs.
    #[error("greedy decoding: {0}")]
    Convention(String),
}

impl GreedyDecoding {
    /// Decodes every sample of `inputs` (the entry's inputs, by name): the predicted
    /// tokens, `i32 [n, T]`.
    pub fn decode(
        &self,
        session: &mut Session,
        inputs: &[(&str, HostTensor)],
    ) -> Result<HostTensor, DecodeError> {
        let bad = |m: String| DecodeError::Convention(m);
        let mut inputs: Vec<(&str, HostTensor)> = inputs.to_vec();
        let slot = inputs
            .iter()
            .position(|(name, _)| *name == self.input)
            .ok_or_else(|| bad(format!("no input `{}` given", self.input)))?;
        let tokens = &inputs[slot].1;
        let (n, row) = match tokens.shape.split_first() {
            Some((&n, rest)) if matches!(tokens.data, TensorData::I32(_)) => {
                (n as usize, rest.iter().product::<u64>() as usize)
            }
            _ => {
                return Err(bad(format!(
                    "input `{}` must be i32 [n, …] token ids",
                    self.input
                )));
            }
        };
        let mut predicted: Vec<i32> = Vec::new();
        let mut length = None;
        let mut t = 0;
        while length.is_none_or(|len| t < len) {
            let outputs = session.run(&self.entry, &inputs)?;
            let (_, scores) = outputs
                .iter()
                .find(|(name, _)| *name == self.output)
                .ok_or_else(|| bad(format!("`{}` has no output `{}`", self.entry, self.output)))?;
            let (len, classes) = match (scores.shape.as_slice(), scores.as_f32()) {
                ([m, len, classes], Some(_)) if *m as usize == n && *len > 0 && *classes > 0 => {
                    (*len as usize, *classes as usize)
                }
                _ => {
                    return Err(bad(format!(
                        "output `{}` must be f32 [{n}, T, classes], got {:?}",
                        self.output, scores.shape
                    )));
                }
            };
            if self.start.checked_add(len).is_none_or(|end| end > row) {
                return Err(bad(format!(
                    "{len} decoder positions from {} do not fit the {row} tokens of `{}`",
                    self.start, self.input
                )));
            }
            if length.is_none() {
                length = Some(len);
                predicted = vec![0; n * len];
            }
            let values = scores.as_f32().expect("checked f32");
            let best: Vec<i32> = (0..n)
                .map(|i| {
                    let from = (i * len + t) * classes;
                    argmax(&values[from..from + classes]) as i32
                })
                .collect();
            let TensorData::I32(ids) = &mut inputs[slot].1.data else {
                unreachable!("checked i32 above")
            };
            for (i, &token) in best.iter().enumerate() {
                predicted[i * len + t] = token;
                if t + 1 < len {
                    ids[i * row + self.start + t + 1] = token;
                }
            }
            t += 1;
        }
        let len = length.unwrap_or(0) as u64;
        HostTensor::new(vec![n as u64, len], TensorData::I32(predicted))
            .map_err(|e| bad(e.to_string()))
    }
}

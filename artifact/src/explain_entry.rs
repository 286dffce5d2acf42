//! The `explain` entry: input gradients of a model's outputs, for attributions.
//!
//! A model compiled with its explain entry (`strata build --explain`, `strata explain`)
//! has, besides `infer`, an entry [`EXPLAIN_ENTRY`] whose ports follow one convention,
//! which the compiler (`strata_compiler::explain`) builds and the attribution methods
//! (`strata_training::explain`) read:
//!
//! - inputs: every input of `infer`, under its name, and per `f32` output `NAME` of
//!   `infer` a *seed* [`seed_input`]`(NAME)` of that output's type;
//! - outputs: every output of `infer`, under its name, then per `f32` input `NAME` of
//!   `infer` (the training `step` counter aside) its gradient [`gradient_output`]`(NAME)`,
//!   of that input's type.
//!
//! The gradient is `d/dx Σ_o Σ seed_o ⊙ o(x)`: the seeds weigh the outputs' elements,
//! so a one-hot seed over a sample's output row picks the class its gradient explains,
//! at run time, without recompiling. Samples of a batch do not mix (each sample's outputs
//! depend on its inputs alone in an inference entry), so row `i` of a gradient is the
//! gradient of row `i`'s weighted outputs.

use crate::manifest::Manifest;
use strata_kernels::ir::{Dim, ScalarType};

/// The entry's name.
pub const EXPLAIN_ENTRY: &str = "explain";

/// The input not explained: the step counter of models that draw random numbers.
pub const STEP_INPUT: &str = "step";

/// The seed input weighing output `output`.
pub fn seed_input(output: &str) -> String {
    format!("seed.{output}")
}

/// The output holding the gradient with respect to input `input`.
pub fn gradient_output(input: &str) -> String {
    format!("grad.{input}")
}

/// One port of the explain entry, with its buffer's type.
#[derive(Clone, Debug, PartialEq)]
pub struct ExplainPort {
    pub name: String,
    pub dtype: ScalarType,
    pub shape: Vec<Dim>,
}

impl ExplainPort {
    /// The shape of one sample: the shape without its leading batch dimension, or
    /// `None` when the port has no leading batch dimension (or holds it twice).
    pub fn sample_shape(&self) -> Option<Vec<u64>> {
        match self.shape.split_first() {
            Some((Dim::Batch, rest)) => rest
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => Some(*n),
                    Dim::Batch => None,
                })
                .collect(),
            _ => None,
        }
    }
}

/// The explain entry's ports, sorted by role.
#[derive(Clone, Debug, PartialEq)]
pub struct ExplainPorts {
    /// The model's inputs (those of `infer`).
    pub inputs: Vec<ExplainPort>,
    /// The model's outputs.
    pub outputs: Vec<ExplainPort>,
    /// `(output, seed input)` for every f32 output.
    pub seeds: Vec<(String, String)>,
    /// `(input, gradient output)` for every f32 input but the step counter.
    pub gradients: Vec<(String, String)>,
}

impl ExplainPorts {
    /// The ports of `manifest`'s explain entry, checked against the convention above.
    pub fn of(manifest: &Manifest) -> Result<ExplainPorts, String> {
        let entry = manifest
            .entries
            .iter()
            .find(|e| e.name == EXPLAIN_ENTRY)
            .ok_or_else(|| {
                format!(
                    "the model has no `{EXPLAIN_ENTRY}` entry (it has {}); compile it with \
                     its explain entry (`strata build --explain`)",
                    manifest
                        .entries
                        .iter()
                        .map(|e| e.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        let port = |name: &str, buffer: usize| -> Result<ExplainPort, String> {
            let info = manifest
                .buffers
                .get(buffer)
                .ok_or_else(|| format!("`{EXPLAIN_ENTRY}`: port `{name}` has no buffer"))?;
            Ok(ExplainPort {
                name: name.to_string(),
                dtype: info.dtype,
                shape: info.shape.clone(),
            })
        };
        let mut ports = ExplainPorts {
            inputs: Vec::new(),
            outputs: Vec::new(),
            seeds: Vec::new(),
            gradients: Vec::new(),
        };
        let mut seed_ports = Vec::new();
        for p in &entry.inputs {
            let port = port(&p.name, p.buffer)?;
            if p.name.starts_with("seed.") {
                seed_ports.push(port);
            } else {
                ports.inputs.push(port);
            }
        }
        let mut gradient_ports = Vec::new();
        for p in &entry.outputs {
            let port = port(&p.name, p.buffer)?;
            if p.name.starts_with("grad.") {
                gradient_ports.push(port);
            } else {
                ports.outputs.push(port);
            }
        }
        for output in &ports.outputs {
            if output.dtype != ScalarType::F32 {
                continue;
            }
            let seed = seed_input(&output.name);
            let found = seed_ports.iter().find(|s| s.name == seed).ok_or_else(|| {
                format!(
                    "`{EXPLAIN_ENTRY}` has no seed `{seed}` for output `{}`",
                    output.name
                )
            })?;
            if found.shape != output.shape || found.dtype != output.dtype {
                return Err(format!(
                    "`{EXPLAIN_ENTRY}`: seed `{seed}` does not have output `{}`'s type",
                    output.name
                ));
            }
            ports.seeds.push((output.name.clone(), seed));
        }
        for input in &ports.inputs {
            if input.dtype != ScalarType::F32 || input.name == STEP_INPUT {
                continue;
            }
            let gradient = gradient_output(&input.name);
            let found = gradient_ports
                .iter()
                .find(|g| g.name == gradient)
                .ok_or_else(|| {
                    format!(
                        "`{EXPLAIN_ENTRY}` has no gradient `{gradient}` for input `{}`",
                        input.name
                    )
                })?;
            if found.shape != input.shape {
                return Err(format!(
                    "`{EXPLAIN_ENTRY}`: gradient `{gradient}` does not have input `{}`'s shape",
                    input.name
                ));
            }
            ports.gradients.push((input.name.clone(), gradient));
        }
        if seed_ports.len() != ports.seeds.len() || gradient_ports.len() != ports.gradients.len() {
            return Err(format!(
                "`{EXPLAIN_ENTRY}` has seeds or gradients of no port of the model"
            ));
        }
        Ok(ports)
    }

    pub fn input(&self, name: &str) -> Option<&ExplainPort> {
        self.inputs.iter().find(|p| p.name == name)
    }

    pub fn output(&self, name: &str) -> Option<&ExplainPort> {
        self.outputs.iter().find(|p| p.name == name)
    }

    /// The inputs that have gradients, by name.
    pub fn explainable_inputs(&self) -> impl Iterator<Item = &str> {
        self.gradients.iter().map(|(input, _)| input.as_str())
    }

    /// The outputs that take a seed, by name.
    pub fn explainable_outputs(&self) -> impl Iterator<Item = &str> {
        self.seeds.iter().map(|(output, _)| output.as_str())
    }
}

//! Attributions: which input values drove a model's output, from its compiled `explain`
//! entry (the input gradients of seeded outputs, see
//! [`strata_artifact::explain_entry`]).
//!
//! - [`methods`]: plain gradient, gradient x input, integrated gradients, SmoothGrad,
//!   over any [`GradientSource`](methods::GradientSource).
//! - [`samples`]: what to explain by default: the first samples of the train section's
//!   test split, and the train split's mean as a baseline.
//! - [`pictures`]: heat maps over image inputs (PNG), a feature ranking for tabular
//!   inputs (SVG), per-position scores for sequences (CSV).
//!
//! [`explain`] runs a method on a [`Session`] for one output and a target per sample: a
//! given element of the output (a class), the predicted class, or every element in turn.

pub mod methods;
pub mod pictures;
pub mod samples;

use methods::{Attributions, GradientSource, Method, attribute};
use strata_artifact::explain_entry::{EXPLAIN_ENTRY, ExplainPort, ExplainPorts};
use strata_artifact::manifest::Manifest;
use strata_artifact::tensor::{HostTensor, TensorData};
use strata_kernels::ir::{Dim, ScalarType};
use strata_runtime::{RunError, Session};

/// Why an explanation failed.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The request does not fit the model (an unknown output, a target out of range,
    /// inputs of the wrong shape): the command line can fix it.
    #[error("{0}")]
    Usage(String),
    /// Running the model failed.
    #[error("{0}")]
    Failed(String),
}

fn usage(message: impl Into<String>) -> ExplainError {
    ExplainError::Usage(message.into())
}

/// Which element of the output each sample's attributions explain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The largest element of the sample's output row (its predicted class); the only
    /// element when the row has one (a binary logit, a regression).
    Predicted,
    /// Element `k` of every sample's (flattened) output row.
    Index(usize),
    /// Every element in turn: one set of attributions per element.
    All,
}

/// What to explain and how.
#[derive(Clone, Debug, PartialEq)]
pub struct ExplainSettings {
    pub method: Method,
    /// The output explained [default: `prediction` if given, else the model's only f32
    /// output].
    pub output: Option<String>,
    pub target: Target,
    /// The input attributed [default: the model's only f32 input].
    pub input: Option<String>,
}

/// Attributions for one target.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetAttributions {
    /// The element of the output row explained, per sample.
    pub targets: Vec<usize>,
    pub attributions: Attributions,
}

/// The attributions of some samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Explanation {
    /// The input attributed, and the shape of one sample of it.
    pub input: String,
    pub sample_shape: Vec<u64>,
    /// The output explained, and its values per sample.
    pub output: String,
    pub output_width: usize,
    pub samples: usize,
    /// The input's values, `samples * Π sample_shape`.
    pub x: Vec<f32>,
    /// The output's values, `samples * output_width`.
    pub outputs: Vec<f32>,
    /// One entry for a single target, one per output element for [`Target::All`].
    pub targets: Vec<TargetAttributions>,
}

/// The output and input [`ExplainSettings`] name, or the defaults: `prediction` (the
/// train section's) and the only explainable input.
pub fn chosen_ports(
    ports: &ExplainPorts,
    settings: &ExplainSettings,
    prediction: Option<&str>,
) -> Result<(String, String), ExplainError> {
    let list = |names: Vec<&str>| names.join(", ");
    let outputs: Vec<&str> = ports.explainable_outputs().collect();
    let output = match (&settings.output, prediction, outputs.as_slice()) {
        (Some(name), _, _) => {
            if !outputs.contains(&name.as_str()) {
                return Err(usage(format!(
                    "the model has no f32 output `{name}` to explain (it has {})",
                    list(outputs)
                )));
            }
            name.clone()
        }
        (None, Some(p), _) if outputs.contains(&p) => p.to_string(),
        (None, _, [only]) => only.to_string(),
        (None, _, _) => {
            return Err(usage(format!(
                "the model has several outputs: say which to explain with --output ({})",
                list(outputs)
            )));
        }
    };
    let inputs: Vec<&str> = ports.explainable_inputs().collect();
    let input = match (&settings.input, inputs.as_slice()) {
        (Some(name), _) => {
            if !inputs.contains(&name.as_str()) {
                return Err(usage(format!(
                    "the model has no f32 input `{name}` to attribute to (it has {})",
                    list(inputs)
                )));
            }
            name.clone()
        }
        (None, [only]) => only.to_string(),
        (None, _) => {
            return Err(usage(format!(
                "the model has several f32 inputs: say which to attribute to with --wrt ({})",
                list(inputs)
            )));
        }
    };
    Ok((output, input))
}

/// Explains `inputs` (every input of the model, `[n, ...]` each, by name) with the
/// session's weights.
pub fn explain(
    session: &mut Session,
    settings: &ExplainSettings,
    prediction: Option<&str>,
    inputs: &[(String, HostTensor)],
) -> Result<Explanation, ExplainError> {
    let ports = ExplainPorts::of(session.manifest()).map_err(usage)?;
    let (output, input) = chosen_ports(&ports, settings, prediction)?;
    let mut source = SessionGradients::new(session, &ports, &input, &output, inputs)?;
    let n = source.samples;
    let wo = source.output_width;
    let x = source.x.clone();
    // The outputs first (a zero seed), for the predicted class.
    let (outputs, _) = source
        .gradients(&x, &(0..n).collect::<Vec<_>>(), &vec![0.0; n * wo])
        .map_err(ExplainError::Failed)?;
    let chosen: Vec<Vec<usize>> = match settings.target {
        Target::Predicted => vec![(0..n).map(|i| argmax(&outputs[i * wo..][..wo])).collect()],
        Target::Index(k) if k < wo => vec![vec![k; n]],
        Target::Index(k) => {
            return Err(usage(format!(
                "target {k} is out of range: output `{output}` has {wo} values per sample"
            )));
        }
        Target::All => (0..wo).map(|k| vec![k; n]).collect(),
    };
    let mut targets = Vec::with_capacity(chosen.len());
    for per_sample in chosen {
        let mut seeds = vec![0f32; n * wo];
        for (i, k) in per_sample.iter().enumerate() {
            seeds[i * wo + k] = 1.0;
        }
        let attributions = attribute(&mut source, &settings.method, &x, &seeds).map_err(|e| {
            match source.failure.take() {
                Some(failure) => failure,
                None => usage(e),
            }
        })?;
        targets.push(TargetAttributions {
            targets: per_sample,
            attributions,
        });
    }
    Ok(Explanation {
        sample_shape: source.sample_shape.clone(),
        input,
        output,
        output_width: wo,
        samples: n,
        x,
        outputs,
        targets,
    })
}

/// The index of the largest value (the first of ties; NaN never wins).
fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] || row[best].is_nan() {
            best = i;
        }
    }
    best
}

/// The explain entry of a session as a [`GradientSource`]: the explained input's rows
/// come from the method, the model's other inputs are the sample's own, and every other
/// output's seed is zero.
struct SessionGradients<'s> {
    session: &'s mut Session,
    input: String,
    sample_shape: Vec<u64>,
    input_width: usize,
    output: String,
    output_width: usize,
    gradient: String,
    samples: usize,
    x: Vec<f32>,
    /// The model's other inputs, whole (`[n, ...]`), with their values per sample.
    others: Vec<(String, HostTensor, usize)>,
    /// Every seed but the explained output's, with its per-row shape.
    zero_seeds: Vec<(String, Vec<Dim>)>,
    seed: String,
    /// A run's failure, kept apart from the methods' own errors (a different exit code).
    failure: Option<ExplainError>,
}

fn shape_text(shape: &[u64]) -> String {
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    format!("[{}]", dims.join(", "))
}

impl<'s> SessionGradients<'s> {
    fn new(
        session: &'s mut Session,
        ports: &ExplainPorts,
        input: &str,
        output: &str,
        inputs: &[(String, HostTensor)],
    ) -> Result<SessionGradients<'s>, ExplainError> {
        let batched = |port: &ExplainPort, what: &str| {
            port.sample_shape().ok_or_else(|| {
                usage(format!(
                    "the {what} `{}` has no leading batch dimension: its samples cannot be told apart",
                    port.name
                ))
            })
        };
        let in_port = ports.input(input).expect("chosen among the ports");
        let sample_shape = batched(in_port, "input")?;
        let out_port = ports.output(output).expect("chosen among the ports");
        let output_width = batched(out_port, "output")?.iter().product::<u64>() as usize;
        let input_width = sample_shape.iter().product::<u64>() as usize;
        for (name, _) in inputs {
            if ports.input(name).is_none() {
                let names: Vec<&str> = ports.inputs.iter().map(|p| p.name.as_str()).collect();
                return Err(usage(format!(
                    "the model has no input `{name}` (its inputs are {})",
                    names.join(", ")
                )));
            }
        }
        let mut samples = None;
        let mut x = Vec::new();
        let mut others = Vec::new();
        for port in &ports.inputs {
            let Some((_, tensor)) = inputs.iter().find(|(n, _)| *n == port.name) else {
                return Err(usage(format!("input `{}` is missing", port.name)));
            };
            let shape = batched(port, "input")?;
            let n = tensor.shape.first().copied().unwrap_or(0) as usize;
            if tensor.shape.get(1..) != Some(shape.as_slice()) {
                return Err(usage(format!(
                    "input `{}` is {}: the model takes [n, {}]",
                    port.name,
                    shape_text(&tensor.shape),
                    shape_text(&shape).trim_matches(['[', ']'])
                )));
            }
            match (&tensor.data, port.dtype) {
                (TensorData::F32(_), ScalarType::F32) | (TensorData::I32(_), ScalarType::I32) => {}
                _ => {
                    return Err(usage(format!(
                        "input `{}` is {}, the model takes {:?}",
                        port.name,
                        tensor.type_string(),
                        port.dtype
                    )));
                }
            }
            match samples {
                None => samples = Some(n),
                Some(m) if m != n => {
                    return Err(usage(format!(
                        "input `{}` has {n} samples, another input {m}",
                        port.name
                    )));
                }
                Some(_) => {}
            }
            if port.name == input {
                let TensorData::F32(values) = &tensor.data else {
                    unreachable!("checked f32 above")
                };
                x = values.clone();
            } else {
                let width = shape.iter().product::<u64>() as usize;
                others.push((port.name.clone(), tensor.clone(), width));
            }
        }
        let samples = samples.unwrap_or(0);
        if samples == 0 {
            return Err(usage("there are no samples to explain"));
        }
        let seed = strata_artifact::explain_entry::seed_input(output);
        let zero_seeds = ports
            .seeds
            .iter()
            .filter(|(_, s)| *s != seed)
            .map(|(o, s)| {
                let shape = ports.output(o).expect("a seeded output").shape.clone();
                (s.clone(), shape)
            })
            .collect();
        let gradient = ports
            .gradients
            .iter()
            .find(|(i, _)| i == input)
            .map(|(_, g)| g.clone())
            .expect("a chosen input has a gradient");
        Ok(SessionGradients {
            session,
            input: input.to_string(),
            sample_shape,
            input_width,
            output: output.to_string(),
            output_width,
            gradient,
            samples,
            x,
            others,
            zero_seeds,
            seed,
            failure: None,
        })
    }

    fn run(
        &mut self,
        x: &[f32],
        samples: &[usize],
        seeds: &[f32],
    ) -> Result<(Vec<f32>, Vec<f32>), ExplainError> {
        let rows = samples.len() as u64;
        let failed = |e: RunError| ExplainError::Failed(format!("`{EXPLAIN_ENTRY}`: {e}"));
        let tensor = |shape: Vec<u64>, data: TensorData| HostTensor { shape, data };
        let with_rows = |sample: &[u64]| {
            let mut shape = vec![rows];
            shape.extend_from_slice(sample);
            shape
        };
        let mut feed: Vec<(&str, HostTensor)> = Vec::new();
        feed.push((
            &self.input,
            tensor(with_rows(&self.sample_shape), TensorData::F32(x.to_vec())),
        ));
        for (name, whole, width) in &self.others {
            let mut shape = whole.shape.clone();
            shape[0] = rows;
            let data = match &whole.data {
                TensorData::F32(v) => TensorData::F32(
                    samples
                        .iter()
                        .flat_map(|&s| v[s * width..][..*width].iter().copied())
                        .collect(),
                ),
                TensorData::I32(v) => TensorData::I32(
                    samples
                        .iter()
                        .flat_map(|&s| v[s * width..][..*width].iter().copied())
                        .collect(),
                ),
            };
            feed.push((name, tensor(shape, data)));
        }
        for (name, shape) in &self.zero_seeds {
            let shape: Vec<u64> = shape.iter().map(|d| d.resolve(rows)).collect();
            let count = shape.iter().product::<u64>() as usize;
            feed.push((name, tensor(shape, TensorData::F32(vec![0.0; count]))));
        }
        let out_shape = self
            .session
            .manifest()
            .entries
            .iter()
            .find(|e| e.name == EXPLAIN_ENTRY)
            .and_then(|e| e.inputs.iter().find(|p| p.name == self.seed))
            .and_then(|p| self.session.manifest().buffers.get(p.buffer))
            .map(|b| {
                b.shape
                    .iter()
                    .map(|d| d.resolve(rows))
                    .collect::<Vec<u64>>()
            })
            .ok_or_else(|| ExplainError::Failed(format!("no seed `{}`", self.seed)))?;
        feed.push((
            &self.seed,
            tensor(out_shape, TensorData::F32(seeds.to_vec())),
        ));
        let results = self.session.run(EXPLAIN_ENTRY, &feed).map_err(failed)?;
        let take = |name: &str| -> Result<Vec<f32>, ExplainError> {
            match results.iter().find(|(n, _)| n == name) {
                Some((
                    _,
                    HostTensor {
                        data: TensorData::F32(v),
                        ..
                    },
                )) => Ok(v.clone()),
                _ => Err(ExplainError::Failed(format!(
                    "`{EXPLAIN_ENTRY}` gave no f32 output `{name}`"
                ))),
            }
        };
        Ok((take(&self.output)?, take(&self.gradient)?))
    }
}

impl GradientSource for SessionGradients<'_> {
    fn input_width(&self) -> usize {
        self.input_width
    }

    fn output_width(&self) -> usize {
        self.output_width
    }

    fn gradients(
        &mut self,
        x: &[f32],
        samples: &[usize],
        seeds: &[f32],
    ) -> Result<(Vec<f32>, Vec<f32>), String> {
        self.run(x, samples, seeds).map_err(|e| {
            let message = e.to_string();
            self.failure = Some(e);
            message
        })
    }
}

/// Whether `manifest` has the explain entry.
pub fn has_explain_entry(manifest: &Manifest) -> bool {
    manifest.entries.iter().any(|e| e.name == EXPLAIN_ENTRY)
}

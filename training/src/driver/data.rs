//! What the driver feeds the model: the entry ports the train conventions name, and the
//! dataset loaded, shaped and split for them, with the normalization fitted on its train
//! split.

use strata_kernels::ir::{Dim, ScalarType};

use super::TrainError;
use crate::loaders::finite::refuse_non_finite;
use crate::loaders::{ArrayRequest, ArrayRole, DataSpec, load_named};
use crate::{Batch, Dataset, Labels, Normalization, Normalizer};
use strata_artifact::manifest::{Entry, Manifest};
use strata_artifact::tensor::{HostTensor, TensorData, dtype_name};
use strata_artifact::train_config::{ScoredHead, Task, TrainConfig, term_output};

/// The entry a section without `step` blocks trains with, and the one every artifact
/// evaluates with.
pub const TRAIN_ENTRY: &str = "train_step";
pub const EVAL_ENTRY: &str = "eval";

/// The ports of the `eval` (and `train_step`) entries the driver feeds and reads, with
/// the per-sample shapes the manifest gives them.
#[derive(Clone, Debug)]
pub(crate) struct Ports {
    pub features: String,
    /// f32, or i32 for token ids (the data's integer-valued features, converted).
    pub features_dtype: ScalarType,
    /// The features input's shape without its leading batch dimension.
    pub sample_shape: Vec<u64>,
    /// The label input, if the model trains with labels.
    pub label: Option<LabelPort>,
    pub prediction: String,
    /// Values of the prediction per sample (classes, or 1 for a binary logit).
    pub prediction_width: usize,
    pub task: Task,
    /// `eval` takes the `step` input (the model draws random numbers): it is fed
    /// [`EVAL_DRAW`], so every evaluation sees the same draws.
    pub eval_takes_step: bool,
    /// The `eval` outputs holding each step's loss (several steps only).
    pub step_losses: Vec<(String, String)>,
    /// Each named term and the output holding it (of `eval` and the first training
    /// entry).
    pub terms: Vec<(String, String)>,
    /// The other inputs and labels the data fills (from a file of named arrays).
    pub arrays: Vec<LabelPort>,
    /// The outputs the metrics score against the other labels.
    pub heads: Vec<HeadPort>,
    /// The inputs of each entry the driver runs, by entry: a label or an input an entry's
    /// graph does not read is not among them, and is not fed to it.
    pub accepts: Vec<(String, Vec<String>)>,
}

/// An output scored against a label other than the first (a [`ScoredHead`]).
#[derive(Clone, Debug)]
pub(crate) struct HeadPort {
    pub head: ScoredHead,
    /// Values of the output per sample.
    pub width: usize,
}

/// The `step` fed to `eval` (training steps count from 1, so it is no training draw).
pub(super) const EVAL_DRAW: u64 = 0;

/// The label input of `eval` and `train_step` (or another input or label the data fills).
#[derive(Clone, Debug)]
pub(crate) struct LabelPort {
    pub name: String,
    pub dtype: ScalarType,
    /// The label input's shape without its leading batch dimension.
    pub sample_shape: Vec<u64>,
}

fn model_error(message: String) -> TrainError {
    TrainError::Model(message)
}

fn entry<'m>(manifest: &'m Manifest, name: &str) -> Result<&'m Entry, TrainError> {
    manifest
        .entries
        .iter()
        .find(|e| e.name == name)
        .ok_or_else(|| {
            model_error(format!(
                "the artifact has no `{name}` entry (it has {}); rebuild it from a model file \
             with a train section",
                manifest
                    .entries
                    .iter()
                    .map(|e| e.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// `(dtype, shape)` of the buffer behind `entry`'s input (or output) `name`.
fn port_type<'m>(
    manifest: &'m Manifest,
    entry: &Entry,
    name: &str,
    output: bool,
) -> Result<(ScalarType, &'m [Dim]), TrainError> {
    let ports = if output {
        &entry.outputs
    } else {
        &entry.inputs
    };
    let side = if output { "output" } else { "input" };
    let port = ports
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| model_error(format!("entry `{}` has no {side} `{name}`", entry.name)))?;
    let buffer = manifest.buffers.get(port.buffer).ok_or_else(|| {
        model_error(format!(
            "entry `{}`: {side} `{name}` has no buffer",
            entry.name
        ))
    })?;
    Ok((buffer.dtype, &buffer.shape))
}

/// A `[batch, d1, d2, …]` shape's fixed tail `[d1, d2, …]`.
fn per_sample(what: &str, shape: &[Dim]) -> Result<Vec<u64>, TrainError> {
    let shown = || {
        shape
            .iter()
            .map(|d| match d {
                Dim::Batch => "batch".to_string(),
                Dim::Fixed(n) => n.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    match shape.split_first() {
        Some((Dim::Batch, rest)) => rest
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => Ok(*n),
                Dim::Batch => Err(()),
            })
            .collect::<Result<Vec<u64>, ()>>()
            .map_err(|()| {
                model_error(format!(
                    "{what} [{}] has the batch dimension twice",
                    shown()
                ))
            }),
        _ => Err(model_error(format!(
            "{what} is [{}]; training needs the batch as its first dimension",
            shown()
        ))),
    }
}

impl Ports {
    /// The ports of `eval`, checked against `config`; with `training`, `train_step`'s too.
    pub fn of(
        manifest: &Manifest,
        config: &TrainConfig,
        training: bool,
    ) -> Result<Ports, TrainError> {
        let eval = entry(manifest, EVAL_ENTRY)?;
        let (features_dtype, features_shape) =
            port_type(manifest, eval, &config.features_input, false)?;
        if !matches!(features_dtype, ScalarType::F32 | ScalarType::I32) {
            return Err(model_error(format!(
                "the features input `{}` is {}; data features are f32 (or i32 token ids)",
                config.features_input,
                dtype_name(features_dtype)
            )));
        }
        let sample_shape = per_sample(
            &format!("the features input `{}`", config.features_input),
            features_shape,
        )?;
        let label = match &config.label_input {
            None => None,
            Some(name) => {
                let (dtype, shape) = port_type(manifest, eval, name, false)?;
                let sample_shape = per_sample(&format!("the label input `{name}`"), shape)?;
                Some(LabelPort {
                    name: name.clone(),
                    dtype,
                    sample_shape,
                })
            }
        };
        port_type(manifest, eval, "loss", true)?;
        let (_, prediction_shape) = port_type(manifest, eval, &config.prediction, true)?;
        let prediction_width = per_sample(
            &format!("the prediction `{}`", config.prediction),
            prediction_shape,
        )?
        .iter()
        .product::<u64>() as usize;
        let mut step_losses = Vec::new();
        for update in &config.steps {
            if let Some(output) = &update.eval_loss {
                port_type(manifest, eval, output, true)?;
                step_losses.push((update.name.clone(), output.clone()));
            }
        }
        let terms: Vec<(String, String)> = config
            .terms
            .iter()
            .map(|t| (t.clone(), term_output(t)))
            .collect();
        for (_, output) in &terms {
            port_type(manifest, eval, output, true)?;
        }
        if training {
            if config.steps.is_empty() {
                return Err(model_error("the train section has no steps".into()));
            }
            let first = entry(manifest, &config.steps[0].entry)?;
            for (_, output) in &terms {
                port_type(manifest, first, output, true)?;
            }
            for update in &config.steps {
                let step = entry(manifest, &update.entry)?;
                let names = [config.features_input.as_str(), "lr", "step"];
                for name in names.into_iter().chain(config.label_input.as_deref()) {
                    port_type(manifest, step, name, false)?;
                }
                port_type(manifest, step, "loss", true)?;
            }
        }
        let eval_takes_step = eval.inputs.iter().any(|p| p.name == "step");
        // The other inputs and labels, typed by the first entry that takes each.
        let runs: Vec<&Entry> = std::iter::once(Ok(eval))
            .chain(
                config
                    .steps
                    .iter()
                    .filter(|_| training)
                    .map(|u| entry(manifest, &u.entry)),
            )
            .collect::<Result<_, _>>()?;
        let mut arrays = Vec::new();
        for name in config.extra_inputs.iter().chain(&config.extra_labels) {
            let Some(taker) = runs
                .iter()
                .find(|e| e.inputs.iter().any(|p| p.name == *name))
            else {
                continue;
            };
            let (dtype, shape) = port_type(manifest, taker, name, false)?;
            arrays.push(LabelPort {
                name: name.clone(),
                dtype,
                sample_shape: per_sample(&format!("the input `{name}`"), shape)?,
            });
        }
        let mut heads = Vec::new();
        for head in &config.heads {
            let (_, shape) = port_type(manifest, eval, &head.output, true)?;
            let width = per_sample(&format!("the output `{}`", head.output), shape)?
                .iter()
                .product::<u64>() as usize;
            if !arrays.iter().any(|a| a.name == head.label) {
                return Err(model_error(format!(
                    "the metrics score `{}` against `{}`, which no entry takes",
                    head.output, head.label
                )));
            }
            heads.push(HeadPort {
                head: head.clone(),
                width,
            });
        }
        let accepts = runs
            .iter()
            .map(|e| {
                let names = e.inputs.iter().map(|p| p.name.clone()).collect();
                (e.name.clone(), names)
            })
            .collect();
        Ok(Ports {
            arrays,
            heads,
            accepts,
            features: config.features_input.clone(),
            features_dtype,
            sample_shape,
            label,
            eval_takes_step,
            step_losses,
            terms,
            prediction: config.prediction.clone(),
            prediction_width,
            task: config.task.clone(),
        })
    }

    /// Checks that `data`'s labels suit the label input and the task: class indices in
    /// range for an i32 label, the right number of targets for an f32 one.
    /// Label-free training ignores whatever labels the data has.
    pub fn check_labels(&self, data: &Dataset, spec: &str) -> Result<(), TrainError> {
        let Some(label) = &self.label else {
            return Ok(());
        };
        let per_sample: u64 = label.sample_shape.iter().product();
        match (&data.labels, label.dtype) {
            (Labels::Classes { classes, .. }, ScalarType::I32) => {
                let model_classes = match self.task {
                    Task::Classification { classes } => classes,
                    Task::Regression { .. } | Task::Unlabelled { .. } => 0,
                };
                if per_sample != 1 {
                    return Err(TrainError::Config(format!(
                        "the label input `{}` takes {per_sample} values per sample; class labels are one",
                        label.name
                    )));
                }
                if *classes as u64 > model_classes {
                    return Err(TrainError::Config(format!(
                        "data `{spec}` has labels up to {} but the model predicts {model_classes} classes",
                        classes - 1
                    )));
                }
                Ok(())
            }
            (Labels::Targets { width, .. }, ScalarType::F32) if *width as u64 == per_sample => {
                Ok(())
            }
            (
                Labels::Sequences {
                    classes, length, ..
                },
                ScalarType::I32,
            ) => {
                let model_classes = match self.task {
                    Task::Classification { classes } => classes,
                    Task::Regression { .. } | Task::Unlabelled { .. } => 0,
                };
                if per_sample != *length as u64 {
                    return Err(TrainError::Config(format!(
                        "data `{spec}` has sequences of {length} labels but the label input `{}` takes {per_sample} values per sample",
                        label.name
                    )));
                }
                if *classes as u64 > model_classes {
                    return Err(TrainError::Config(format!(
                        "data `{spec}` has labels up to {} but the model predicts {model_classes} classes",
                        classes - 1
                    )));
                }
                Ok(())
            }
            (Labels::Targets { width, .. }, ScalarType::F32) => Err(TrainError::Config(format!(
                "data `{spec}` has {width} target(s) per sample but the label input `{}` takes {per_sample}",
                label.name
            ))),
            (_, dtype) => {
                let (have, want) = match data.labels {
                    Labels::Classes { .. } | Labels::Sequences { .. } => {
                        ("class indices", "real-valued targets")
                    }
                    Labels::Targets { .. } => ("real-valued targets", "class indices"),
                };
                Err(TrainError::Config(format!(
                    "data `{spec}` has {have} but the label input `{}` is {} ({want})",
                    label.name,
                    dtype_name(dtype)
                )))
            }
        }
    }

    /// The features and label (if the model takes one) of `batch` as the inputs of
    /// `eval` (labels reshaped to the label input's shape; features as token ids for an
    /// i32 features input).
    pub fn inputs(&self, batch: Batch, entry: &str) -> Result<Vec<(&str, HostTensor)>, TrainError> {
        let mut features = batch.features;
        if self.features_dtype == ScalarType::I32
            && let TensorData::F32(values) = &features.data
        {
            // `check_token_ids` made sure every value is an integer in i32's range.
            features.data = TensorData::I32(values.iter().map(|&x| x as i32).collect());
        }
        let mut inputs = vec![(self.features.as_str(), features)];
        if let Some(label) = &self.label {
            let mut shape = vec![batch.len as u64];
            shape.extend_from_slice(&label.sample_shape);
            let labels = HostTensor::new(shape, batch.labels.data).map_err(|e| {
                TrainError::Config(format!("labels do not fit `{}`: {e}", label.name))
            })?;
            inputs.push((label.name.as_str(), labels));
        }
        for (name, tensor) in batch.arrays {
            if let Some(port) = self.arrays.iter().find(|a| a.name == name) {
                inputs.push((port.name.as_str(), tensor));
            }
        }
        // Only what the entry takes: a label its graph never reads is not among its inputs.
        if let Some((_, takes)) = self.accepts.iter().find(|(e, _)| e == entry) {
            inputs.retain(|(name, _)| takes.iter().any(|t| t == name));
        }
        if self.eval_takes_step {
            inputs.push(("step", scalar(EVAL_DRAW as f32)));
        }
        Ok(inputs)
    }

    /// What the model asks of a file of named arrays: the features input, the first
    /// label, and every other input and label an entry takes.
    pub fn array_requests(&self) -> Vec<ArrayRequest> {
        let mut requests = vec![ArrayRequest {
            name: self.features.clone(),
            dtype: self.features_dtype,
            sample_shape: self.sample_shape.clone(),
            role: ArrayRole::Features,
        }];
        let port = |p: &LabelPort, role| ArrayRequest {
            name: p.name.clone(),
            dtype: p.dtype,
            sample_shape: p.sample_shape.clone(),
            role,
        };
        requests.extend(self.label.iter().map(|l| port(l, ArrayRole::Label)));
        requests.extend(self.arrays.iter().map(|a| port(a, ArrayRole::Other)));
        requests
    }

    /// Checks the other labels' class indices against the heads that score them.
    pub fn check_head_labels(&self, data: &Dataset, spec: &str) -> Result<(), TrainError> {
        for port in &self.heads {
            let Task::Classification { classes } = port.head.task else {
                continue;
            };
            let Some(array) = data.arrays.iter().find(|a| a.name == port.head.label) else {
                continue;
            };
            if let TensorData::I32(values) = &array.data
                && let Some(&bad) = values.iter().find(|&&v| v < 0 || v as u64 >= classes)
            {
                return Err(TrainError::Config(format!(
                    "data `{spec}` has the label {bad} in `{}`, but `{}` predicts {classes} classes",
                    port.head.label, port.head.output
                )));
            }
        }
        Ok(())
    }

    /// For an i32 features input: checks every feature is a whole number that fits i32
    /// (token ids), so the conversion in [`Ports::inputs`] is exact.
    pub fn check_token_ids(&self, data: &Dataset, spec: &str) -> Result<(), TrainError> {
        if self.features_dtype != ScalarType::I32 {
            return Ok(());
        }
        let size = data.sample_size().max(1);
        let in_range =
            |x: f32| x.fract() == 0.0 && (-2_147_483_648.0..2_147_483_648.0).contains(&x);
        match data.features.iter().position(|&x| !in_range(x)) {
            None => Ok(()),
            Some(i) => Err(TrainError::Config(format!(
                "data `{spec}` does not fit the i32 input `{}`: sample {} has the value {}, not a token id",
                self.features,
                i / size,
                data.features[i]
            ))),
        }
    }

    /// The inputs of `train_step` for `batch` at learning rate `lr` and 1-based `step`.
    pub fn train_inputs(
        &self,
        batch: Batch,
        entry: &str,
        lr: f32,
        step: u64,
    ) -> Result<Vec<(&str, HostTensor)>, TrainError> {
        let mut inputs = self.inputs(batch, entry)?;
        inputs.retain(|(name, _)| *name != "step");
        inputs.push(("lr", scalar(lr)));
        inputs.push(("step", scalar(step as f32)));
        Ok(inputs)
    }
}

pub(super) fn scalar(value: f32) -> HostTensor {
    HostTensor {
        shape: Vec::new(),
        data: TensorData::F32(vec![value]),
    }
}

/// The normalization a train section's `normalize` names: `none`, `standardize`,
/// `minmax` or `scale:K`.
pub(super) fn parse_normalization(text: &str) -> Result<Normalization, TrainError> {
    match text {
        "" | "none" => Ok(Normalization::None),
        "standardize" => Ok(Normalization::Standardize),
        "minmax" => Ok(Normalization::MinMax),
        _ => text
            .strip_prefix("scale:")
            .and_then(|k| k.parse::<f32>().ok())
            .map(Normalization::Scale)
            .ok_or_else(|| {
                TrainError::Config(format!(
                    "normalize `{text}` is not one of none, standardize, minmax, scale:K"
                ))
            }),
    }
}

/// The train, validation and test splits, raw, and the normalization fitted on the train
/// split (which the model applies itself).
pub(crate) struct Splits {
    /// The data source spec the splits came from.
    pub spec: String,
    pub train: Dataset,
    pub val: Dataset,
    pub test: Dataset,
    pub normalizer: Normalizer,
    pub class_names: Vec<String>,
}

/// Loads `spec`, views each sample with the features input's shape, splits it by the
/// config's fractions and seed, and fits the normalization on the train split only.
pub(crate) fn load_splits(
    spec: &str,
    config: &TrainConfig,
    ports: &Ports,
) -> Result<Splits, TrainError> {
    if spec.trim().is_empty() {
        return Err(TrainError::Config(
            "the train section names no data: pass one with --data (e.g. --data digits)".into(),
        ));
    }
    let data_spec = DataSpec::parse(spec)?;
    let mut data = match data_spec.source.array_file() {
        Some(file) => {
            let data = load_named(file.kind, file.path, file.names, &ports.array_requests())?;
            if !data_spec.allow_nonfinite {
                refuse_non_finite(&data, &data_spec.source)?;
            }
            data
        }
        None => data_spec.load()?,
    };
    data.reshape_features(&ports.sample_shape).map_err(|e| {
        TrainError::Config(format!(
            "data `{spec}` does not fit the features input `{}`: {e}",
            ports.features
        ))
    })?;
    ports.check_labels(&data, spec)?;
    ports.check_head_labels(&data, spec)?;
    ports.check_token_ids(&data, spec)?;
    let [a, b, c] = config.split;
    let (train, val, test) = if config.sequential_split {
        data.split_sequential((a, b, c))?
    } else {
        data.split((a, b, c), config.seed)?
    };
    if train.is_empty() {
        return Err(TrainError::Config(format!(
            "the train split of `{spec}` is empty ({} samples, split {a} / {b} / {c})",
            data.len
        )));
    }
    let method = parse_normalization(&config.normalize)?;
    if ports.features_dtype == ScalarType::I32 && method != Normalization::None {
        return Err(TrainError::Config(format!(
            "the features input `{}` takes token ids (i32): they cannot be normalized (`normalize = {}`)",
            ports.features, config.normalize
        )));
    }
    // The splits stay raw: the compiled entries normalize their features themselves,
    // with these statistics once the driver installs them (see `normalization`).
    let normalizer = Normalizer::fit(method, &train)?;
    Ok(Splits {
        spec: spec.to_string(),
        train,
        val,
        test,
        normalizer,
        class_names: data.class_names,
    })
}

//! How to train a compiled model: the `train` section of its source, resolved by the
//! compiler and carried in the manifest, so a built executable trains without the source.
//!
//! Entries a trainable artifact has, by convention:
//! - `train_step`: inputs = the model's inputs, the label input (if the section has
//!   one), `lr` (f32[], the learning rate of this step) and `step` (f32[], 1 for the
//!   first step); outputs = `loss` (f32[]), and in the first entry each named term
//!   (`term.NAME`, f32[]). Running it updates the parameters and the
//!   optimizer state in place. A section with `step NAME { … }` blocks has one such
//!   entry per block instead, `train_NAME`, each updating its own parameters; every
//!   batch runs them in order ([`TrainConfig::steps`]).
//! - `eval`: inputs = the model's inputs, the label (if any) and `step` (if the model
//!   draws random numbers); outputs = `loss`, the prediction output named by
//!   [`TrainConfig::prediction`], with several steps each step's loss
//!   ([`TrainStep::eval_loss`]), and each named term ([`TrainConfig::terms`]).
//! - `infer`: the model's inputs and outputs (and `step`, f32[], when the model draws
//!   random numbers at inference: the draw's counter).

use crate::metric::Metric;
use serde::{Deserialize, Serialize};

/// The datasets every runtime carries (`data = digits`); the training driver embeds
/// them, the compiler checks a section's `data` against this list.
pub const BUILTIN_DATASETS: &[&str] = &[
    "digits",
    "iris",
    "wine",
    "breast_cancer",
    "diabetes",
    "sunspots",
];

/// The generated datasets (`data = reverse(length = 10)`): sequence tasks the training
/// driver makes from a seed, named like built-ins or as kinds (`reverse:length=10`).
pub const GENERATED_DATASETS: &[&str] = &["reverse", "adding"];

/// The kinds of data files a source spec names before its path (`csv:f.csv`,
/// `data = csv("f.csv")`); the compiler checks a section's `data` against them.
pub const DATA_SOURCE_KINDS: &[&str] = &["csv", "npy", "npz", "idx", "safetensors"];

/// Whether the source spec `spec` names a file of named arrays, which fills every model
/// input and label by name: `npz:PATH`, `safetensors:PATH` or `npy:DIR` (one path, a
/// directory of `NAME.npy` files), each optionally followed by `NAME=ARRAY` pairs where an
/// input's or label's array has another name. `npy:X,Y` (features and labels) does not.
pub fn names_arrays(spec: &str) -> bool {
    let Some((kind, rest)) = spec.split_once(':') else {
        return false;
    };
    match kind.trim() {
        "npz" | "safetensors" => true,
        // `npy:X.npy,Y.npy` is a pair; `npy:DIR` or `npy:DIR,a=left` a directory.
        "npy" => rest
            .split(',')
            .skip(1)
            .map(str::trim)
            .filter(|o| *o != "allow_nonfinite")
            .all(|o| o.contains('=')),
        _ => false,
    }
}

/// The `NAME=ARRAY` pairs of a named-array source spec (see [`names_arrays`]), in order.
pub fn array_names(spec: &str) -> Vec<(String, String)> {
    let Some((_, rest)) = spec.split_once(':') else {
        return Vec::new();
    };
    rest.split(',')
        .skip(1)
        .filter_map(|o| o.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// What the model learns to predict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Task {
    /// Integer labels `0..classes`; the prediction holds one score per class (or one
    /// logit for binary classification with `classes == 2`).
    Classification { classes: u64 },
    /// Real-valued targets, `width` per sample.
    Regression { width: u64 },
    /// No labels: the loss alone says how well the model does. When the prediction has
    /// the features' shape (`reconstruction`: an autoencoder's output), the metrics `mae`
    /// and `mse` compare the two; otherwise there are no metrics.
    Unlabelled { reconstruction: bool },
}

impl Task {
    /// The metrics a model of this task can report, in [`Metric::ALL`]'s order.
    pub fn metrics(&self) -> Vec<Metric> {
        Metric::ALL
            .into_iter()
            .filter(|m| m.applies_to(self))
            .collect()
    }

    /// The task in words, for messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Task::Classification { .. } => "classification",
            Task::Regression { .. } => "regression",
            Task::Unlabelled {
                reconstruction: true,
            } => "reconstruction",
            Task::Unlabelled {
                reconstruction: false,
            } => "label-free",
        }
    }
}

/// A picture of samples the driver writes after training (the `images = grid(…)`
/// setting): for each of the first `samples` samples of the test split, the named
/// tensors side by side as grayscale images, the samples in rows of `columns` cells.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageGrid {
    /// The features input and/or outputs of the `infer` entry, drawn left to right in
    /// each cell.
    pub tensors: Vec<String>,
    pub samples: u64,
    /// Cells per row of the grid.
    pub columns: u64,
    /// Every tensor's sample is drawn as a `height x width` image.
    pub height: u64,
    pub width: u64,
    /// The values drawn black and white; values outside are clamped.
    pub range: [f64; 2],
    /// Each value becomes a `scale x scale` block of pixels.
    pub scale: u64,
    /// The file name in the run directory.
    pub file: String,
}

/// A learning-rate schedule over steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Schedule {
    Constant,
    /// Multiply by `gamma` every `every` epochs.
    Step {
        every: u64,
        gamma: f64,
    },
    /// Cosine decay to zero over the whole run, after `warmup` steps of linear warm-up.
    Cosine {
        warmup: u64,
    },
}

/// Stop when the monitored value has not improved for `patience` epochs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EarlyStop {
    /// `val.loss` or `val.<metric>`.
    pub monitor: String,
    pub patience: u64,
    /// Whether larger is better (metrics) or smaller (losses).
    pub maximize: bool,
    pub min_delta: f64,
    /// Put the best epoch's weights back at the end.
    pub restore_best: bool,
}

/// One update of a training step: the entry that makes it and its learning rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainStep {
    /// The step's name in the train section (`train` for a section without steps).
    pub name: String,
    /// The entry that runs it: `train_step`, or `train_<name>`.
    pub entry: String,
    /// The optimizer's name, for messages (its update is in the entry's graph).
    pub optimizer: String,
    pub lr: f64,
    /// The `eval` output holding this step's loss (`loss.<name>`), when the section has
    /// several steps (`loss` is then their sum).
    pub eval_loss: Option<String>,
}

/// The `train` section, resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// A data source spec: `digits`, `csv:PATH[,label=N]`, `npy:X,Y`, `idx:IMAGES,LABELS`, …
    pub data: String,
    /// The model input fed with the features.
    pub features_input: String,
    /// The label input of `train_step` and `eval`; None for label-free training.
    pub label_input: Option<String>,
    /// The other model inputs the data fills, in the model's order (a named-array source,
    /// [`names_arrays`], fills every input; they are not normalized).
    #[serde(default)]
    pub extra_inputs: Vec<String>,
    /// The section's other labels, in the order declared (`label_input` is the first).
    #[serde(default)]
    pub extra_labels: Vec<String>,
    /// Further outputs the metrics score, each against a label of `extra_labels`
    /// (`metrics = [accuracy(logits, y), mae(size, s)]`); `prediction` and `task` are the
    /// first label's.
    #[serde(default)]
    pub heads: Vec<ScoredHead>,
    /// The model output whose values the metrics are computed from.
    pub prediction: String,
    pub task: Task,
    pub batch: u64,
    pub epochs: u64,
    /// Train / validation / test fractions.
    pub split: [f64; 3],
    /// Split in the data's order (first samples train, last test) instead of shuffled:
    /// for series, where a shuffled split would let the model see the future.
    #[serde(default)]
    pub sequential_split: bool,
    pub seed: u64,
    /// How features are normalized: `none`, `standardize`, `minmax`, `scale:K`.
    pub normalize: String,
    /// The updates each batch makes, in order: one for a plain section, one per
    /// `step NAME { … }` block otherwise.
    pub steps: Vec<TrainStep>,
    /// The schedule scales every step's learning rate alike.
    pub schedule: Schedule,
    /// The metrics to report, in the section's order.
    pub metrics: Vec<Metric>,
    pub early_stop: Option<EarlyStop>,
    /// Write a checkpoint every this many epochs (0: only the best and the last).
    pub checkpoint_every: u64,
    /// A grid of sample images to write after training.
    pub images: Option<ImageGrid>,
    /// The section's named loss terms (`term recon = …`), in order: `eval` and the first
    /// training entry output each as [`term_output`]`(name)`, and the driver logs them.
    #[serde(default)]
    pub terms: Vec<String>,
}

/// An output the metrics score against a label other than the first: `eval` outputs it,
/// and the driver reports its metrics as `LABEL.METRIC` (`val_s.mae` in the log).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoredHead {
    pub output: String,
    pub label: String,
    pub task: Task,
    pub metrics: Vec<Metric>,
}

/// The output holding term `name`'s value: `term.NAME`.
pub fn term_output(name: &str) -> String {
    format!("term.{name}")
}

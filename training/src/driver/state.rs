//! What a run keeps on disk, and what it needs back to resume exactly.
//!
//! A run directory holds:
//!
//! | file | what |
//! |---|---|
//! | `last.ckpt` | a [`Checkpoint`]: every persistent buffer (parameters and optimizer state), the step and epoch, and the driver's counters (best epoch, patience, normalizer, a part-done epoch) as JSON in `extra` |
//! | `epoch-N.ckpt` | with `checkpoint_every = K`: the checkpoint of every epoch N that K divides, kept (copy one to `last.ckpt` to resume from it) |
//! | `best.safetensors` | the parameters (no `optim.*` state) and the features' normalization of the best epoch so far (a section with several steps and no `early_stop`: the latest epoch) |
//! | `metrics.jsonl` | one [`EpochRecord`](crate::EpochRecord) per epoch |
//! | `curves.svg` | the training curves drawn from it |
//! | `images.png` | with `images = grid(…)` (which may name another file): samples drawn after training, see [`images`](super::images) |
//! | `.lock` | the process id of the training that holds the directory's lock, see [`run_directory`](super::run_directory) |
//!
//! Every file is written whole or not at all (a temporary file renamed over it), and
//! only over a regular file ([`atomic_file`](crate::atomic_file)).

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use super::TrainError;
use super::fingerprint::Fingerprint;
use crate::{Checkpoint, CheckpointError, Normalizer};
use strata_artifact::WeightsError;
use strata_artifact::tensor::HostTensor;
use strata_artifact::weights::{encode_weights, to_host_tensor};
use strata_runtime::session::Session;

/// The prefix of optimizer-state keys (`optim.m.dense1.weight`): persistent buffers that
/// are not parameters of the model.
pub use strata_artifact::weight_keys::OPTIMIZER_PREFIX;

/// The checkpoint's file name in a run directory.
pub const LAST_FILE: &str = "last.ckpt";
/// The best parameters' file name in a run directory.
pub const BEST_FILE: &str = "best.safetensors";

/// The files of a run directory.
#[derive(Clone, Debug)]
pub struct RunPaths {
    pub dir: PathBuf,
    pub last: PathBuf,
    pub best: PathBuf,
    pub metrics: PathBuf,
    pub curves: PathBuf,
    pub lock: PathBuf,
}

impl RunPaths {
    pub fn new(dir: &Path) -> RunPaths {
        RunPaths {
            dir: dir.to_path_buf(),
            last: dir.join(LAST_FILE),
            best: dir.join(BEST_FILE),
            metrics: dir.join("metrics.jsonl"),
            curves: dir.join("curves.svg"),
            lock: dir.join(".lock"),
        }
    }

    /// Where `checkpoint_every` keeps the checkpoint of `epoch`.
    pub fn snapshot(&self, epoch: u64) -> PathBuf {
        self.dir.join(format!("epoch-{epoch}.ckpt"))
    }
}

/// An epoch stopped part-way (by Ctrl-C): how far it got and what it had summed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct PartialEpoch {
    /// Batches of the epoch already trained on.
    pub batches: u64,
    pub loss_sum: f64,
    pub samples: u64,
    /// Each step's part of `loss_sum` (a section with several steps).
    #[serde(default)]
    pub step_loss_sums: Vec<f64>,
    /// Each named term's batch-size-weighted sum, in the section's order.
    #[serde(default)]
    pub term_sums: Vec<f64>,
}

/// The driver's state beyond the weights and counters, kept in a checkpoint's `extra`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct RunState {
    /// The seed of the split and of every epoch's shuffle.
    pub seed: u64,
    pub batch: u64,
    /// Samples in the train split: with `batch`, fixes the steps of an epoch.
    pub train_samples: u64,
    /// The normalization fitted on the train split (the same data gives the same one).
    pub normalizer: Normalizer,
    /// What best and early stopping watch (`val.loss`, `val.accuracy`, `train.loss`).
    pub monitor: String,
    /// What the run was trained from.
    pub fingerprint: Fingerprint,
    /// The epoch whose weights are in `best.safetensors` (0: none yet).
    pub best_epoch: u64,
    /// Epochs since the monitored value last improved.
    pub bad_epochs: u64,
    /// Early stopping ended the run.
    pub stopped_early: bool,
    /// The epoch after `epoch`, if it was interrupted part-way.
    pub partial: Option<PartialEpoch>,
}

impl RunState {
    pub fn to_json(&self) -> Result<serde_json::Value, TrainError> {
        serde_json::to_value(self)
            .map_err(|e| TrainError::Resume(format!("cannot encode the run state: {e}")))
    }

    pub fn from_json(path: &Path, value: &serde_json::Value) -> Result<RunState, TrainError> {
        serde_json::from_value(value.clone()).map_err(|e| {
            TrainError::Resume(format!(
                "{}: not a checkpoint of a training run (its run state: {e})",
                path.display()
            ))
        })
    }
}

/// Writes `bytes` to `path` atomically ([`crate::atomic_file`]).
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    crate::atomic_file::write_atomic(path, bytes).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The session's parameters (every persistent buffer but the optimizer state) as a
/// safetensors file.
pub fn params_safetensors(session: &Session) -> Result<Vec<u8>, TrainError> {
    session.sync_weights()?;
    Ok(encode_weights(
        session
            .weights()
            .filter(|(k, _)| !k.starts_with(OPTIMIZER_PREFIX)),
    )?)
}

/// `base` (a safetensors file of every persistent buffer) with the tensors of `params`
/// put in: a parameters-only file such as `best.safetensors` becomes one that
/// [`Session::load_weights`] takes, the optimizer state coming from `base`. `params`
/// must hold every parameter of `base` (keys outside `optim.*`) and no unknown key; it
/// may hold optimizer state too. Dtypes and shapes are checked when the result is loaded.
pub fn merge_params(base: &[u8], params: &[u8]) -> Result<Vec<u8>, WeightsError> {
    let invalid = WeightsError::NotSafetensors;
    let base = SafeTensors::deserialize(base).map_err(invalid)?;
    let params = SafeTensors::deserialize(params).map_err(invalid)?;
    let base_names = base.names();
    let unknown: Vec<String> = params
        .names()
        .into_iter()
        .filter(|k| !base_names.contains(k))
        .map(|k| k.to_string())
        .collect();
    if !unknown.is_empty() {
        let expected = base_names
            .iter()
            .filter(|k| !k.starts_with(OPTIMIZER_PREFIX))
            .map(|k| k.to_string());
        return Err(WeightsError::Unknown {
            keys: sorted(unknown),
            expected: sorted(expected.collect()),
        });
    }
    let missing: Vec<String> = base_names
        .iter()
        .filter(|k| !k.starts_with(OPTIMIZER_PREFIX) && params.tensor(k).is_err())
        .map(|k| k.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(WeightsError::Missing {
            keys: sorted(missing),
        });
    }
    let mut merged: Vec<(String, HostTensor)> = Vec::with_capacity(base_names.len());
    for key in base_names {
        let view = params
            .tensor(key)
            .or_else(|_| base.tensor(key))
            .map_err(invalid)?;
        merged.push((key.to_string(), to_host_tensor(&view)));
    }
    merged.sort_by(|a, b| a.0.cmp(&b.0));
    encode_weights(merged.iter().map(|(k, t)| (k.as_str(), t)))
}

fn sorted(mut keys: Vec<String>) -> Vec<String> {
    keys.sort();
    keys
}

/// Loads a parameters file (`best.safetensors`, or a full weights file) into the
/// session, keeping its optimizer state (see [`merge_params`]).
pub fn load_params(session: &mut Session, params: &[u8]) -> Result<(), TrainError> {
    let merged = merge_params(&session.save_weights()?, params)?;
    Ok(session.load_weights(&merged)?)
}

/// A weights file of any kind the driver writes, completed into a file of every
/// persistent buffer (what [`Session::load_weights`] takes): a training checkpoint
/// (`last.ckpt`) gives all its tensors; a parameters file (`best.safetensors`) or a full
/// weights file is merged into `base`, every persistent buffer's current value (see
/// [`merge_params`]). `origin` names the file in errors.
pub fn complete_weights(base: &[u8], file: &[u8], origin: &Path) -> Result<Vec<u8>, TrainError> {
    match Checkpoint::from_bytes(file, origin) {
        Ok(checkpoint) => Ok(checkpoint.weights_safetensors()?),
        // Not a checkpoint, or not even safetensors (which merge_params reports as such).
        Err(CheckpointError::NotACheckpoint { .. }) => Ok(merge_params(base, file)?),
        Err(CheckpointError::Corrupt { .. }) if SafeTensors::deserialize(file).is_err() => {
            Ok(merge_params(base, file)?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Loads a weights file of any kind the driver writes (see [`complete_weights`]) into the
/// session.
pub fn load_weights_file(
    session: &mut Session,
    file: &[u8],
    origin: &Path,
) -> Result<(), TrainError> {
    let weights = complete_weights(&session.save_weights()?, file, origin)?;
    Ok(session.load_weights(&weights)?)
}

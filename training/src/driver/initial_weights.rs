//! Starting a run from given weights (`train --weights FILE`), with a report of what
//! the file gave.
//!
//! The file may be a parameters file (`best.safetensors`), a full weights file, or a
//! checkpoint (`last.ckpt`). Every tensor of the model's own state (parameters, and the
//! features' normalization: see [`WeightKind`]) found in it is loaded; one it lacks keeps
//! its initial value and is reported missing; a tensor of the file that the model does
//! not have, or optimizer state (a new run starts its optimizer afresh), is reported
//! unused. A tensor with the model's name but another dtype or shape is an error: it
//! belongs to another model, and loading around it would train something half-given.

use std::fmt;
use std::path::Path;

use super::TrainError;
use crate::{Checkpoint, CheckpointError};
use strata_artifact::WeightKind;
use strata_artifact::tensor::HostTensor;
use strata_artifact::weights::{encode_weights, read_weights};
use strata_runtime::session::Session;

/// What `--weights` gave a run: tensor keys, sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WeightsReport {
    /// The file the weights came from.
    pub file: String,
    /// Loaded from the file.
    pub loaded: Vec<String>,
    /// The model's, absent from the file: they keep their initial values.
    pub missing: Vec<String>,
    /// The file's, not loaded: names the model does not have, and optimizer state.
    pub unused: Vec<String>,
}

impl WeightsReport {
    /// Whether the file gave the features' normalization (then it is kept, not refitted).
    pub fn has_normalization(&self) -> bool {
        self.loaded
            .iter()
            .any(|k| WeightKind::of(k) == WeightKind::Normalization)
    }
}

/// Up to this many keys are named per line; the rest are counted.
const NAMED_KEYS: usize = 8;

fn key_list(keys: &[String]) -> String {
    let mut text = keys
        .iter()
        .take(NAMED_KEYS)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > NAMED_KEYS {
        text.push_str(&format!(" and {} more", keys.len() - NAMED_KEYS));
    }
    text
}

impl fmt::Display for WeightsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "weights from {}: {} loaded, {} missing (kept initial), {} unused",
            self.file,
            self.loaded.len(),
            self.missing.len(),
            self.unused.len()
        )?;
        for (what, keys) in [
            ("loaded", &self.loaded),
            ("missing", &self.missing),
            ("unused", &self.unused),
        ] {
            if !keys.is_empty() {
                write!(f, "\n  {what:<8} {}", key_list(keys))?;
            }
        }
        Ok(())
    }
}

/// The tensors of a weights file of any kind the driver writes.
fn tensors_of(bytes: &[u8], origin: &Path) -> Result<Vec<(String, HostTensor)>, TrainError> {
    let not_weights = |e| TrainError::Config(format!("--weights {}: {e}", origin.display()));
    match Checkpoint::from_bytes(bytes, origin) {
        Ok(checkpoint) => Ok(checkpoint.weights),
        Err(CheckpointError::NotACheckpoint { .. }) => read_weights(bytes).map_err(not_weights),
        // Not even safetensors: say that, rather than what a checkpoint would need.
        Err(e @ CheckpointError::Corrupt { .. }) => match read_weights(bytes) {
            Err(w) => Err(not_weights(w)),
            Ok(_) => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// Loads the model's state found in `bytes` (read from `origin`) into the session,
/// keeping every other buffer as it is, and reports what was loaded.
pub(super) fn load_initial_weights(
    session: &mut Session,
    bytes: &[u8],
    origin: &Path,
) -> Result<WeightsReport, TrainError> {
    let given = tensors_of(bytes, origin)?;
    session.sync_weights()?;
    let mut report = WeightsReport {
        file: origin.display().to_string(),
        ..WeightsReport::default()
    };
    let mut tensors: Vec<(String, HostTensor)> = Vec::new();
    for (key, current) in session.weights() {
        let found = given.iter().find(|(k, _)| k == key).map(|(_, t)| t);
        let value = match found {
            Some(t) if WeightKind::of(key).is_model_state() => {
                if t.dtype() != current.dtype() || t.shape != current.shape {
                    return Err(TrainError::Config(format!(
                        "--weights {}: tensor `{key}` is {} {:?}, the model's is {} {:?}",
                        origin.display(),
                        strata_artifact::tensor::dtype_name(t.dtype()),
                        t.shape,
                        strata_artifact::tensor::dtype_name(current.dtype()),
                        current.shape
                    )));
                }
                report.loaded.push(key.to_string());
                t.clone()
            }
            _ => {
                if WeightKind::of(key).is_model_state() {
                    report.missing.push(key.to_string());
                }
                current.clone()
            }
        };
        tensors.push((key.to_string(), value));
    }
    report.unused = given
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|k| !report.loaded.contains(k))
        .collect();
    for keys in [&mut report.loaded, &mut report.missing, &mut report.unused] {
        keys.sort();
    }
    let bytes = encode_weights(tensors.iter().map(|(k, t)| (k.as_str(), t)))?;
    session.load_weights(&bytes)?;
    Ok(report)
}

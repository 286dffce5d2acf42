//! The features' fitted normalization, kept in the model's own buffers.
//!
//! The compiled entries normalize their raw features input themselves, reading the
//! statistics from two persistent buffers ([`NORMALIZE_OFFSET`], [`NORMALIZE_SCALE`];
//! see `strata_compiler::train::normalize`). The driver therefore feeds raw data to every
//! entry; a fresh run fits the section's normalization on the train split and writes it
//! into those buffers ([`install`]), from where it goes wherever the weights go. The
//! driver reads them back ([`model_view`]) where it needs the features as the model sees
//! them: the target of a reconstruction, the inputs drawn in an image grid.

use super::TrainError;
use crate::{Normalization, Normalizer};
use strata_artifact::tensor::HostTensor;
use strata_artifact::weight_keys::{NORMALIZE_OFFSET, NORMALIZE_SCALE};
use strata_artifact::weights::encode_weights;
use strata_runtime::session::Session;

/// Whether the model holds normalization buffers.
pub(super) fn has_buffers(session: &Session) -> bool {
    session.weights().any(|(k, _)| k == NORMALIZE_OFFSET)
}

/// Writes `normalizer`'s statistics into the session's normalization buffers. A model
/// without them takes only the identity (an artifact compiled without `normalize`).
pub(super) fn install(session: &mut Session, normalizer: &Normalizer) -> Result<(), TrainError> {
    session.sync_weights()?;
    if !has_buffers(session) {
        if normalizer.method == Normalization::None {
            return Ok(());
        }
        return Err(TrainError::Model(format!(
            "the model has no `{NORMALIZE_OFFSET}` buffer for its features' normalization \
             ({:?}): it was compiled by an older Strata; rebuild it",
            normalizer.method
        )));
    }
    let to_f32 = |values: &[f64]| values.iter().map(|&v| v as f32).collect::<Vec<f32>>();
    let fitted = [
        (NORMALIZE_OFFSET, to_f32(&normalizer.offset)),
        (NORMALIZE_SCALE, to_f32(&normalizer.scale)),
    ];
    let mut tensors: Vec<(String, HostTensor)> = Vec::new();
    for (key, tensor) in session.weights() {
        let value = match fitted.iter().find(|(k, _)| *k == key) {
            None => tensor.clone(),
            Some((_, values)) => {
                if values.len() as u64 != tensor.shape.iter().product::<u64>() {
                    return Err(TrainError::Config(format!(
                        "the normalization was fitted on samples of {} values; `{key}` holds {:?}",
                        values.len(),
                        tensor.shape
                    )));
                }
                HostTensor::f32(tensor.shape.clone(), values.clone())
                    .map_err(|e| TrainError::Config(format!("{key}: {e}")))?
            }
        };
        tensors.push((key.to_string(), value));
    }
    let bytes = encode_weights(tensors.iter().map(|(k, t)| (k.as_str(), t)))?;
    session.load_weights(&bytes)?;
    Ok(())
}

/// A normalization's statistics: `(offset, scale)`, one value of each per feature.
type Statistics = (Vec<f32>, Vec<f32>);

/// The statistics in the session's buffers, or None if the model normalizes nothing.
pub(super) fn stored(session: &Session) -> Result<Option<Statistics>, TrainError> {
    session.sync_weights()?;
    let get = |key: &str| {
        session
            .weights()
            .find(|(k, _)| *k == key)
            .and_then(|(_, t)| t.as_f32().map(<[f32]>::to_vec))
    };
    Ok(match (get(NORMALIZE_OFFSET), get(NORMALIZE_SCALE)) {
        (Some(offset), Some(scale)) => Some((offset, scale)),
        _ => None,
    })
}

/// `data`'s features as the model sees them once normalized by the session's buffers,
/// computed as the compiled entries do (in f32).
pub(super) fn model_view(session: &Session, features: &[f32]) -> Result<Vec<f32>, TrainError> {
    let Some((offset, scale)) = stored(session)? else {
        return Ok(features.to_vec());
    };
    let size = offset.len().max(1);
    Ok(features
        .iter()
        .enumerate()
        .map(|(i, &x)| (x - offset[i % size]) / scale[i % size])
        .collect())
}

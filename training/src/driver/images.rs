//! The image grid a train section's `images = grid(…)` asks for, written after
//! training: the first samples of the test split (the validation split, then the train
//! split, if it is empty), fed raw to `infer` and drawn normalized as the model sees them; the
//! named features input and outputs drawn by [`render_grid`] and saved atomically (like
//! the checkpoints) in the run directory.

use std::path::{Path, PathBuf};

use super::TrainError;
use super::data::{Splits, scalar};
use super::normalization;
use super::state::write_atomic;
use crate::image_grid::render_grid;
use strata_artifact::tensor::HostTensor;
use strata_artifact::train_config::{ImageGrid, TrainConfig};
use strata_runtime::session::Session;

/// The entry the grid's outputs come from.
const INFER_ENTRY: &str = "infer";

/// Draws `grid` with the session's weights and writes it to `dir/<grid.file>`; returns
/// the path. `step` feeds an `infer` entry that draws random numbers (a generator's
/// noise): the same run gives the same picture.
pub(super) fn write_image_grid(
    session: &mut Session,
    config: &TrainConfig,
    grid: &ImageGrid,
    data: &Splits,
    step: u64,
    dir: &Path,
) -> Result<PathBuf, TrainError> {
    let split = [&data.test, &data.val, &data.train]
        .into_iter()
        .find(|s| !s.is_empty())
        .ok_or_else(|| TrainError::Config("the image grid has no samples to draw".into()))?;
    let samples = (grid.samples as usize).min(split.len);
    let indices: Vec<usize> = (0..samples).collect();
    let chosen = split.subset(&indices)?;
    let mut shape = vec![samples as u64];
    shape.extend_from_slice(&chosen.feature_shape);
    let features = HostTensor::f32(shape, chosen.features.clone())
        .map_err(|e| TrainError::Config(format!("image grid: {e}")))?;
    let entry = session
        .manifest()
        .entries
        .iter()
        .find(|e| e.name == INFER_ENTRY)
        .ok_or_else(|| TrainError::Model(format!("the artifact has no `{INFER_ENTRY}` entry")))?;
    let mut inputs = Vec::new();
    for port in &entry.inputs {
        if port.name == config.features_input {
            inputs.push((port.name.clone(), features.clone()));
        } else if port.name == "step" {
            inputs.push((port.name.clone(), scalar(step as f32)));
        } else if let Some(array) = chosen.arrays.iter().find(|a| a.name == port.name) {
            // Another input filled from a file of named arrays.
            let mut shape = vec![samples as u64];
            shape.extend_from_slice(&array.sample_shape);
            let tensor = HostTensor::new(shape, array.data.clone())
                .map_err(|e| TrainError::Config(format!("image grid: {e}")))?;
            inputs.push((port.name.clone(), tensor));
        } else {
            return Err(TrainError::Model(format!(
                "the image grid cannot feed `{INFER_ENTRY}`'s input `{}`",
                port.name
            )));
        }
    }
    let inputs: Vec<(&str, HostTensor)> = inputs
        .iter()
        .map(|(n, t)| (n.as_str(), t.clone()))
        .collect();
    let outputs = session
        .run(INFER_ENTRY, &inputs)
        .map_err(|source| TrainError::Run {
            entry: INFER_ENTRY.to_string(),
            source,
        })?;
    // The inputs are drawn as the model sees them (normalized).
    let seen = HostTensor::f32(
        features.shape.clone(),
        normalization::model_view(session, &chosen.features)?,
    )
    .map_err(|e| TrainError::Config(format!("image grid: {e}")))?;
    let mut values = Vec::with_capacity(grid.tensors.len());
    for name in &grid.tensors {
        let tensor = if *name == config.features_input {
            Some(&seen)
        } else {
            outputs.iter().find(|(n, _)| n == name).map(|(_, t)| t)
        };
        let data = tensor.and_then(HostTensor::as_f32).ok_or_else(|| {
            TrainError::Model(format!(
                "the image grid draws `{name}`, which `{INFER_ENTRY}` does not give as f32"
            ))
        })?;
        values.push(data.to_vec());
    }
    let png = render_grid(grid, &values, samples)?.to_png()?;
    let path = dir.join(&grid.file);
    write_atomic(&path, &png)?;
    Ok(path)
}

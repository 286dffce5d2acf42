//! What to explain when no input is given: the first samples of the held-out split of
//! the train section's data, split exactly as training split it, raw (the model
//! normalizes them itself); and the train split's mean sample, the `mean` baseline of
//! integrated gradients.

use crate::builtin::builtin_feature_names;
use crate::driver::EvalSplit;
use crate::driver::TrainError;
use crate::driver::data::{Ports, load_splits};
use strata_artifact::manifest::Manifest;
use strata_artifact::tensor::{HostTensor, TensorData};
use strata_artifact::train_config::TrainConfig;

/// Samples of a split and what pictures of them can name.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitSamples {
    /// The features input's values, `[n, ...]`.
    pub features: HostTensor,
    /// The labels of the samples (class indices), where the data has classes.
    pub labels: Option<Vec<usize>>,
    /// The mean of the train split's samples, one sample's worth of values.
    pub train_mean: Vec<f32>,
    /// Names of the classes, where the data gives them.
    pub class_names: Vec<String>,
    /// Names of the features of a built-in tabular dataset.
    pub feature_names: Vec<String>,
}

/// The first `count` samples of `split` of `data` (default: the section's data); `All`
/// is the train, validation and test splits one after the other.
pub fn split_samples(
    manifest: &Manifest,
    config: &TrainConfig,
    data: Option<&str>,
    split: EvalSplit,
    count: usize,
) -> Result<SplitSamples, TrainError> {
    let ports = Ports::of(manifest, config, false)?;
    let spec = data.unwrap_or(&config.data);
    let splits = load_splits(spec, config, &ports)?;
    let all;
    let chosen = match split {
        EvalSplit::Test => &splits.test,
        EvalSplit::Val => &splits.val,
        EvalSplit::All => {
            let mut whole = splits.train.clone();
            for part in [&splits.val, &splits.test] {
                whole.features.extend_from_slice(&part.features);
                if let (
                    crate::Labels::Classes { values, .. },
                    crate::Labels::Classes { values: more, .. },
                ) = (&mut whole.labels, &part.labels)
                {
                    values.extend_from_slice(more);
                }
                whole.len += part.len;
            }
            all = whole;
            &all
        }
    };
    if chosen.is_empty() {
        return Err(TrainError::Config(format!(
            "the {split} split of `{spec}` is empty (split {:?})",
            config.split
        )));
    }
    let n = count.min(chosen.len);
    let width = chosen.sample_size();
    let mut shape = vec![n as u64];
    shape.extend_from_slice(&chosen.feature_shape);
    let features = HostTensor {
        shape,
        data: TensorData::F32(chosen.features[..n * width].to_vec()),
    };
    let labels = match &chosen.labels {
        crate::Labels::Classes { values, .. } if values.len() >= n => {
            Some(values[..n].iter().map(|c| *c as usize).collect())
        }
        _ => None,
    };
    let train = &splits.train;
    let mut mean = vec![0f64; width];
    for row in train.features.chunks(width) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += *v as f64;
        }
    }
    let train_mean = mean
        .iter()
        .map(|m| (m / train.len.max(1) as f64) as f32)
        .collect();
    // `breast_cancer` or `breast_cancer,option=…`: the built-in's name comes first.
    let name = spec.split([',', ':']).next().unwrap_or_default();
    let feature_names = builtin_feature_names(name)
        .filter(|names| names.len() == width)
        .map(|names| names.iter().map(|n| n.to_string()).collect())
        .unwrap_or_default();
    Ok(SplitSamples {
        features,
        labels,
        train_mean,
        class_names: splits.class_names,
        feature_names,
    })
}

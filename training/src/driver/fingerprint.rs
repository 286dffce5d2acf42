//! What a run was trained from, kept in its checkpoint so that `--resume` can refuse a
//! checkpoint of a changed model and say which part changed.
//!
//! A [`Fingerprint`] has one field per part a user changes separately: the compiled
//! model (every buffer, kernel and entry of the manifest: the layers and activations,
//! dropout, the loss and its penalty terms, the optimizer's update rule), the optimizers
//! and their settings, the data, and the normalization. The graph is summarized by a
//! checksum (it is large); the other parts are kept in words, so the refusal can show
//! both sides. The seed, the batch size and the monitored value are the run state's
//! (see [`RunState`](super::state::RunState)) and are compared there.

use serde::{Deserialize, Serialize};

use super::TrainError;
use strata_artifact::Manifest;
use strata_artifact::train_config::TrainConfig;

/// What a run was trained from (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Fingerprint {
    /// CRC-32 (hex) of the manifest's buffers, kernels, entries and memory sizes.
    pub graph: String,
    /// Each step's optimizer and learning rate, and the schedule.
    pub optimizer: String,
    /// The data source spec, which input it feeds and how it is split.
    pub data: String,
    /// The features' normalization (`none`, `standardize`, `minmax`, `scale:K`).
    pub normalization: String,
}

impl Fingerprint {
    /// The fingerprint of training `manifest`'s model as `config` says, on `data_spec`
    /// (the train section's data, or the one given instead).
    pub fn of(
        manifest: &Manifest,
        config: &TrainConfig,
        data_spec: &str,
    ) -> Result<Fingerprint, TrainError> {
        // The compiled model without its name, compiler version or train settings:
        // serialized field by field, in declaration order, so the same model always
        // gives the same text.
        let graph = serde_json::to_vec(&(
            &manifest.buffers,
            &manifest.kernels,
            &manifest.entries,
            &manifest.arena,
            &manifest.io,
        ))
        .map_err(|e| TrainError::Model(format!("cannot fingerprint the model: {e}")))?;
        let steps: Vec<String> = config
            .steps
            .iter()
            .map(|s| format!("{}: {} (lr {})", s.name, s.optimizer, s.lr))
            .collect();
        Ok(Fingerprint {
            graph: format!("{:08x}", crc32fast::hash(&graph)),
            optimizer: format!("{}, schedule {:?}", steps.join(", "), config.schedule),
            data: format!(
                "{data_spec} into `{}`{}{}, split {:?}{}",
                config.features_input,
                config
                    .label_input
                    .as_ref()
                    .map(|l| format!(" and `{l}`"))
                    .unwrap_or_default(),
                // Other inputs and labels (a file of named arrays), when there are any.
                config
                    .extra_inputs
                    .iter()
                    .chain(&config.extra_labels)
                    .map(|n| format!(", `{n}`"))
                    .collect::<String>(),
                config.split,
                if config.sequential_split {
                    " in order"
                } else {
                    ""
                }
            ),
            normalization: config.normalize.clone(),
        })
    }

    /// The parts that differ between a checkpoint's fingerprint (`self`) and this run's,
    /// in words (`the optimizer (was …, now …)`); empty if none does.
    pub fn changes(&self, now: &Fingerprint) -> Vec<String> {
        let mut changes = Vec::new();
        if self.graph != now.graph {
            changes.push(
                "the model graph (its layers, activations, dropout, loss, penalties or \
                 update rule)"
                    .to_string(),
            );
        }
        let parts = [
            ("optimizer", &self.optimizer, &now.optimizer),
            ("data", &self.data, &now.data),
            ("normalization", &self.normalization, &now.normalization),
        ];
        for (part, then, now) in parts {
            if then != now {
                changes.push(format!("the {part} (was {then}, now {now})"));
            }
        }
        changes
    }
}

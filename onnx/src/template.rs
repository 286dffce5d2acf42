//! An export kept apart from its weights, so that a built executable can export itself.
//!
//! `strata build` exports `infer` as `strata export` does and keeps the model without the
//! values of its parameters (each parameter's initializer marked as external data, its
//! bytes dropped): the executable carries that template (`Artifact::onnx`), and its
//! `export` command fills the parameters from the weights it runs, the built-in ones or
//! `--weights`, into the very tensors [`export_infer`](crate::export_infer) writes, so
//! the file is the one `strata export` writes for the same model and weights.
//!
//! The template also names the model file it was built from (a metadata entry, removed
//! when it is filled), which the exported model's `doc_string` cites.

use crate::export::{ExportError, parameter_tensor};
use crate::proto::pb;
use pb::tensor_proto::DataLocation;
use std::collections::HashSet;
use strata_artifact::weights::WeightsReader;

/// Where a template's parameter says its values are (ONNX's external data `location`).
const WEIGHTS_LOCATION: &str = "strata weights";

/// The metadata key of the model file a template was built from.
const MODEL_FILE_KEY: &str = "strata.model_file";

/// An exported model whose parameters' values are left out.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportTemplate {
    pub model: pb::ModelProto,
    /// The model file it was compiled from, as given on the command line.
    pub model_file: String,
}

fn entry(key: &str, value: &str) -> pb::StringStringEntryProto {
    pb::StringStringEntryProto {
        key: key.to_string(),
        value: value.to_string(),
    }
}

impl ExportTemplate {
    /// `model` (as [`export_infer`](crate::export_infer) wrote it with `weights`)
    /// without the values of the initializers `weights` holds.
    pub fn new(mut model: pb::ModelProto, weights: &[u8], model_file: &str) -> Self {
        // The names only: decoding every tensor (the optimizer's state too) to learn
        // them was a deep model's build's peak memory, and a list searched per
        // initializer its quadratic time.
        let names: HashSet<String> = strata_artifact::weights::weight_names(weights)
            .map(|names| names.into_iter().collect())
            .unwrap_or_default();
        if let Some(graph) = model.graph.as_mut() {
            for t in &mut graph.initializer {
                if names.contains(&t.name) {
                    t.raw_data.clear();
                    t.data_location = Some(DataLocation::External as i32);
                    t.external_data = vec![entry("location", WEIGHTS_LOCATION)];
                }
            }
        }
        ExportTemplate {
            model,
            model_file: model_file.to_string(),
        }
    }

    /// The template as the bytes of one ONNX model (the model file as a metadata entry).
    pub fn encode(&self) -> Vec<u8> {
        let mut model = self.model.clone();
        model
            .metadata_props
            .push(entry(MODEL_FILE_KEY, &self.model_file));
        crate::encode_model(&model)
    }

    /// The template [`encode`](Self::encode) wrote.
    pub fn decode(bytes: &[u8]) -> Result<Self, ExportError> {
        let mut model = crate::decode_model(bytes)
            .map_err(|e| ExportError::Internal(format!("the ONNX template: {e}")))?;
        let at = model
            .metadata_props
            .iter()
            .position(|e| e.key == MODEL_FILE_KEY)
            .ok_or_else(|| ExportError::Internal("the ONNX template names no model file".into()))?;
        let model_file = model.metadata_props.remove(at).value;
        Ok(ExportTemplate { model, model_file })
    }

    /// The exported model with every parameter's values from `weights` (a safetensors
    /// file of at least the parameters), checked against the shape and type exported.
    pub fn fill(&self, weights: &[u8], doc: &str) -> Result<pb::ModelProto, ExportError> {
        // Decoded one parameter at a time: a checkpoint also holds the optimizer's state.
        let tensors =
            WeightsReader::new(weights).map_err(|e| ExportError::Weights(e.to_string()))?;
        let mut model = self.model.clone();
        model.doc_string = doc.to_string();
        let graph = model
            .graph
            .as_mut()
            .ok_or_else(|| ExportError::Internal("the ONNX template has no graph".into()))?;
        for t in &mut graph.initializer {
            if t.data_location != Some(DataLocation::External as i32) {
                continue;
            }
            let name = t.name.clone();
            let tensor = tensors
                .get(&name)
                .map_err(|e| ExportError::Weights(e.to_string()))?
                .ok_or_else(|| ExportError::Weight {
                    name: name.clone(),
                    at: "the exported model".into(),
                    reason: "the weights have no tensor of this name".into(),
                })?;
            let dims: Vec<u64> = t.dims.iter().map(|&d| d as u64).collect();
            *t = parameter_tensor(&name, &dims, t.data_type, &tensor).map_err(|reason| {
                ExportError::Weight {
                    name,
                    at: "the exported model".into(),
                    reason,
                }
            })?;
        }
        Ok(model)
    }
}

//! A human-readable summary of a compiled model: its entries with their inputs and
//! outputs, its parameter count (apart from the optimizer's state), the normalization
//! its features input applies, and its arena size. `strata info` and the executable's
//! `info` command print it; it needs only the manifest and the weights, so it never
//! compiles code.

use std::fmt;

use strata_kernels::ir::{Dim, ScalarType};

use super::manifest::{EntryPort, Extent, Location, Manifest};
use crate::Artifact;
use crate::tensor::type_string;
use crate::weight_keys::{NORMALIZE_OFFSET, NORMALIZE_SCALE, WeightKind};
use crate::weights::read_weights;

/// One input or output of an entry.
#[derive(Clone, Debug, PartialEq)]
pub struct PortInfo {
    pub name: String,
    pub dtype: ScalarType,
    pub shape: Vec<Dim>,
}

/// One entry of the model.
#[derive(Clone, Debug, PartialEq)]
pub struct EntryInfo {
    pub name: String,
    pub inputs: Vec<PortInfo>,
    pub outputs: Vec<PortInfo>,
}

/// What a compiled model takes, gives and needs.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub model: String,
    pub compiler: String,
    pub entries: Vec<EntryInfo>,
    /// Elements of the model's parameters (running statistics included).
    pub parameters: u64,
    /// Elements of the optimizer's state (Adam's moments): persistent, but not the model.
    pub optimizer_state: u64,
    /// The normalization of the features input, when the model has one (and the weights
    /// were read: [`ModelInfo::from_artifact`]).
    pub normalization: Option<NormalizationInfo>,
    /// Scratch memory for one run, in bytes.
    pub arena: Extent,
    /// The largest entry's inputs and outputs, in bytes.
    pub io: Extent,
}

/// The statistics a model's entries normalize their raw features with:
/// `(x - offset) / scale`, one value per feature.
#[derive(Clone, Debug, PartialEq)]
pub struct NormalizationInfo {
    /// As the train section names it (`standardize`, `minmax`, `scale:16`).
    pub method: String,
    pub offset: Vec<f32>,
    pub scale: Vec<f32>,
}

/// How many values of the normalization `info` prints.
const NORMALIZATION_PREVIEW: usize = 4;

impl ModelInfo {
    /// The summary with the normalization's values, read from the artifact's weights.
    pub fn from_artifact(artifact: &Artifact) -> ModelInfo {
        let mut info = ModelInfo::from_manifest(&artifact.manifest);
        // A validated artifact's weights decode; an unreadable blob shows no values.
        let weights = read_weights(&artifact.weights).unwrap_or_default();
        let values = |key: &str| {
            weights
                .iter()
                .find(|(k, _)| k == key)
                .and_then(|(_, t)| t.as_f32().map(<[f32]>::to_vec))
        };
        if let (Some(offset), Some(scale)) = (values(NORMALIZE_OFFSET), values(NORMALIZE_SCALE)) {
            let method = artifact
                .manifest
                .train
                .as_ref()
                .map_or_else(|| "fitted".to_string(), |t| t.normalize.clone());
            info.normalization = Some(NormalizationInfo {
                method,
                offset,
                scale,
            });
        }
        info
    }

    /// The summary the manifest alone gives (no normalization values).
    pub fn from_manifest(manifest: &Manifest) -> ModelInfo {
        let port = |p: &EntryPort| match manifest.buffers.get(p.buffer) {
            Some(b) => PortInfo {
                name: p.name.clone(),
                dtype: b.dtype,
                shape: b.shape.clone(),
            },
            None => PortInfo {
                name: p.name.clone(),
                dtype: ScalarType::F32,
                shape: Vec::new(),
            },
        };
        let entries = manifest
            .entries
            .iter()
            .map(|e| EntryInfo {
                name: e.name.clone(),
                inputs: e.inputs.iter().map(port).collect(),
                outputs: e.outputs.iter().map(port).collect(),
            })
            .collect();
        let elements_of = |kind: WeightKind| {
            manifest
                .buffers
                .iter()
                .filter(|b| matches!(&b.location, Location::Persistent { key } if WeightKind::of(key) == kind))
                .filter_map(|b| b.elements(1))
                .fold(0u64, u64::saturating_add)
        };
        ModelInfo {
            model: manifest.model.clone(),
            compiler: manifest.compiler.clone(),
            entries,
            parameters: elements_of(WeightKind::Parameter),
            optimizer_state: elements_of(WeightKind::OptimizerState),
            normalization: None,
            arena: manifest.arena,
            io: manifest.io,
        }
    }
}

/// `1234567` as `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The first values of a list, `[0.1, 2, …]`.
fn preview(values: &[f32]) -> String {
    let shown: Vec<String> = values
        .iter()
        .take(NORMALIZATION_PREVIEW)
        .map(|v| format!("{v}"))
        .collect();
    let more = if values.len() > NORMALIZATION_PREVIEW {
        ", …"
    } else {
        ""
    };
    format!("[{}{more}]", shown.join(", "))
}

fn bytes_text(e: Extent) -> String {
    match (e.fixed, e.per_batch) {
        (f, 0) => format!("{} bytes", grouped(f)),
        (0, p) => format!("{} bytes × batch", grouped(p)),
        (f, p) => format!("{} + {} × batch bytes", grouped(f), grouped(p)),
    }
}

impl fmt::Display for ModelInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "model       {}", self.model)?;
        writeln!(f, "compiler    {}", self.compiler)?;
        writeln!(f, "parameters  {}", grouped(self.parameters))?;
        if self.optimizer_state > 0 {
            writeln!(
                f,
                "optimizer   {} state values (training only, not the model's)",
                grouped(self.optimizer_state)
            )?;
        }
        if let Some(n) = &self.normalization {
            writeln!(
                f,
                "normalize   {} of {} features: (x - offset) / scale, offset {}, scale {}",
                n.method,
                n.offset.len(),
                preview(&n.offset),
                preview(&n.scale)
            )?;
        }
        writeln!(f, "arena       {}", bytes_text(self.arena))?;
        write!(f, "I/O block   {}", bytes_text(self.io))?;
        for entry in &self.entries {
            let rows: Vec<(&str, &PortInfo)> = entry
                .inputs
                .iter()
                .map(|p| ("input", p))
                .chain(entry.outputs.iter().map(|p| ("output", p)))
                .collect();
            let width = rows.iter().map(|(_, p)| p.name.len()).max().unwrap_or(0);
            write!(f, "\n\nentry {}", entry.name)?;
            for (side, port) in rows {
                write!(
                    f,
                    "\n  {side:<6}  {:<width$}  {}",
                    port.name,
                    type_string(port.dtype, &port.shape)
                )?;
            }
        }
        Ok(())
    }
}

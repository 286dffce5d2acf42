//! Compiled entries -> artifact: the manifest (buffers with their planned locations,
//! kernels, entries, the training configuration), the generated CLIF, and the initial
//! weights (parameters; the optimizer's state starts at zero and is left out).
//!
//! The container format itself is the contract crate's ([`strata_artifact`]), which
//! every reader shares; this module fills it in. An executable is the `strata` binary
//! with the artifact appended ([`pack_executable`]).
//!
//! Entries share persistent buffers by key (a parameter is one buffer whichever entry
//! uses it) and share the scratch arena: entries never run at the same time, so the arena
//! is as large as the largest entry's plan.

use crate::ir::{Graph, Init, Op, init::init_param};
use crate::lower::{BufferRole, Lowered};
use crate::plan::MemoryPlan;
use std::collections::HashMap;
use strata_artifact::manifest::{
    BufferInfo, Entry, EntryPort, Extent, Launch, Location, Loop, Manifest, Window,
};
use strata_artifact::train_config::TrainConfig;
use strata_artifact::weights::{ComputedTensor, encode_computed_weights};
use strata_artifact::{Artifact, write_executable};
use strata_kernels::ir::Dim;

/// One entry to put in the artifact: its graph (for initializers), kernels and plan.
pub struct EntryBuild<'a> {
    pub name: &'a str,
    pub graph: &'a Graph,
    pub lowered: &'a Lowered,
    pub plan: &'a MemoryPlan,
}

/// Fills in an artifact. Parameters take their initial values from their initializers
/// with `seed`; kernels of all entries must have distinct names and `clif` must define
/// them all.
pub fn build_artifact(
    entries: &[EntryBuild],
    clif: String,
    seed: u64,
    train: Option<TrainConfig>,
) -> Result<Artifact, String> {
    let mut buffers: Vec<BufferInfo> = Vec::new();
    let mut persistent: HashMap<String, usize> = HashMap::new();
    // Initial values are computed as the weights file is written, one tensor at a time.
    let mut weights: Vec<(String, Vec<u64>, &Init)> = Vec::new();
    let mut kernels = Vec::new();
    let mut manifest_entries = Vec::new();
    let mut arena = Extent::default();
    let mut io = Extent::default();
    for entry in entries {
        let inits: HashMap<&str, &Init> = entry
            .graph
            .values()
            .into_iter()
            .filter_map(|v| match &entry.graph.node(v).op {
                Op::Param { path, init } => Some((path.as_str(), init)),
                _ => None,
            })
            .collect();
        let mut global = Vec::with_capacity(entry.lowered.buffers.len());
        for (b, buf) in entry.lowered.buffers.iter().enumerate() {
            let id = match &buf.role {
                BufferRole::Param(path) => {
                    if let Some(&id) = persistent.get(path) {
                        if buffers[id].shape != buf.shape {
                            return Err(format!(
                                "parameter `{path}` has different shapes in different entries"
                            ));
                        }
                        id
                    } else {
                        let shape: Vec<u64> = buf
                            .shape
                            .iter()
                            .map(|d| match d {
                                Dim::Fixed(n) => Ok(*n),
                                Dim::Batch => {
                                    Err(format!("parameter `{path}` has a batch dimension"))
                                }
                            })
                            .collect::<Result<_, _>>()?;
                        let init = inits
                            .get(path.as_str())
                            .ok_or_else(|| format!("parameter `{path}` has no initializer"))?;
                        weights.push((path.clone(), shape, *init));
                        buffers.push(BufferInfo {
                            name: buf.name.clone(),
                            dtype: buf.dtype,
                            shape: buf.shape.clone(),
                            location: Location::Persistent { key: path.clone() },
                        });
                        persistent.insert(path.clone(), buffers.len() - 1);
                        buffers.len() - 1
                    }
                }
                BufferRole::Window(w) => {
                    buffers.push(BufferInfo {
                        name: buf.name.clone(),
                        dtype: buf.dtype,
                        shape: buf.shape.clone(),
                        location: Location::Window(Window {
                            parent: global[w.parent],
                            ..*w
                        }),
                    });
                    buffers.len() - 1
                }
                _ => {
                    let location = match (entry.plan.offsets[b], entry.plan.io_offsets[b]) {
                        (_, Some(offset)) => Location::Io { offset },
                        (offset, None) => Location::Arena {
                            offset: offset.unwrap_or_default(),
                        },
                    };
                    buffers.push(BufferInfo {
                        name: buf.name.clone(),
                        dtype: buf.dtype,
                        shape: buf.shape.clone(),
                        location,
                    });
                    buffers.len() - 1
                }
            };
            global.push(id);
        }
        let base = kernels.len();
        kernels.extend(entry.lowered.kernels.iter().cloned());
        let ports = |list: &[(String, usize)]| -> Vec<EntryPort> {
            list.iter()
                .map(|(name, b)| EntryPort {
                    name: name.clone(),
                    buffer: global[*b],
                })
                .collect()
        };
        manifest_entries.push(Entry {
            name: entry.name.to_string(),
            inputs: ports(&entry.lowered.inputs),
            outputs: ports(&entry.lowered.outputs),
            launches: entry
                .lowered
                .launches
                .iter()
                .map(|l| Launch {
                    kernel: base + l.kernel,
                    bindings: l.bindings.iter().map(|b| global[*b]).collect(),
                })
                .collect(),
            loops: entry
                .lowered
                .loops
                .iter()
                .map(|lp| Loop {
                    start: lp.start,
                    end: lp.end,
                    count: lp.count,
                    reverse: lp.reverse,
                })
                .collect(),
        });
        arena.fixed = arena.fixed.max(entry.plan.arena.fixed);
        arena.per_batch = arena.per_batch.max(entry.plan.arena.per_batch);
        io.fixed = io.fixed.max(entry.plan.io.fixed);
        io.per_batch = io.per_batch.max(entry.plan.io.per_batch);
    }
    let model = entries
        .first()
        .map(|e| e.graph.name.clone())
        .unwrap_or_default();
    let manifest = Manifest {
        model,
        compiler: format!("strata {}", env!("CARGO_PKG_VERSION")),
        buffers,
        kernels,
        entries: manifest_entries,
        arena,
        io,
        train,
    };
    // Optimizer state starts at zero and is left out: the runtime makes it
    // (`weight_keys::starts_at_zero`). At 1,024 residual blocks Adam's moments were 68 MB
    // of zeros held and written by every build.
    weights.retain(|(path, _, init)| {
        !(matches!(init, Init::Zeros) && strata_artifact::weight_keys::starts_at_zero(path))
    });
    let weights = encode_computed_weights(weights.iter().map(|(path, shape, init)| {
        let tensor = ComputedTensor::f32(shape, move || init_param(path, init, shape, seed));
        (path.as_str(), tensor)
    }))
    .map_err(|e| e.to_string())?;
    let artifact = Artifact {
        manifest,
        clif,
        // Filled in by the driver when the target is the GPU.
        wgsl: String::new(),
        weights: weights.into(),
        machine_code: None,
        // Filled in by `strata build`, which exports `infer`.
        onnx: Vec::new(),
    };
    artifact
        .validate()
        .map_err(|e| format!("the compiled artifact is invalid: {e}"))?;
    Ok(artifact)
}

/// The standalone executable: the runtime's stub binary with the artifact appended.
pub fn pack_executable(stub: &[u8], artifact: &Artifact) -> Result<Vec<u8>, String> {
    let mut exe = Vec::new();
    write_executable(&mut &stub[..], artifact, &mut exe).map_err(|e| e.to_string())?;
    Ok(exe)
}

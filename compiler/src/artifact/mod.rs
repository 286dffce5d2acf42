//! Compiled model -> artifact: the manifest (buffers with their planned locations,
//! kernels, the `infer` entry), the generated CLIF, and the initial weights.
//!
//! The container format itself belongs to the runtime (`strata_runtime::artifact`),
//! which is the one that must read it; this module fills it in. Executables are the
//! runtime's stub binary with the artifact appended ([`pack_executable`]).

use crate::ir::{Graph, Op, init::init_param};
use crate::lower::{BufferRole, Lowered};
use crate::plan::MemoryPlan;
use std::collections::HashMap;
use strata_kernels::ir::Dim;
use strata_runtime::artifact::manifest::{
    BufferInfo, Entry, EntryPort, Launch, Location, Manifest,
};
use strata_runtime::artifact::{Artifact, append_to_executable, weights::encode_weights};
use strata_runtime::tensor::HostTensor;

/// Fills in an artifact for a lowered and planned graph. Parameters take their initial
/// values from their initializers with `seed`.
pub fn build_artifact(
    graph: &Graph,
    lowered: &Lowered,
    plan: &MemoryPlan,
    clif: String,
    seed: u64,
) -> Result<Artifact, String> {
    let inits: HashMap<&str, &crate::ir::Init> = graph
        .values()
        .into_iter()
        .filter_map(|v| match &graph.node(v).op {
            Op::Param { path, init } => Some((path.as_str(), init)),
            _ => None,
        })
        .collect();
    let mut buffers = Vec::with_capacity(lowered.buffers.len());
    let mut weights: Vec<(String, HostTensor)> = Vec::new();
    for (b, buf) in lowered.buffers.iter().enumerate() {
        let location = match &buf.role {
            BufferRole::Param(path) => {
                let shape: Vec<u64> = buf
                    .shape
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(n) => Ok(*n),
                        Dim::Batch => Err(format!("parameter `{path}` has a batch dimension")),
                    })
                    .collect::<Result<_, _>>()?;
                let init = inits
                    .get(path.as_str())
                    .ok_or_else(|| format!("parameter `{path}` has no initializer"))?;
                let values = init_param(path, init, &shape, seed);
                let tensor = HostTensor::f32(shape, values).map_err(|e| e.to_string())?;
                weights.push((path.clone(), tensor));
                Location::Persistent { key: path.clone() }
            }
            _ => Location::Arena {
                offset: plan.offsets[b].unwrap_or_default(),
            },
        };
        buffers.push(BufferInfo {
            name: buf.name.clone(),
            dtype: buf.dtype,
            shape: buf.shape.clone(),
            location,
        });
    }
    let ports = |list: &[(String, usize)]| -> Vec<EntryPort> {
        list.iter()
            .map(|(name, b)| EntryPort {
                name: name.clone(),
                buffer: *b,
            })
            .collect()
    };
    let infer = Entry {
        name: "infer".into(),
        inputs: ports(&lowered.inputs),
        outputs: ports(&lowered.outputs),
        launches: lowered
            .launches
            .iter()
            .map(|l| Launch {
                kernel: l.kernel,
                bindings: l.bindings.clone(),
            })
            .collect(),
    };
    let manifest = Manifest {
        model: graph.name.clone(),
        compiler: format!("strata {}", env!("CARGO_PKG_VERSION")),
        buffers,
        kernels: lowered.kernels.clone(),
        entries: vec![infer],
        arena: plan.arena,
    };
    let weights =
        encode_weights(weights.iter().map(|(k, t)| (k.as_str(), t))).map_err(|e| e.to_string())?;
    let artifact = Artifact {
        manifest,
        clif,
        weights,
    };
    artifact
        .validate()
        .map_err(|e| format!("the compiled artifact is invalid: {e}"))?;
    Ok(artifact)
}

/// The standalone executable: the runtime's stub binary with the artifact appended.
pub fn pack_executable(stub: &[u8], artifact: &Artifact) -> Result<Vec<u8>, String> {
    let bytes = artifact.to_bytes().map_err(|e| e.to_string())?;
    Ok(append_to_executable(stub, &bytes))
}

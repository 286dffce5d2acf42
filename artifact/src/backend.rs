//! Which code of an artifact runs: the compiler builds for a backend (`--target`), and
//! a runtime session runs on one.

use crate::Artifact;

/// Which device runs a model's kernels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Backend {
    /// CPU code generated from the kernel IR, JIT-compiled for this CPU.
    #[default]
    Cpu,
    /// WGSL generated from the kernel IR, through wgpu on the adapter the runtime
    /// selects.
    Gpu,
}

impl Backend {
    /// The backend an artifact runs on unless told otherwise: the GPU when it holds GPU
    /// code (it was built with `--target gpu`), else the CPU.
    pub fn default_for(artifact: &Artifact) -> Backend {
        if artifact.wgsl.is_empty() {
            Backend::Cpu
        } else {
            Backend::Gpu
        }
    }
}

//! The GPU backend: runs a model's WGSL kernels through wgpu.
//!
//! - [`device`]: choosing an adapter (`STRATA_ADAPTER`), opening a device, bounded waits.
//! - [`engine`]: pipelines, device memory, and entry runs ([`GpuEngine`]).
//!
//! The WGSL and its binding scheme come from `strata_kernels::gpu`; this module only
//! creates what those modules bind and dispatches them. No adapter, a lost device or a
//! GPU that does not answer within the timeout is a [`GpuError`], never a panic or a hang.

pub mod device;
pub mod engine;

pub use device::{AdapterSummary, GpuDevice, GpuOptions, describe_adapter};
pub use engine::GpuEngine;

/// Why the GPU backend cannot run a model.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error(
        "no GPU adapter found (backends searched: {backends}); install a Vulkan driver \
         (e.g. Mesa's lavapipe: `apt-get install mesa-vulkan-drivers libvulkan1`) or run \
         on the CPU (`--device cpu`)"
    )]
    NoAdapter { backends: String },
    #[error(
        "no GPU adapter's name contains `{wanted}` (STRATA_ADAPTER); the adapters are: {}",
        if available.is_empty() { "none".to_string() } else { available.join(", ") }
    )]
    NoMatchingAdapter {
        wanted: String,
        available: Vec<String>,
    },
    #[error("cannot open the GPU device: {0}")]
    RequestDevice(String),
    #[error("this model holds no GPU code (build it with `--target gpu`)")]
    NoGpuCode,
    #[error("the GPU code has no module for kernel `{kernel}`")]
    MissingModule { kernel: String },
    #[error("kernel `{kernel}`: the GPU refused its pipeline: {message}")]
    Pipeline { kernel: String, message: String },
    #[error("too large for the GPU: {0}")]
    TooLarge(String),
    #[error(
        "the GPU did not finish within {seconds} s (set STRATA_GPU_TIMEOUT_SECS to wait longer)"
    )]
    Timeout { seconds: u64 },
    #[error("GPU error: {0}")]
    Device(String),
}

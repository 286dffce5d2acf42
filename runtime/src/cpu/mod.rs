//! The CPU backend: JIT-compiles the kernels' CLIF text and launches kernels.
//!
//! - [`jit`]: kernel IR (or CLIF text) -> native functions ([`JitCode`]).
//! - [`machine_code`]: kernels compiled ahead of time ([`compile_machine_code`], at
//!   `strata build`) and mapped back at a start ([`MappedCode`]).
//! - [`launch`](mod@launch): runs one kernel over its iteration space, split across threads
//!   by rows of the outermost dimension (a product of few rows: by its columns);
//!   contractions call `gemm` first (`gemv`: products of one row; `window`: products
//!   reading a convolution's window over an image in place).
//! - `team`: the threads a launch shares its work with, spinning between launches.
//! - [`denormals`]: kernels run with denormals flushed to zero.
//! - `distinct`: kernels that differ only in names, compiled once by both of the above.
//!
//! The calling convention of the generated code is in `strata_kernels::cpu`.

pub mod denormals;
mod distinct;
mod gemv;
pub mod jit;
pub mod launch;
pub mod machine_code;
mod team;
mod window;

pub(crate) use distinct::distinct_kernels;
pub use jit::{JitCode, JitError};
pub use launch::{
    LaunchOptions, LaunchPlan, SeatShares, SeatedLaunch, ThreadsError, TransposedRhs,
    apply_threads_option, launch, launch_planned, launch_seated, launch_with, set_threads,
};
pub use machine_code::{MappedCode, Unusable, compile_machine_code};

/// The generated code's entry: `(buffers, batch, start, end)`; runs rows `start..end` of
/// the outermost dimension of the kernel's iteration space.
pub type KernelFn = unsafe extern "C" fn(bufs: *const *mut u8, batch: i64, start: i64, end: i64);

//! The CPU backend: JIT-compiles CLIF text and launches kernels (placeholder, being written).
use strata_kernels::ir::Kernel;

/// The generated code's entry: `(buffers, batch, start, end)`; runs rows `start..end` of
/// the outermost dimension of the kernel's iteration space.
pub type KernelFn = unsafe extern "C" fn(bufs: *const *mut u8, batch: i64, start: i64, end: i64);

/// Native code for a set of CLIF functions.
pub struct JitCode {
    _private: (),
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct JitError(pub String);

impl JitCode {
    /// Parses CLIF text holding one or more functions and compiles them for this host.
    pub fn compile(clif_text: &str) -> Result<JitCode, JitError> {
        let _ = clif_text;
        unimplemented!("being written")
    }

    /// The compiled function named `name`.
    pub fn get(&self, name: &str) -> Option<KernelFn> {
        let _ = name;
        unimplemented!("being written")
    }
}

/// Runs one kernel over its whole iteration space.
///
/// # Safety
/// `bufs[slot]` must point to storage for the kernel's buffer `slot`, large enough for its
/// shape at `batch`, and `f` must be the compiled code of `kernel`.
pub unsafe fn launch(kernel: &Kernel, f: KernelFn, bufs: &[*mut u8], batch: u64) {
    let _ = (kernel, f, bufs, batch);
    unimplemented!("being written")
}

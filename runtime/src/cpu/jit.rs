//! Kernel IR or CLIF -> native code for this host, with cranelift-jit.
//!
//! A session compiles the code it runs from the artifact's validated kernel IR
//! ([`JitCode::from_kernels`]: the emitter's Cranelift functions, no text in between),
//! never from code an artifact carries. Whatever the functions' origin, each must have a
//! name and the kernel signature, call nothing, and compile. The code stays mapped as
//! long as the [`JitCode`] lives.

use super::KernelFn;
use cranelift_codegen::ir::Function;
use cranelift_codegen::ir::{UserFuncName, types};
use cranelift_codegen::isa::{OwnedTargetIsa, TargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module, default_libcall_names};
use std::collections::HashMap;
use std::mem::ManuallyDrop;
use strata_kernels::cpu::Features;
use strata_kernels::ir::Kernel;

/// Cranelift's optimization level for kernels. The emitter already writes simple,
/// scheduled loops, and on them "speed" and "none" run at the same speed (measured on
/// 2048 x 2048 maps, reductions and transposes: within noise). "speed" is kept because its
/// mid-end turns index divisions by constants into multiplications (an `idiv` per point
/// otherwise) and multiplications by powers of two into shifts; it compiles about 15%
/// slower (a few milliseconds for a model's kernels).
const OPT_LEVEL: &str = "speed";

/// Native code for a set of CLIF functions.
pub struct JitCode {
    /// Owns the executable memory, freed by `drop` (a `JITModule` alone never frees it).
    module: ManuallyDrop<JITModule>,
    functions: HashMap<String, KernelFn>,
}

/// Why CLIF text could not be turned into native code.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct JitError(pub String);

impl JitCode {
    /// Generates the CPU code of `kernels` (one function per part, see
    /// [`Kernel::function_names`]) and compiles it for this host.
    pub fn from_kernels(kernels: &[Kernel]) -> Result<JitCode, JitError> {
        let isa = host_isa()?;
        // The emitter verifies every function it generates.
        let funcs = strata_kernels::cpu::emit_functions(kernels, features_of(&*isa))
            .map_err(|e| JitError(format!("generating the CPU code: {e}")))?;
        JitCode::compile_verified(funcs, isa)
    }

    /// Parses CLIF text holding one or more functions and compiles them for this host.
    pub fn compile(clif_text: &str) -> Result<JitCode, JitError> {
        let funcs = cranelift_reader::parse_functions(clif_text)
            .map_err(|e| JitError(format!("CLIF text does not parse: {e}")))?;
        JitCode::compile_functions(funcs)
    }

    /// Compiles Cranelift functions (named by testcase names) for this host, after
    /// checking each one with Cranelift's verifier (the compile itself does not: see
    /// `host_isa`).
    pub fn compile_functions(funcs: Vec<Function>) -> Result<JitCode, JitError> {
        let flags = settings::Flags::new(settings::builder());
        for func in &funcs {
            let name = kernel_name(func)?;
            cranelift_codegen::verify_function(func, &flags)
                .map_err(|e| JitError(format!("function `{name}` does not compile: {e}")))?;
        }
        JitCode::compile_verified(funcs, host_isa()?)
    }

    /// [`JitCode::compile_functions`] on functions the emitter has verified, for `isa`.
    fn compile_verified(funcs: Vec<Function>, isa: OwnedTargetIsa) -> Result<JitCode, JitError> {
        // Built first, so that its memory is freed if anything below fails.
        let mut code = JitCode {
            module: ManuallyDrop::new(JITModule::new(JITBuilder::with_isa(
                isa,
                default_libcall_names(),
            ))),
            functions: HashMap::new(),
        };
        let module = &mut *code.module;
        let mut ctx = module.make_context();
        let mut defined = Vec::with_capacity(funcs.len());
        for func in funcs {
            let name = kernel_name(&func)?;
            check_kernel_function(&name, &func)?;
            let mut signature = func.signature.clone();
            // The functions are called as `extern "C"`, this host's default convention.
            signature.call_conv = module.isa().default_call_conv();
            let id = module
                .declare_function(&name, Linkage::Export, &signature)
                .map_err(|e| JitError(format!("function `{name}`: {e}")))?;
            ctx.func = func;
            ctx.func.signature = signature;
            module
                .define_function(id, &mut ctx)
                .map_err(|e| JitError(format!("function `{name}` does not compile: {e}")))?;
            module.clear_context(&mut ctx);
            defined.push((name, id));
        }
        module
            .finalize_definitions()
            .map_err(|e| JitError(format!("linking the compiled kernels: {e}")))?;
        for (name, id) in defined {
            let ptr = module.get_finalized_function(id);
            // SAFETY: `ptr` is the entry of a function compiled from CLIF whose signature
            // `check_kernel_function` checked to be `(i64, i64, i64, i64)` with no result,
            // in this host's default calling convention, which is what `extern "C"` with
            // pointer-sized integer arguments is.
            let f = unsafe { std::mem::transmute::<*const u8, KernelFn>(ptr) };
            code.functions.insert(name, f);
        }
        Ok(code)
    }

    /// The compiled function named `name`.
    ///
    /// The pointer is valid as long as this `JitCode` lives: calling it after the
    /// `JitCode` is dropped is undefined behaviour.
    pub fn get(&self, name: &str) -> Option<KernelFn> {
        self.functions.get(name).copied()
    }
}

impl Drop for JitCode {
    fn drop(&mut self) {
        // SAFETY: `self.module` is never used again. The only pointers into its memory
        // are the `KernelFn`s that `get` handed out, documented to die with this `JitCode`.
        unsafe { ManuallyDrop::take(&mut self.module).free_memory() };
    }
}

/// What the emitter may use of `isa` ([`Features`]): the settings Cranelift compiles
/// with decide it, so an `fma` is never emitted for a target that would call a library
/// for it.
pub(super) fn features_of(isa: &dyn TargetIsa) -> Features {
    let on = |name: &str| {
        isa.isa_flags()
            .iter()
            .any(|v| v.name == name && v.as_bool() == Some(true))
    };
    Features { fma: on("has_fma") }
}

/// The ISA of this host, with the flags cranelift-jit needs.
pub(super) fn host_isa() -> Result<OwnedTargetIsa, JitError> {
    let mut flags = settings::builder();
    for (name, value) in [
        ("opt_level", OPT_LEVEL),
        // Every function is verified once before it gets here (the emitter verifies
        // what it generates, `JitCode::compile_functions` anything else); the compile
        // verifying it again, before and after its passes, was 10% of a deep model's
        // `strata build`.
        ("enable_verifier", "false"),
        // cranelift-jit needs non-PIC code and absolute libcalls.
        ("is_pic", "false"),
        ("use_colocated_libcalls", "false"),
    ] {
        flags
            .set(name, value)
            .map_err(|e| JitError(format!("Cranelift setting {name}={value}: {e}")))?;
    }
    cranelift_native::builder()
        .map_err(|msg| JitError(format!("this host is not supported by Cranelift: {msg}")))?
        .finish(settings::Flags::new(flags))
        .map_err(|e| JitError(format!("Cranelift for this host: {e}")))
}

/// A kernel function's name: its testcase name (`function %name`).
pub(super) fn kernel_name(func: &Function) -> Result<String, JitError> {
    match &func.name {
        UserFuncName::Testcase(name) => std::str::from_utf8(name.raw())
            .map(str::to_owned)
            .map_err(|_| JitError(format!("function {} has a non-UTF-8 name", func.name))),
        UserFuncName::User(_) => Err(JitError(format!(
            "function {} has no kernel name (expected `function %name`)",
            func.name
        ))),
    }
}

/// Refuses functions that could not be called as a [`KernelFn`], or that call out.
pub(super) fn check_kernel_function(name: &str, func: &Function) -> Result<(), JitError> {
    let sig = &func.signature;
    let params_ok = sig.params.len() == 4 && sig.params.iter().all(|p| p.value_type == types::I64);
    if !params_ok || !sig.returns.is_empty() {
        return Err(JitError(format!(
            "function `{name}` has signature {sig}, expected (i64, i64, i64, i64)"
        )));
    }
    // Kernels are leaf functions; a call could reach any symbol of the process.
    if !func.dfg.ext_funcs.is_empty() {
        return Err(JitError(format!("function `{name}` calls other functions")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOOP: &str = "function %noop(i64, i64, i64, i64) system_v {\nblock0(v0: i64, v1: i64, v2: i64, v3: i64):\n    return\n}\n";

    #[test]
    fn compiles_and_finds_a_function_by_name() {
        let code = JitCode::compile(NOOP).unwrap();
        let f = code.get("noop").unwrap();
        // SAFETY: `noop` ignores its arguments and returns.
        unsafe { f(std::ptr::null(), 0, 0, 0) };
        assert!(code.get("other").is_none());
    }

    #[test]
    fn compiles_kernels_from_their_ir() {
        let text = "kernel double map [batch] (x: f32[batch] r, y: f32[batch] w) {
                      y[i0] = (x[i0] * 2)
                    }";
        let kernel = strata_kernels::parse::parse_kernel(text).unwrap();
        let code = JitCode::from_kernels(&[kernel]).unwrap();
        let f = code.get("double").unwrap();
        let (x, mut y) = ([1.5f32, -2.0, 4.0], [0f32; 3]);
        let bufs = [
            x.as_ptr().cast_mut().cast::<u8>(),
            y.as_mut_ptr().cast::<u8>(),
        ];
        // SAFETY: both buffers hold the 3 elements of batch 3.
        unsafe { f(bufs.as_ptr(), 3, 0, 3) };
        assert_eq!(y, [3.0, -4.0, 8.0]);
    }

    #[test]
    fn refuses_text_that_does_not_parse() {
        let e = JitCode::compile("function %broken(").err().unwrap();
        assert!(e.0.starts_with("CLIF text does not parse"), "{e}");
    }

    #[test]
    fn refuses_a_function_with_another_signature() {
        let text = "function %f(i32) system_v {\nblock0(v0: i32):\n    return\n}\n";
        let e = JitCode::compile(text).err().unwrap();
        assert!(e.0.contains("function `f` has signature"), "{e}");
    }

    #[test]
    fn names_the_function_that_does_not_compile() {
        // Parses, but jumps to a block with the wrong number of arguments: the verifier
        // refuses it.
        let text = "function %bad(i64, i64, i64, i64) system_v {\nblock0(v0: i64, v1: i64, v2: i64, v3: i64):\n    jump block1(v0)\n\nblock1:\n    return\n}\n";
        let e = match JitCode::compile(text) {
            Ok(_) => panic!("compiled"),
            Err(e) => e,
        };
        assert!(e.0.starts_with("function `bad` does not compile"), "{e}");
    }
}

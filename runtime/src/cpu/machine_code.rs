//! Kernels compiled ahead of time: made by `strata build`, mapped by the executable.
//!
//! [`compile_machine_code`] compiles the kernel IR's Cranelift functions for this host,
//! exactly as [`JitCode`](super::JitCode) does at a start, and keeps their bytes: kernels
//! call nothing and refer to nothing outside themselves (their constants sit in the
//! function's own code, addressed relative to it), so a function's bytes run wherever
//! they are placed, and a compiled function with a relocation is refused. [`MappedCode`]
//! copies the bytes into executable memory at a start, after checking that this host has
//! every code-generator feature the code was compiled with.
//!
//! Only an executable running the artifact appended to itself maps its machine code (the
//! code is as trusted as the executable file); an artifact file is always compiled from its
//! validated kernel IR (see [`crate::Session`]).

use std::collections::{HashMap, HashSet};

use cranelift_codegen::Context;
use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::isa::TargetIsa;
use rayon::prelude::*;
use strata_artifact::machine_code::{FUNCTION_ALIGN, FunctionCode, MachineCode};
use strata_kernels::ir::Kernel;

use super::KernelFn;
use super::jit::{JitError, check_kernel_function, host_isa, kernel_name};

/// What generated the code: this runtime and its code generator, whose calling
/// convention and buffer layout the code assumes.
pub const GENERATOR: &str = concat!("strata ", env!("CARGO_PKG_VERSION"), " (Cranelift 0.135)");

/// Compiles every kernel function of `kernels` for this host. The functions are
/// compiled in parallel (each is independent), in the order of `kernels`.
pub fn compile_machine_code(kernels: &[Kernel]) -> Result<MachineCode, JitError> {
    let isa = host_isa()?;
    // Kernels that differ only in their names and their buffers' names compile to the
    // same code (a residual network's blocks: 1,025 `matmul_add_relu` kernels of one
    // shape in `infer` alone): each distinct one is compiled once, and the others'
    // functions point at its code.
    let (distinct, same_as) = distinct_kernels(kernels);
    let funcs = strata_kernels::cpu::emit_functions(&distinct)
        .map_err(|e| JitError(format!("generating the CPU code: {e}")))?;
    let compiled: Vec<(String, Vec<u8>)> = funcs
        .into_par_iter()
        .map(|func| {
            let name = kernel_name(&func)?;
            check_kernel_function(&name, &func)?;
            let mut ctx = Context::for_function(func);
            ctx.func.signature.call_conv = isa.default_call_conv();
            let code = ctx
                .compile(&*isa, &mut ControlPlane::default())
                .map_err(|e| JitError(format!("function `{name}` does not compile: {e:?}")))?;
            if let Some(reloc) = code.buffer.relocs().first() {
                return Err(JitError(format!(
                    "function `{name}` needs a relocation ({:?}), so its code cannot be placed anywhere",
                    reloc.kind
                )));
            }
            Ok((name, code.code_buffer().to_vec()))
        })
        .collect::<Result<_, JitError>>()?;
    let mut code = Vec::new();
    let mut placed: HashMap<String, (u64, u64)> = HashMap::with_capacity(compiled.len());
    for (name, bytes) in compiled {
        code.resize(code.len().next_multiple_of(FUNCTION_ALIGN as usize), 0);
        placed.insert(name, (code.len() as u64, bytes.len() as u64));
        code.extend_from_slice(&bytes);
    }
    let mut functions = Vec::with_capacity(kernels.len());
    for (kernel, &d) in kernels.iter().zip(&same_as) {
        for (name, compiled_as) in kernel
            .function_names()
            .into_iter()
            .zip(distinct[d].function_names())
        {
            let &(offset, len) = placed.get(&compiled_as).ok_or_else(|| {
                JitError(format!(
                    "no code was generated for function `{compiled_as}`"
                ))
            })?;
            functions.push(FunctionCode { name, offset, len });
        }
    }
    Ok(MachineCode {
        target: isa.triple().to_string(),
        features: enabled_features(&*isa),
        generator: GENERATOR.to_owned(),
        functions,
        code,
    })
}

/// The distinct kernels of `kernels` up to names (in order of first appearance), and for
/// each kernel the index of the distinct one it equals. Two kernels are equal when their
/// bodies and their buffers' types and access modes print the same (so a constant `-0.0`
/// is not `0.0`); names never reach the machine code.
fn distinct_kernels(kernels: &[Kernel]) -> (Vec<Kernel>, Vec<usize>) {
    let mut distinct: Vec<Kernel> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::with_capacity(kernels.len());
    let mut same_as = Vec::with_capacity(kernels.len());
    for kernel in kernels {
        let buffers: Vec<_> = kernel
            .buffers
            .iter()
            .map(|b| (b.dtype, &b.shape, b.access))
            .collect();
        let key = format!("{buffers:?} {:?}", kernel.body);
        let at = *index.entry(key).or_insert_with(|| {
            distinct.push(kernel.clone());
            distinct.len() - 1
        });
        same_as.push(at);
    }
    (distinct, same_as)
}

/// The boolean code-generator settings an ISA has on (`has_sse41`, `has_avx2`, …).
fn enabled_features(isa: &dyn TargetIsa) -> Vec<String> {
    isa.isa_flags()
        .iter()
        .filter(|v| v.as_bool() == Some(true))
        .map(|v| v.name.to_owned())
        .collect()
}

/// Why carried machine code cannot run on this host (the kernels are compiled instead).
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    #[error("it was compiled for {found}, this host is {host}")]
    OtherTarget { found: String, host: String },
    #[error("it needs {0}, which this CPU lacks")]
    MissingFeatures(String),
    #[error("it was generated by {found}, this runtime is {GENERATOR}")]
    OtherGenerator { found: String },
    #[error("{0}")]
    Host(String),
}

/// Whether this host can run `code`: an x86-64 host of its target with every feature it
/// was compiled with, and this runtime's code generator.
pub fn runnable_here(code: &MachineCode) -> Result<(), Unusable> {
    // x86-64 keeps instruction caches coherent with stores; other hosts would need
    // a cache flush after the copy, which this mapping does not do.
    if !cfg!(target_arch = "x86_64") {
        return Err(Unusable::Host(
            "carried machine code runs only on x86-64 hosts".into(),
        ));
    }
    let isa = host_isa().map_err(|e| Unusable::Host(e.0))?;
    let host = isa.triple().to_string();
    if code.target != host {
        return Err(Unusable::OtherTarget {
            found: code.target.clone(),
            host,
        });
    }
    if code.generator != GENERATOR {
        return Err(Unusable::OtherGenerator {
            found: code.generator.clone(),
        });
    }
    let have: HashSet<String> = enabled_features(&*isa).into_iter().collect();
    let missing: Vec<&str> = code
        .features
        .iter()
        .filter(|f| !have.contains(*f))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(Unusable::MissingFeatures(missing.join(", ")));
    }
    Ok(())
}

/// Machine code copied into executable memory.
pub struct MappedCode {
    /// The code, read-only and executable, unmapped on drop.
    map: memmap2::Mmap,
    functions: HashMap<String, KernelFn>,
}

impl MappedCode {
    /// Maps `code` if this host can run it ([`runnable_here`]).
    pub fn map(code: &MachineCode) -> Result<MappedCode, Unusable> {
        runnable_here(code)?;
        let host_err = |e: std::io::Error| Unusable::Host(format!("mapping the code: {e}"));
        let mut writable = memmap2::MmapMut::map_anon(code.code.len().max(1)).map_err(host_err)?;
        writable[..code.code.len()].copy_from_slice(&code.code);
        let map = writable.make_exec().map_err(host_err)?;
        let mut functions = HashMap::with_capacity(code.functions.len());
        for f in &code.functions {
            let inside =
                (f.offset.checked_add(f.len)).is_some_and(|end| end <= code.code.len() as u64);
            if !inside {
                return Err(Unusable::Host(format!(
                    "function `{}` lies outside the code",
                    f.name
                )));
            }
            // SAFETY: the function lies inside the code (checked above), so the pointer is
            // inside the mapping. The bytes are a function compiled by
            // `compile_machine_code` for this target with this host's features (checked
            // above), from a kernel function whose signature `check_kernel_function`
            // checked: `(i64, i64, i64, i64)`, no result, this host's default convention.
            let f_ptr = unsafe { map.as_ptr().add(f.offset as usize) };
            let kernel = unsafe { std::mem::transmute::<*const u8, KernelFn>(f_ptr) };
            functions.insert(f.name.clone(), kernel);
        }
        Ok(MappedCode { map, functions })
    }

    /// The function named `name`; valid while this `MappedCode` lives.
    pub fn get(&self, name: &str) -> Option<KernelFn> {
        self.functions.get(name).copied()
    }

    /// The mapped code's size in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

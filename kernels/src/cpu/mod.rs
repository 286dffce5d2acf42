//! Kernel IR -> Cranelift IR (CLIF text), one function per kernel, or per part of a
//! kernel with parts ([`Kernel::part_name`]).
//!
//! # Calling convention
//! Every function is `(bufs: i64, batch: i64, start: i64, end: i64)` with no result, in
//! the x86-64 System V convention:
//!
//! - `bufs` points to an array of buffer base pointers, one per buffer slot of the kernel;
//!   element `i` of slot `s` is at `bufs[s] + 4 * i`;
//! - `batch` is the value of [`Dim::Batch`](crate::ir::Dim::Batch);
//! - the function runs the points whose *row* lies in `start..end` (clamped to the
//!   rows), all the other dimensions fully. A row is a point of the space's first
//!   [`row_dims`] dimensions, in row-major order: the outermost coordinate alone, or,
//!   for a map or reduction over `[batch, n, ...]` (rank 3 or more, `n` fixed), the pair
//!   of the first two, so that a batch-1 launch still has rows to share among threads (a
//!   transformer's attention `[batch, heads, T, T]`). A map over `[m, n]` whose `n` is
//!   a multiple of [`ROW_CHUNK`], at least two of them, and whose every store moves with
//!   the inner coordinate has a row per chunk of [`ROW_CHUNK`] consecutive points instead
//!   (a batch-1 LSTM cell `[batch, 128]` is two rows, one a thread). A contraction's
//!   epilogue (`batch..., m, n`) always has the outermost coordinate as its row. A rank-0
//!   space has the single row `0..1` ([`Rows`], [`rows_of`]).
//!
//! So the runtime can split a kernel across threads by rows, and a reduction's folded
//! dimensions are never split.
//!
//! # What is generated
//! - Map: a loop nest over the space; at each point every store's value is computed, then
//!   every store is written (so in-place updates read the old values).
//! - Reduce: a loop nest over the space, inside it one over the reduced dimensions folding
//!   `value` (sums in `f64`, max/min in `f32`), then the epilogue with `Acc` bound to the
//!   folded value.
//! - A nested reduction ([`Expr::Reduce`](crate::ir::Expr)): a loop nest inside the
//!   point, folding as a kernel-level reduction does; one of at most 9 points (a pooling
//!   window) is unrolled, its variables constants.
//! - ScatterAdd: the function owns the table's columns `start..end` (its outermost
//!   "rows" are the table's columns): it zeroes them in every row, then for each point in
//!   order reads the id and, when it is inside the table's rows, adds the point's values
//!   of those columns to that row (a contiguous run, so threads never share a column).
//!   A gather reads its id, clamps it to row 0 when it is out of range (so the address is
//!   always inside the table) and selects `0.0` then; neither is ever vectorized.
//! - Contract: *only the epilogue*, a map over `[batch..., m, n]` doing
//!   `out[idx] = epilogue` with `Acc = out[idx]`. The runtime computes the product into
//!   `out` with the `gemm` crate first, then calls this function on the same rows.
//!
//! The loops are simple and already scheduled: the innermost loop of a map or of an
//! epilogue runs four points at a time in `f32x4` (Cranelift's 128-bit SIMD, which every
//! x86-64 host has) when its stores and loads are contiguous along it, with a scalar loop
//! for the last `extent % 4` points (`lower/vector.rs` says when a kernel qualifies; a
//! lane computes the bits the scalar loop would). Everything else is scalar `f32` code,
//! indices recomputed at each
//! point (identical index expressions and loads are shared within a point, and in a
//! vector point identical element-wise ops on the same values too), no reliance on
//! Cranelift's optimizer, except that a subexpression that does not depend on the inner
//! loops' variables (a row's nested max inside a map over the row) is computed once at
//! the start of the outermost loop body it depends on (`hoist.rs`). Index divisions are
//! folded by range or kept as per-loop quotient/remainder counters where the loop can
//! step them ([`strength`]), so im2col and windows divide once per loop, not per point. Memory accesses
//! carry no `aligned` flag. Loads of `i32` buffers are converted with `fcvt_from_sint`;
//! stores to them with `fcvt_to_sint_sat`
//! (truncating, saturating, NaN -> 0). Comparisons give 1.0 or 0.0; `Select` takes `then`
//! when `cond != 0` (NaN included) and branches when an arm loads memory, so a guarded
//! out-of-range load is never executed. `exp`, `log`, `tanh`, `sigmoid` and `pow` are
//! polynomial approximations in CLIF: see [`math`]. `Uniform` is Philox4x32-10 in `i32`
//! CLIF ([`random`]), bit-identical to [`crate::rng::uniform_at`].
//!
//! Beyond [`Kernel::validate`], this emitter refuses index divisions by a non-positive
//! constant, contraction operands that are not `f32`, and contractions whose output is
//! also an operand (the product is written into `out` before the epilogue runs).

pub mod lanes;
mod lower;
pub mod math;
pub mod random;
mod strength;

#[cfg(test)]
mod tests;

use crate::ir::{Dim, Expr, Index, Kernel, KernelBody, KernelError, ScalarType};
use cranelift_codegen::ir::{AbiParam, Function, Signature, UserFuncName, types};
use cranelift_codegen::isa::{CallConv, TargetFrontendConfig};
use cranelift_codegen::settings;

/// How many leading dimensions of a map's or reduction's `space` make up its function's
/// rows (see the calling convention): two for `[batch, n, ...]` with a fixed `n` of two
/// or more and rank 3 or more, else one.
pub fn row_dims(space: &[Dim]) -> usize {
    match space {
        [Dim::Batch, Dim::Fixed(n), _, ..] if *n >= 2 => 2,
        _ => 1,
    }
}

/// The points of a row of a map whose rows are chunks ([`Rows::Chunks`]): sixteen
/// vectors, enough that a row's loop overhead is small, few enough that a batch-1 row of
/// 128 or more points is two rows or more.
pub const ROW_CHUNK: u64 = 64;

/// What a map's or reduction's function calls a row (see the calling convention).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    /// A point of the first [`row_dims`] dimensions of the space.
    Leading,
    /// [`ROW_CHUNK`] consecutive points of the inner dimension of a map over `[m, n]`:
    /// row `r` is `i0 = r / (n / ROW_CHUNK)` and its chunk `r % (n / ROW_CHUNK)`. For a
    /// reduction over `[1, .., 1, n]` (a bias gradient, the sum over the batch of each
    /// column), row `r` is chunk `r` of the outputs.
    Chunks,
}

/// How `body`'s function numbers its rows: [`Rows::Chunks`] for a map over `[m, n]`
/// with `n` a multiple of [`ROW_CHUNK`], at least two chunks, whose every store index is
/// affine in `i1` with a nonzero coefficient (so two chunks of one `i0` never store to
/// the same element, and threads may own them); [`Rows::Leading`] otherwise.
pub fn rows_of(body: &KernelBody) -> Rows {
    match body {
        KernelBody::Map { space, stores }
            if matches!(space.as_slice(), [_, Dim::Fixed(n)]
                if n % ROW_CHUNK == 0 && *n >= 2 * ROW_CHUNK)
                && stores
                    .iter()
                    .all(|s| s.index.coefficient(1).is_some_and(|c| c != 0)) =>
        {
            Rows::Chunks
        }
        KernelBody::Reduce { space, out, .. } if chunked_reduction(space, &out.index) => {
            Rows::Chunks
        }
        _ => Rows::Leading,
    }
}

/// Whether a reduction's outputs `space` (its store at `out`) are chunked rows: a space
/// `[n]` or `[1, .., 1, m, n]`, `n` a multiple of [`ROW_CHUNK`] of at least two chunks,
/// stored contiguously along it and a row of `n` apart along `m`. A column sum's outputs
/// are one row otherwise, so one thread: W3's bias gradient (512 sums of 1,600 rows each)
/// ran on one.
fn chunked_reduction(space: &[Dim], out: &Index) -> bool {
    let Some((&Dim::Fixed(n), rest)) = space.split_last() else {
        return false;
    };
    let apart = match rest.split_last() {
        None => true,
        Some((_, ones)) => {
            ones.iter().all(|d| *d == Dim::Fixed(1))
                && out.coefficient(space.len() - 2) == Some(n as i64)
        }
    };
    n % ROW_CHUNK == 0 && n >= 2 * ROW_CHUNK && apart && out.coefficient(space.len() - 1) == Some(1)
}

/// The rows of a map's or reduction's function at `batch` (1 for rank 0).
pub fn row_count(body: &KernelBody, batch: u64) -> u64 {
    let space = match body {
        KernelBody::Map { space, .. } | KernelBody::Reduce { space, .. } => space,
        _ => return 0,
    };
    match (rows_of(body), space.as_slice()) {
        (Rows::Chunks, [Dim::Fixed(n)]) => n / ROW_CHUNK,
        (Rows::Chunks, [.., outer, Dim::Fixed(n)]) => {
            crate::cost::points(&[*outer], batch).saturating_mul(n / ROW_CHUNK)
        }
        _ => crate::cost::points(&space[..row_dims(space).min(space.len())], batch),
    }
}

/// What the emitted code may use of its target beyond x86-64's baseline (SSE2, which
/// its `f32x4` code needs). The default is the baseline: code that every x86-64 host
/// runs and computes the same bits on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// Fused multiply-add: the transcendental functions' multiply-adds are `fma`
    /// instructions ([`math`]). Cranelift compiles `fma` to `vfmadd` only for a target
    /// with FMA (and to a library call otherwise), so set it only for such a target.
    pub fma: bool,
}

impl Features {
    /// What this host has: the features Cranelift's native target enables.
    pub fn host() -> Features {
        #[cfg(target_arch = "x86_64")]
        let fma = std::arch::is_x86_feature_detected!("fma");
        #[cfg(not(target_arch = "x86_64"))]
        let fma = false;
        Features { fma }
    }
}

/// Emits every kernel as one CLIF function named after it (`%name`), for the baseline
/// target ([`Features::default`]); returns the functions' text, which
/// `cranelift_reader::parse_functions` reads back.
pub fn emit_clif(kernels: &[Kernel]) -> Result<String, KernelError> {
    emit_clif_for(kernels, Features::default())
}

/// [`emit_clif`] for a target with `features`.
pub fn emit_clif_for(kernels: &[Kernel], features: Features) -> Result<String, KernelError> {
    let mut text = String::new();
    for func in emit_functions(kernels, features)? {
        text.push_str(&func.display().to_string());
        text.push('\n');
    }
    Ok(text)
}

/// Emits every kernel as Cranelift functions, one per part in order (named
/// [`Kernel::function_names`], as testcase names), verified, for a target with
/// `features`: what a runtime compiles to machine code directly, with no text in between.
pub fn emit_functions(
    kernels: &[Kernel],
    features: Features,
) -> Result<Vec<Function>, KernelError> {
    let mut functions = Vec::new();
    // Built once: the ISA lookup and its flags cost more than a small kernel's emission.
    let mut target: Option<Target> = None;
    for kernel in kernels {
        kernel.validate()?;
        let target = match &target {
            Some(t) => t,
            None => target.insert(Target::x86_64(features).map_err(|message| KernelError {
                kernel: kernel.name.clone(),
                message,
            })?),
        };
        // A kernel with parts is one function per part (see `Kernel::part`); the
        // runtime runs them all in one launch.
        for i in 0..kernel.part_count() {
            functions.push(emit_function(&kernel.part(i), target)?);
        }
    }
    Ok(functions)
}

/// What the emitter needs to know of the target (x86-64): the frontend config and the
/// flags that the verifier checks against.
struct Target {
    frontend: TargetFrontendConfig,
    flags: settings::Flags,
    features: Features,
}

impl Target {
    fn x86_64(features: Features) -> Result<Target, String> {
        let flags = settings::Flags::new(settings::builder());
        let isa = cranelift_codegen::isa::lookup_by_name("x86_64")
            .map_err(|e| format!("no x86-64 backend in this build of Cranelift: {e}"))?
            .finish(flags.clone())
            .map_err(|e| format!("x86-64 backend: {e}"))?;
        Ok(Target {
            frontend: isa.frontend_config(),
            flags,
            features,
        })
    }
}

/// The signature every kernel function has (see the module docs).
fn kernel_signature() -> Signature {
    let mut sig = Signature::new(CallConv::SystemV);
    sig.params.extend([AbiParam::new(types::I64); 4]);
    sig
}

fn emit_function(kernel: &Kernel, target: &Target) -> Result<Function, KernelError> {
    kernel.validate()?;
    check_cpu_constraints(kernel)?;
    let mut func =
        Function::with_name_signature(UserFuncName::testcase(&kernel.name), kernel_signature());
    lower::lower_kernel(kernel, &mut func, target.frontend, target.features)?;
    // The SSA builder leaves value aliases behind; resolving them keeps the text plain.
    func.dfg.resolve_all_aliases();
    cranelift_codegen::verify_function(&func, &target.flags).map_err(|errors| KernelError {
        kernel: kernel.name.clone(),
        message: format!("generated CLIF does not verify (emitter bug): {errors}"),
    })?;
    Ok(func)
}

/// The constraints this emitter adds to [`Kernel::validate`] (see the module docs).
fn check_cpu_constraints(kernel: &Kernel) -> Result<(), KernelError> {
    let err = |message: String| KernelError {
        kernel: kernel.name.clone(),
        message,
    };
    let mut indices: Vec<&Index> = Vec::new();
    let mut exprs: Vec<&Expr> = Vec::new();
    match &kernel.body {
        KernelBody::Parts(_) => return Err(err("parts are emitted one function each".into())),
        KernelBody::Map { stores, .. } => {
            for s in stores {
                indices.push(&s.index);
                exprs.push(&s.value);
            }
        }
        KernelBody::Reduce { value, out, .. } => {
            exprs.push(value);
            exprs.push(&out.value);
            indices.push(&out.index);
        }
        KernelBody::ScatterAdd(s) => {
            exprs.push(&s.value);
            indices.push(&s.id_index);
        }
        KernelBody::Contract(c) => {
            exprs.push(&c.epilogue);
            for op in c.products().flat_map(|(_, a, b)| [a, b]) {
                indices.extend([&op.offset, &op.row_stride, &op.col_stride]);
                if kernel.buffers[op.buf].dtype != ScalarType::F32 {
                    return Err(err(format!(
                        "contraction operand `{}` is not f32",
                        kernel.buffers[op.buf].name
                    )));
                }
                if op.buf == c.out {
                    return Err(err(format!(
                        "contraction output `{}` is also an operand",
                        kernel.buffers[op.buf].name
                    )));
                }
            }
        }
    }
    Expr::indices_of(exprs, &mut indices);
    while let Some(ix) = indices.pop() {
        match ix {
            Index::Var(_) | Index::Const(_) | Index::Batch => {}
            Index::Add(a, b) | Index::Mul(a, b) => indices.extend([&**a, &**b]),
            Index::Div(a, d) | Index::Rem(a, d) => {
                if *d <= 0 {
                    return Err(err(format!("index divided by non-positive constant {d}")));
                }
                indices.push(a);
            }
        }
    }
    Ok(())
}

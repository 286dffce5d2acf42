//! Kernel IR -> WGSL compute shaders, one module per kernel, each validated by naga.
//!
//! # Binding scheme
//! Every module binds exactly two resources, whatever the number of buffer slots:
//!
//! ```text
//! @group(0) @binding(0) var<uniform> p: Params;                   // batch + slot offsets
//! @group(0) @binding(1) var<storage, read_write> mem: array<u32>; // all device memory
//! ```
//!
//! The runtime keeps *all* of a model's device memory (persistent buffers and the arena)
//! in one wgpu buffer, `mem`, and passes, per launch, the batch size and the element
//! offset of every slot's buffer in `mem` ([`Params`](params_words)). Element `i` of slot
//! `s` is `mem[p.off{s} + i]`, reinterpreted with `bitcast` as `f32` or `i32`.
//!
//! Why one buffer and element offsets rather than one binding per slot: a kernel then uses
//! one storage buffer however many slots fusion gives it (some adapters allow only 8 per
//! stage), arena buffers need no sub-range bindings (the memory plan aligns offsets to 16
//! bytes, while dynamic or sub-range storage bindings need
//! `min_storage_buffer_offset_alignment`, often 256), slots that alias one buffer (an
//! in-place update) are fine, and bind groups do not change with the batch size. The cost:
//! a model's memory must fit in one binding (`max_storage_buffer_binding_size`); the
//! runtime checks that and refuses a larger model with a clear error.
//!
//! # Work decomposition
//! Every grid is linear: the runtime dispatches [`workgroups`] workgroups, folded into
//! `(x, y, 1)` so that no dimension exceeds the adapter's
//! `max_compute_workgroups_per_dimension`, and the shader recovers the linear workgroup
//! id as `wid.y * nwg.x + wid.x` (surplus workgroups of the fold do nothing).
//!
//! - Map: one invocation per point, [`WORKGROUP_SIZE`] per workgroup.
//! - Reduce with fewer than [`TREE_REDUCE_MIN`] reduced points per output (statically:
//!   a reduced batch dimension counts as long): one invocation per output point, looping
//!   over the reduced points.
//! - Longer reductions: one workgroup per output point; each of its [`WORKGROUP_SIZE`]
//!   invocations folds a strided share of the reduced points, then a tree reduction in
//!   workgroup memory combines them, and invocation 0 writes the epilogue.
//! - A nested reduction ([`Expr::Reduce`](crate::ir::Expr)) is a loop inside the
//!   invocation that needs it, over its flattened extent; what its value computes from the
//!   enclosing coordinates alone is computed before the loop (`hoist.rs`), as is
//!   the invariant part of a kernel-level reduction's value. Invocations share nothing,
//!   so every point of a map recomputes the nested reductions it reads (a softmax's row
//!   max and sum, once per element of the row): the fusion rule that places them keeps
//!   their extent small for that reason.
//! - Contract: [`TILE`]x[`TILE`] output tiles, one workgroup per tile (per batch
//!   point); `A` and `B` stream through workgroup-memory tiles along `k`; each invocation
//!   accumulates one output element in `f32` and applies the fused epilogue to it.
//! - ScatterAdd: one invocation per column of the table, which zeroes its column, then
//!   adds every point's value for that column to the row of the point's id, in order
//!   (WGSL has no atomic `f32` add; the column's owner needs none). A gather reads its id
//!   as an `i32`, and a row of the table only when the id is one (row 0 otherwise, its
//!   value then replaced by `0.0`).
//! - Parts ([`KernelBody::Parts`]): one dispatch for all of them. Part `i` gets the next
//!   `workgroups(part i)` workgroups of the linear grid, and runs its own strategy on
//!   them; the branch is on the workgroup id, uniform across a workgroup, so each
//!   workgroup runs one part and its barriers stay in uniform control flow. Every
//!   strategy uses [`WORKGROUP_SIZE`] invocations (a contraction's `TILE x TILE` tile is
//!   the linear local index cut in rows of `TILE`), so the parts share one entry point.
//!
//! # Arithmetic
//! Indices are `i32` (the runtime refuses memory of more than `i32::MAX` elements);
//! `Div`/`Rem` are floor/Euclidean as in the IR. Comparisons give 1.0 or 0.0. `Select`
//! evaluates both arms and picks one; an out-of-range load on the arm not taken is
//! harmless because wgpu's bounds checks clamp every access to `mem`. `max`, `min` and
//! `relu` propagate NaN (WGSL's builtins need not). `exp`, `log`, `sqrt` are WGSL's
//! builtins; `tanh` is Cephes' `tanhf` (a polynomial near 0, `1 - 2 / (exp(2|x|) + 1)`
//! beyond), since drivers' `tanh` builtins lose accuracy near 0 or overflow for large
//! `|x|`; `sigmoid` is `e / (1 + e)` with `e = exp(-|x|)`, flipped for `x >= 0`; `pow` is
//! `exp(b * log|a|)` with the CPU's special cases and its shortcuts for the common
//! constant exponents. Stores to `i32` buffers truncate and saturate, NaN -> 0, as on the
//! CPU. `Uniform` is Philox4x32-10 in `u32` arithmetic, the high words of its 32x32-bit
//! products from 16-bit limbs (WGSL has no 64-bit integers), bit-identical to
//! [`crate::rng::uniform_at`]. Reductions and contractions accumulate in `f32` (the CPU sums in `f64`).
//!
//! Beyond [`Kernel::validate`], this emitter refuses index constants outside `i32`,
//! index divisions by a non-positive constant, and non-`f32` contraction operands.

mod emit;
#[cfg(test)]
mod tests;

use crate::ir::{Dim, Kernel, KernelBody, KernelError};

/// Invocations per workgroup of maps and reductions.
pub const WORKGROUP_SIZE: u32 = 256;
/// Side of a contraction's output tile (the workgroup is `TILE x TILE`).
pub const TILE: u32 = 16;
const _: () = assert!(
    TILE * TILE == WORKGROUP_SIZE,
    "one workgroup size for every strategy"
);
/// Reductions of at least this many points per output use a workgroup per output.
pub const TREE_REDUCE_MIN: u64 = 64;

/// The line that starts each kernel's module in [`emit_wgsl`]'s text.
const MODULE_MARKER: &str = "// @kernel ";

/// How a kernel's work is cut into workgroups (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Strategy {
    Map,
    /// One invocation per output point.
    ReduceLoop,
    /// One workgroup per output point.
    ReduceTree,
    Contract,
    /// One invocation per column of a scatter-add's table.
    Scatter,
    /// Each part of a [`KernelBody::Parts`] kernel with its own strategy, over its own
    /// range of the workgroups.
    Parts,
}

/// The strategy the emitter uses for `kernel`.
pub fn strategy(kernel: &Kernel) -> Strategy {
    body_strategy(&kernel.body)
}

fn body_strategy(body: &KernelBody) -> Strategy {
    match body {
        KernelBody::Parts(_) => Strategy::Parts,
        KernelBody::Map { .. } => Strategy::Map,
        KernelBody::Reduce { reduce, .. } => {
            let fixed: Option<u64> = reduce.iter().try_fold(1u64, |acc, d| match d {
                Dim::Fixed(n) => acc.checked_mul(*n),
                Dim::Batch => None,
            });
            match fixed {
                Some(n) if n < TREE_REDUCE_MIN => Strategy::ReduceLoop,
                _ => Strategy::ReduceTree,
            }
        }
        KernelBody::Contract(_) => Strategy::Contract,
        KernelBody::ScatterAdd(_) => Strategy::Scatter,
    }
}

/// The columns of a scatter-add's table, the invocations it needs (0 for a buffer that
/// is not a table, which validation refuses).
fn scatter_columns(kernel: &Kernel, s: &crate::ir::ScatterAdd) -> u64 {
    kernel.table_extent(s.out).map_or(0, |(_, cols)| cols)
}

/// The number of `u32` words of a kernel's uniform `Params`: the batch size, then the
/// element offset of each buffer slot in `mem`, padded to a multiple of 4 (16 bytes).
pub fn params_words(kernel: &Kernel) -> usize {
    (1 + kernel.buffers.len()).next_multiple_of(4)
}

/// The `Params` words of one launch: `batch`, then `offsets[slot]`, zero-padded.
pub fn params(kernel: &Kernel, batch: u32, offsets: &[u32]) -> Vec<u32> {
    let mut words = vec![0u32; params_words(kernel)];
    words[0] = batch;
    for (w, o) in words[1..].iter_mut().zip(offsets) {
        *w = *o;
    }
    words
}

/// How many workgroups (linear, before folding) one launch of `kernel` at `batch` needs;
/// `None` if the count overflows `u64`.
pub fn workgroups(kernel: &Kernel, batch: u64) -> Option<u64> {
    body_workgroups(kernel, &kernel.body, batch)
}

fn body_workgroups(kernel: &Kernel, body: &KernelBody, batch: u64) -> Option<u64> {
    let product = |dims: &[Dim]| {
        dims.iter()
            .try_fold(1u64, |acc, d| acc.checked_mul(d.resolve(batch)))
    };
    match (body, body_strategy(body)) {
        (KernelBody::Parts(parts), _) => parts.iter().try_fold(0u64, |acc, p| {
            acc.checked_add(body_workgroups(kernel, p, batch)?)
        }),
        (KernelBody::Map { space, .. }, _)
        | (KernelBody::Reduce { space, .. }, Strategy::ReduceLoop) => {
            Some(product(space)?.div_ceil(u64::from(WORKGROUP_SIZE)))
        }
        (KernelBody::Reduce { space, .. }, _) => product(space),
        (KernelBody::Contract(c), _) => {
            let tiles = |d: Dim| d.resolve(batch).div_ceil(u64::from(TILE));
            product(&c.batch)?
                .checked_mul(tiles(c.m))?
                .checked_mul(tiles(c.n))
        }
        (KernelBody::ScatterAdd(s), _) => {
            Some(scatter_columns(kernel, s).div_ceil(u64::from(WORKGROUP_SIZE)))
        }
    }
}

/// The largest number of invocations (or of points of a reduction's folded space) one
/// launch indexes with a `u32`, so the runtime can refuse a batch that would overflow it.
pub fn points(kernel: &Kernel, batch: u64) -> Option<u64> {
    body_points(kernel, &kernel.body, batch)
}

fn body_points(kernel: &Kernel, body: &KernelBody, batch: u64) -> Option<u64> {
    let product = |dims: &[Dim]| {
        dims.iter()
            .try_fold(1u64, |acc, d| acc.checked_mul(d.resolve(batch)))
    };
    match body {
        KernelBody::Parts(parts) => parts
            .iter()
            .try_fold(0u64, |acc, p| Some(acc.max(body_points(kernel, p, batch)?))),
        KernelBody::Map { space, .. } => product(space),
        KernelBody::Reduce { space, reduce, .. } => Some(product(space)?.max(product(reduce)?)),
        KernelBody::Contract(c) => product(&c.space()),
        // The loop over the points counts them in a `u32` too.
        KernelBody::ScatterAdd(s) => Some(scatter_columns(kernel, s).max(product(&s.over)?)),
    }
}

/// Emits one WGSL module per kernel, each validated by naga, as one text: each module
/// starts with a line `// @kernel NAME` (read back by [`split_modules`]).
pub fn emit_wgsl(kernels: &[Kernel]) -> Result<String, KernelError> {
    let mut text = String::new();
    for kernel in kernels {
        text.push_str(MODULE_MARKER);
        text.push_str(&kernel.name);
        text.push('\n');
        text.push_str(&emit_kernel(kernel)?);
    }
    Ok(text)
}

/// Emits the WGSL module of one kernel (entry point `main`) and validates it with naga.
pub fn emit_kernel(kernel: &Kernel) -> Result<String, KernelError> {
    kernel.validate()?;
    let source = emit::emit_module(kernel)?;
    validate_wgsl(&kernel.name, &source)?;
    Ok(source)
}

/// Parses and validates a WGSL module with naga. A module naga refuses is an emitter
/// bug; the error names the kernel and carries naga's rendered diagnostic.
pub fn validate_wgsl(kernel: &str, source: &str) -> Result<(), KernelError> {
    let err = |what: &str, detail: String| KernelError {
        kernel: kernel.to_string(),
        message: format!("generated WGSL {what} (emitter bug):\n{detail}"),
    };
    let module = naga::front::wgsl::parse_str(source)
        .map_err(|e| err("does not parse", e.emit_to_string(source)))?;
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::default(),
    )
    .validate(&module)
    .map_err(|e| err("does not validate", e.emit_to_string(source)))?;
    Ok(())
}

/// Splits [`emit_wgsl`]'s text into `(kernel name, module source)` pairs, in order.
/// Text before the first marker is ignored.
pub fn split_modules(text: &str) -> Vec<(&str, &str)> {
    let mut starts: Vec<(usize, usize, &str)> = Vec::new();
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix(MODULE_MARKER) {
            starts.push((pos, pos + line.len(), rest.trim()));
        }
        pos += line.len();
    }
    starts
        .iter()
        .enumerate()
        .map(|(i, &(_, body, name))| {
            let end = starts.get(i + 1).map_or(text.len(), |s| s.0);
            (name, &text[body..end])
        })
        .collect()
}

//! Every invariant of an artifact that running it relies on.
//!
//! A session hands raw pointers to generated code, so anything the manifest says about
//! sizes and places must be true before the first launch:
//!
//! 1. every kernel passes [`Kernel::validate`](strata_kernels::ir::Kernel::validate) and
//!    kernel names are unique;
//! 2. no buffer has the batch dimension twice, persistent buffers have none, and every
//!    buffer's byte size is addressable;
//! 3. every arena buffer lies inside the arena for every batch size (rule below) and its
//!    offset is a multiple of its element size;
//! 4. entries have unique names, their ports unique names and existing buffers, and
//!    inputs live in the arena;
//! 5. every launch names an existing kernel and binds exactly one buffer per kernel slot,
//!    of the slot's dtype and shape (so a kernel's view of its buffers is the buffers),
//!    a contraction's output shares no byte with its operands (the product is
//!    written into the output while the operands are read), and no two buffer slots a
//!    launch writes share a byte (the launch's threads write them apart);
//! 6. the weights hold exactly the persistent buffers, with their dtypes and shapes;
//! 7. the CLIF text, when carried, defines a function for every kernel (a textual check; compile errors
//!    come when a session compiles it);
//! 8. machine code, when carried, has exactly one function per kernel function, each
//!    inside the code section ([`crate::machine_code`]);
//! 9. every load, store and `gemm` operand of every kernel stays inside its buffer
//!    ([`strata_kernels::bounds`]): here at batch size 1, and by a session before its
//!    first run at each further batch size ([`validate_bounds`]). With rule 5, a kernel's
//!    slots are its buffers, so a kernel inside its slots is inside its storage.
//!
//! # The arena rule
//! Offsets, sizes and the arena are [`Extent`]s, `fixed + per_batch * batch` bytes. A
//! buffer at `offset` of `size` fits in `arena` for *every* batch size when
//!
//! ```text
//! offset.fixed     + size.fixed     <= arena.fixed      and
//! offset.per_batch + size.per_batch <= arena.per_batch
//! ```
//!
//! since then `end(b) = (offset.fixed + size.fixed) + (offset.per_batch +
//! size.per_batch) * b <= arena(b)` for all `b >= 0`. A memory plan made in these units
//! (as the compiler makes it) always satisfies the rule; one that only fits for some batch
//! sizes is refused.

use std::collections::HashSet;

use strata_kernels::bounds::check_bounds;
use strata_kernels::ir::{Dim, Kernel, KernelBody};
use strata_kernels::residue::{residues_apart, written_residues};

use super::Artifact;
use super::manifest::{BufferInfo, Entry, Extent, Location, Manifest};
use super::weights;
use crate::error::ArtifactError;
use crate::tensor::type_string;

impl Artifact {
    /// Checks every invariant listed in the module docs.
    pub fn validate(&self) -> Result<(), ArtifactError> {
        let manifest = &self.manifest;
        validate_kernels(manifest)?;
        validate_buffers(manifest)?;
        validate_entries(manifest)?;
        weights::match_weights(manifest, &self.weights)?;
        validate_clif(manifest, &self.clif)?;
        validate_wgsl(manifest, &self.wgsl)?;
        if let Some(code) = &self.machine_code {
            code.validate(manifest)?;
        }
        validate_bounds(manifest, 1)?;
        Ok(())
    }
}

fn validate_kernels(manifest: &Manifest) -> Result<(), ArtifactError> {
    let mut names = HashSet::new();
    for kernel in &manifest.kernels {
        kernel.validate()?;
        if !names.insert(kernel.name.as_str()) {
            return Err(ArtifactError::DuplicateKernel {
                name: kernel.name.clone(),
            });
        }
    }
    Ok(())
}

/// Rule 9 at one batch size: every memory access of every kernel stays inside the
/// kernel's buffer slots. The manifest must have passed [`Artifact::validate`].
pub fn validate_bounds(manifest: &Manifest, batch: u64) -> Result<(), ArtifactError> {
    for kernel in &manifest.kernels {
        check_bounds(kernel, batch).map_err(ArtifactError::OutOfBounds)?;
    }
    Ok(())
}

fn validate_buffers(manifest: &Manifest) -> Result<(), ArtifactError> {
    let mut keys = HashSet::new();
    for info in &manifest.buffers {
        let buffer = || info.name.clone();
        if info.shape.iter().filter(|d| **d == Dim::Batch).count() > 1 {
            return Err(ArtifactError::RepeatedBatch { buffer: buffer() });
        }
        let size = info
            .byte_size()
            .ok_or_else(|| ArtifactError::SizeOverflow { buffer: buffer() })?;
        match &info.location {
            Location::Persistent { key } => {
                if info.shape.contains(&Dim::Batch) {
                    return Err(ArtifactError::BatchInPersistent { buffer: buffer() });
                }
                if usize::try_from(size.fixed).is_err() {
                    return Err(ArtifactError::SizeOverflow { buffer: buffer() });
                }
                if !keys.insert(key.as_str()) {
                    return Err(ArtifactError::DuplicateWeightKey { key: key.clone() });
                }
            }
            Location::Arena { offset } | Location::Io { offset } => {
                let (block, arena) = match &info.location {
                    Location::Io { .. } => ("I/O block", manifest.io),
                    _ => ("arena", manifest.arena),
                };
                let align = info.dtype.size_bytes();
                if offset.fixed % align != 0 || offset.per_batch % align != 0 {
                    return Err(ArtifactError::MisalignedBuffer {
                        buffer: buffer(),
                        offset: *offset,
                    });
                }
                let fits = |o: u64, s: u64, a: u64| o.checked_add(s).is_some_and(|end| end <= a);
                if !fits(offset.fixed, size.fixed, arena.fixed)
                    || !fits(offset.per_batch, size.per_batch, arena.per_batch)
                {
                    return Err(ArtifactError::OutsideArena {
                        buffer: buffer(),
                        block,
                        offset: *offset,
                        size,
                        arena,
                    });
                }
            }
            Location::Window(w) => {
                let bad = |reason: &str| ArtifactError::BadWindow {
                    buffer: buffer(),
                    reason: reason.into(),
                };
                let parent = manifest
                    .buffers
                    .get(w.parent)
                    .ok_or_else(|| bad("its parent does not exist"))?;
                if matches!(parent.location, Location::Window(_)) {
                    return Err(bad("its parent is a window itself"));
                }
                if parent.dtype != info.dtype
                    || parent.shape.contains(&Dim::Batch) != info.shape.contains(&Dim::Batch)
                {
                    return Err(bad("its element type or batch dimension differs"));
                }
                if w.step > 1 || w.modulus == 1 || w.span == 0 {
                    return Err(bad(
                        "its step is not 0 or 1, its modulus is 1 or its span 0",
                    ));
                }
                // The launch checks each slice against the parent's bytes when it runs; a
                // window that never fits is refused here already.
                let (Some(ps), Some(ws)) = (parent.byte_size(), info.byte_size()) else {
                    return Err(bad("its size overflows"));
                };
                if ws.fixed % w.span != 0 || ws.per_batch % w.span != 0 {
                    return Err(bad("its size is not a multiple of its span"));
                }
                let end = |p: u64, s: u64| {
                    (w.index(0).checked_mul(s / w.span))
                        .and_then(|o| o.checked_add(s))
                        .is_some_and(|e| e <= p)
                };
                if ws.fixed == 0 && ws.per_batch == 0
                    || !end(ps.fixed, ws.fixed)
                    || !end(ps.per_batch, ws.per_batch)
                {
                    return Err(bad("its first slice lies outside the parent"));
                }
            }
        }
    }
    Ok(())
}

fn validate_entries(manifest: &Manifest) -> Result<(), ArtifactError> {
    let mut entry_names = HashSet::new();
    for entry in &manifest.entries {
        if !entry_names.insert(entry.name.as_str()) {
            return Err(ArtifactError::DuplicateEntry {
                name: entry.name.clone(),
            });
        }
        for (side, ports) in [("input", &entry.inputs), ("output", &entry.outputs)] {
            let mut port_names = HashSet::new();
            for port in ports {
                if !port_names.insert(port.name.as_str()) {
                    return Err(ArtifactError::DuplicatePort {
                        entry: entry.name.clone(),
                        side,
                        name: port.name.clone(),
                    });
                }
                let info = buffer(manifest, port.buffer, || {
                    format!("entry `{}`, {side} `{}`", entry.name, port.name)
                })?;
                // An output may also be a persistent buffer: its current value is read.
                let allowed = matches!(
                    (&info.location, side),
                    (Location::Io { .. }, _) | (Location::Persistent { .. }, "output")
                );
                if !allowed {
                    return Err(ArtifactError::PortNotInIo {
                        entry: entry.name.clone(),
                        side,
                        name: port.name.clone(),
                    });
                }
            }
        }
        let mut next = 0;
        for lp in &entry.loops {
            if lp.start < next
                || lp.start >= lp.end
                || lp.end > entry.launches.len()
                || lp.count == 0
            {
                return Err(ArtifactError::BadLoop {
                    entry: entry.name.clone(),
                    reason: format!(
                        "loop over launches {}..{} ({} times) is empty, overlaps another or lies outside its {} launches",
                        lp.start,
                        lp.end,
                        lp.count,
                        entry.launches.len()
                    ),
                });
            }
            next = lp.end;
        }
        for (index, launch) in entry.launches.iter().enumerate() {
            let Some(kernel) = manifest.kernels.get(launch.kernel) else {
                return Err(ArtifactError::UnknownKernel {
                    entry: entry.name.clone(),
                    launch: index,
                    kernel: launch.kernel,
                    count: manifest.kernels.len(),
                });
            };
            if launch.bindings.len() != kernel.buffers.len() {
                return Err(ArtifactError::LaunchArity {
                    entry: entry.name.clone(),
                    launch: index,
                    kernel: kernel.name.clone(),
                    expected: kernel.buffers.len(),
                    got: launch.bindings.len(),
                });
            }
            for (slot, &id) in kernel.buffers.iter().zip(&launch.bindings) {
                let info = buffer(manifest, id, || {
                    format!(
                        "entry `{}`, launch {index}, slot `{}` of kernel `{}`",
                        entry.name, slot.name, kernel.name
                    )
                })?;
                if info.dtype != slot.dtype || info.shape != slot.shape {
                    return Err(ArtifactError::BindingType {
                        site: format!(
                            "entry `{}`, launch {index}: slot `{}` of kernel `{}`",
                            entry.name, slot.name, kernel.name
                        ),
                        buffer: info.name.clone(),
                        expected: type_string(slot.dtype, &slot.shape),
                        found: type_string(info.dtype, &info.shape),
                    });
                }
            }
            check_parts_apart(manifest, entry, index, kernel, &launch.bindings)?;
            check_outputs_apart(manifest, entry, index, kernel, &launch.bindings)?;
            for c in kernel.body.bodies().iter().filter_map(|b| match b {
                KernelBody::Contract(c) => Some(c),
                _ => None,
            }) {
                let bound = |slot: usize| launch.bindings.get(slot).copied();
                for operand in c.products().flat_map(|(_, a, b)| [a.buf, b.buf]) {
                    let (Some(out), Some(input)) = (bound(c.out), bound(operand)) else {
                        continue;
                    };
                    if may_overlap(manifest, out, input) {
                        return Err(ArtifactError::AliasedContraction {
                            entry: entry.name.clone(),
                            launch: index,
                            kernel: kernel.name.clone(),
                            operand: name_of(manifest, input),
                            out: name_of(manifest, out),
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

/// Refuses a launch of a kernel with parts where a buffer one part writes may share
/// bytes with a buffer another part uses: the parts run in any order or at once.
fn check_parts_apart(
    manifest: &Manifest,
    entry: &Entry,
    index: usize,
    kernel: &Kernel,
    bindings: &[usize],
) -> Result<(), ArtifactError> {
    let parts = kernel.body.bodies();
    if parts.len() < 2 {
        return Ok(());
    }
    let bound = |slots: Vec<usize>| -> Vec<usize> {
        slots
            .iter()
            .filter_map(|s| bindings.get(*s).copied())
            .collect()
    };
    let written: Vec<Vec<usize>> = parts.iter().map(|p| bound(p.written_slots())).collect();
    let used: Vec<Vec<usize>> = parts
        .iter()
        .map(|p| bound([p.read_slots(), p.written_slots()].concat()))
        .collect();
    for (i, writes) in written.iter().enumerate() {
        for (j, uses) in used.iter().enumerate().filter(|(j, _)| *j != i) {
            for &w in writes {
                if let Some(&clash) = uses.iter().find(|&&u| {
                    may_overlap(manifest, w, u)
                        && !blocks_apart(manifest, kernel, bindings, (i, w), (j, u))
                }) {
                    return Err(ArtifactError::AliasedParts {
                        entry: entry.name.clone(),
                        launch: index,
                        kernel: kernel.name.clone(),
                        parts: (i, j),
                        written: name_of(manifest, w),
                        used: name_of(manifest, clash),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Refuses a launch where two buffer slots the kernel writes may share bytes: its
/// threads write their rows of each output at the same time, and a store to one would
/// land in the other.
fn check_outputs_apart(
    manifest: &Manifest,
    entry: &Entry,
    index: usize,
    kernel: &Kernel,
    bindings: &[usize],
) -> Result<(), ArtifactError> {
    // Each written slot with the part writing it.
    let written: Vec<(usize, usize)> = kernel
        .body
        .bodies()
        .iter()
        .enumerate()
        .flat_map(|(part, body)| body.written_slots().into_iter().map(move |s| (s, part)))
        .collect();
    for (i, &(first, first_part)) in written.iter().enumerate() {
        for &(second, second_part) in &written[i + 1..] {
            let (Some(&a), Some(&b)) = (bindings.get(first), bindings.get(second)) else {
                continue;
            };
            let apart = first_part != second_part
                && blocks_apart(
                    manifest,
                    kernel,
                    bindings,
                    (first_part, a),
                    (second_part, b),
                );
            if may_overlap(manifest, a, b) && !apart {
                let slot = |s: usize| kernel.buffers.get(s).map_or("?", |b| b.name.as_str());
                return Err(ArtifactError::AliasedOutputs {
                    entry: entry.name.clone(),
                    launch: index,
                    kernel: kernel.name.clone(),
                    outputs: format!(
                        "`{}` and `{}`, bound to `{}` and `{}`",
                        slot(first),
                        slot(second),
                        name_of(manifest, a),
                        name_of(manifest, b)
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Whether part `i`'s use of buffer `a` and part `j`'s of buffer `b` are writes of
/// blocks proven disjoint ([`strata_kernels::residue`]), as the parts writing a
/// concatenation's operands are: `a` and `b` are the same memory (one buffer, or equal
/// one-slice windows), and neither part reads anything overlapping it.
fn blocks_apart(
    manifest: &Manifest,
    kernel: &Kernel,
    bindings: &[usize],
    (i, a): (usize, usize),
    (j, b): (usize, usize),
) -> bool {
    if !same_memory(manifest, a, b) {
        return false;
    }
    let parts = kernel.body.bodies();
    let buffer = |s: usize| bindings.get(s).copied();
    // The residues of each slot of `part` writing `buf`, unless the part reads it.
    let residues = |part: usize, buf: usize| {
        let body = parts.get(part)?;
        let reads_it = |s: usize| buffer(s).is_some_and(|x| may_overlap(manifest, x, buf));
        if body.read_slots().into_iter().any(reads_it) {
            return None;
        }
        let writes_it = |s: &usize| buffer(*s).is_some_and(|x| same_memory(manifest, x, buf));
        body.written_slots()
            .into_iter()
            .filter(writes_it)
            .map(|s| {
                let shape = &kernel.buffers.get(s)?.shape;
                let r = written_residues(body, s, shape);
                (!r.is_empty()).then_some(r)
            })
            .collect::<Option<Vec<_>>>()
    };
    let (Some(ra), Some(rb)) = (residues(i, a), residues(j, b)) else {
        return false;
    };
    ra.iter().all(|x| rb.iter().all(|y| residues_apart(x, y)))
}

/// Whether buffers `a` and `b` are the same bytes: one buffer, or one-slice windows of
/// one parent at the same index at every step.
fn same_memory(manifest: &Manifest, a: usize, b: usize) -> bool {
    a == b || same_slice_in_step(manifest, a, b) == Some(true)
}

/// For two one-slice windows of one parent, of one size, moving together: whether they
/// are the same slice (at every step, or at none). None for other buffers.
fn same_slice_in_step(manifest: &Manifest, a: usize, b: usize) -> Option<bool> {
    let (ia, ib) = (manifest.buffers.get(a)?, manifest.buffers.get(b)?);
    let (Location::Window(wa), Location::Window(wb)) = (&ia.location, &ib.location) else {
        return None;
    };
    let in_step = wa.parent == wb.parent
        && wa.step == wb.step
        && wa.modulus == wb.modulus
        && wa.span == 1
        && wb.span == 1
        && ia.byte_size() == ib.byte_size();
    in_step.then(|| wa.index(0) == wb.index(0))
}

fn name_of(manifest: &Manifest, id: usize) -> String {
    manifest
        .buffers
        .get(id)
        .map_or_else(|| format!("#{id}"), |b| b.name.clone())
}

/// Whether buffers `a` and `b` may share bytes at some batch size. Distinct persistent
/// buffers never do; arena buffers do unless one ends before the other starts in both
/// parts of their extents (the arena rule's reasoning, applied to two buffers).
fn may_overlap(manifest: &Manifest, a: usize, b: usize) -> bool {
    if a == b {
        return true;
    }
    if let Some(same_slice) = same_slice_in_step(manifest, a, b) {
        return same_slice;
    }
    let location = |id: usize| manifest.buffers.get(id).map(|i| &i.location);
    match (location(a), location(b)) {
        (Some(Location::Window(w)), _) => return may_overlap(manifest, w.parent, b),
        (_, Some(Location::Window(w))) => return may_overlap(manifest, a, w.parent),
        _ => {}
    }
    let region = |id: usize| {
        let info = manifest.buffers.get(id)?;
        match &info.location {
            Location::Arena { offset } => Some((false, *offset, info.byte_size()?)),
            Location::Io { offset } => Some((true, *offset, info.byte_size()?)),
            Location::Persistent { .. } | Location::Window(_) => None,
        }
    };
    let (Some((io_a, oa, sa)), Some((io_b, ob, sb))) = (region(a), region(b)) else {
        return false;
    };
    if io_a != io_b {
        return false;
    }
    let empty = |s: Extent| s.fixed == 0 && s.per_batch == 0;
    let before = |o1: Extent, s1: Extent, o2: Extent| {
        o1.fixed.saturating_add(s1.fixed) <= o2.fixed
            && o1.per_batch.saturating_add(s1.per_batch) <= o2.per_batch
    };
    !(empty(sa) || empty(sb) || before(oa, sa, ob) || before(ob, sb, oa))
}

fn buffer(
    manifest: &Manifest,
    id: usize,
    context: impl FnOnce() -> String,
) -> Result<&BufferInfo, ArtifactError> {
    manifest
        .buffers
        .get(id)
        .ok_or_else(|| ArtifactError::UnknownBuffer {
            context: context(),
            buffer: id,
            count: manifest.buffers.len(),
        })
}

/// Names of the functions a CLIF text defines: `function %name(...)` gives `name`.
pub fn clif_function_names(clif: &str) -> HashSet<&str> {
    clif.lines()
        .filter_map(|line| line.trim_start().strip_prefix("function"))
        .filter_map(|rest| rest.trim_start().strip_prefix('%'))
        .filter_map(|rest| {
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
            Some(&rest[..end])
        })
        .collect()
}

fn validate_clif(manifest: &Manifest, clif: &str) -> Result<(), ArtifactError> {
    // A built executable carries no CLIF text (the code runs from the kernel IR or the
    // machine code section; `strata ir --emit clif` prints it).
    if clif.is_empty() {
        return Ok(());
    }
    let defined = clif_function_names(clif);
    for kernel in &manifest.kernels {
        for function in kernel.function_names() {
            if !defined.contains(function.as_str()) {
                return Err(ArtifactError::MissingFunction {
                    function,
                    kernel: kernel.name.clone(),
                });
            }
        }
    }
    Ok(())
}

/// GPU code is optional; when present it must hold one module per kernel. (Each module
/// was validated by naga when it was generated; wgpu validates it again at load.)
fn validate_wgsl(manifest: &Manifest, wgsl: &str) -> Result<(), ArtifactError> {
    if wgsl.is_empty() {
        return Ok(());
    }
    let defined: HashSet<&str> = strata_kernels::gpu::split_modules(wgsl)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    for kernel in &manifest.kernels {
        if !defined.contains(kernel.name.as_str()) {
            return Err(ArtifactError::MissingWgslModule {
                kernel: kernel.name.clone(),
            });
        }
    }
    Ok(())
}

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
//!    of the slot's dtype and shape (so a kernel's view of its buffers is the buffers);
//! 6. the weights hold exactly the persistent buffers, with their dtypes and shapes;
//! 7. the CLIF text defines a function for every kernel (a textual check; compile errors
//!    come when a session compiles it).
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

use strata_kernels::ir::Dim;

use super::Artifact;
use super::manifest::{BufferInfo, Extent, Location, Manifest};
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
        Ok(())
    }
}

/// A buffer's size in bytes as an [`Extent`], or None if its batch dimension repeats or
/// the size overflows. (Unlike `BufferInfo::byte_size`, never overflows silently.)
pub fn checked_byte_size(info: &BufferInfo) -> Option<Extent> {
    let mut fixed = info.dtype.size_bytes();
    let mut batch_dims = 0;
    for d in &info.shape {
        match d {
            Dim::Fixed(n) => fixed = fixed.checked_mul(*n)?,
            Dim::Batch => batch_dims += 1,
        }
    }
    match batch_dims {
        0 => Some(Extent {
            fixed,
            per_batch: 0,
        }),
        1 => Some(Extent {
            fixed: 0,
            per_batch: fixed,
        }),
        _ => None,
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

fn validate_buffers(manifest: &Manifest) -> Result<(), ArtifactError> {
    let mut keys = HashSet::new();
    for info in &manifest.buffers {
        let buffer = || info.name.clone();
        if info.shape.iter().filter(|d| **d == Dim::Batch).count() > 1 {
            return Err(ArtifactError::RepeatedBatch { buffer: buffer() });
        }
        let size = checked_byte_size(info).ok_or_else(|| ArtifactError::SizeOverflow {
            buffer: buffer(),
        })?;
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
            Location::Arena { offset } => {
                let align = info.dtype.size_bytes();
                if offset.fixed % align != 0 || offset.per_batch % align != 0 {
                    return Err(ArtifactError::MisalignedBuffer {
                        buffer: buffer(),
                        offset: *offset,
                    });
                }
                let arena = manifest.arena;
                let fits = |o: u64, s: u64, a: u64| o.checked_add(s).is_some_and(|end| end <= a);
                if !fits(offset.fixed, size.fixed, arena.fixed)
                    || !fits(offset.per_batch, size.per_batch, arena.per_batch)
                {
                    return Err(ArtifactError::OutsideArena {
                        buffer: buffer(),
                        offset: *offset,
                        size,
                        arena,
                    });
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
                if side == "input" && !matches!(info.location, Location::Arena { .. }) {
                    return Err(ArtifactError::InputNotInArena {
                        entry: entry.name.clone(),
                        name: port.name.clone(),
                    });
                }
            }
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
                        entry: entry.name.clone(),
                        launch: index,
                        kernel: kernel.name.clone(),
                        slot: slot.name.clone(),
                        buffer: info.name.clone(),
                        expected: type_string(slot.dtype, &slot.shape),
                        found: type_string(info.dtype, &info.shape),
                    });
                }
            }
        }
    }
    Ok(())
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
    let defined = clif_function_names(clif);
    for kernel in &manifest.kernels {
        if !defined.contains(kernel.name.as_str()) {
            return Err(ArtifactError::MissingFunction {
                kernel: kernel.name.clone(),
            });
        }
    }
    Ok(())
}


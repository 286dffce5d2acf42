//! A CPU session's scratch memory: the arena and the I/O block of a run, 64-byte aligned,
//! grown when a larger batch needs more and kept between runs.
//!
//! It comes zeroed from the allocator and is never written to clear it: a large
//! allocation is then fresh pages the kernel maps on first touch, so a run touches only
//! the pages its entry's buffers lie in (an executable's batch-1 `infer` a few KB of an
//! arena sized for the train step's gradients). That needs an alignment the allocator
//! gives zeroed memory for without clearing it itself (16 bytes: `calloc`); a larger one
//! (64) makes the standard allocator write every byte. So the allocation is made with
//! 16 and the arena starts at its first 64-byte boundary.

use strata_artifact::manifest::{Location, Manifest};

/// The alignment every arena buffer's offset is planned to (a cache line).
pub(crate) const ALIGN: usize = 64;

#[derive(Default)]
pub(crate) struct Arena {
    storage: Vec<u128>,
}

impl Arena {
    /// At least `bytes` of arena, 64-byte aligned. Its contents are unspecified (zeros,
    /// or what earlier runs left): kernels write before they read. Err when the memory
    /// cannot be had.
    pub(crate) fn reserve(&mut self, bytes: usize) -> Result<&mut [u8], ()> {
        if self.len() < bytes {
            let words = bytes
                .checked_add(ALIGN)
                .ok_or(())?
                .div_ceil(size_of::<u128>());
            self.storage = bytemuck::allocation::try_zeroed_vec(words)?;
        }
        Ok(self.bytes_mut())
    }

    /// The arena as it is, 64-byte aligned (empty before the first `reserve`).
    pub(crate) fn bytes(&self) -> &[u8] {
        let all: &[u8] = bytemuck::cast_slice(&self.storage);
        let skip = all.as_ptr().align_offset(ALIGN).min(all.len());
        &all[skip..]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        let all: &mut [u8] = bytemuck::cast_slice_mut(&mut self.storage);
        let skip = all.as_ptr().align_offset(ALIGN).min(all.len());
        &mut all[skip..]
    }

    fn len(&self) -> usize {
        self.bytes().len()
    }
}

/// The run's scratch allocation at one batch size: the arena, then the I/O block at the
/// next cache line.
pub(crate) struct Blocks {
    io_base: usize,
    pub(crate) bytes: usize,
}

impl Blocks {
    pub(crate) fn new(manifest: &Manifest, batch: u64) -> Option<Blocks> {
        let size = |e: strata_artifact::manifest::Extent| usize::try_from(e.resolve(batch)?).ok();
        let io_base = size(manifest.arena)?.checked_next_multiple_of(ALIGN)?;
        Some(Blocks {
            io_base,
            bytes: io_base.checked_add(size(manifest.io)?)?,
        })
    }

    /// Byte offset (in the allocation) and length of arena or I/O buffer `id` at `batch`
    /// (None for other buffers, or if too large to address).
    pub(crate) fn region(
        &self,
        manifest: &Manifest,
        id: usize,
        batch: u64,
    ) -> Option<(usize, usize)> {
        let info = manifest.buffers.get(id)?;
        let offset = match &info.location {
            Location::Arena { offset } => usize::try_from(offset.resolve(batch)?).ok()?,
            Location::Io { offset } => self
                .io_base
                .checked_add(usize::try_from(offset.resolve(batch)?).ok()?)?,
            Location::Persistent { .. } | Location::Window(_) => return None,
        };
        let len = info.elements(batch)?.checked_mul(info.dtype.size_bytes())?;
        Some((offset, usize::try_from(len).ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_arena_is_aligned_and_large_enough_at_every_size() {
        let mut arena = Arena::default();
        assert!(arena.bytes().is_empty());
        for bytes in [1, 63, 64, 65, 4096, 1 << 20, 100] {
            let got = arena.reserve(bytes).expect("memory");
            assert!(got.len() >= bytes, "{bytes}: {}", got.len());
            assert_eq!(got.as_ptr() as usize % ALIGN, 0, "{bytes}");
        }
        // Shrinking requests keep the larger arena.
        assert!(arena.bytes().len() >= 1 << 20);
    }

    #[test]
    fn a_new_arena_reads_as_zeros() {
        let mut arena = Arena::default();
        assert!(
            arena
                .reserve(3 << 20)
                .expect("memory")
                .iter()
                .all(|&b| b == 0)
        );
    }
}

//! The bytes an artifact is read from: owned, or a part of a file mapped into memory,
//! shared without a copy.
//!
//! A built executable's artifact is mostly weights. Reading it into memory and then
//! copying the weights out of it touched every page of them twice before the model ran;
//! a start now maps the artifact's part of its own file ([`Bytes::map_file`]), and the
//! artifact keeps a view of the weights in that mapping
//! ([`crate::Artifact::from_shared`]).

use std::fmt;
use std::fs::File;
use std::ops::{Deref, Range};
use std::sync::Arc;

/// Immutable bytes, cheap to clone and to slice.
#[derive(Clone)]
pub struct Bytes {
    owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
    range: Range<usize>,
}

impl Bytes {
    /// Maps `len` bytes of `file` from `offset`, read-only, reading them in as it maps
    /// (one system call instead of a page fault per page touched).
    ///
    /// The mapping is only as stable as the file: whoever maps a file must keep it from
    /// being changed while the bytes live. Strata maps only the running executable, which
    /// the operating system refuses to let anyone write while it runs (`ETXTBSY`).
    pub fn map_file(file: &File, offset: u64, len: usize) -> std::io::Result<Bytes> {
        // SAFETY: see above; the mapping is private and read-only.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(offset)
                .len(len)
                .populate()
                .map(file)?
        };
        Ok(Bytes {
            owner: Arc::new(map),
            range: 0..len,
        })
    }

    /// The bytes at `range` of these, sharing their storage.
    ///
    /// # Panics
    /// If `range` is not inside these bytes (as slicing does).
    pub fn slice(&self, range: Range<usize>) -> Bytes {
        assert!(
            range.start <= range.end && range.end <= self.len(),
            "{range:?} is outside {} bytes",
            self.len()
        );
        Bytes {
            owner: Arc::clone(&self.owner),
            range: self.range.start + range.start..self.range.start + range.end,
        }
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &(*self.owner).as_ref()[self.range.clone()]
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Bytes {
        let len = v.len();
        Bytes {
            owner: Arc::new(v),
            range: 0..len,
        }
    }
}

impl Default for Bytes {
    fn default() -> Bytes {
        Bytes::from(Vec::new())
    }
}

impl PartialEq for Bytes {
    fn eq(&self, other: &Bytes) -> bool {
        **self == **other
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.len())
    }
}

/// How many bytes after `len` bytes reach the next multiple of `align`, a power of two
/// (0 at a multiple).
pub(crate) fn padding_to(len: u64, align: usize) -> usize {
    (len.wrapping_neg() % align as u64) as usize
}

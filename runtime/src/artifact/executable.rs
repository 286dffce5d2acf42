//! A standalone executable: the runtime's stub binary with an artifact appended.
//!
//! ```text
//! [stub binary][artifact bytes][artifact length: u64 LE][TRAILER_MAGIC: 8 bytes]
//! ```
//!
//! Operating systems load an executable by its headers and ignore bytes after its last
//! section, so the stub runs unchanged; at start it reads its own file and finds the
//! artifact from the end. Only the last 16 bytes are looked at, so the magic's copy in the
//! stub's own read-only data never confuses the search.

use crate::error::ArtifactError;

/// The last eight bytes of an executable that carries an artifact.
pub const TRAILER_MAGIC: [u8; 8] = *b"\x89STRAT\xe5\n";

const TRAILER_LEN: usize = 8 + 8;

/// The stub followed by the artifact and the trailer that locates it.
pub fn append_to_executable(stub: &[u8], artifact: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stub.len() + artifact.len() + TRAILER_LEN);
    out.extend_from_slice(stub);
    out.extend_from_slice(artifact);
    out.extend_from_slice(&(artifact.len() as u64).to_le_bytes());
    out.extend_from_slice(&TRAILER_MAGIC);
    out
}

/// The artifact bytes appended to `exe`: `Ok(None)` if it carries none, an error if its
/// trailer is present but announces more bytes than the file has.
pub fn find_in_executable(exe: &[u8]) -> Result<Option<&[u8]>, ArtifactError> {
    let Some(split) = exe.len().checked_sub(TRAILER_LEN) else {
        return Ok(None);
    };
    let (rest, trailer) = exe.split_at(split);
    let (len, magic) = trailer.split_at(8);
    if magic != TRAILER_MAGIC {
        return Ok(None);
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(len);
    let announced = u64::from_le_bytes(len_bytes);
    let available = rest.len() as u64;
    if announced > available {
        return Err(ArtifactError::BadTrailer {
            announced,
            available,
        });
    }
    // `announced <= rest.len()`, so it fits in usize.
    let start = rest.len() - announced as usize;
    Ok(rest.get(start..))
}

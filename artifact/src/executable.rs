//! A standalone executable: the runtime's stub binary with an artifact appended.
//!
//! ```text
//! [stub binary][zeros to a multiple of 64 bytes][artifact bytes][artifact length: u64 LE][TRAILER_MAGIC: 8 bytes]
//! ```
//!
//! The zeros align the artifact in the file, so that a mapping of it is aligned as well and
//! its weights (64-byte aligned inside it) are read in place.
//!
//! Operating systems load an executable by its headers and ignore bytes after its last
//! section, so the stub runs unchanged; at start it reads the last 16 bytes of its own
//! file and, when they are a trailer, only the artifact's bytes before them
//! ([`read_appended`], through a mapping of the file): a start never reads the binary
//! itself. Only the trailer is looked at, so the magic's copy in the stub's own read-only
//! data never confuses the search.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::ArtifactError;
use crate::{Artifact, Bytes};

/// The last eight bytes of an executable that carries an artifact.
pub const TRAILER_MAGIC: [u8; 8] = *b"\x89STRAT\xe5\n";

const TRAILER_LEN: usize = 8 + 8;

/// Where in its file an executable's artifact starts: a multiple of this.
const ARTIFACT_ALIGN: usize = 64;

/// The zeros between a stub of `len` bytes and the artifact.
fn padding_after(len: u64) -> usize {
    crate::bytes::padding_to(len, ARTIFACT_ALIGN)
}

/// The stub followed by the artifact (aligned) and the trailer that locates it.
pub fn append_to_executable(stub: &[u8], artifact: &[u8]) -> Vec<u8> {
    let padding = padding_after(stub.len() as u64);
    let mut out = Vec::with_capacity(stub.len() + padding + artifact.len() + TRAILER_LEN);
    out.extend_from_slice(stub);
    out.resize(stub.len() + padding, 0);
    out.extend_from_slice(artifact);
    out.extend_from_slice(&(artifact.len() as u64).to_le_bytes());
    out.extend_from_slice(&TRAILER_MAGIC);
    out
}

/// Writes an executable: the stub read from `stub` (a file, not held in memory), then
/// `artifact` and the trailer, the bytes [`append_to_executable`] would build.
pub fn write_executable(
    stub: &mut impl Read,
    artifact: &Artifact,
    out: &mut impl Write,
) -> Result<(), ArtifactError> {
    let stub_len = std::io::copy(stub, out).map_err(ArtifactError::Write)?;
    out.write_all(&[0; ARTIFACT_ALIGN][..padding_after(stub_len)])
        .map_err(ArtifactError::Write)?;
    let len = artifact.write_to(out)?;
    out.write_all(&len.to_le_bytes())
        .and_then(|()| out.write_all(&TRAILER_MAGIC))
        .map_err(ArtifactError::Write)
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

/// The artifact appended to the file at `path` (`Ok(None)` if it carries none), reading
/// the trailer and then mapping only the artifact's bytes ([`Bytes::map_file`]; read
/// into memory where they cannot be mapped). `path` must be a file nobody writes while
/// the bytes live: the running executable.
pub fn read_appended(path: &Path) -> Result<Option<Bytes>, ArtifactError> {
    let io = |source| ArtifactError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let len = file.seek(SeekFrom::End(0)).map_err(io)?;
    let Some(trailer_at) = len.checked_sub(TRAILER_LEN as u64) else {
        return Ok(None);
    };
    let mut trailer = [0u8; TRAILER_LEN];
    file.seek(SeekFrom::Start(trailer_at)).map_err(io)?;
    file.read_exact(&mut trailer).map_err(io)?;
    let (len_bytes, magic) = trailer.split_at(8);
    if magic != TRAILER_MAGIC {
        return Ok(None);
    }
    let mut announced = [0u8; 8];
    announced.copy_from_slice(len_bytes);
    let announced = u64::from_le_bytes(announced);
    let bad = ArtifactError::BadTrailer {
        announced,
        available: trailer_at,
    };
    if announced > trailer_at {
        return Err(bad);
    }
    let size = usize::try_from(announced).map_err(|_| bad)?;
    let start = trailer_at - announced;
    if size > 0
        && let Ok(mapped) = Bytes::map_file(&file, start, size)
    {
        return Ok(Some(mapped));
    }
    let mut bytes = vec![0u8; size];
    file.seek(SeekFrom::Start(start)).map_err(io)?;
    file.read_exact(&mut bytes).map_err(io)?;
    Ok(Some(Bytes::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        f
    }

    #[test]
    fn reads_the_appended_artifact_and_nothing_else() {
        let exe = append_to_executable(b"\x7fELF code", b"the artifact");
        let f = file_with(&exe);
        assert_eq!(
            read_appended(f.path()).unwrap().as_deref(),
            Some(&b"the artifact"[..])
        );
        assert_eq!(
            find_in_executable(&exe).unwrap(),
            Some(&b"the artifact"[..])
        );
    }

    #[test]
    fn the_artifact_starts_at_a_multiple_of_64_bytes_of_the_file() {
        for stub_len in [0, 1, 63, 64, 65, 200] {
            let stub = vec![0x7f; stub_len];
            let exe = append_to_executable(&stub, b"the artifact");
            let found = find_in_executable(&exe).unwrap().unwrap();
            let at = found.as_ptr() as usize - exe.as_ptr() as usize;
            assert_eq!(
                (at % 64, found),
                (0, &b"the artifact"[..]),
                "stub of {stub_len}"
            );
            assert!(at >= stub_len && at < stub_len + 64);
        }
    }

    #[test]
    fn a_plain_binary_or_a_short_file_carries_none() {
        assert_eq!(
            read_appended(file_with(b"\x7fELF code").path()).unwrap(),
            None
        );
        assert_eq!(read_appended(file_with(b"").path()).unwrap(), None);
    }

    #[test]
    fn a_trailer_announcing_more_than_the_file_is_an_error() {
        let mut exe = append_to_executable(b"stub", b"artifact");
        let at = exe.len() - TRAILER_LEN;
        exe[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let err = read_appended(file_with(&exe).path()).unwrap_err();
        assert!(matches!(err, ArtifactError::BadTrailer { .. }), "{err}");
    }
}

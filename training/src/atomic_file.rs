//! Writing a file whole or not at all: every file of a run directory (checkpoint, best
//! weights, metrics log, curves, image grid) is written this way.
//!
//! [`write_atomic`] writes a temporary file in the target's directory, named
//! `.NAME.XXXXXX.tmp` ([`temporary_prefix`], [`TEMPORARY_SUFFIX`]), fsyncs it, renames
//! it over the target and fsyncs the directory: after a crash at any point the target is
//! either the old file or the new one, never a mix. A failed write removes its
//! temporary file; one left by a killed process is removed by the next run in that
//! directory (`driver::run_directory`), which knows the names to look for.
//! The target must be absent or a regular file ([`check_output_path`]).

use std::io::Write;
use std::path::Path;

use strata_artifact::check_output_path;

/// The name prefix of the temporary file a write of `file_name` goes through
/// (`.last.ckpt.` + random + [`TEMPORARY_SUFFIX`]).
pub fn temporary_prefix(file_name: &str) -> String {
    format!(".{file_name}.")
}

/// The name suffix of every temporary file of an atomic write.
pub const TEMPORARY_SUFFIX: &str = ".tmp";

/// Replaces `path` with `bytes` atomically (see the module docs).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    check_output_path(path)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the path must name a file",
            )
        })?;
    // Dropping `temp` on any error below removes the temporary file.
    let mut temp = tempfile::Builder::new()
        .prefix(&temporary_prefix(&name))
        .suffix(TEMPORARY_SUFFIX)
        .tempfile_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    sync_directory(dir)
}

/// Makes a rename in `dir` durable (a no-op where directories cannot be opened).
fn sync_directory(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

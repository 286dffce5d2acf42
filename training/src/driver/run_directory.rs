//! Claiming a run directory before a run touches it: one training at a time, nothing
//! left over from a killed one, and no fresh run over an earlier one unless asked.
//!
//! - An advisory lock on `.lock` (holding the owner's process id) is taken for the
//!   whole run; a second training on the same directory is refused and told who holds
//!   it. The operating system drops the lock when its process dies, however it dies,
//!   so a killed run never leaves the directory locked.
//! - Under the lock, temporary files of atomic saves that a killed run left behind
//!   (`.last.ckpt.XXXXXX.tmp`) are removed: no live process can be writing them.
//! - A fresh run (not `--resume`) over a directory that holds a run is refused with the
//!   ways out (`--resume`, `--overwrite`, `--run-dir`). With `--overwrite` nothing is
//!   deleted up front: `best.safetensors` stays until the new run's first epoch replaces
//!   it, so a retry that diverges or is killed first keeps the earlier weights.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use super::TrainError;
use super::state::RunPaths;
use crate::atomic_file::{TEMPORARY_SUFFIX, temporary_prefix};

/// The lock on a run directory, held until it is dropped (or the process ends).
#[derive(Debug)]
pub(super) struct RunLock {
    _file: File,
}

/// How a run may treat what its directory already holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Claim {
    /// A new run; the directory must not hold one.
    Fresh,
    /// A new run over whatever the directory holds (`--overwrite`).
    Overwrite,
    /// Continue the run the directory holds (`--resume`).
    Resume,
}

/// Creates the run directory if needed, locks it, removes stale temporary files of the
/// files in `written` (names in the directory) and checks it against `claim`.
pub(super) fn claim(
    paths: &RunPaths,
    claim: Claim,
    written: &[&str],
) -> Result<RunLock, TrainError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TrainError::Io { path, source }
    };
    if claim == Claim::Resume && !paths.dir.is_dir() {
        // Nothing to resume: say so without creating the directory.
        return Err(TrainError::Resume(format!(
            "{} does not exist; train without --resume to start a run there",
            paths.last.display()
        )));
    }
    std::fs::create_dir_all(&paths.dir).map_err(io(&paths.dir))?;
    let lock = lock(&paths.lock)?;
    remove_stale_temporaries(&paths.dir, written).map_err(io(&paths.dir))?;
    if claim == Claim::Fresh {
        let held: Vec<&str> = [&paths.last, &paths.best, &paths.metrics]
            .into_iter()
            .filter(|p| p.exists())
            .filter_map(|p| p.file_name()?.to_str())
            .collect();
        if !held.is_empty() {
            return Err(TrainError::RunExists {
                dir: paths.dir.clone(),
                files: held.join(", "),
            });
        }
    }
    Ok(lock)
}

/// Takes the lock of `path` and writes this process's id into it.
///
/// `std::fs::File::try_lock` (`flock` on Unix, `LockFileEx` on Windows) is the standard
/// library's own advisory lock, stable since Rust 1.89: it does what the `fs4` and
/// `fd-lock` crates were made for, so no crate is needed for it.
fn lock(path: &Path) -> Result<RunLock, TrainError> {
    let io = |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    };
    strata_artifact::check_output_path(path).map_err(io)?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            // The holder writes its id right after locking; an empty file (caught
            // in between) gives no id.
            let _ = file.read_to_string(&mut holder);
            return Err(TrainError::RunLocked {
                dir: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
                holder: holder.trim().parse().ok(),
            });
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(RunLock { _file: file })
}

/// Removes `.NAME.XXXXXX.tmp` for every `NAME` in `written`: what an atomic save of
/// `NAME` leaves when its process is killed between creating and renaming it.
fn remove_stale_temporaries(dir: &Path, written: &[&str]) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stale = name.ends_with(TEMPORARY_SUFFIX)
            && written
                .iter()
                .any(|file| name.starts_with(&temporary_prefix(file)));
        if stale && entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

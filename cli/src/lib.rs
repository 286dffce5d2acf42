//! The `strata` binary: the compiler's command line ([`commands`]) and, when a compiled
//! model is appended to the binary (what `strata build` writes), that model's standalone
//! command line ([`executable`]).
//!
//! One binary serves both so that `strata build` always has its base at hand: it copies
//! itself and appends the model. [`main`] decides which it is from the file's last 16
//! bytes, without reading the rest.

pub mod bench;
pub mod commands;
pub mod executable;
pub mod sweep;

use std::process::ExitCode;

/// The process entry: a built model's command line if one is appended to this binary,
/// else `strata`'s.
pub fn main() -> ExitCode {
    let appended = std::env::current_exe()
        .ok()
        .map(|path| strata_artifact::read_appended(&path));
    match appended {
        Some(Ok(Some(artifact))) => executable::main(artifact),
        Some(Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Some(Ok(None)) | None => commands::main(),
    }
}

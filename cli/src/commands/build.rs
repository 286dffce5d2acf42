//! `strata build FILE -o OUT`: one standalone executable, the `strata` binary itself
//! with the compiled model appended; at start it finds the model and runs it (see
//! `crate::executable`).

use super::{Common, compile_or_report, fail, warn_untrained, with_weights};
use clap::Args;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub(super) struct BuildArgs {
    #[command(flatten)]
    common: Common,
    /// The executable to write.
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    output: PathBuf,
    /// Use these weights (safetensors) instead of freshly initialized ones [without it:
    /// the initial, untrained weights, with a warning].
    #[arg(long, value_name = "PATH")]
    weights: Option<PathBuf>,
}

pub(super) fn run(a: &BuildArgs) -> ExitCode {
    // Refused before compiling, and checked again when written.
    if let Err(e) = strata_artifact::check_output_path(&a.output) {
        return fail(format!("cannot write {}: {e}", a.output.display()));
    }
    let (_, mut compiled) = match compile_or_report(&a.common) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if let Err(e) = with_weights(&mut compiled, a.weights.as_deref()) {
        return fail(e);
    }
    if a.weights.is_none() {
        warn_untrained(&a.common, &compiled);
    }
    let base = match own_binary() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let exe = match strata_compiler::artifact::pack_executable(&base, &compiled.artifact) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    if let Err(e) = write_executable(&a.output, &exe) {
        return fail(format!("cannot write {}: {e}", a.output.display()));
    }
    eprintln!(
        "wrote {} ({} kernels, {} bytes)",
        a.output.display(),
        compiled.lowered.kernels.len(),
        exe.len()
    );
    ExitCode::SUCCESS
}

/// Writes to a temporary file beside `path`, marks it executable, then renames it, so a
/// failed build never leaves a half-written executable. `path` must be absent or a
/// regular file: a build never replaces a directory, a FIFO or a device.
fn write_executable(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    strata_artifact::check_output_path(path)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    }
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The base of every executable: this very binary, whose `main` runs the model appended
/// to it when it finds one (`crate::executable`). It cannot go missing: it is running.
fn own_binary() -> Result<Vec<u8>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate strata itself: {e}"))?;
    std::fs::read(&exe).map_err(|e| format!("cannot read {}: {e}", exe.display()))
}

//! `strata build FILE -o OUT`: one standalone executable, the `strata` binary itself
//! with the compiled model appended; at start it finds the model and runs it (see
//! `crate::executable`). The executable also carries its `infer` as ONNX without the
//! weights, for its `export` command (`super::export::export_template`).

use super::export::export_template;
use super::{Common, compile_reported, fail, load_source, options, with_weights};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use strata_artifact::Artifact;
use strata_compiler::driver::CompileOptions;
use strata_kernels::ir::Kernel;

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
    /// Add the explain entry (input gradients), for the executable's `explain` command.
    #[arg(long)]
    explain: bool,
    /// Leave out the kernels' machine code: the executable then compiles an entry's
    /// kernels when it first runs, as `strata run` does [default: it carries machine
    /// code for this machine's CPU for every entry but the train step, and compiles only
    /// on a CPU that lacks one of its features].
    #[arg(long)]
    no_machine_code: bool,
}

pub(super) fn run(a: &BuildArgs) -> ExitCode {
    // Refused before compiling, and checked again when written.
    if let Err(e) = strata_artifact::check_output_path(&a.output) {
        return fail(format!("cannot write {}: {e}", a.output.display()));
    }
    let source = match load_source(&a.common.file) {
        Ok(source) => source,
        Err(code) => return code,
    };
    let mut compiled = match options(&a.common).and_then(|opts| {
        let opts = CompileOptions {
            only_artifact: true,
            explain: a.explain,
            ..opts
        };
        compile_reported(&source, &opts, a.common.error_format)
    }) {
        Ok(compiled) => compiled,
        Err(code) => return code,
    };
    if let Err(e) = with_weights(&a.common, &mut compiled, a.weights.as_deref()) {
        return fail(e);
    }
    if !a.no_machine_code {
        match strata_runtime::cpu::compile_machine_code(&carried_kernels(&compiled.artifact)) {
            Ok(code) => compiled.artifact.machine_code = Some(code),
            Err(e) => return fail(format!("cannot compile the kernels' machine code: {e}")),
        }
    }
    // The executable's `export` writes what `strata export` writes with these arguments;
    // a model whose `infer` does not export carries none, and its `export` says so.
    if let Ok(template) = export_template(&a.common, source, &compiled, a.weights.as_deref()) {
        compiled.artifact.onnx = template.encode();
    }
    let size = match write_executable(&a.output, &compiled.artifact) {
        Ok(size) => size,
        Err(e) => return fail(format!("cannot write {}: {e}", a.output.display())),
    };
    let code = match &compiled.artifact.machine_code {
        Some(code) => format!("machine code for {}", code.target),
        None => "no machine code".into(),
    };
    eprintln!(
        "wrote {} ({} kernels, {code}, {size} bytes)",
        a.output.display(),
        compiled.lowered.kernels.len(),
    );
    // The process ends here: its memory goes back whole, without freeing the graphs,
    // kernels and artifact one allocation at a time (5-8% of a 1,024-block build).
    std::mem::forget(compiled);
    ExitCode::SUCCESS
}

/// The kernels the executable carries machine code for: those of every entry but the
/// train steps (`train_step`, or one per step of a section with steps). A training run outlasts the compile of its step, which is most of a
/// model's kernels and would be most of the build's time (a 1,024-block residual MLP:
/// 2,051 kernels); `infer`, `explain` and the rest start without compiling anything.
fn carried_kernels(artifact: &Artifact) -> Vec<Kernel> {
    let manifest = &artifact.manifest;
    let train_steps: Vec<&str> = manifest
        .train
        .iter()
        .flat_map(|t| t.steps.iter().map(|s| s.entry.as_str()))
        .collect();
    let mut used: Vec<usize> = manifest
        .entries
        .iter()
        .filter(|e| !train_steps.contains(&e.name.as_str()))
        .flat_map(|e| e.launches.iter().map(|l| l.kernel))
        .collect();
    used.sort_unstable();
    used.dedup();
    used.into_iter()
        .filter_map(|k| manifest.kernels.get(k).cloned())
        .collect()
}

/// Writes the executable, this very binary with the artifact appended (its `main` runs
/// the model it finds appended, see `crate::executable`; the base cannot go missing: it
/// is running), and returns its size. Both are streamed into the file, never held whole
/// in memory. It goes to a temporary file beside `path`, marked executable, then renamed,
/// so a failed build never leaves a half-written executable. `path` must be absent or a
/// regular file: a build never replaces a directory, a FIFO or a device.
fn write_executable(path: &Path, artifact: &Artifact) -> Result<u64, String> {
    strata_artifact::check_output_path(path).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate strata itself: {e}"))?;
    let mut base =
        std::fs::File::open(&exe).map_err(|e| format!("cannot read {}: {e}", exe.display()))?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let written = (|| -> Result<u64, String> {
        let file = std::fs::File::create(&tmp).map_err(|e| e.to_string())?;
        let mut out = std::io::BufWriter::new(file);
        strata_artifact::write_executable(&mut base, artifact, &mut out)
            .map_err(|e| e.to_string())?;
        let file = out.into_inner().map_err(|e| e.error().to_string())?;
        file.sync_all().map_err(|e| e.to_string())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| e.to_string())?;
        }
        std::fs::rename(&tmp, path).map_err(|e| e.to_string())?;
        file.metadata().map(|m| m.len()).map_err(|e| e.to_string())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

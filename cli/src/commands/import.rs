//! `strata import model.onnx -o model.strata [--weights-out W.safetensors]`: an ONNX
//! model as a model file a person would have written and its weights (see
//! `strata_onnx::import` and docs/onnx.md).

use super::fail;
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use strata_onnx::{ImportOptions, import_model};

#[derive(Args, Debug)]
pub(super) struct ImportArgs {
    /// The ONNX model to read.
    file: PathBuf,
    /// The model file to write (`.strata`).
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    output: PathBuf,
    /// Where its weights go (safetensors) [default: the output with `.safetensors`].
    #[arg(long, value_name = "PATH")]
    weights_out: Option<PathBuf>,
    /// The model's name in the file [default: from the output's file name].
    #[arg(long)]
    name: Option<String>,
}

/// `my_model` -> `MyModel`.
fn model_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map_or("Imported".into(), |s| s.to_string_lossy().into_owned());
    let name: String = stem
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next().map_or(String::new(), |f| {
                f.to_ascii_uppercase().to_string() + c.as_str()
            })
        })
        .collect();
    match name.chars().next() {
        Some(c) if c.is_ascii_alphabetic() => name,
        _ => format!("Imported{name}"),
    }
}

pub(super) fn run(a: &ImportArgs) -> ExitCode {
    let weights = a
        .weights_out
        .clone()
        .unwrap_or_else(|| a.output.with_extension("safetensors"));
    for path in [&a.output, &weights] {
        if let Err(e) = strata_artifact::check_output_path(path) {
            return fail(format!("cannot write {}: {e}", path.display()));
        }
    }
    let bytes = match std::fs::read(&a.file) {
        Ok(b) => b,
        Err(e) => return fail(format!("cannot read {}: {e}", a.file.display())),
    };
    let options = ImportOptions {
        model_name: a.name.clone().unwrap_or_else(|| model_name(&a.output)),
        source_name: a.file.file_name().map_or_else(
            || a.file.display().to_string(),
            |f| f.to_string_lossy().into_owned(),
        ),
        weights_name: weights.display().to_string(),
    };
    let imported = match import_model(&bytes, &options) {
        Ok(m) => m,
        Err(e) => return fail(format!("{}: {e}", a.file.display())),
    };
    // The file written must compile: an import that wrote a file the compiler refuses
    // would be a bug here, said as one rather than left for `strata check` to find.
    let written = strata_compiler::source::SourceFile::new(
        a.output.display().to_string(),
        imported.source.clone(),
    );
    if let Err(diagnostics) = strata_compiler::driver::check(&written, &Default::default(), &[]) {
        return fail(format!(
            "{}: the model file imported does not compile (a bug of `strata import`; please report it with the ONNX file):\n{}",
            a.file.display(),
            strata_compiler::source::diagnostic::render_all(&diagnostics, &written)
        ));
    }
    let encoded = match strata_artifact::weights::encode_weights(
        imported.weights.iter().map(|(n, t)| (n.as_str(), t)),
    ) {
        Ok(b) => b,
        Err(e) => return fail(format!("the weights: {e}")),
    };
    for (path, data) in [
        (&a.output, imported.source.as_bytes()),
        (&weights, &encoded[..]),
    ] {
        if let Err(e) = strata_training::atomic_file::write_atomic(path, data) {
            return fail(format!("cannot write {}: {e}", path.display()));
        }
    }
    let count: usize = imported
        .weights
        .iter()
        .map(|(_, t)| t.shape.iter().product::<u64>() as usize)
        .sum();
    eprintln!(
        "wrote {} and {} ({} tensors, {count} values)",
        a.output.display(),
        weights.display(),
        imported.weights.len()
    );
    ExitCode::SUCCESS
}

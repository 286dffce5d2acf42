//! `strata export FILE [--weights W] -o model.onnx`: the `infer` entry as an ONNX model
//! (see `strata_onnx` and docs/onnx.md), its parameters and the features' normalization
//! as initializers.
//!
//! `strata build` exports the same way and keeps the model without its weights in the
//! executable ([`export_template`]), whose `export` command writes this command's file
//! from it (`crate::executable`): the shared pieces are here.

use super::{Common, compile_reported, fail, load_source, options, with_weights};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use strata_compiler::driver::Compiled;
use strata_compiler::source::SourceFile;
use strata_onnx::proto::pb;
use strata_onnx::{ExportError, ExportOptions, ExportTemplate, encode_model, export_infer};

#[derive(Args, Debug)]
pub(super) struct ExportArgs {
    #[command(flatten)]
    common: Common,
    /// The ONNX file to write.
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    output: PathBuf,
    /// Weights to export (safetensors, as `strata train` writes them, or a checkpoint)
    /// [without it: the initial, untrained weights, with a warning].
    #[arg(long, value_name = "PATH")]
    weights: Option<PathBuf>,
}

/// Where the exported weights come from.
pub(crate) enum WeightsOrigin<'a> {
    /// A file given with `--weights`.
    File(&'a Path),
    /// The model's initial weights, drawn with this seed.
    Initial { seed: u64 },
}

/// The exported model's `doc_string`: the file, model and weights it comes from.
pub(crate) fn export_doc(file: &str, model: &str, weights: &WeightsOrigin) -> String {
    match weights {
        WeightsOrigin::File(w) => {
            format!(
                "{file} (model `{model}`) with the weights of {}",
                w.display()
            )
        }
        WeightsOrigin::Initial { seed } => {
            format!("{file} (model `{model}`) with its initial weights (seed {seed})")
        }
    }
}

/// `infer` of `compiled` (its artifact holding the weights `weights` names) as the ONNX
/// model `strata export` writes.
fn export_compiled(
    common: &Common,
    source: SourceFile,
    compiled: &Compiled,
    weights: Option<&Path>,
) -> Result<pb::ModelProto, ExportError> {
    let origin = match weights {
        Some(path) => WeightsOrigin::File(path),
        None => WeightsOrigin::Initial { seed: common.seed },
    };
    let doc = export_doc(
        &common.file.display().to_string(),
        &compiled.artifact.manifest.model,
        &origin,
    );
    let export_options = ExportOptions {
        source: Some(source),
        doc,
        no_layer_patterns: false,
    };
    export_infer(
        &compiled.optimized,
        &compiled.artifact.weights,
        &export_options,
    )
}

/// What `strata build` keeps for the executable's `export`: the model `strata export`
/// would write with the same arguments, without its parameters' values; the export
/// error when `infer` does not export.
pub(super) fn export_template(
    common: &Common,
    source: SourceFile,
    compiled: &Compiled,
    weights: Option<&Path>,
) -> Result<ExportTemplate, ExportError> {
    let model = export_compiled(common, source, compiled, weights)?;
    let file = common.file.display().to_string();
    Ok(ExportTemplate::new(
        model,
        &compiled.artifact.weights,
        &file,
    ))
}

/// Writes `model` to `path` (atomically) and returns the line that says so, after a note
/// on the random draws the model makes, if any.
pub(crate) fn write_onnx(path: &Path, model: &pb::ModelProto) -> Result<String, String> {
    let bytes = encode_model(model);
    strata_training::atomic_file::write_atomic(path, &bytes)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let nodes = model.graph.as_ref().map_or(0, |g| g.node.len());
    let mut message = String::new();
    if let Some(note) = strata_onnx::export::draws_note(model) {
        message.push_str(&format!("note: {note}\n"));
    }
    message.push_str(&format!(
        "wrote {} (ONNX opset {}, {nodes} nodes, {} bytes)",
        path.display(),
        strata_onnx::proto::OPSET,
        bytes.len()
    ));
    Ok(message)
}

pub(super) fn run(a: &ExportArgs) -> ExitCode {
    // Refused before compiling, and checked again when written.
    if let Err(e) = strata_artifact::check_output_path(&a.output) {
        return fail(format!("cannot write {}: {e}", a.output.display()));
    }
    let source = match load_source(&a.common.file) {
        Ok(source) => source,
        Err(code) => return code,
    };
    let mut compiled = match options(&a.common)
        .and_then(|opts| compile_reported(&source, &opts, a.common.error_format))
    {
        Ok(compiled) => compiled,
        Err(code) => return code,
    };
    if let Err(e) = with_weights(&a.common, &mut compiled, a.weights.as_deref()) {
        return fail(e);
    }
    let model = match export_compiled(&a.common, source, &compiled, a.weights.as_deref()) {
        Ok(model) => model,
        Err(e) => return fail(e),
    };
    match write_onnx(&a.output, &model) {
        Ok(message) => {
            eprintln!("{message}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

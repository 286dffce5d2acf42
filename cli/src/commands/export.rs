//! `strata export FILE [--weights W] -o model.onnx`: the `infer` entry as an ONNX model
//! (see `strata_onnx` and docs/onnx.md), its parameters and the features' normalization
//! as initializers.

use super::{Common, compile_reported, fail, load_source, options, with_weights};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use strata_onnx::{ExportOptions, encode_model, export_infer};

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
    let doc = match &a.weights {
        Some(w) => format!(
            "{} (model `{}`) with the weights of {}",
            a.common.file.display(),
            compiled.artifact.manifest.model,
            w.display()
        ),
        None => format!(
            "{} (model `{}`) with its initial weights (seed {})",
            a.common.file.display(),
            compiled.artifact.manifest.model,
            a.common.seed
        ),
    };
    let export_options = ExportOptions {
        source: Some(source),
        doc,
        no_layer_patterns: false,
    };
    let model = match export_infer(
        &compiled.optimized,
        &compiled.artifact.weights,
        &export_options,
    ) {
        Ok(model) => model,
        Err(e) => return fail(e),
    };
    let bytes = encode_model(&model);
    if let Err(e) = strata_training::atomic_file::write_atomic(&a.output, &bytes) {
        return fail(format!("cannot write {}: {e}", a.output.display()));
    }
    let nodes = model.graph.as_ref().map_or(0, |g| g.node.len());
    eprintln!(
        "wrote {} (ONNX opset {}, {nodes} nodes, {} bytes)",
        a.output.display(),
        strata_onnx::proto::OPSET,
        bytes.len()
    );
    ExitCode::SUCCESS
}

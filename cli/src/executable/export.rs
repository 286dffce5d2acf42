//! `./model export -o model.onnx [--weights W]`: the executable's `infer` as an ONNX
//! model, the file `strata export` writes for the model file it was built from and the
//! same weights: the built-in ones, or `--weights` (parameters alone, full weights or a
//! checkpoint). `strata build` keeps the export without its weights in the artifact
//! (`strata_onnx::ExportTemplate`); this fills them in.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use strata_artifact::Artifact;
use strata_onnx::ExportTemplate;

use super::{Failure, runtime};
use crate::commands::export::{WeightsOrigin, export_doc, write_onnx};

#[derive(Args, Debug)]
pub(crate) struct ExportArgs {
    /// The ONNX file to write.
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    output: PathBuf,
    /// Weights to export instead of the built-in ones: parameters (best.safetensors),
    /// full weights, or a checkpoint (last.ckpt).
    #[arg(long, value_name = "PATH")]
    weights: Option<PathBuf>,
}

pub(super) fn run(
    artifact: &Artifact,
    args: ExportArgs,
    err: &mut dyn Write,
) -> Result<(), Failure> {
    if let Err(e) = strata_artifact::check_output_path(&args.output) {
        return Err(Failure::Runtime(format!(
            "cannot write {}: {e}",
            args.output.display()
        )));
    }
    if artifact.onnx.is_empty() {
        return Err(Failure::Runtime(format!(
            "this executable carries no ONNX model: the `infer` of `{}` does not export (`strata export` on its model file says why)",
            artifact.manifest.model
        )));
    }
    let template = ExportTemplate::decode(&artifact.onnx).map_err(runtime)?;
    let model = match &args.weights {
        None => {
            let doc = template.model.doc_string.clone();
            template.fill(&artifact.weights, &doc)
        }
        Some(path) => {
            let mut with = artifact.clone();
            crate::commands::with_artifact_weights(&mut with, Some(path))
                .map_err(Failure::Runtime)?;
            let origin = WeightsOrigin::File(path);
            let doc = export_doc(&template.model_file, &artifact.manifest.model, &origin);
            template.fill(&with.weights, &doc)
        }
    }
    .map_err(runtime)?;
    let message = write_onnx(&args.output, &model).map_err(Failure::Runtime)?;
    writeln!(err, "{message}").map_err(runtime)
}

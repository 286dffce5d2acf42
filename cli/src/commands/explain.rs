//! `strata explain FILE --weights W`: compile the model with its `explain` entry, then
//! attribute an output to the input exactly as a built executable's `explain` would (the
//! same code, on the artifact in memory; see `crate::executable`).

use super::{ErrorFormat, Target, compile_reported, fail, load_source, options, warn_untrained};
use crate::executable::ExplainArgs;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use strata_compiler::driver::CompileOptions;

#[derive(Args, Debug)]
pub(super) struct ExplainCommand {
    /// The model file (`.strata`).
    file: PathBuf,
    /// Which model of the file (default: the first).
    #[arg(long)]
    model: Option<String>,
    /// Override a hyper-parameter: `--set hidden=256` (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// Seed of the parameters' initial values (what is explained without --weights).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// How to print diagnostics.
    #[arg(long, value_enum, default_value_t = ErrorFormat::Human)]
    error_format: ErrorFormat,
    #[command(flatten)]
    explain: ExplainArgs,
}

pub(super) fn run(a: &ExplainCommand) -> ExitCode {
    // `--target` is the explained class here; the device follows `--device`.
    let common = super::Common {
        file: a.file.clone(),
        model: a.model.clone(),
        set: a.set.clone(),
        seed: a.seed,
        error_format: a.error_format,
        target: match a.explain.wants_gpu() {
            true => Target::Gpu,
            false => Target::Cpu,
        },
    };
    let source = match load_source(&common.file) {
        Ok(source) => source,
        Err(code) => return code,
    };
    let compiled = match options(&common).and_then(|opts| {
        let opts = CompileOptions {
            explain: true,
            ..opts
        };
        compile_reported(&source, &opts, common.error_format)
    }) {
        Ok(compiled) => compiled,
        Err(code) => return code,
    };
    if !a.explain.has_weights() {
        warn_untrained(&common, &compiled);
    }
    if compiled.artifact.manifest.entries.is_empty() {
        return fail("the model compiled to no entries");
    }
    crate::executable::explain_artifact(
        &compiled.artifact,
        a.explain.clone(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )
}

//! `strata run FILE --input x=x.npy`: compile, then run `infer` exactly as a built
//! executable would (the same command line code, on the artifact in memory).

use super::{Common, compile_or_report, fail, with_weights};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub(super) struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// An input as NAME=PATH.npy (repeatable).
    #[arg(long = "input", short = 'i', value_name = "NAME=PATH", required = true)]
    inputs: Vec<String>,
    /// Where to write an output, as NAME=PATH.npy (repeatable); printed otherwise.
    #[arg(long = "output", value_name = "NAME=PATH")]
    outputs: Vec<String>,
    /// Weights to use (safetensors) [without it: the initial, untrained weights, with a
    /// warning].
    #[arg(long, value_name = "PATH")]
    weights: Option<PathBuf>,
}

pub(super) fn run(a: &RunArgs) -> ExitCode {
    let (_, mut compiled) = match compile_or_report(&a.common) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if let Err(e) = with_weights(&a.common, &mut compiled, a.weights.as_deref()) {
        return fail(e);
    }
    let bytes = match compiled.artifact.to_bytes() {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let mut args: Vec<String> = vec!["strata run".into(), "infer".into()];
    for i in &a.inputs {
        args.push("--input".into());
        args.push(i.clone());
    }
    for o in &a.outputs {
        args.push("--output".into());
        args.push(o.clone());
    }
    let exe = strata_artifact::append_to_executable(&[], &bytes);
    crate::executable::run_cli(
        args,
        || Ok(exe),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )
}

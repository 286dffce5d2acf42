//! `strata eval FILE --weights W`: score trained weights on held-out data.

use super::{Common, compile_trainable, fail};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use strata_runtime::Session;
use strata_training::driver::load_weights_file;

#[derive(Args, Debug)]
pub(super) struct EvalCommand {
    #[command(flatten)]
    common: Common,
    /// The weights to score: best.safetensors, last.ckpt, or a full weights file.
    #[arg(long, value_name = "PATH")]
    weights: PathBuf,
    #[command(flatten)]
    eval: strata_training::args::EvalArgs,
}

pub(super) fn run(a: &EvalCommand) -> ExitCode {
    let (artifact, config) = match compile_trainable(&a.common) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let mut session = match Session::new(&artifact) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let loaded = std::fs::read(&a.weights)
        .map_err(|e| format!("cannot read {}: {e}", a.weights.display()))
        .and_then(|bytes| {
            load_weights_file(&mut session, &bytes, &a.weights)
                .map_err(|e| format!("{}: {e}", a.weights.display()))
        });
    if let Err(e) = loaded {
        return fail(e);
    }
    match strata_training::evaluate(&mut session, &config, a.eval.data.as_deref(), a.eval.split) {
        Ok(report) => {
            let mut out = std::io::stdout().lock();
            match write!(out, "{}", a.eval.render(&report)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        Err(e) => fail(e),
    }
}

//! `strata train FILE`: compile the model with its train section and train it (the
//! driver and its arguments are `strata_training`'s, shared with built executables).

use super::{Common, compile_trainable, default_run_dir, fail};
use clap::Args;
use std::process::ExitCode;
use strata_artifact::Backend;
use strata_runtime::Session;
use strata_training::args::TrainOutcome;
use strata_training::driver::LATEST_EPOCH;

#[derive(Args, Debug)]
pub(super) struct TrainCommand {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    train: strata_training::args::TrainArgs,
}

pub(super) fn run(a: &TrainCommand) -> ExitCode {
    let (artifact, config) = match compile_trainable(&a.common) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let options = match a.train.options(default_run_dir(&a.common.file)) {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    // `--target gpu` trains on the GPU.
    let mut session = match Session::new_with(&artifact, Backend::default_for(&artifact)) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let summary = match strata_training::train(&mut session, &config, &options) {
        Ok(summary) => summary,
        Err(e) => return fail(e),
    };
    match TrainOutcome::of(summary, "--resume") {
        TrainOutcome::Interrupted(message) => {
            eprintln!("error: {message}");
            ExitCode::from(130)
        }
        TrainOutcome::Finished(summary) => {
            if !a.train.quiet {
                // The weights whose test score was printed last.
                let which = if summary.monitor == LATEST_EPOCH {
                    " (the last epoch's: alternating steps have no best epoch)"
                } else {
                    ""
                };
                println!(
                    "build an executable with these weights{which}: strata build {} -o OUT --weights {}",
                    a.common.file.display(),
                    summary.paths.best.display()
                );
            }
            ExitCode::SUCCESS
        }
    }
}

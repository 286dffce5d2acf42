//! `strata step FILE --weights W.safetensors --input x=x.npy --input y=y.npy --steps N
//! -o OUT.safetensors`: runs the train section's update `N` times on one given batch,
//! from given weights, and writes the weights and optimizer state after it.
//!
//! Nothing is drawn: no shuffling, no split, no normalization (the batch is fed as it
//! is), so the result can be compared with another framework's steps on the same batch.
//! Step `i` (1-based) runs every update of the section in order (`train_step`, or each
//! `step NAME` block's entry) with its learning rate from the schedule at step `i` of
//! `N` in epoch 1. The weights may be a parameters-only file (a PyTorch `state_dict`);
//! the optimizer state then starts as training starts it.
//!
//! The file written holds the weights (`PATH`) and optimizer state (`optim.…`) after the
//! last step, and the gradients that step computed (`grad.PATH`, before clipping: the
//! loss's gradient at the weights the last step started from).

use super::{compile_reported, fail, load_source, options, with_artifact_weights};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use strata_artifact::HostTensor;
use strata_artifact::schedule::{StepPosition, learning_rate};
use strata_artifact::weights::encode_weights;
use strata_runtime::Session;

#[derive(Args, Debug)]
pub(super) struct StepArgs {
    #[command(flatten)]
    common: super::Common,
    /// Starting weights (safetensors); default: the model's initial weights.
    #[arg(long, value_name = "PATH")]
    weights: Option<PathBuf>,
    /// A batch input as NAME=PATH.npy (repeatable): the features and the label.
    #[arg(long = "input", short = 'i', value_name = "NAME=PATH", required = true)]
    inputs: Vec<String>,
    /// How many steps to run on the batch.
    #[arg(long, default_value_t = 1)]
    steps: u64,
    /// Where to write the weights and optimizer state after the steps (safetensors).
    #[arg(long, short = 'o', value_name = "PATH")]
    output: PathBuf,
}

pub(super) fn run(a: &StepArgs) -> ExitCode {
    match step(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Reported(code)) => code,
        Err(Failure::Message(e)) => fail(e),
    }
}

/// Why `step` stopped: already reported (a diagnostic), or a message to print.
enum Failure {
    Reported(ExitCode),
    Message(String),
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::Message(message)
    }
}

fn step(a: &StepArgs) -> Result<(), Failure> {
    if a.steps == 0 {
        return Err(Failure::Message("--steps must be at least 1".into()));
    }
    let c = &a.common;
    let source = load_source(&c.file).map_err(Failure::Reported)?;
    let mut opts = options(c).map_err(Failure::Reported)?;
    opts.gradient_outputs = true;
    let compiled = compile_reported(&source, &opts, c.error_format).map_err(Failure::Reported)?;
    let artifact = compiled.artifact;
    let Some(config) = artifact.manifest.train.clone() else {
        return Err(format!(
            "{}: model `{}` has no train section",
            c.file.display(),
            artifact.manifest.model
        )
        .into());
    };
    let mut batch: Vec<(String, HostTensor)> = Vec::new();
    for spec in &a.inputs {
        let Some((name, path)) = spec.split_once('=') else {
            return Err(format!("--input takes NAME=PATH.npy, got `{spec}`").into());
        };
        let tensor = strata_artifact::npy::read_npy(std::path::Path::new(path))
            .map_err(|e| e.to_string())?;
        batch.push((name.to_string(), tensor));
    }
    let mut artifact = artifact;
    with_artifact_weights(&mut artifact, a.weights.as_deref())?;
    let mut session = Session::new(&artifact).map_err(|e| e.to_string())?;
    let mut gradients: Vec<(String, HostTensor)> = Vec::new();
    for i in 1..=a.steps {
        let at = StepPosition {
            step: i,
            epoch: 1,
            total_steps: a.steps,
        };
        for update in &config.steps {
            let entry = session
                .manifest()
                .entries
                .iter()
                .find(|e| e.name == update.entry)
                .ok_or_else(|| format!("the artifact has no entry `{}`", update.entry))?;
            let takes: Vec<String> = entry.inputs.iter().map(|p| p.name.clone()).collect();
            let lr = learning_rate(&config.schedule, update.lr, at);
            let scalar = |v: f32| HostTensor::f32(vec![], vec![v]).map_err(|e| e.to_string());
            let mut feed: Vec<(&str, HostTensor)> = Vec::new();
            for name in &takes {
                let value = match name.as_str() {
                    "lr" => scalar(lr)?,
                    "step" => scalar(i as f32)?,
                    _ => batch
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, t)| t.clone())
                        .ok_or_else(|| {
                            format!(
                                "entry `{}` needs input `{name}`: pass --input {name}=PATH.npy",
                                update.entry
                            )
                        })?,
                };
                feed.push((name.as_str(), value));
            }
            let outputs = session
                .run(&update.entry, &feed)
                .map_err(|e| format!("step {i}, `{}`: {e}", update.entry))?;
            let loss = outputs
                .iter()
                .find(|(n, _)| n == "loss")
                .and_then(|(_, t)| t.as_f32().and_then(|v| v.first().copied()));
            if i == a.steps {
                gradients.extend(
                    outputs
                        .iter()
                        .filter(|(n, _)| n.starts_with("grad."))
                        .cloned(),
                );
            }
            match loss {
                Some(loss) => println!("step {i} {}: loss {loss} (lr {lr})", update.name),
                None => println!("step {i} {}: (lr {lr})", update.name),
            }
        }
    }
    session.sync_weights().map_err(|e| e.to_string())?;
    let tensors = session
        .weights()
        .chain(gradients.iter().map(|(n, t)| (n.as_str(), t)));
    let bytes = encode_weights(tensors).map_err(|e| e.to_string())?;
    std::fs::write(&a.output, bytes)
        .map_err(|e| format!("cannot write {}: {e}", a.output.display()))?;
    println!(
        "wrote {} (weights and optimizer state after {} steps, the last step's gradients)",
        a.output.display(),
        a.steps
    );
    Ok(())
}

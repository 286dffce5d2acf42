//! The command-line arguments of training and evaluation, shared by `strata train` /
//! `strata eval` and a built executable's `train` / `eval`: one definition, so the two
//! cannot drift apart.
//!
//! Each command flattens these into its own arguments and adds what only it has (the
//! model file and compile settings for `strata`, `--device` for an executable).

use std::path::PathBuf;

use clap::Args;

use crate::DataError;
use crate::driver::{
    EvalSplit, StopReason, TrainError, TrainOptions, TrainSummary, interrupt_on_ctrl_c,
};

/// `train`'s arguments.
#[derive(Args, Debug, Clone, Default)]
pub struct TrainArgs {
    /// A data source instead of the train section's: digits, csv:PATH[,label=N],
    /// npy:X.npy,Y.npy, idx:IMAGES,LABELS, safetensors:PATH.
    #[arg(long, value_name = "SPEC")]
    pub data: Option<String>,
    /// Train this many epochs in all instead of the train section's count.
    #[arg(long, value_name = "N")]
    pub epochs: Option<u64>,
    /// Where checkpoints, the metrics log and the curves go [default: runs/<model>].
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Continue the run in the run directory from its last.ckpt.
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Start a new run even if the run directory holds one (its best.safetensors stays
    /// until the new run's first epoch replaces it).
    #[arg(long)]
    pub overwrite: bool,
    /// Start from these weights (best.safetensors, full weights or last.ckpt) instead of
    /// the model's initial ones; prints which tensors were loaded, missing or unused.
    #[arg(long, value_name = "PATH", conflicts_with = "resume")]
    pub weights: Option<PathBuf>,
    /// Print nothing but errors.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Do not score the test split at the end (a hyper-parameter search chooses on the
    /// validation split and scores only its choice: `strata sweep`).
    #[arg(long)]
    pub no_test: bool,
    /// Run CPU kernels on this many threads, the calling one included [default: all
    /// cores].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

impl TrainArgs {
    /// The driver's options: `--run-dir`, else `default_run_dir`; Ctrl-C stops the run
    /// after the current step, saving `last.ckpt`.
    ///
    /// `--threads` fixes the CPU launch threads, so this must come before the first
    /// session is made.
    pub fn options(&self, default_run_dir: PathBuf) -> Result<TrainOptions, String> {
        strata_runtime::cpu::apply_threads_option(self.threads).map_err(|e| e.to_string())?;
        Ok(TrainOptions {
            run_dir: self.run_dir.clone().unwrap_or(default_run_dir),
            data_override: self.data.clone(),
            epochs_override: self.epochs,
            resume: self.resume,
            overwrite: self.overwrite,
            initial_weights: self.weights.clone(),
            progress: true,
            quiet: self.quiet,
            skip_test: self.no_test,
            interrupt: Some(interrupt_on_ctrl_c()?),
        })
    }
}

/// `eval`'s arguments (the weights to score are each command's own: required for
/// `strata eval`, the built-in ones by default for an executable).
#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// A data source instead of the train section's.
    #[arg(long, value_name = "SPEC")]
    pub data: Option<String>,
    /// Which samples to score: the held-out test split, the validation split, or all.
    #[arg(long, value_enum, default_value_t = EvalSplit::Test)]
    pub split: EvalSplit,
    /// Print the report as one JSON object: every metric at full precision, per-class
    /// precision, recall, F1 and support, and the confusion matrix.
    #[arg(long)]
    pub json: bool,
}

impl EvalArgs {
    /// The report as `eval` prints it: text, or with `--json` one JSON object and a
    /// newline.
    pub fn render(&self, report: &crate::EvalReport) -> String {
        if self.json {
            format!("{}\n", report.to_json())
        } else {
            report.to_string()
        }
    }
}

/// How a training command ends, for the process's exit code.
#[derive(Debug)]
pub enum TrainOutcome {
    /// Trained (every epoch, or stopped early).
    Finished(Box<TrainSummary>),
    /// Stopped by Ctrl-C: the message says how to resume (exit code 130, as a shell
    /// reports SIGINT).
    Interrupted(String),
}

impl TrainOutcome {
    /// Sorts a finished run by why it stopped; `resume_hint` is the command that
    /// continues it (`strata train … --resume`).
    pub fn of(summary: TrainSummary, resume_hint: &str) -> TrainOutcome {
        match summary.stop {
            StopReason::Interrupted { step, epoch } => TrainOutcome::Interrupted(format!(
                "interrupted at step {step} (epoch {epoch}); {} is saved: continue with {resume_hint}",
                summary.paths.last.display()
            )),
            _ => TrainOutcome::Finished(Box::new(summary)),
        }
    }
}

/// Whether a training error is the user's to fix in the command line or the settings
/// (a usage error, exit code 2) rather than a failure while running (exit code 1).
pub fn is_usage_error(e: &TrainError) -> bool {
    matches!(
        e,
        TrainError::Config(_)
            | TrainError::RunExists { .. }
            | TrainError::Data(DataError::BadSpec { .. } | DataError::UnknownBuiltin { .. })
    )
}

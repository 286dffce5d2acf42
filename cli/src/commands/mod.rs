//! The `strata` command line, one module per subcommand.
//!
//! ```text
//! strata check FILE                 diagnostics only; exit 1 on error
//! strata ir    FILE [--stage parsed|typed|optimized|kernels|plan] [--format text|dot|json|svg] [--emit clif|wgsl]
//!              [--dump-dir DIR]                     one file per pass, then kernels and plan
//! strata build FILE -o OUT [--target cpu|gpu] [--explain]  a standalone native executable
//! strata run   FILE --input x=x.npy [--target cpu|gpu]  compile and run `infer` in one go
//! strata export FILE [--weights W.safetensors] -o model.onnx   `infer` as an ONNX model
//! strata import model.onnx -o model.strata [--weights-out W.safetensors]   an ONNX model as a model file
//! strata train FILE [--data SPEC] [--epochs N] [--run-dir DIR] [--resume|--overwrite] [--quiet]
//! strata eval  FILE --weights W.safetensors [--data SPEC] [--split test|val|all]
//! strata bench FILE [--entry NAME]... [--batch N]... [--seconds S] [--target cpu|gpu]
//! strata weights FILE W.safetensors   the file's tensors against the model's parameters
//! strata step  FILE --input x=x.npy --input y=y.npy [--weights W] [--steps N] -o OUT.safetensors
//! strata sweep FILE --space lr=log(1e-4,1e-1) --space hidden=[64,128] [--method grid|random|halving]
//!              [--trials N] [--jobs N] [--dir DIR] [--resume|--overwrite]
//! strata explain FILE --weights W [--input x=x.npy] [--output NAME] [--target N|all]
//!              [--method grad|grad-input|ig|smoothgrad] [--steps 64] [-o DIR]
//! ```
//! `train` runs the file's `train` section (settings overridable with `--set lr=3e-3`,
//! `epochs`, `batch`, `seed`, `patience`, `data`) and writes its run directory (default
//! `runs/<file stem>`; one run a directory, see `strata_training::driver`); `eval`
//! scores trained weights on the held-out split. `build` and `run` without `--weights`
//! warn that the weights are untrained (`warn_untrained`).
//! Every command takes `--model NAME` (when a file holds several), `--set name=value`
//! (hyper-parameter overrides) and `--error-format human|json`.
//!
//! This module holds what every subcommand shares: the compile settings ([`Common`]),
//! compiling with diagnostics reported, and loading weights into a compiled model.

mod bench;
mod build;
mod check;
mod eval;
mod explain;
pub(crate) mod export;
mod import;
mod ir;
mod run;
mod step;
mod sweep;
mod train;
mod weights;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use strata_artifact::Artifact;
use strata_artifact::train_config::TrainConfig;
use strata_compiler::driver::{
    CompileError, CompileOptions, Compiled, Stages, compile, compile_stages,
};
use strata_compiler::elaborate::ElaborateOptions;
use strata_compiler::limits::Limits;
use strata_compiler::source::{Diagnostic, SourceFile};
use strata_training::driver::complete_weights;

#[derive(Parser, Debug)]
#[command(name = "strata", version, about = "A compiler for neural networks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a model file and report every mistake.
    Check(Common),
    /// Print the IR of a model at a stage of the pipeline.
    Ir(ir::IrArgs),
    /// Compile a model into a standalone executable.
    Build(build::BuildArgs),
    /// Compile a model and run its `infer` entry on .npy inputs.
    Run(run::RunArgs),
    /// Export a model's `infer` entry, with its weights, as an ONNX model.
    Export(export::ExportArgs),
    /// Read an ONNX model as a model file and its weights.
    Import(import::ImportArgs),
    /// Compile a model and train it as its `train` section says.
    Train(train::TrainCommand),
    /// Compile a model and score trained weights on held-out data.
    Eval(eval::EvalCommand),
    /// Compile a model and time its entries on synthetic inputs.
    Bench(bench::BenchCommand),
    /// List a weights file's tensors against the model's parameters.
    Weights(weights::WeightsArgs),
    /// Run training steps on one given batch from given weights and write the result.
    Step(step::StepArgs),
    /// Search hyper-parameters on the validation split; score the choice on the test split.
    Sweep(sweep::SweepCommand),
    /// Compile a model with its explain entry and attribute an output to the input.
    Explain(explain::ExplainCommand),
}

/// What every subcommand takes: the model file and how to compile it.
#[derive(Args, Debug, Clone)]
struct Common {
    /// The model file (`.strata`).
    file: PathBuf,
    /// Which model of the file (default: the first).
    #[arg(long)]
    model: Option<String>,
    /// Override a hyper-parameter: `--set hidden=256` (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// Seed of the parameters' initial values.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// How to print diagnostics.
    #[arg(long, value_enum, default_value_t = ErrorFormat::Human)]
    error_format: ErrorFormat,
    /// The device to compile for (build, run): `gpu` adds WGSL kernels and makes the GPU
    /// the executable's default device.
    #[arg(long, value_enum, default_value_t = Target::Cpu)]
    target: Target,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Cpu,
    Gpu,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ErrorFormat {
    Human,
    Json,
}

/// The process entry of `strata` (when no model is appended to it).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(c) => check::run(&c),
        Command::Ir(a) => ir::run(&a),
        Command::Build(a) => build::run(&a),
        Command::Run(a) => run::run(&a),
        Command::Export(a) => export::run(&a),
        Command::Import(a) => import::run(&a),
        Command::Train(a) => train::run(&a),
        Command::Eval(a) => eval::run(&a),
        Command::Bench(a) => bench::run(&a),
        Command::Weights(a) => weights::run(&a),
        Command::Step(a) => step::run(&a),
        Command::Sweep(a) => sweep::run(&a),
        Command::Explain(a) => explain::run(&a),
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

fn load_source(path: &Path) -> Result<SourceFile, ExitCode> {
    let bytes =
        std::fs::read(path).map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    match String::from_utf8(bytes) {
        Ok(text) => Ok(SourceFile::new(path.display().to_string(), text)),
        Err(e) => Err(fail(not_utf8(path, e.as_bytes(), e.utf8_error()))),
    }
}

/// Where a model file stops being UTF-8: `file:line:col`, counted in the valid text
/// before the first bad byte, and the byte itself.
fn not_utf8(path: &Path, bytes: &[u8], error: std::str::Utf8Error) -> String {
    let at = error.valid_up_to();
    let valid = String::from_utf8_lossy(&bytes[..at]);
    let line = valid.matches('\n').count() + 1;
    let column = valid.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!(
        "{}:{line}:{column}: not valid UTF-8 (byte 0x{:02x} at offset {at}); model files are UTF-8 text",
        path.display(),
        bytes[at]
    )
}

fn options(c: &Common) -> Result<CompileOptions, ExitCode> {
    let mut overrides = Vec::new();
    for s in &c.set {
        match s.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                overrides.push((k.trim().to_string(), v.trim().to_string()));
            }
            _ => return Err(fail(format!("--set takes NAME=VALUE, got `{s}`"))),
        }
    }
    // Training settings (`lr`, `epochs`, …) go to the train section; the rest are the
    // model's hyper-parameters.
    let (train_overrides, overrides): (Vec<_>, Vec<_>) = overrides
        .into_iter()
        .partition(|(k, _)| strata_compiler::train::OVERRIDABLE.contains(&k.as_str()));
    Ok(CompileOptions {
        train_overrides,
        without_parts: false,
        gradient_outputs: false,
        only_artifact: false,
        unfused_figures: false,
        explain: false,
        elaborate: ElaborateOptions {
            model: c.model.clone(),
            overrides,
            train: true,
            training_mode: false,
            limits: Limits::from_env().map_err(fail)?,
        },
        seed: c.seed,
        target: match c.target {
            Target::Cpu => strata_artifact::Backend::Cpu,
            Target::Gpu => strata_artifact::Backend::Gpu,
        },
    })
}

fn report(d: &Diagnostic, source: &SourceFile, format: ErrorFormat) {
    match format {
        ErrorFormat::Human => eprint!("{}", d.render(source)),
        ErrorFormat::Json => eprintln!("{}", d.to_json(source)),
    }
}

fn compile_or_report(c: &Common) -> Result<(SourceFile, Compiled), ExitCode> {
    let source = load_source(&c.file)?;
    let opts = options(c)?;
    let compiled = compile_reported(&source, &opts, c.error_format)?;
    Ok((source, compiled))
}

/// [`compile_or_report`] up to the memory plans: no code, no artifact (`strata ir`);
/// with `unfused_figures`, each entry also lowered one kernel per op and summed.
fn stages_or_report(c: &Common, unfused_figures: bool) -> Result<(SourceFile, Stages), ExitCode> {
    let source = load_source(&c.file)?;
    let opts = CompileOptions {
        unfused_figures,
        ..options(c)?
    };
    let stages = reported(&source, c.error_format, compile_stages(&source, &opts))?;
    Ok((source, stages))
}

/// Compiles `source`, reporting a mistake in it (exit 1) or a compiler bug (exit 3).
fn compile_reported(
    source: &SourceFile,
    opts: &CompileOptions,
    error_format: ErrorFormat,
) -> Result<Compiled, ExitCode> {
    reported(source, error_format, compile(source, opts))
}

/// A compilation's result, its error reported: a mistake in the model file (exit 1) or a
/// compiler bug (exit 3).
fn reported<T>(
    source: &SourceFile,
    error_format: ErrorFormat,
    result: Result<T, CompileError>,
) -> Result<T, ExitCode> {
    match result {
        Ok(value) => Ok(value),
        Err(CompileError::User(d)) => {
            report(&d, source, error_format);
            Err(ExitCode::FAILURE)
        }
        Err(e) => {
            eprint!("{}", e.render(source));
            Err(ExitCode::from(3))
        }
    }
}

/// Replaces the compiled model's initial weights with a file's (`--weights`), or, without
/// one, warns that they are untrained.
fn with_weights(c: &Common, compiled: &mut Compiled, weights: Option<&Path>) -> Result<(), String> {
    if weights.is_none() {
        warn_untrained(c, compiled);
    }
    with_artifact_weights(&mut compiled.artifact, weights)
}

/// Replaces an artifact's initial weights with a file's, checked against its buffers.
pub(crate) fn with_artifact_weights(
    artifact: &mut Artifact,
    weights: Option<&Path>,
) -> Result<(), String> {
    let Some(path) = weights else { return Ok(()) };
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // Parameters alone (best.safetensors) or a checkpoint become a file of every buffer.
    let bytes = complete_weights(&artifact.weights, &bytes, path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // Check names and shapes against the model by loading them into a session's store.
    strata_artifact::weights::match_weights(&artifact.manifest, &bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    artifact.weights = bytes.into();
    artifact
        .validate()
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The run directory `strata train FILE` writes by default: `runs/<file stem>`.
fn default_run_dir(file: &Path) -> PathBuf {
    PathBuf::from("runs").join(file.file_stem().unwrap_or("model".as_ref()))
}

/// Says on stderr, loudly, that `build`/`run` without `--weights` use the model's
/// initial weights, and where trained ones are if `strata train` left some.
///
/// Neither command picks up a run directory's weights by itself: what a build contains
/// must follow from its command line, not from what happens to lie in `runs/` (which
/// may hold a run of an earlier version of the model).
fn warn_untrained(c: &Common, compiled: &Compiled) {
    let info = strata_artifact::ModelInfo::from_manifest(&compiled.artifact.manifest);
    if info.parameters == 0 {
        return;
    }
    let best = default_run_dir(&c.file).join(strata_training::driver::BEST_FILE);
    let hint = if best.is_file() {
        format!(
            "{} holds trained weights: pass --weights {}",
            best.display(),
            best.display()
        )
    } else {
        format!(
            "train them with `strata train {}` and pass --weights {}",
            c.file.display(),
            best.display()
        )
    };
    eprintln!(
        "warning: no --weights: the model's {} parameters are UNTRAINED (initial values \
         from seed {}); {hint}",
        info.parameters, c.seed
    );
}

/// The compiled artifact of a file with a train section, and its train settings.
fn compile_trainable(c: &Common) -> Result<(Artifact, TrainConfig), ExitCode> {
    let (_, compiled) = compile_or_report(c)?;
    trainable(c, compiled)
}

/// A compiled model's artifact and train settings, or the error that it has no train
/// section.
fn trainable(c: &Common, compiled: Compiled) -> Result<(Artifact, TrainConfig), ExitCode> {
    match compiled.artifact.manifest.train.clone() {
        Some(config) => Ok((compiled.artifact, config)),
        None => Err(fail(format!(
            "{}: model `{}` has no train section",
            c.file.display(),
            compiled.artifact.manifest.model
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}

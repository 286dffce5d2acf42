//! The command line of a standalone model executable (`strata build` output).
//!
//! The executable is the `strata` binary with an artifact appended (see
//! [`strata_artifact::executable`]). At start, `main` looks at its own file's last bytes;
//! when they locate an artifact, it reads and validates it and runs one command:
//!
//! ```text
//! ./mlp info
//! ./mlp infer --input x=x.npy [--input NAME=PATH ...] [--output logits=out.npy ...]
//!             [--weights trained.safetensors] [--entry infer] [--device cpu|gpu]
//! ./mlp train [--data SPEC] [--epochs N] [--run-dir DIR] [--resume | --overwrite | --weights W] [--quiet] [--device cpu|gpu]
//! ./mlp eval  [--data SPEC] [--weights best.safetensors|last.ckpt] [--run-dir DIR] [--split test|val|all] [--json] [--device cpu|gpu]
//! ./seq decode --input x=x.npy --start 10 [--scores logits] [--output tokens.npy]
//!             [--weights trained.safetensors] [--device cpu|gpu]
//! ./cnn explain [--input x=x.npy] [--output NAME] [--target N|all] [--method grad|grad-input|ig|smoothgrad]
//!             [--steps 64] [--baseline zeros|mean|PATH] [-o DIR] [--weights W] [--device cpu|gpu]
//! ./mlp bench [--entry infer]... [--batch 1]... [--seconds S] [--threads N] [--profile] [--json] [--device cpu|gpu]
//! ./mlp export -o mlp.onnx [--weights trained.safetensors]
//! ```
//!
//! `export` writes `infer` as ONNX, the file `strata export` writes for the model file
//! and the same weights (see `export.rs`).
//!
//! `bench` times entries as `strata bench` does ([`crate::bench`]), on the code the
//! executable carries.
//!
//! `decode` decodes greedily (see [`strata_runtime::decode`]): it runs `infer` once per decoder
//! position, feeding each prediction back into the i32 input, and writes (or prints) the
//! predicted tokens `i32 [n, T]`.
//!
//! `explain` needs a model built with `strata build --explain` (its `explain` entry);
//! without `--input` it explains held-out samples of the train section's data (see
//! `explain.rs` for the files it writes).
//!
//! `train` and `eval` need a model built from a file with a `train` section (see
//! [`strata_training::driver`]); their arguments are the same as `strata train`'s and
//! `strata eval`'s ([`strata_training::args`]). `train` writes its run directory (default `runs/<model>`):
//! `last.ckpt`, `best.safetensors`, `metrics.jsonl`, `curves.svg`; Ctrl-C saves
//! `last.ckpt` and exits with code 130, and `--resume` continues from it. `--weights`
//! of `infer` and `eval` takes parameters alone (`best.safetensors`), full weights, or a
//! checkpoint (`last.ckpt`). Without `--weights`, `eval` scores what `train` left: the
//! run directory's `best.safetensors` (`runs/<model>`, or `--run-dir`) when there is
//! one, else the built-in weights; it says on stderr which it scores.
//!
//! A model built with `--target gpu` runs on the GPU by default (`--device cpu` runs its
//! CPU code instead), and `info` names the adapter it would use (`STRATA_ADAPTER` picks
//! one by a substring of its name). A missing adapter or a failing GPU is a runtime error
//! (exit code 1) with a message saying so.
//!
//! With a single input (or output) the `NAME=` may be left out. Without `--output`, the
//! outputs' shapes and first values are printed. Errors are printed as `error: ...`;
//! the exit code is 2 for a usage error (bad arguments, names or shapes the model does
//! not take) and 1 for anything else (unreadable files, a corrupt executable).

use std::ffi::OsString;
use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use strata_artifact::npy::{read_npy, write_npy};
use strata_artifact::train_config::TrainConfig;
use strata_artifact::{
    Artifact, Backend, Bytes, HostTensor, ModelInfo, TensorData, find_in_executable,
};
use strata_runtime::decode::{DecodeError, GreedyDecoding};
use strata_runtime::gpu::{GpuOptions, describe_adapter};
use strata_runtime::{CarriedCode, RunError, Session};
use strata_training::TrainError;
use strata_training::args::{TrainOutcome, is_usage_error};
use strata_training::driver::load_weights_file;

mod explain;
mod export;
mod ports;
pub(crate) use explain::ExplainArgs;
use ports::{bind_input_args, bind_output_args};

/// How many values of each output `infer` prints without `--output`.
const PREVIEW_VALUES: usize = 8;

#[derive(Parser, Debug)]
#[command(about = "A neural network compiled by Strata", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the model's entries, their inputs and outputs, its parameter count and memory.
    Info,
    /// Run the model on inputs read from .npy files.
    Infer(InferArgs),
    /// Train the model on the data of its train section (or --data).
    Train(TrainCommand),
    /// Score the model (its built-in or given weights) on held-out data.
    Eval(EvalCommand),
    /// Decode a sequence-to-sequence model greedily, feeding its predictions back.
    Decode(DecodeArgs),
    /// Time the model's entries on synthetic inputs.
    Bench(BenchCommand),
    /// Attribute an output to the input: heat maps, feature rankings, per-position
    /// scores (a model built with `strata build --explain`).
    Explain(ExplainArgs),
    /// Write `infer` as an ONNX model, as `strata export` does.
    Export(export::ExportArgs),
}

#[derive(Args, Debug)]
struct DecodeArgs {
    /// The inputs of `infer`, as for `infer`; the i32 one holds the decoder's tokens.
    #[arg(long = "input", short = 'i', value_name = "NAME=PATH", required = true)]
    inputs: Vec<String>,
    /// Where the decoder's input starts in each sample's (flattened) tokens: the
    /// position of its start token.
    #[arg(long, value_name = "POSITION")]
    start: usize,
    /// The output of next-token scores `[n, T, classes]` [default: the only output, or
    /// the train section's prediction].
    #[arg(long, value_name = "NAME")]
    scores: Option<String>,
    /// Where to write the predicted tokens (.npy, i32 [n, T]); printed without it.
    #[arg(long, short = 'o', value_name = "PATH")]
    output: Option<PathBuf>,
    /// Weights to use instead of the built-in ones (a safetensors file).
    #[arg(long, value_name = "PATH")]
    weights: Option<PathBuf>,
    /// Where to run: the GPU if the model was built with GPU code, else the CPU.
    #[arg(long, value_enum)]
    device: Option<Device>,
}

#[derive(Args, Debug)]
struct BenchCommand {
    #[command(flatten)]
    bench: crate::bench::BenchArgs,
    /// Where to run: the GPU if the model was built with GPU code, else the CPU.
    #[arg(long, value_enum)]
    device: Option<Device>,
}

#[derive(Args, Debug)]
struct TrainCommand {
    #[command(flatten)]
    train: strata_training::args::TrainArgs,
    /// Where to train: the GPU if the model was built with GPU code, else the CPU.
    #[arg(long, value_enum)]
    device: Option<Device>,
}

#[derive(Args, Debug)]
struct EvalCommand {
    /// Weights to score: parameters (best.safetensors), full weights, or a checkpoint
    /// (last.ckpt) [default: the run directory's best.safetensors if `train` wrote one,
    /// else the built-in weights].
    #[arg(long, value_name = "PATH")]
    weights: Option<PathBuf>,
    /// The run directory whose best weights are scored without --weights [default:
    /// runs/<model>, where `train` writes].
    #[arg(long, value_name = "DIR", conflicts_with = "weights")]
    run_dir: Option<PathBuf>,
    #[command(flatten)]
    eval: strata_training::args::EvalArgs,
    /// Where to run: the GPU if the model was built with GPU code, else the CPU.
    #[arg(long, value_enum)]
    device: Option<Device>,
}

#[derive(Args, Debug)]
struct InferArgs {
    /// An input, as NAME=PATH.npy (just PATH.npy if the entry has one input); repeat per input.
    #[arg(long = "input", short = 'i', value_name = "NAME=PATH", required = true)]
    inputs: Vec<String>,
    /// Where to write outputs, as NAME=PATH.npy (just PATH.npy if the entry has one output).
    /// Without it, the outputs' shapes and first values are printed.
    #[arg(long = "output", short = 'o', value_name = "NAME=PATH")]
    outputs: Vec<String>,
    /// Weights to use instead of the built-in ones (a safetensors file).
    #[arg(long, value_name = "PATH")]
    weights: Option<PathBuf>,
    /// The entry to run.
    #[arg(long, default_value = "infer")]
    entry: String,
    /// Where to run: the GPU if the model was built with GPU code, else the CPU.
    #[arg(long, value_enum)]
    device: Option<Device>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Device {
    Cpu,
    Gpu,
}

/// Why a command failed, and with which exit code.
enum Failure {
    /// The arguments do not fit the model (exit code 2).
    Usage(String),
    /// Anything else (exit code 1).
    Runtime(String),
    /// Stopped by Ctrl-C (exit code 130, as a shell reports SIGINT); the message says
    /// how to resume.
    Interrupted(String),
    /// Whoever read the output stopped reading (`./model info | head`): the command
    /// stops quietly, as other command-line tools do.
    OutputClosed,
}

fn runtime(e: impl Display) -> Failure {
    Failure::Runtime(e.to_string())
}

/// A failure to write the command's output: quiet when the reader has gone.
fn written(e: std::io::Error) -> Failure {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Failure::OutputClosed
    } else {
        runtime(e)
    }
}

/// The executable's `main`: runs the command line against `artifact`, the bytes
/// appended to the running binary.
pub fn main(artifact: Bytes) -> ExitCode {
    run_on_artifact(
        std::env::args_os(),
        || Ok(artifact),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )
}

/// Runs the command line `args` (program name first) against the executable whose bytes
/// `load_executable` returns, writing to `out` and `err`: `main` without the process.
pub fn run_cli(
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
    load_executable: impl FnOnce() -> Result<Vec<u8>, String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> ExitCode {
    let load_artifact = || {
        let exe = load_executable()?;
        match find_in_executable(&exe) {
            Ok(Some(bytes)) => Ok(Bytes::from(bytes.to_vec())),
            Ok(None) => Err(
                "this executable holds no compiled model (build one with `strata build`)".into(),
            ),
            Err(e) => Err(e.to_string()),
        }
    };
    run_on_artifact(args, load_artifact, out, err)
}

/// [`run_cli`] with the artifact's bytes instead of the executable's.
fn run_on_artifact(
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
    load_artifact: impl FnOnce() -> Result<Bytes, String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let text = e.render().to_string();
            let sink: &mut dyn Write = if e.use_stderr() { err } else { out };
            let _ = write!(sink, "{text}");
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let result = load_artifact()
        .map_err(Failure::Runtime)
        .and_then(|bytes| execute(cli, &bytes, out, err));
    exit_code(result, err)
}

/// `explain` on an artifact in memory (`strata explain FILE`).
pub(crate) fn explain_artifact(
    artifact: &Artifact,
    args: ExplainArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> ExitCode {
    exit_code(explain::run(artifact, args, out), err)
}

/// Says why a command failed on `err`, and its exit code.
fn exit_code(result: Result<(), Failure>, err: &mut dyn Write) -> ExitCode {
    match result {
        Ok(()) | Err(Failure::OutputClosed) => ExitCode::SUCCESS,
        Err(failure) => {
            let (message, code) = match failure {
                Failure::Usage(m) => (m, 2),
                Failure::Runtime(m) => (m, 1),
                Failure::Interrupted(m) => (m, 130),
                Failure::OutputClosed => return ExitCode::SUCCESS,
            };
            let _ = writeln!(err, "error: {message}");
            ExitCode::from(code)
        }
    }
}

fn execute(
    cli: Cli,
    artifact: &Bytes,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Failure> {
    let artifact = Artifact::from_shared(artifact).map_err(runtime)?;
    match cli.command {
        Command::Info => {
            let info = ModelInfo::from_artifact(&artifact);
            writeln!(out, "{info}").map_err(written)?;
            writeln!(out, "\n{}", device_line(&artifact)).map_err(written)?;
            writeln!(out, "{}", cpu_code_line(&artifact)).map_err(written)
        }
        Command::Infer(args) => infer(&artifact, args, out),
        Command::Train(args) => train(&artifact, args, out),
        Command::Eval(args) => eval(&artifact, args, out, err),
        Command::Decode(args) => decode(&artifact, args, out),
        Command::Bench(args) => bench(&artifact, args, out),
        Command::Explain(args) => explain::run(&artifact, args, out),
        Command::Export(args) => export::run(&artifact, args, err),
    }
}

/// The train section, or the error every training command gives without one.
fn train_config(artifact: &Artifact) -> Result<&TrainConfig, Failure> {
    artifact.manifest.train.as_ref().ok_or_else(|| {
        Failure::Usage(format!(
            "this model has no train section: `{}` was built from a file without `train {}`",
            artifact.manifest.model, artifact.manifest.model
        ))
    })
}

/// Exit code 2 for what the user can fix in the command line or the settings.
fn train_failure(e: TrainError) -> Failure {
    if is_usage_error(&e) {
        Failure::Usage(e.to_string())
    } else {
        Failure::Runtime(e.to_string())
    }
}

/// Where `train` writes its run by default: `runs/<model>`, lowercase.
fn default_run_dir(artifact: &Artifact) -> PathBuf {
    PathBuf::from("runs").join(artifact.manifest.model.to_lowercase())
}

fn train(artifact: &Artifact, args: TrainCommand, out: &mut dyn Write) -> Result<(), Failure> {
    let config = train_config(artifact)?;
    let options = args
        .train
        .options(default_run_dir(artifact))
        .map_err(Failure::Runtime)?;
    let mut session = session(artifact, args.device)?;
    let summary = strata_training::train(&mut session, config, &options).map_err(train_failure)?;
    match TrainOutcome::of(summary, "`train --resume`") {
        TrainOutcome::Interrupted(message) => Err(Failure::Interrupted(message)),
        TrainOutcome::Finished(summary) if !args.train.quiet => writeln!(
            out,
            "use the trained weights with `--weights {}`",
            summary.paths.best.display()
        )
        .map_err(runtime),
        TrainOutcome::Finished(_) => Ok(()),
    }
}

/// Scores the weights `--weights` names, else those `train` left in the run directory,
/// else the built-in ones; says which on `err`.
fn eval(
    artifact: &Artifact,
    args: EvalCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Failure> {
    let config = train_config(artifact)?;
    let mut session = session(artifact, args.device)?;
    let trained = args
        .run_dir
        .unwrap_or_else(|| default_run_dir(artifact))
        .join(strata_training::driver::BEST_FILE);
    let weights = args
        .weights
        .or_else(|| trained.is_file().then(|| trained.clone()));
    match &weights {
        Some(path) => {
            load_weights(&mut session, path)?;
            writeln!(err, "scoring the weights in {}", path.display()).map_err(runtime)?;
        }
        None => writeln!(
            err,
            "scoring the built-in weights (no {} from `train`; pass --weights to score others)",
            trained.display()
        )
        .map_err(runtime)?,
    }
    let report = strata_training::evaluate(
        &mut session,
        config,
        args.eval.data.as_deref(),
        args.eval.split,
    )
    .map_err(train_failure)?;
    write!(out, "{}", args.eval.render(&report)).map_err(written)
}

fn bench(artifact: &Artifact, args: BenchCommand, out: &mut dyn Write) -> Result<(), Failure> {
    use crate::bench::BenchFailure;
    match args.bench.apply_threads() {
        Err(BenchFailure::Usage(message)) => return Err(Failure::Usage(message)),
        Err(BenchFailure::Failed(message)) => return Err(Failure::Runtime(message)),
        Ok(()) | Err(BenchFailure::OutputClosed) => {}
    }
    let session = session(artifact, args.device)?;
    let mut builds = [crate::bench::Timed { label: "", session }];
    match crate::bench::run_bench(&mut builds, &args.bench, out) {
        Ok(()) | Err(BenchFailure::OutputClosed) => Ok(()),
        Err(BenchFailure::Usage(message)) => Err(Failure::Usage(message)),
        Err(BenchFailure::Failed(message)) => Err(Failure::Runtime(message)),
    }
}

/// A session on the executable's artifact on the backend `--device` picks. The artifact
/// is the running executable's own (or one compiled in this process), so the machine
/// code it carries is run when this CPU can run it.
fn session(artifact: &Artifact, device: Option<Device>) -> Result<Session, Failure> {
    Session::new_with_code(
        artifact,
        backend(artifact, device),
        &GpuOptions::from_env(),
        CarriedCode::UseIfRunnable,
    )
    .map_err(runtime)
}

/// The backend `--device` picks (default: the artifact's).
fn backend(artifact: &Artifact, device: Option<Device>) -> Backend {
    match device {
        None => Backend::default_for(artifact),
        Some(Device::Cpu) => Backend::Cpu,
        Some(Device::Gpu) => Backend::Gpu,
    }
}

/// Loads `--weights`: parameters alone (the optimizer state stays), full weights, or a
/// training checkpoint.
fn load_weights(session: &mut Session, path: &Path) -> Result<(), Failure> {
    let bytes =
        std::fs::read(path).map_err(|e| Failure::Runtime(format!("{}: {e}", path.display())))?;
    load_weights_file(session, &bytes, path).map_err(|e| match e {
        // Checkpoint errors name the file themselves.
        TrainError::Checkpoint(_) => runtime(e),
        _ => Failure::Runtime(format!("{}: {e}", path.display())),
    })
}

fn infer(artifact: &Artifact, args: InferArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let manifest = &artifact.manifest;
    let Some(entry) = manifest.entries.iter().find(|e| e.name == args.entry) else {
        let names: Vec<&str> = manifest.entries.iter().map(|e| e.name.as_str()).collect();
        return Err(Failure::Usage(format!(
            "the model has no entry `{}` (it has {})",
            args.entry,
            names.join(", ")
        )));
    };
    let input_names: Vec<&str> = entry.inputs.iter().map(|p| p.name.as_str()).collect();
    let output_names: Vec<&str> = entry.outputs.iter().map(|p| p.name.as_str()).collect();
    let inputs = bind_input_args(&input_names, &args.inputs).map_err(Failure::Usage)?;
    let outputs = bind_output_args(&output_names, &args.outputs).map_err(Failure::Usage)?;

    let tensors = inputs
        .iter()
        .map(|(name, path)| Ok((name.as_str(), read_npy(path).map_err(runtime)?)))
        .collect::<Result<Vec<(&str, HostTensor)>, Failure>>()?;
    let mut session = session(artifact, args.device)?;
    if let Some(path) = &args.weights {
        load_weights(&mut session, path)?;
    }
    let results = session.run(&args.entry, &tensors).map_err(|e| match e {
        RunError::Internal(_) | RunError::TooLarge { .. } | RunError::Gpu(_) => runtime(e),
        _ => Failure::Usage(e.to_string()),
    })?;

    if outputs.is_empty() {
        for (name, tensor) in &results {
            writeln!(out, "{name}: {}", preview(tensor)).map_err(written)?;
        }
        return Ok(());
    }
    for (name, path) in &outputs {
        if let Some((_, tensor)) = results.iter().find(|(n, _)| n == name) {
            write_npy(path, tensor).map_err(runtime)?;
        }
    }
    Ok(())
}

fn decode(artifact: &Artifact, args: DecodeArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let manifest = &artifact.manifest;
    let Some(entry) = manifest.entries.iter().find(|e| e.name == "infer") else {
        return Err(Failure::Usage("the model has no `infer` entry".into()));
    };
    let input_names: Vec<&str> = entry.inputs.iter().map(|p| p.name.as_str()).collect();
    let inputs = bind_input_args(&input_names, &args.inputs).map_err(Failure::Usage)?;
    let tensors = inputs
        .iter()
        .map(|(name, path)| Ok((name.as_str(), read_npy(path).map_err(runtime)?)))
        .collect::<Result<Vec<(&str, HostTensor)>, Failure>>()?;
    let token_inputs: Vec<&str> = tensors
        .iter()
        .filter(|(_, t)| matches!(t.data, TensorData::I32(_)))
        .map(|(name, _)| *name)
        .collect();
    let [input] = token_inputs[..] else {
        return Err(Failure::Usage(format!(
            "decoding needs exactly one i32 input of token ids, got {}",
            token_inputs.len()
        )));
    };
    let scores = match (&args.scores, entry.outputs.as_slice(), &manifest.train) {
        (Some(name), _, _) => name.clone(),
        (None, [only], _) => only.name.clone(),
        (None, _, Some(train)) => train.prediction.clone(),
        (None, _, None) => {
            return Err(Failure::Usage(
                "the model has several outputs: say which scores the next token with --scores"
                    .into(),
            ));
        }
    };
    let mut session = session(artifact, args.device)?;
    if let Some(path) = &args.weights {
        load_weights(&mut session, path)?;
    }
    let decoding = GreedyDecoding {
        entry: "infer".into(),
        input: input.to_string(),
        output: scores,
        start: args.start,
    };
    let tokens = decoding
        .decode(&mut session, &tensors)
        .map_err(|e| match e {
            DecodeError::Run(
                RunError::Internal(_) | RunError::TooLarge { .. } | RunError::Gpu(_),
            ) => runtime(e),
            _ => Failure::Usage(e.to_string()),
        })?;
    match &args.output {
        Some(path) => write_npy(path, &tokens).map_err(runtime),
        None => {
            let TensorData::I32(ids) = &tokens.data else {
                unreachable!("decoding predicts i32 tokens")
            };
            let width = tokens.shape.get(1).copied().unwrap_or(0) as usize;
            for row in ids.chunks(width.max(1)) {
                let row: Vec<String> = row.iter().map(i32::to_string).collect();
                writeln!(out, "{}", row.join(" ")).map_err(written)?;
            }
            Ok(())
        }
    }
}

/// `device  gpu: llvmpipe (...)`: where `infer` runs by default, and on which adapter.
fn device_line(artifact: &Artifact) -> String {
    match Backend::default_for(artifact) {
        Backend::Cpu => "device      cpu (built without GPU code)".to_string(),
        Backend::Gpu => match describe_adapter(&GpuOptions::from_env()) {
            Ok(adapter) => format!("device      gpu: {adapter}"),
            Err(e) => format!("device      gpu, unavailable: {e}"),
        },
    }
}

/// `cpu code    machine code for x86_64-…, runs here`: whether a CPU run maps the
/// carried machine code or compiles the kernels when an entry first runs (the train
/// step always is).
fn cpu_code_line(artifact: &Artifact) -> String {
    match &artifact.machine_code {
        None => "cpu code    compiled when first run (built without machine code)".to_string(),
        Some(code) => {
            let what = format!(
                "machine code for {} ({} functions, {} bytes)",
                code.target,
                code.functions.len(),
                code.code.len()
            );
            match strata_runtime::cpu::machine_code::runnable_here(code) {
                Ok(()) => format!(
                    "cpu code    {what}, runs here; the train step is compiled when first run"
                ),
                Err(e) => format!("cpu code    {what}, not run here: {e}; compiled when first run"),
            }
        }
    }
}

/// `f32[2, 3] = [0.5, 1, -2, 0, 0, 3]`, with at most [`PREVIEW_VALUES`] values.
fn preview(tensor: &HostTensor) -> String {
    let values: Vec<String> = match &tensor.data {
        TensorData::F32(v) => v.iter().take(PREVIEW_VALUES).map(f32::to_string).collect(),
        TensorData::I32(v) => v.iter().take(PREVIEW_VALUES).map(i32::to_string).collect(),
    };
    let more = if tensor.data.len() > PREVIEW_VALUES {
        format!(", ... ({} values)", tensor.data.len())
    } else {
        String::new()
    };
    format!("{} = [{}{more}]", tensor.type_string(), values.join(", "))
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

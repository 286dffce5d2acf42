//! The `strata` command line.
//!
//! ```text
//! strata check FILE                 diagnostics only; exit 1 on error
//! strata ir    FILE [--stage parsed|typed|optimized|kernels|plan] [--format text|dot|json|svg] [--emit clif|wgsl]
//!              [--dump-dir DIR]                     one file per pass, then kernels and plan
//! strata build FILE -o OUT [--target cpu|gpu]           a standalone native executable
//! strata run   FILE --input x=x.npy [--target cpu|gpu]  compile and run `infer` in one go
//! strata train FILE [--data SPEC] [--epochs N] [--run-dir DIR] [--resume] [--quiet]
//! strata eval  FILE --weights W.safetensors [--data SPEC] [--split test|val|all]
//! strata bench FILE [--entry NAME]... [--batch N]... [--seconds S] [--target cpu|gpu]
//! ```
//! `train` runs the file's `train` section (settings overridable with `--set lr=3e-3`,
//! `epochs`, `batch`, `seed`, `patience`, `data`) and writes its run directory (default
//! `runs/<file stem>`); `eval` scores trained weights on the held-out split.
//! Every command takes `--model NAME` (when a file holds several), `--set name=value`
//! (hyper-parameter overrides) and `--error-format human|json`.

use crate::driver::{CompileError, CompileOptions, Compiled, check, compile};
use crate::elaborate::ElaborateOptions;
use crate::ir::{dot::graph_to_dot, print::print_graph};
use crate::syntax::{Diagnostic, SourceFile};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use strata_runtime::Artifact;
use strata_runtime::artifact::train_config::TrainConfig;
use strata_runtime::train::driver::complete_weights;

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
    Ir(IrArgs),
    /// Compile a model into a standalone executable.
    Build(BuildArgs),
    /// Compile a model and run its `infer` entry on .npy inputs.
    Run(RunArgs),
    /// Compile a model and train it as its `train` section says.
    Train(TrainArgs),
    /// Compile a model and score trained weights on held-out data.
    Eval(EvalArgs),
    /// Compile a model and time its entries on synthetic inputs.
    Bench(BenchArgs),
}

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

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// The syntax tree the parser builds (a debug dump).
    Parsed,
    /// The graph as elaborated from the source, with types.
    Typed,
    /// The training step (forward, loss, backward, update) before the passes.
    Train,
    /// After the simplification passes.
    #[value(alias = "simplified")]
    Optimized,
    /// The fused kernels the graph lowers to.
    #[value(alias = "fused")]
    Kernels,
    /// The memory plan: every buffer's lifetime and arena offset.
    #[value(alias = "planned")]
    Plan,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Text,
    Dot,
    Json,
    /// A picture of the memory plan (with `--stage plan`).
    Svg,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Emit {
    /// The generated Cranelift IR of every kernel.
    Clif,
    /// The generated WGSL of every kernel (validated by naga).
    Wgsl,
}

#[derive(Args, Debug)]
struct IrArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, value_enum, default_value_t = Stage::Typed)]
    stage: Stage,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Print generated code instead of the IR.
    #[arg(long, value_enum)]
    emit: Option<Emit>,
    /// The entry whose graph, kernels or plan to print (`infer`, `train_step` or
    /// `train_<step>`, `eval`).
    #[arg(long, default_value = "infer")]
    entry: String,
    /// Print per entry: ops, kernels, bytes moved per step, arena against the naive sum
    /// and the live-set lower bound.
    #[arg(long)]
    stats: bool,
    /// Write the entry's graph after every pass (`00-typed.ir`, `01-verify.ir`, …), its
    /// kernels and its memory plan into DIR, one numbered file each.
    #[arg(long, value_name = "DIR")]
    dump_dir: Option<PathBuf>,
    /// The batch size `--format svg` draws the memory plan at.
    #[arg(long, default_value_t = 32)]
    svg_batch: u64,
}

#[derive(Args, Debug)]
struct BuildArgs {
    #[command(flatten)]
    common: Common,
    /// The executable to write.
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    output: PathBuf,
    /// Use these weights (safetensors) instead of freshly initialized ones.
    #[arg(long, value_name = "PATH")]
    weights: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// An input as NAME=PATH.npy (repeatable).
    #[arg(long = "input", short = 'i', value_name = "NAME=PATH", required = true)]
    inputs: Vec<String>,
    /// Where to write an output, as NAME=PATH.npy (repeatable); printed otherwise.
    #[arg(long = "output", value_name = "NAME=PATH")]
    outputs: Vec<String>,
    /// Weights to use (safetensors).
    #[arg(long, value_name = "PATH")]
    weights: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct BenchArgs {
    #[command(flatten)]
    common: Common,
    /// An entry to time (repeatable) [default: infer, and train_step if there is one].
    #[arg(long)]
    entry: Vec<String>,
    /// A batch size to time at (repeatable) [default: 32].
    #[arg(long)]
    batch: Vec<u64>,
    /// Time each entry for at least this long.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Also time the model lowered without kernels with parts (horizontal fusion off),
    /// alternating with the normal build, and print the speed ratio.
    #[arg(long)]
    compare_parts: bool,
    /// Print each kernel's share of the time (CPU).
    #[arg(long)]
    profile: bool,
}

#[derive(Args, Debug)]
struct TrainArgs {
    #[command(flatten)]
    common: Common,
    /// A data source instead of the train section's: digits, csv:PATH[,label=N], …
    #[arg(long, value_name = "SPEC")]
    data: Option<String>,
    /// Train this many epochs in all (same as `--set epochs=N`).
    #[arg(long, value_name = "N")]
    epochs: Option<u64>,
    /// Where checkpoints, the metrics log and the curves go [default: runs/<file stem>].
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,
    /// Continue the run in the run directory from its last.ckpt.
    #[arg(long)]
    resume: bool,
    /// Print nothing but errors.
    #[arg(long, short = 'q')]
    quiet: bool,
}

#[derive(Args, Debug)]
struct EvalArgs {
    #[command(flatten)]
    common: Common,
    /// The weights to score: best.safetensors, last.ckpt, or a full weights file.
    #[arg(long, value_name = "PATH")]
    weights: PathBuf,
    /// A data source instead of the train section's.
    #[arg(long, value_name = "SPEC")]
    data: Option<String>,
    /// Which samples to score.
    #[arg(long, value_enum, default_value_t = SplitArg::Test)]
    split: SplitArg,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum SplitArg {
    Test,
    Val,
    All,
}

/// The process entry of `strata`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(c) => cmd_check(&c),
        Command::Ir(a) => cmd_ir(&a),
        Command::Build(a) => cmd_build(&a),
        Command::Run(a) => cmd_run(&a),
        Command::Train(a) => cmd_train(&a),
        Command::Eval(a) => cmd_eval(&a),
        Command::Bench(a) => cmd_bench(&a),
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

fn load_source(path: &Path) -> Result<SourceFile, ExitCode> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(SourceFile::new(path.display().to_string(), text)),
        Err(e) => Err(fail(format!("cannot read {}: {e}", path.display()))),
    }
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
        .partition(|(k, _)| crate::train::OVERRIDABLE.contains(&k.as_str()));
    Ok(CompileOptions {
        train_overrides,
        without_parts: false,
        elaborate: ElaborateOptions {
            model: c.model.clone(),
            overrides,
            train: true,
            training_mode: false,
        },
        seed: c.seed,
        target: match c.target {
            Target::Cpu => crate::driver::Backend::Cpu,
            Target::Gpu => crate::driver::Backend::Gpu,
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

/// Compiles `source`, reporting a mistake in it (exit 1) or a compiler bug (exit 3).
fn compile_reported(
    source: &SourceFile,
    opts: &CompileOptions,
    error_format: ErrorFormat,
) -> Result<Compiled, ExitCode> {
    match compile(source, opts) {
        Ok(compiled) => Ok(compiled),
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

fn cmd_check(c: &Common) -> ExitCode {
    let source = match load_source(&c.file) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let opts = match options(c) {
        Ok(o) => o,
        Err(code) => return code,
    };
    match check(&source, &opts.elaborate) {
        Ok(e) => {
            let params: u64 = e
                .graph
                .params()
                .iter()
                .map(|(v, _)| e.graph.ty(*v).shape.fixed_elements())
                .sum();
            println!(
                "{}: model `{}` is well-formed ({} ops, {} parameters)",
                source.name,
                e.graph.name,
                e.graph.len(),
                params
            );
            ExitCode::SUCCESS
        }
        Err(d) => {
            report(&d, &source, c.error_format);
            ExitCode::FAILURE
        }
    }
}

fn cmd_ir(a: &IrArgs) -> ExitCode {
    let (source, compiled) = match compile_or_report(&a.common) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if a.stats {
        let mut all = Vec::new();
        let infer = crate::plan::stats::entry_stats(
            "infer",
            compiled.infer_unsimplified.len(),
            &compiled.optimized,
            &compiled.lowered,
            &compiled.plan,
        );
        all.push(infer);
        for e in &compiled.training {
            all.push(crate::plan::stats::entry_stats(
                &e.name,
                e.unsimplified.len(),
                &e.graph,
                &e.lowered,
                &e.plan,
            ));
        }
        return match all.into_iter().collect::<Result<Vec<_>, _>>() {
            Ok(stats) => {
                print!("{}", crate::plan::stats::print_stats(&stats));
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        };
    }
    // The entry `--entry` names: its graph before and after the passes, kernels, plan.
    let (unsimplified, graph, lowered, plan) = if a.entry == "infer" {
        (
            &compiled.infer_unsimplified,
            &compiled.optimized,
            &compiled.lowered,
            &compiled.plan,
        )
    } else if let Some(e) = compiled.training.iter().find(|e| e.name == a.entry) {
        (&e.unsimplified, &e.graph, &e.lowered, &e.plan)
    } else {
        return fail(format!(
            "no entry `{}` (the model has no train section?)",
            a.entry
        ));
    };
    // `--stage train`: the training entry `--entry` names, else `train_step`, else the
    // first step of a section with several.
    let train = compiled
        .training
        .iter()
        .find(|e| e.name == a.entry && e.name != "eval")
        .or_else(|| compiled.training.iter().find(|e| e.name == "train_step"))
        .or_else(|| compiled.training.iter().find(|e| e.name != "eval"))
        .map(|e| &e.unsimplified)
        .unwrap_or(unsimplified);
    if let Some(dir) = &a.dump_dir {
        return dump_stages(dir, &a.entry, unsimplified);
    }
    let text = match a.emit {
        Some(Emit::Clif) => compiled.clif.clone(),
        Some(Emit::Wgsl) => match strata_kernels::gpu::emit_wgsl(&compiled.lowered.kernels) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("internal compiler error: {e}");
                return ExitCode::from(3);
            }
        },
        None => match (a.stage, a.format) {
            (Stage::Parsed, _) => match crate::syntax::parse(&source.text) {
                Ok(program) => format!("{program:#?}\n"),
                Err(d) => {
                    report(&d, &source, a.common.error_format);
                    return ExitCode::FAILURE;
                }
            },
            (Stage::Plan, Format::Svg) => crate::plan::svg::plan_to_svg(
                lowered,
                plan,
                &crate::plan::svg::SvgOptions {
                    batch: a.svg_batch,
                    ..Default::default()
                },
            ),
            (Stage::Typed | Stage::Train | Stage::Optimized | Stage::Kernels, Format::Svg) => {
                return fail("--format svg draws the memory plan: use it with --stage plan");
            }
            (Stage::Typed, Format::Text) => print_graph(&compiled.typed, Some(&source)),
            (Stage::Train, Format::Text) => print_graph(train, Some(&source)),
            (Stage::Optimized, Format::Text) => print_graph(graph, Some(&source)),
            (Stage::Typed, Format::Dot) => graph_to_dot(&compiled.typed),
            (Stage::Train, Format::Dot) => graph_to_dot(train),
            (Stage::Optimized, Format::Dot) => graph_to_dot(graph),
            (Stage::Kernels, Format::Text) => crate::lower::print::print_kernels(lowered),
            (Stage::Plan, Format::Text) => crate::plan::print::print_plan(lowered, plan),
            (
                Stage::Kernels | Stage::Plan | Stage::Typed | Stage::Train | Stage::Optimized,
                Format::Json,
            ) => match serde_json::to_string_pretty(&compiled.artifact.manifest) {
                Ok(s) => s + "\n",
                Err(e) => return fail(e),
            },
            (Stage::Kernels | Stage::Plan, Format::Dot) => {
                return fail("--format dot draws graphs: use it with --stage typed or optimized");
            }
        },
    };
    let mut out = std::io::stdout().lock();
    if out.write_all(text.as_bytes()).is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// `strata ir --dump-dir`: the entry's stages, one numbered file each.
fn dump_stages(dir: &Path, entry: &str, graph: &crate::ir::Graph) -> ExitCode {
    let files = match crate::driver::stage_dumps(entry, graph) {
        Ok(files) => files,
        Err(CompileError::Internal(e)) => return fail(format!("internal compiler error: {e}")),
        Err(CompileError::User(d)) => return fail(d.message),
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        return fail(format!("cannot create {}: {e}", dir.display()));
    }
    for (name, text) in files {
        let path = dir.join(&name);
        if let Err(e) = std::fs::write(&path, text) {
            return fail(format!("cannot write {}: {e}", path.display()));
        }
        println!("{}", path.display());
    }
    ExitCode::SUCCESS
}

/// The runtime stub binary: `strata-stub` beside this executable.
fn stub_path() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate strata itself: {e}"))?;
    let dir = exe.parent().ok_or("strata's directory is unknown")?;
    let stub = dir.join(format!("strata-stub{}", std::env::consts::EXE_SUFFIX));
    if stub.is_file() {
        Ok(stub)
    } else {
        Err(format!(
            "the runtime stub `{}` is missing (it is built with strata: `cargo build --bins`)",
            stub.display()
        ))
    }
}

fn with_weights(compiled: &mut Compiled, weights: Option<&Path>) -> Result<(), String> {
    let Some(path) = weights else { return Ok(()) };
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // Parameters alone (best.safetensors) or a checkpoint become a file of every buffer.
    let bytes = complete_weights(&compiled.artifact.weights, &bytes, path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // Check names and shapes against the model by loading them into a session's store.
    strata_runtime::artifact::weights::match_weights(&compiled.artifact.manifest, &bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    compiled.artifact.weights = bytes;
    compiled
        .artifact
        .validate()
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn cmd_build(a: &BuildArgs) -> ExitCode {
    let (_, mut compiled) = match compile_or_report(&a.common) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if let Err(e) = with_weights(&mut compiled, a.weights.as_deref()) {
        return fail(e);
    }
    let stub = match stub_path()
        .and_then(|p| std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display())))
    {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let exe = match crate::artifact::pack_executable(&stub, &compiled.artifact) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    if let Err(e) = write_executable(&a.output, &exe) {
        return fail(format!("cannot write {}: {e}", a.output.display()));
    }
    eprintln!(
        "wrote {} ({} kernels, {} bytes)",
        a.output.display(),
        compiled.lowered.kernels.len(),
        exe.len()
    );
    ExitCode::SUCCESS
}

/// Writes to a temporary file beside `path`, marks it executable, then renames it, so a
/// failed build never leaves a half-written executable.
fn write_executable(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    }
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

fn cmd_run(a: &RunArgs) -> ExitCode {
    let (_, mut compiled) = match compile_or_report(&a.common) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if let Err(e) = with_weights(&mut compiled, a.weights.as_deref()) {
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
    let exe = strata_runtime::artifact::append_to_executable(&[], &bytes);
    strata_runtime::stub::run_cli(
        args,
        || Ok(exe),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )
}

/// The compiled artifact of a file with a train section, and its train settings.
fn compile_trainable(c: &Common) -> Result<(Artifact, TrainConfig), ExitCode> {
    let (_, compiled) = compile_or_report(c)?;
    match compiled.artifact.manifest.train.clone() {
        Some(config) => Ok((compiled.artifact, config)),
        None => Err(fail(format!(
            "{}: model `{}` has no train section",
            c.file.display(),
            compiled.artifact.manifest.model
        ))),
    }
}

fn cmd_train(a: &TrainArgs) -> ExitCode {
    use strata_runtime::train::{StopReason, TrainOptions, interrupt_on_ctrl_c, train};
    let (artifact, config) = match compile_trainable(&a.common) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let run_dir = a.run_dir.clone().unwrap_or_else(|| {
        let stem = a.common.file.file_stem().unwrap_or("model".as_ref());
        PathBuf::from("runs").join(stem)
    });
    let interrupt = match interrupt_on_ctrl_c() {
        Ok(flag) => flag,
        Err(e) => return fail(e),
    };
    let options = TrainOptions {
        run_dir,
        data_override: a.data.clone(),
        epochs_override: a.epochs,
        resume: a.resume,
        progress: true,
        quiet: a.quiet,
        interrupt: Some(interrupt),
    };
    // `--target gpu` trains on the GPU.
    let backend = strata_runtime::session::Backend::default_for(&artifact);
    let mut session = match strata_runtime::Session::new_with(&artifact, backend) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    match train(&mut session, &config, &options) {
        Ok(summary) => match summary.stop {
            StopReason::Interrupted { step, epoch } => {
                eprintln!(
                    "error: interrupted at step {step} (epoch {epoch}); {} is saved: continue with --resume",
                    summary.paths.last.display()
                );
                ExitCode::from(130)
            }
            _ => {
                if !a.quiet {
                    println!(
                        "build an executable with these weights: strata build {} -o OUT --weights {}",
                        a.common.file.display(),
                        summary.paths.best.display()
                    );
                }
                ExitCode::SUCCESS
            }
        },
        Err(e) => fail(e),
    }
}

fn cmd_eval(a: &EvalArgs) -> ExitCode {
    use strata_runtime::train::driver::load_weights_file;
    use strata_runtime::train::{EvalSplit, evaluate};
    let (artifact, config) = match compile_trainable(&a.common) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let mut session = match strata_runtime::Session::new(&artifact) {
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
    let split = match a.split {
        SplitArg::Test => EvalSplit::Test,
        SplitArg::Val => EvalSplit::Val,
        SplitArg::All => EvalSplit::All,
    };
    match evaluate(&mut session, &config, a.data.as_deref(), split) {
        Ok(report) => {
            let mut out = std::io::stdout().lock();
            match write!(out, "{report}") {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        Err(e) => fail(e),
    }
}

fn cmd_bench(a: &BenchArgs) -> ExitCode {
    use strata_runtime::bench::{BenchOptions, BenchReport, bench_entry};
    let (source, options) =
        match load_source(&a.common.file).and_then(|source| Ok((source, options(&a.common)?))) {
            Ok(x) => x,
            Err(code) => return code,
        };
    if !(a.seconds.is_finite() && a.seconds >= 0.0) {
        return fail(format!(
            "--seconds takes a time in seconds, got {}",
            a.seconds
        ));
    }
    // The build to time, and with --compare-parts the same model without parts.
    let mut builds = vec![(false, "")];
    if a.compare_parts {
        builds.push((true, " without parts"));
    }
    let mut sessions = Vec::new();
    for (without_parts, label) in builds {
        let options = CompileOptions {
            without_parts,
            ..options.clone()
        };
        let artifact = match compile_reported(&source, &options, a.common.error_format) {
            Ok(compiled) => compiled.artifact,
            Err(code) => return code,
        };
        let backend = strata_runtime::session::Backend::default_for(&artifact);
        match strata_runtime::Session::new_with(&artifact, backend) {
            Ok(s) => {
                println!(
                    "{}{label}: {} kernels, {backend:?} backend",
                    artifact.manifest.model,
                    artifact.manifest.kernels.len()
                );
                sessions.push((label, s));
            }
            Err(e) => return fail(e),
        }
    }
    let manifest = sessions[0].1.manifest().clone();
    let entries: Vec<String> = match a.entry.is_empty() {
        false => a.entry.clone(),
        true => ["infer", "train_step"]
            .iter()
            .filter(|e| manifest.entries.iter().any(|x| x.name == **e))
            .map(|e| e.to_string())
            .collect(),
    };
    let batches = match a.batch.is_empty() {
        false => a.batch.clone(),
        true => vec![32],
    };
    // Builds are timed in alternating rounds, so a noisy machine slows both alike; each
    // build's figure is its best round.
    let rounds = if sessions.len() > 1 { 3 } else { 1 };
    for entry in &entries {
        for &batch in &batches {
            let options = BenchOptions {
                batch,
                min_time: std::time::Duration::from_secs_f64(a.seconds / rounds as f64),
                ..BenchOptions::default()
            };
            let mut best: Vec<Option<BenchReport>> = vec![None; sessions.len()];
            for _ in 0..rounds {
                for (i, (_, session)) in sessions.iter_mut().enumerate() {
                    let report = match bench_entry(session, entry, &options) {
                        Ok(r) => r,
                        Err(e) => return fail(e),
                    };
                    if best[i].as_ref().is_none_or(|b| report.median < b.median) {
                        best[i] = Some(report);
                    }
                }
            }
            for ((label, _), report) in sessions.iter().zip(&best) {
                if let Some(report) = report {
                    println!("{report}{label}");
                }
            }
            if a.profile {
                let session = &mut sessions[0].1;
                if !session.start_profiling() {
                    return fail("--profile times CPU launches; this session runs on a GPU");
                }
                if let Err(e) = bench_entry(session, entry, &options) {
                    return fail(e);
                }
                print_profile(session);
            }
            if let [Some(with), Some(without)] = best.as_slice() {
                println!(
                    "{entry:<12} batch {batch:>5}  parts: {:.2}x the speed without",
                    without.median.as_secs_f64() / with.median.as_secs_f64()
                );
            }
        }
    }
    ExitCode::SUCCESS
}

/// Each launched kernel's time, largest first, with its share and per-launch mean.
fn print_profile(session: &strata_runtime::Session) {
    let mut times: Vec<_> = session
        .kernel_times()
        .into_iter()
        .filter(|(_, _, n)| *n > 0)
        .collect();
    let total: f64 = times.iter().map(|(_, t, _)| t.as_secs_f64()).sum();
    times.sort_by_key(|t| std::cmp::Reverse(t.1));
    for (name, t, n) in times {
        println!(
            "  {:>5.1}%  {:>9.2} us/launch  {name}",
            100.0 * t.as_secs_f64() / total.max(f64::MIN_POSITIVE),
            t.as_secs_f64() * 1e6 / n as f64
        );
    }
}

//! `strata ir FILE`: any stage of the pipeline as text, DOT, JSON (each stage's own
//! form: the graph, the kernels, the plan) or SVG, the generated code (`--emit`),
//! per-entry statistics (`--stats`), or every pass to files (`--dump-dir`).

use super::{Common, fail, report, stages_or_report};
use clap::{Args, ValueEnum};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use strata_compiler::driver::CompileError;
use strata_compiler::ir::{dot::graph_to_dot, json::graph_to_json, print::print_graph};
use strata_compiler::lower::json::kernels_to_json;
use strata_compiler::plan::json::plan_to_json;

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
pub(super) struct IrArgs {
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

pub(super) fn run(a: &IrArgs) -> ExitCode {
    let (source, compiled) = match stages_or_report(&a.common, a.stats) {
        Ok(x) => x,
        Err(code) => return code,
    };
    // The process ends after printing: freeing a deep model's graphs and kernels one by
    // one was a tenth of `ir --stats` at 1,024 residual blocks.
    let compiled = std::mem::ManuallyDrop::new(compiled);
    if a.stats {
        return match compiled.stats() {
            Ok(stats) => {
                print!("{}", strata_compiler::plan::stats::print_stats(&stats));
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        };
    }
    // The entry `--entry` names: its graph before and after the passes, kernels, plan.
    let Some(entry) = compiled.entries().find(|e| e.name == a.entry) else {
        return fail(format!(
            "no entry `{}` (the model has no train section?)",
            a.entry
        ));
    };
    let (unsimplified, graph, lowered, plan) = (
        &entry.unsimplified,
        &entry.graph,
        &entry.lowered,
        &entry.plan,
    );
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
        Some(Emit::Clif) => match compiled.clif() {
            Ok(text) => text,
            Err(e) => {
                eprint!("{}", e.render(&source));
                return ExitCode::from(3);
            }
        },
        Some(Emit::Wgsl) => match strata_kernels::gpu::emit_wgsl(&compiled.infer.lowered.kernels) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("internal compiler error: {e}");
                return ExitCode::from(3);
            }
        },
        None => match (a.stage, a.format) {
            (Stage::Parsed, _) => match strata_compiler::syntax::parse(&source.text) {
                Ok(program) => format!("{program:#?}\n"),
                Err(d) => {
                    report(&d, &source, a.common.error_format);
                    return ExitCode::FAILURE;
                }
            },
            (Stage::Plan, Format::Svg) => strata_compiler::plan::svg::plan_to_svg(
                lowered,
                plan,
                &strata_compiler::plan::svg::SvgOptions {
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
            (Stage::Kernels, Format::Text) => strata_compiler::lower::print::print_kernels(lowered),
            (Stage::Plan, Format::Text) => strata_compiler::plan::print::print_plan(lowered, plan),
            (Stage::Typed, Format::Json) => json_text(&graph_to_json(&compiled.typed)),
            (Stage::Train, Format::Json) => json_text(&graph_to_json(train)),
            (Stage::Optimized, Format::Json) => json_text(&graph_to_json(graph)),
            (Stage::Kernels, Format::Json) => json_text(&kernels_to_json(lowered)),
            (Stage::Plan, Format::Json) => json_text(&plan_to_json(lowered, plan)),
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

/// A stage's JSON form, pretty-printed, with a final newline.
fn json_text(value: &serde_json::Value) -> String {
    // A `Value` always serializes.
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

/// `strata ir --dump-dir`: the entry's stages, one numbered file each.
fn dump_stages(dir: &Path, entry: &str, graph: &strata_compiler::ir::Graph) -> ExitCode {
    let files = match strata_compiler::driver::stage_dumps(entry, graph) {
        Ok(files) => files,
        Err(CompileError::Internal(e)) => return fail(format!("internal compiler error: {e}")),
        Err(CompileError::User(d)) => return fail(d.message),
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        return fail(format!("cannot create {}: {e}", dir.display()));
    }
    for (name, text) in files {
        let path = dir.join(&name);
        let written =
            strata_artifact::check_output_path(&path).and_then(|()| std::fs::write(&path, text));
        if let Err(e) = written {
            return fail(format!("cannot write {}: {e}", path.display()));
        }
        println!("{}", path.display());
    }
    ExitCode::SUCCESS
}

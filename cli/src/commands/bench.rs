//! `strata bench FILE`: compile, then time entries on synthetic inputs (runs per second,
//! median and fastest run, launches, GFLOP/s in products; `--profile`: per kernel) after
//! a breakdown of the compile time by stage. The timing itself is
//! [`crate::bench`]'s, shared with built executables.

use super::{Common, compile_reported, fail, load_source, options};
use crate::bench::{BenchArgs, BenchFailure, Timed, run_bench};
use clap::Args;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use strata_artifact::Backend;
use strata_compiler::driver::{CompileOptions, StageTimes};
use strata_runtime::Session;

#[derive(Args, Debug)]
pub(super) struct BenchCommand {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    bench: BenchArgs,
    /// Also time the model lowered without kernels with parts (horizontal fusion off),
    /// alternating with the normal build, and print the speed ratio.
    #[arg(long)]
    compare_parts: bool,
}

pub(super) fn run(a: &BenchCommand) -> ExitCode {
    let (source, options) =
        match load_source(&a.common.file).and_then(|source| Ok((source, options(&a.common)?))) {
            Ok(x) => x,
            Err(code) => return code,
        };
    if let Err(e) = a.bench.apply_threads() {
        return finish(e);
    }
    // The build to time, and with --compare-parts the same model without parts.
    let mut variants = vec![(false, "")];
    if a.compare_parts {
        variants.push((true, " without parts"));
    }
    let mut out = std::io::stdout().lock();
    let mut builds = Vec::new();
    for (without_parts, label) in variants {
        let options = CompileOptions {
            without_parts,
            ..options.clone()
        };
        let compiled = match compile_reported(&source, &options, a.common.error_format) {
            Ok(compiled) => compiled,
            Err(code) => return code,
        };
        let artifact = compiled.artifact;
        let backend = Backend::default_for(&artifact);
        let started = Instant::now();
        let session = match Session::new_with(&artifact, backend) {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
        let jit = started.elapsed();
        let header = match a.bench.json {
            true => compile_json(&artifact.manifest.model, label, &compiled.times, jit),
            false => format!(
                "{}{label}: {} kernels, {backend:?} backend\n{}",
                artifact.manifest.model,
                artifact.manifest.kernels.len(),
                compile_text(&compiled.times, jit, backend)
            ),
        };
        if let Err(e) = writeln!(out, "{header}") {
            return finish(e.into());
        }
        builds.push(Timed { label, session });
    }
    match run_bench(&mut builds, &a.bench, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => finish(e),
    }
}

fn finish(failure: BenchFailure) -> ExitCode {
    match failure {
        BenchFailure::Usage(message) | BenchFailure::Failed(message) => fail(message),
        BenchFailure::OutputClosed => ExitCode::SUCCESS,
    }
}

/// `compile 12.3 ms: parse and check 0.4, passes 3.1, …, JIT 6.0`.
fn compile_text(times: &StageTimes, jit: Duration, backend: Backend) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let stages: Vec<String> = times
        .0
        .iter()
        .map(|(stage, d)| format!("{stage} {:.2}", ms(*d)))
        .collect();
    let load = match backend {
        Backend::Cpu => "JIT",
        Backend::Gpu => "GPU pipelines",
    };
    format!(
        "compile {:.2} ms: {}, {load} {:.2}",
        ms(times.total() + jit),
        stages.join(", "),
        ms(jit)
    )
}

fn compile_json(model: &str, label: &str, times: &StageTimes, jit: Duration) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut stages = serde_json::Map::new();
    for (stage, d) in &times.0 {
        stages.insert(stage.to_string(), ms(*d).into());
    }
    stages.insert("load".to_string(), ms(jit).into());
    serde_json::json!({
        "model": model,
        "build": label.trim(),
        "compile_ms": ms(times.total() + jit),
        "stages_ms": stages,
    })
    .to_string()
}

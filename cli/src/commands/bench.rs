//! `strata bench FILE`: compile, then time entries on synthetic inputs (runs per second,
//! median and fastest run, launches, GFLOP/s in products; `--profile`: per kernel).

use super::{Common, compile_reported, fail, load_source, options};
use clap::Args;
use std::process::ExitCode;
use strata_artifact::Backend;
use strata_compiler::driver::CompileOptions;
use strata_runtime::Session;
use strata_runtime::bench::{BenchOptions, BenchReport, bench_entry};

#[derive(Args, Debug)]
pub(super) struct BenchArgs {
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

pub(super) fn run(a: &BenchArgs) -> ExitCode {
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
        let backend = Backend::default_for(&artifact);
        match Session::new_with(&artifact, backend) {
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
fn print_profile(session: &Session) {
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

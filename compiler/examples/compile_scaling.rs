//! Compile time and peak memory against model depth.
//!
//! Writes an N-block residual MLP (each block `h = h + dense(relu(dense(h)))`, width 64,
//! trained with Adam on the built-in `digits`), compiles it as `strata build` does, then
//! computes what `strata ir --stats` prints, and reports the wall and CPU time of every
//! stage, the op count of `train_step` after the passes and the process's peak resident
//! memory (`VmHWM`).
//!
//! ```text
//! cargo run --release -p strata-compiler --example compile_scaling -- 64 256 1024
//! cargo run --release -p strata-compiler --example compile_scaling -- --write DIR 64 256
//! ```
//!
//! Each depth is measured in a child process of its own (this program run with
//! `--child N`), so one depth's peak memory is not another's. `--write DIR` also writes
//! each model to `DIR/residual_N.strata`, to time the `strata` binary itself on it.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};
use strata_compiler::driver::{CompileOptions, compile};
use strata_compiler::elaborate::ElaborateOptions;
use strata_compiler::plan::stats::{entry_stats, unfused_figures};
use strata_compiler::source::SourceFile;

/// The model file of a residual MLP with `depth` blocks of width 64.
fn residual_mlp(depth: usize) -> String {
    format!(
        "// A residual MLP of {depth} blocks, written by the compile_scaling example.
block Residual(x, width) {{
    return x + (x |> dense(width) |> relu |> dense(width))
}}

model ResidualMlp(width = 64, classes = 10) {{
    input x: f32[batch, 64]
    h = x |> dense(width) |> relu |> repeat {depth} Residual(width)
    output logits = h |> dense(classes)
}}

train ResidualMlp {{
    data      = digits
    normalize = scale(16)
    label     y: i32[batch]
    loss      = cross_entropy(logits, y)
    optimizer = adam(lr = 1e-3)
    batch = 32   epochs = 1   split = 0.8 / 0.1 / 0.1   seed = 7
}}
"
    )
}

/// The compile options `strata build FILE` uses.
fn build_options() -> CompileOptions {
    CompileOptions {
        elaborate: ElaborateOptions {
            train: true,
            ..ElaborateOptions::default()
        },
        only_artifact: true,
        ..CompileOptions::default()
    }
}

/// The process's peak resident set so far, in bytes (Linux: `VmHWM`).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time this process has used so far (user and system), from `/proc/self/stat`,
/// which counts in clock ticks of 10 ms: on a loaded machine the wall time says how
/// long one waited, this how much work the compiler did.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Compiles one depth and prints one line: the op count, the build's and the stats'
/// wall and CPU time, the peak RSS after the build and at the end, the executable's
/// artifact size and every stage's wall time.
fn measure(depth: usize) -> Result<(), String> {
    let source = SourceFile::new(format!("residual_{depth}.strata"), residual_mlp(depth));
    let started = Instant::now();
    let compiled = compile(&source, &build_options()).map_err(|e| e.render(&source))?;
    let packing = Instant::now();
    // What `strata build` writes after its own binary, streamed as it does.
    let packed = compiled
        .artifact
        .write_to(&mut std::io::sink())
        .map_err(|e| e.to_string())?;
    let packing = packing.elapsed();
    let build = started.elapsed();
    let build_cpu = cpu_time().unwrap_or_default();
    let build_rss = peak_rss().unwrap_or(0);
    let stats_started = Instant::now();
    // The op counts before the passes are not kept by a build; they are only printed.
    let mut stats = vec![entry_stats(
        "infer",
        0,
        &compiled.optimized,
        &compiled.lowered,
        &compiled.plan,
        unfused_figures(&compiled.optimized)?,
    )];
    for e in &compiled.training {
        let unfused = unfused_figures(&e.graph)?;
        stats.push(entry_stats(
            &e.name, 0, &e.graph, &e.lowered, &e.plan, unfused,
        ));
    }
    let stats_time = stats_started.elapsed();
    let stats_cpu = cpu_time().unwrap_or_default().saturating_sub(build_cpu);
    let ops = compiled
        .training
        .iter()
        .find(|e| e.name == "train_step")
        .map_or(0, |e| e.graph.len());
    let mut stages: Vec<String> = compiled
        .times
        .0
        .iter()
        .map(|(stage, d)| format!("{stage} {:.1}", ms(*d)))
        .collect();
    stages.push(format!("packing {:.1}", ms(packing)));
    println!(
        "{depth:>6} {ops:>7} {:>9.1} {:>8.0} {:>9.1} {:>8.0} {:>8.1} {:>8.1} {:>9}  {}",
        ms(build),
        ms(build_cpu),
        ms(stats_time),
        ms(stats_cpu),
        build_rss as f64 / 1e6,
        peak_rss().unwrap_or(0) as f64 / 1e6,
        packed,
        stages.join(", ")
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, depth] = args.as_slice()
        && flag == "--child"
    {
        let Ok(depth) = depth.parse() else {
            eprintln!("--child takes a depth");
            return ExitCode::FAILURE;
        };
        return match measure(depth) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("depth {depth}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let mut write_dir: Option<PathBuf> = None;
    let mut depths: Vec<usize> = Vec::new();
    let mut rest = args.iter();
    while let Some(a) = rest.next() {
        match a.as_str() {
            "--write" => match rest.next() {
                Some(dir) => write_dir = Some(PathBuf::from(dir)),
                None => {
                    eprintln!("--write takes a directory");
                    return ExitCode::FAILURE;
                }
            },
            n => match n.parse() {
                Ok(depth) => depths.push(depth),
                Err(_) => {
                    eprintln!("usage: compile_scaling [--write DIR] DEPTH...");
                    return ExitCode::FAILURE;
                }
            },
        }
    }
    if depths.is_empty() {
        depths = vec![64, 256, 1024];
    }
    if let Some(dir) = &write_dir {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("cannot create {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
        for &depth in &depths {
            let path = dir.join(format!("residual_{depth}.strata"));
            if let Err(e) = std::fs::write(&path, residual_mlp(depth)) {
                eprintln!("cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    let Ok(me) = std::env::current_exe() else {
        eprintln!("cannot locate this program");
        return ExitCode::FAILURE;
    };
    println!(
        "{:>6} {:>7} {:>9} {:>8} {:>9} {:>8} {:>8} {:>8} {:>9}  stages (wall ms)",
        "depth",
        "ops",
        "build ms",
        "cpu ms",
        "stats ms",
        "cpu ms",
        "build MB",
        "peak MB",
        "artifact"
    );
    let mut failed = false;
    for depth in depths {
        match Command::new(&me)
            .args(["--child", &depth.to_string()])
            .status()
        {
            Ok(s) if s.success() => {}
            Ok(_) => failed = true,
            Err(e) => {
                eprintln!("cannot run {}: {e}", me.display());
                return ExitCode::FAILURE;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

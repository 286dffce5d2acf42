//! Timing a compiled model's entries, for `strata bench` and a built executable's
//! `bench`: the arguments both take, and the report as text or JSON lines.
//!
//! The report goes to a writer, and a closed output (`strata bench … | head`) ends the
//! command quietly instead of panicking the way `println!` does.

use std::io::{self, Write};
use std::time::Duration;

use clap::Args;
use serde_json::json;
use strata_runtime::bench::{BenchOptions, BenchReport, bench_entry};
use strata_runtime::{RunError, Session};

/// What to time and how to report it.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// An entry to time (repeatable) [default: infer, and train_step if there is one].
    #[arg(long)]
    pub entry: Vec<String>,
    /// A batch size to time at (repeatable) [default: 32].
    #[arg(long)]
    pub batch: Vec<u64>,
    /// Time each entry for at least this long.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Also time every kernel launch of the same series (CPU): each kernel's share of
    /// the time, its time per launch and its GFLOP/s in products.
    #[arg(long)]
    pub profile: bool,
    /// Print one JSON object per timed entry and batch instead of text.
    #[arg(long)]
    pub json: bool,
    /// Run CPU kernels on this many threads, the calling one included [default: the
    /// host's count].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Refuse a batch size whose run would allocate more than this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = strata_runtime::bench::DEFAULT_MAX_BYTES)]
    pub max_memory: u64,
}

/// Why a bench stopped.
pub enum BenchFailure {
    /// The arguments do not fit the model (an unknown entry, a bad count): the message
    /// says how.
    Usage(String),
    /// A run failed (the device, the memory for this batch size, a broken invariant).
    Failed(String),
    /// The output was closed (a pipe's reader exited): nothing more to say.
    OutputClosed,
}

impl From<io::Error> for BenchFailure {
    fn from(e: io::Error) -> BenchFailure {
        match e.kind() {
            io::ErrorKind::BrokenPipe => BenchFailure::OutputClosed,
            _ => BenchFailure::Failed(e.to_string()),
        }
    }
}

/// One build to time: a label (empty for the model as built) and its session.
pub struct Timed {
    pub label: &'static str,
    pub session: Session,
}

impl BenchArgs {
    /// Fixes the CPU launch threads (`--threads`); call it before any session is made.
    pub fn apply_threads(&self) -> Result<(), BenchFailure> {
        use strata_runtime::cpu::{ThreadsError, apply_threads_option};
        apply_threads_option(self.threads).map_err(|e| match e {
            ThreadsError::Zero => BenchFailure::Usage(e.to_string()),
            ThreadsError::TooLate => BenchFailure::Failed(e.to_string()),
        })
    }

    /// The entries to time: those asked for, else `infer` and `train_step` where the
    /// model has them.
    pub fn entries(&self, session: &Session) -> Vec<String> {
        if !self.entry.is_empty() {
            return self.entry.clone();
        }
        ["infer", "train_step"]
            .iter()
            .filter(|e| session.manifest().entries.iter().any(|x| x.name == **e))
            .map(|e| e.to_string())
            .collect()
    }

    fn batches(&self) -> Vec<u64> {
        match self.batch.is_empty() {
            false => self.batch.clone(),
            true => vec![32],
        }
    }
}

/// Times every entry at every batch size; with several builds (`--compare-parts`),
/// in alternating rounds, so a noisy machine slows each alike (each build's figure is
/// its best round).
pub fn run_bench(
    builds: &mut [Timed],
    args: &BenchArgs,
    out: &mut dyn Write,
) -> Result<(), BenchFailure> {
    if !(args.seconds.is_finite() && args.seconds >= 0.0) {
        return Err(BenchFailure::Usage(format!(
            "--seconds takes a time in seconds, got {}",
            args.seconds
        )));
    }
    let Some(first) = builds.first() else {
        return Ok(());
    };
    let entries = args.entries(&first.session);
    let rounds = if builds.len() > 1 { 3 } else { 1 };
    for entry in &entries {
        for batch in args.batches() {
            let options = BenchOptions {
                batch,
                min_time: Duration::from_secs_f64(args.seconds / rounds as f64),
                profile: args.profile,
                max_bytes: args.max_memory,
                ..BenchOptions::default()
            };
            let mut best: Vec<Option<BenchReport>> = vec![None; builds.len()];
            for _ in 0..rounds {
                for (i, build) in builds.iter_mut().enumerate() {
                    let report =
                        bench_entry(&mut build.session, entry, &options).map_err(|e| match e {
                            RunError::UnknownEntry { .. } => BenchFailure::Usage(e.to_string()),
                            _ => BenchFailure::Failed(e.to_string()),
                        })?;
                    if best[i].as_ref().is_none_or(|b| report.median < b.median) {
                        best[i] = Some(report);
                    }
                }
            }
            for (build, report) in builds.iter().zip(&best) {
                let Some(report) = report else { continue };
                match args.json {
                    true => writeln!(out, "{}", report_json(report, build.label))?,
                    false => {
                        writeln!(out, "{report}{}", build.label)?;
                        if args.profile {
                            write_profile(out, report)?;
                        }
                    }
                }
            }
            if let ([Some(with), Some(without)], false) = (best.as_slice(), args.json) {
                writeln!(
                    out,
                    "{entry:<12} batch {batch:>5}  parts: {:.2}x the speed without",
                    without.median.as_secs_f64() / with.median.as_secs_f64()
                )?;
            }
        }
    }
    Ok(())
}

/// Each launched kernel of a profiled series, most time first: its share of the kernel
/// time, time per launch, launches per run and GFLOP/s in products.
fn write_profile(out: &mut dyn Write, report: &BenchReport) -> io::Result<()> {
    if report.kernels.is_empty() {
        return writeln!(out, "  (no profile: --profile times CPU launches)");
    }
    let total = report.kernel_time().as_secs_f64().max(f64::MIN_POSITIVE);
    for k in &report.kernels {
        let gflops = match k.contraction_flops {
            0 => String::new(),
            _ => format!(", {:.1} GFLOP/s in products", k.gflops()),
        };
        writeln!(
            out,
            "  {:>5.1}%  {:>9.2} us/launch  {}  ({} launches/run{gflops})",
            100.0 * k.total.as_secs_f64() / total,
            k.per_launch().as_secs_f64() * 1e6,
            k.name,
            k.launches / report.runs.max(1) as u64,
        )?;
    }
    Ok(())
}

/// A report as one JSON object (times in milliseconds).
fn report_json(report: &BenchReport, label: &str) -> serde_json::Value {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let kernels: Vec<serde_json::Value> = report
        .kernels
        .iter()
        .map(|k| {
            json!({
                "name": k.name,
                "total_ms": ms(k.total),
                "launches": k.launches,
                "us_per_launch": k.per_launch().as_secs_f64() * 1e6,
                "contraction_flops_per_launch": k.contraction_flops,
                "gflops": k.gflops(),
            })
        })
        .collect();
    json!({
        "entry": report.entry,
        "build": label.trim(),
        "batch": report.batch,
        "runs": report.runs,
        "median_ms": ms(report.median),
        "fastest_ms": ms(report.fastest),
        "runs_per_second": report.runs_per_second(),
        "launches_per_run": report.launches,
        "contraction_flops_per_run": report.contraction_flops,
        "gflops_in_products": report.gflops(),
        "kernels": kernels,
    })
}

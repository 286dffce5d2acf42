//! Timing an entry: how long one run takes, measured over repeated runs of a session on
//! synthetic inputs shaped like the ones training and inference feed (`strata bench`).
//!
//! # Inputs
//! Deterministic, and realistic where the artifact says what real ones are:
//! - a training entry's `lr` is the train section's learning rate for that update under
//!   its schedule, and `step` counts 1, 2, 3, … from run to run, as the training driver
//!   feeds them (a train step timed with arbitrary `lr`/`step` diverges into NaNs and
//!   denormals, which time differently from real training);
//! - an entry's `step` input that only numbers random draws counts the same way;
//! - the label input of a classification model holds classes in `0..classes`;
//! - other `f32` inputs are uniform in `[0, 1)`, other `i32` inputs (tokens) are `0`,
//!   valid for any vocabulary.
//!
//! # Series
//! The run is warmed up first (the JIT code, the arena and, on the GPU, `mem`, pipelines
//! and bind groups are made on first use), then repeated until both a minimum count and
//! a minimum time are reached. The figures are the median and the fastest run, runs per
//! second from the median, and the contraction throughput from the entry's kernels
//! (`2 m n k` per product point; element-wise work is not counted). With
//! [`BenchOptions::profile`] (CPU), every launch of the same series is timed too, so the
//! per-kernel figures add up to the headline's series.

use std::fmt;
use std::time::{Duration, Instant};

use strata_kernels::ir::{Dim, Kernel, KernelBody, ScalarType};

use crate::error::RunError;
use crate::session::Session;
use strata_artifact::manifest::{Entry, Manifest};
use strata_artifact::schedule::{StepPosition, learning_rate};
use strata_artifact::tensor::{HostTensor, TensorData};
use strata_artifact::train_config::Task;

/// How long to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub batch: u64,
    /// Runs before timing starts.
    pub warmup: usize,
    /// Timed runs: at least this many...
    pub min_runs: usize,
    /// ...and for at least this long.
    pub min_time: Duration,
    /// Also time every kernel launch of the timed runs (CPU sessions only).
    pub profile: bool,
    /// The most bytes one run may plan for its scratch, I/O block and host inputs: a
    /// batch size past it is refused before anything is allocated.
    pub max_bytes: u64,
}

/// The default of [`BenchOptions::max_bytes`]: 8 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 8 << 30;

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            batch: 32,
            warmup: 5,
            min_runs: 20,
            min_time: Duration::from_secs(2),
            profile: false,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// The figures of one entry.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub entry: String,
    pub batch: u64,
    pub runs: usize,
    pub median: Duration,
    pub fastest: Duration,
    /// Launches per run (a loop's launches once per step).
    pub launches: u64,
    /// Floating-point operations of the entry's contractions per run.
    pub contraction_flops: u64,
    /// With [`BenchOptions::profile`]: every kernel the series launched, most time first.
    pub kernels: Vec<KernelTime>,
}

/// One kernel's share of a profiled series.
#[derive(Clone, Debug)]
pub struct KernelTime {
    pub name: String,
    /// Time in its launches over the whole series.
    pub total: Duration,
    pub launches: u64,
    /// Floating-point operations of its contractions per launch.
    pub contraction_flops: u64,
}

impl KernelTime {
    /// Mean time per launch.
    pub fn per_launch(&self) -> Duration {
        self.total / u32::try_from(self.launches.max(1)).unwrap_or(u32::MAX)
    }

    /// Contraction GFLOP/s over its launches (0 without contractions).
    pub fn gflops(&self) -> f64 {
        let seconds = self.per_launch().as_secs_f64();
        match seconds > 0.0 {
            true => self.contraction_flops as f64 / seconds / 1e9,
            false => 0.0,
        }
    }
}

impl BenchReport {
    pub fn runs_per_second(&self) -> f64 {
        1.0 / self.median.as_secs_f64()
    }

    /// Contraction GFLOP/s at the median time.
    pub fn gflops(&self) -> f64 {
        self.contraction_flops as f64 / self.median.as_secs_f64() / 1e9
    }

    /// Total kernel time of the profiled series (zero without a profile).
    pub fn kernel_time(&self) -> Duration {
        self.kernels.iter().map(|k| k.total).sum()
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<12} batch {:>5}  {:>9.1} runs/s  median {:>9.3} ms  fastest {:>9.3} ms  \
             {:>5} launches/run  {:>7.2} GFLOP/s in products  ({} runs)",
            self.entry,
            self.batch,
            self.runs_per_second(),
            self.median.as_secs_f64() * 1e3,
            self.fastest.as_secs_f64() * 1e3,
            self.launches,
            self.gflops(),
            self.runs
        )
    }
}

/// Times entry `entry` of `session` (see the module docs).
pub fn bench_entry(
    session: &mut Session,
    entry: &str,
    options: &BenchOptions,
) -> Result<BenchReport, RunError> {
    let manifest = session.manifest().clone();
    let Some(info) = manifest.entries.iter().find(|e| e.name == entry) else {
        return Err(RunError::UnknownEntry {
            name: entry.to_string(),
            available: manifest.entries.iter().map(|e| e.name.clone()).collect(),
        });
    };
    let planned = planned_bytes(&manifest, options.batch).ok_or_else(|| RunError::TooLarge {
        batch: options.batch,
        what: "the arena".into(),
    })?;
    if planned > options.max_bytes {
        return Err(RunError::OverBudget {
            batch: options.batch,
            bytes: planned,
            budget: options.max_bytes,
        });
    }
    let mut inputs = BenchInputs::new(&manifest, info, options.batch)?;
    for _ in 0..options.warmup {
        session.run(entry, &inputs.next_run())?;
    }
    let profiling = options.profile && session.start_profiling();
    let mut times = Vec::new();
    let started = Instant::now();
    // At least one timed run, whatever the options say.
    while times.len() < options.min_runs.max(1) || started.elapsed() < options.min_time {
        let named = inputs.next_run();
        let t = Instant::now();
        session.run(entry, &named)?;
        times.push(t.elapsed());
    }
    times.sort();
    let kernels = match profiling {
        true => kernel_times(session, options.batch),
        false => Vec::new(),
    };
    Ok(BenchReport {
        entry: entry.to_string(),
        batch: options.batch,
        runs: times.len(),
        median: times[times.len() / 2],
        fastest: times[0],
        launches: info.schedule().count().try_into().unwrap_or(u64::MAX),
        contraction_flops: contraction_flops(&manifest, info, options.batch),
        kernels,
    })
}

/// Every kernel the profiled series launched, most time first.
fn kernel_times(session: &Session, batch: u64) -> Vec<KernelTime> {
    let flops_of: Vec<u64> = session
        .manifest()
        .kernels
        .iter()
        .map(|k| kernel_flops(k, batch))
        .collect();
    let mut kernels: Vec<KernelTime> = session
        .kernel_times()
        .into_iter()
        .zip(flops_of)
        .filter(|((_, _, n), _)| *n > 0)
        .map(|((name, total, launches), contraction_flops)| KernelTime {
            name: name.to_string(),
            total,
            launches,
            contraction_flops,
        })
        .collect();
    kernels.sort_by_key(|k| std::cmp::Reverse(k.total));
    kernels
}

/// An entry's synthetic inputs (see the module docs), and how they change from one run
/// to the next.
pub struct BenchInputs {
    inputs: Vec<(String, HostTensor)>,
    /// The `step` input's position in `inputs`, if the entry has one.
    step: Option<usize>,
    /// The `lr` input's position and the base rate of the update the entry makes.
    lr: Option<(usize, f64)>,
    schedule: Option<strata_artifact::train_config::Schedule>,
    /// The number of the next run, 1-based (the `step` the driver would feed).
    run: u64,
}

impl BenchInputs {
    /// The inputs of `entry` at `batch`, before the first run.
    pub fn new(manifest: &Manifest, entry: &Entry, batch: u64) -> Result<BenchInputs, RunError> {
        let train = manifest.train.as_ref();
        let classes = train.and_then(|t| match t.task {
            Task::Classification { classes } => t.label_input.clone().map(|l| (l, classes)),
            _ => None,
        });
        let mut draw = Uniform::new();
        let mut inputs = Vec::new();
        for port in &entry.inputs {
            let info = manifest
                .buffers
                .get(port.buffer)
                .ok_or_else(|| RunError::Internal(format!("no buffer for `{}`", port.name)))?;
            let shape: Vec<u64> = info.shape.iter().map(|d| d.resolve(batch)).collect();
            let n = shape
                .iter()
                .try_fold(1u64, |n, d| n.checked_mul(*d))
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| RunError::TooLarge {
                    batch,
                    what: format!("input `{}`", port.name),
                })?;
            let tensor = match (info.dtype, &classes) {
                (ScalarType::I32, Some((label, classes))) if *label == port.name => {
                    let classes = (*classes).max(1) as f32;
                    let labels = (0..n).map(|_| (draw.next() * classes) as i32).collect();
                    HostTensor::i32(shape, labels)
                }
                (ScalarType::I32, _) => HostTensor::i32(shape, vec![0; n]),
                (ScalarType::F32, _) => {
                    HostTensor::f32(shape, (0..n).map(|_| draw.next()).collect())
                }
            }
            .map_err(|e| RunError::Internal(e.to_string()))?;
            inputs.push((port.name.clone(), tensor));
        }
        let position = |name: &str| inputs.iter().position(|(n, _)| n == name);
        let base_lr = train.and_then(|t| t.steps.iter().find(|s| s.entry == entry.name));
        Ok(BenchInputs {
            step: position("step"),
            lr: base_lr.and_then(|s| position("lr").map(|at| (at, s.lr))),
            schedule: train.map(|t| t.schedule.clone()),
            run: 1,
            inputs,
        })
    }

    /// The inputs of the next run: `step` and `lr` as the training driver would set them.
    pub fn next_run(&mut self) -> Vec<(&str, HostTensor)> {
        let step = self.run;
        self.run += 1;
        if let Some(at) = self.step {
            self.inputs[at].1.data = TensorData::F32(vec![step as f32]);
        }
        if let (Some((at, base)), Some(schedule)) = (self.lr, &self.schedule) {
            // The run's length is unknown here: a cosine decay is taken as just begun.
            let position = StepPosition {
                step,
                epoch: 1,
                total_steps: u64::MAX,
            };
            let lr = learning_rate(schedule, base, position);
            self.inputs[at].1.data = TensorData::F32(vec![lr]);
        }
        self.inputs
            .iter()
            .map(|(name, t)| (name.as_str(), t.clone()))
            .collect()
    }
}

/// xorshift64*: deterministic uniform draws in `[0, 1)`, good enough for timing inputs.
struct Uniform(u64);

impl Uniform {
    fn new() -> Uniform {
        Uniform(0x9E37_79B9_7F4A_7C15)
    }

    fn next(&mut self) -> f32 {
        let s = &mut self.0;
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// The bytes one run at `batch` allocates: the arena and the I/O block, and the host
/// inputs the I/O block is filled from (at most its size). None if it overflows.
fn planned_bytes(manifest: &Manifest, batch: u64) -> Option<u64> {
    let io = manifest.io.resolve(batch)?;
    manifest
        .arena
        .resolve(batch)?
        .checked_add(io)?
        .checked_add(io)
}

/// `2 m n k` per point of every contraction's batch, per run.
fn contraction_flops(manifest: &Manifest, entry: &Entry, batch: u64) -> u64 {
    let mut flops = 0u64;
    for (index, _) in entry.schedule() {
        if let Some(kernel) = entry
            .launches
            .get(index)
            .and_then(|l| manifest.kernels.get(l.kernel))
        {
            flops = flops.saturating_add(kernel_flops(kernel, batch));
        }
    }
    flops
}

/// `2 m n k` per point of each of a kernel's contractions, per launch.
fn kernel_flops(kernel: &Kernel, batch: u64) -> u64 {
    let mut flops = 0u64;
    for body in kernel.body.bodies() {
        if let KernelBody::Contract(c) = body {
            // Every batch point computes a product per summed point.
            let points = c
                .batch
                .iter()
                .chain(&c.summed)
                .fold(1u64, |n, d: &Dim| n.saturating_mul(d.resolve(batch)));
            // Its terms add their depths.
            for (k, _, _) in c.products() {
                let product = [c.m, c.n, k]
                    .iter()
                    .fold(2u64, |n, d| n.saturating_mul(d.resolve(batch)));
                flops = flops.saturating_add(points.saturating_mul(product));
            }
        }
    }
    flops
}

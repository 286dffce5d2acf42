//! Timing an entry: how long one run takes, measured over repeated runs of a session on
//! fixed synthetic inputs (`strata bench`).
//!
//! Inputs are deterministic: `f32` inputs uniform in `[0, 1)` from a fixed seed, `i32`
//! inputs (labels, tokens) zero, valid for any class count or vocabulary. The run is
//! warmed up first (the JIT code, the arena and, on the GPU, `mem`, pipelines and bind
//! groups are made on first use), then repeated until both a minimum count and a
//! minimum time are reached. The figures are the median and the fastest run, runs per
//! second from the median, and the contraction throughput from the entry's kernels
//! (`2 m n k` per product point; element-wise work is not counted).

use std::fmt;
use std::time::{Duration, Instant};

use strata_kernels::ir::{Dim, KernelBody, ScalarType};

use crate::error::RunError;
use crate::session::Session;
use strata_artifact::manifest::{Entry, Manifest};
use strata_artifact::tensor::HostTensor;

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
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            batch: 32,
            warmup: 5,
            min_runs: 20,
            min_time: Duration::from_secs(2),
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
}

impl BenchReport {
    pub fn runs_per_second(&self) -> f64 {
        1.0 / self.median.as_secs_f64()
    }

    /// Contraction GFLOP/s at the median time.
    pub fn gflops(&self) -> f64 {
        self.contraction_flops as f64 / self.median.as_secs_f64() / 1e9
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
    let inputs = synthetic_inputs(&manifest, info, options.batch)?;
    let named: Vec<(&str, HostTensor)> = inputs
        .iter()
        .map(|(name, t)| (name.as_str(), t.clone()))
        .collect();
    for _ in 0..options.warmup {
        session.run(entry, &named)?;
    }
    let mut times = Vec::new();
    let started = Instant::now();
    // At least one timed run, whatever the options say.
    while times.len() < options.min_runs.max(1) || started.elapsed() < options.min_time {
        let t = Instant::now();
        session.run(entry, &named)?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(BenchReport {
        entry: entry.to_string(),
        batch: options.batch,
        runs: times.len(),
        median: times[times.len() / 2],
        fastest: times[0],
        launches: info.schedule().count().try_into().unwrap_or(u64::MAX),
        contraction_flops: contraction_flops(&manifest, info, options.batch),
    })
}

fn synthetic_inputs(
    manifest: &Manifest,
    entry: &Entry,
    batch: u64,
) -> Result<Vec<(String, HostTensor)>, RunError> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut uniform = move || {
        // xorshift64*: deterministic, good enough for timing inputs.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32
    };
    entry
        .inputs
        .iter()
        .map(|port| {
            let info = manifest
                .buffers
                .get(port.buffer)
                .ok_or_else(|| RunError::Internal(format!("no buffer for `{}`", port.name)))?;
            let shape: Vec<u64> = info.shape.iter().map(|d| d.resolve(batch)).collect();
            let n = shape.iter().product::<u64>() as usize;
            let tensor = match info.dtype {
                ScalarType::F32 => HostTensor::f32(shape, (0..n).map(|_| uniform()).collect()),
                ScalarType::I32 => HostTensor::i32(shape, vec![0; n]),
            }
            .map_err(|e| RunError::Internal(e.to_string()))?;
            Ok((port.name.clone(), tensor))
        })
        .collect()
}

/// `2 m n k` per point of every contraction's batch, per run.
fn contraction_flops(manifest: &Manifest, entry: &Entry, batch: u64) -> u64 {
    let mut flops = 0u64;
    for (index, _) in entry.schedule() {
        let Some(kernel) = entry
            .launches
            .get(index)
            .and_then(|l| manifest.kernels.get(l.kernel))
        else {
            continue;
        };
        for body in kernel.body.bodies() {
            if let KernelBody::Contract(c) = body {
                let points: u64 = c.batch.iter().map(|d: &Dim| d.resolve(batch)).product();
                let product = 2 * c.m.resolve(batch) * c.n.resolve(batch) * c.k.resolve(batch);
                flops = flops.saturating_add(points.saturating_mul(product));
            }
        }
    }
    flops
}

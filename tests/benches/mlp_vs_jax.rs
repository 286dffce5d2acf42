//! The MLP example's entries timed by Strata and, in the same run, by JAX (XLA on the
//! CPU) when `python3` with `jax` is there: `cargo bench -p strata-tests --bench
//! mlp_vs_jax`. Prints one line per entry and batch size, and the speed ratio.
//!
//! The peer is `tests/peers/mlp_jax.py`: the same layers, loss and Adam update. Both
//! time the median of repeated runs on fixed inputs after a warm-up; the machine's
//! other load applies to both alike only if it is steady, so run it on a quiet machine.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;
use strata_compiler::driver::compile;
use strata_runtime::Session;
use strata_runtime::bench::{BenchOptions, bench_entry};
use strata_tests::{load_example, root};

const BATCHES: [u64; 2] = [32, 256];
const SECONDS: f64 = 2.0;

fn main() {
    let source = load_example(&root().join("dsl-examples/mlp.strata"));
    let options = strata_tests::train_check::training_options();
    let compiled = compile(&source, &options).unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let mut session = Session::new(&compiled.artifact).expect("a CPU session");
    let peers = jax_figures();
    if peers.is_empty() {
        println!("(no python3 with jax here: Strata's figures only)");
    }
    for entry in ["infer", "train_step"] {
        for batch in BATCHES {
            let options = BenchOptions {
                batch,
                min_time: Duration::from_secs_f64(SECONDS),
                ..BenchOptions::default()
            };
            let report = bench_entry(&mut session, entry, &options).expect("the entry runs");
            println!("strata  {report}");
            if let Some(peer) = peers.get(&(entry.to_string(), batch)) {
                println!(
                    "jax     {entry:<12} batch {batch:>5}  {peer:>9.1} runs/s  \
                     -> strata is {:.2}x jax's speed",
                    report.runs_per_second() / peer
                );
            }
        }
    }
}

/// Runs per second of the JAX peer, by (entry, batch); empty when it cannot run.
fn jax_figures() -> HashMap<(String, u64), f64> {
    let script = root().join("tests/peers/mlp_jax.py");
    let mut command = Command::new("python3");
    command
        .arg(script)
        .args(["--seconds", &SECONDS.to_string()]);
    for b in BATCHES {
        command.args(["--batch", &b.to_string()]);
    }
    let Ok(output) = command.output() else {
        return HashMap::new();
    };
    if !output.status.success() {
        return HashMap::new();
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            // {"entry": "infer", "batch": 32, "runs_per_s": 1.0, "median_ms": 1.0}
            let field = |name: &str| {
                let start = line.find(&format!("\"{name}\": "))? + name.len() + 4;
                let rest = &line[start..];
                let end = rest.find([',', '}'])?;
                Some(rest[..end].trim().trim_matches('"').to_string())
            };
            Some((
                (field("entry")?, field("batch")?.parse().ok()?),
                field("runs_per_s")?.parse().ok()?,
            ))
        })
        .collect()
}

//! `strata bench`'s synthetic inputs: a train step gets the learning rate and step count
//! the training driver would feed it, and labels in range, so a timed series trains the
//! way a real run does instead of diverging.

use strata_artifact::TensorData;
use strata_compiler::driver::{CompileOptions, compile};
use strata_compiler::elaborate::ElaborateOptions;
use strata_compiler::source::SourceFile;
use strata_runtime::bench::{BenchInputs, BenchOptions, bench_entry};
use strata_runtime::{RunError, Session};

const MODEL: &str = "model Tiny {
    input x: f32[batch, 4]
    output logits = x |> dense(3)
}

train Tiny {
    data      = iris
    label     y: i32[batch]
    loss      = cross_entropy(logits, y)
    optimizer = adam(lr = 0.01)
    schedule  = cosine(warmup = 4)
    batch = 8   epochs = 2
}
";

fn artifact() -> strata_artifact::Artifact {
    let source = SourceFile::new("tiny.strata", MODEL);
    let options = CompileOptions {
        elaborate: ElaborateOptions {
            train: true,
            ..Default::default()
        },
        ..Default::default()
    };
    compile(&source, &options)
        .unwrap_or_else(|e| panic!("{}", e.render(&source)))
        .artifact
}

fn scalar(inputs: &[(&str, strata_artifact::HostTensor)], name: &str) -> f32 {
    let (_, t) = inputs.iter().find(|(n, _)| *n == name).expect("input");
    t.as_f32().expect("f32")[0]
}

#[test]
fn a_train_step_gets_the_scheduled_rate_a_step_count_and_labels_in_range() {
    let artifact = artifact();
    let manifest = &artifact.manifest;
    let entry = manifest
        .entries
        .iter()
        .find(|e| e.name == "train_step")
        .expect("a train step");
    let mut inputs = BenchInputs::new(manifest, entry, 64).expect("inputs");
    let mut seen = Vec::new();
    for _ in 0..6 {
        let run = inputs.next_run();
        seen.push((scalar(&run, "step"), scalar(&run, "lr")));
        let (_, y) = run.iter().find(|(n, _)| *n == "y").expect("labels");
        let TensorData::I32(labels) = &y.data else {
            panic!("i32 labels")
        };
        assert!(labels.iter().all(|&c| (0..3).contains(&c)), "{labels:?}");
        assert!(labels.iter().any(|&c| c != labels[0]), "labels vary");
    }
    // Steps count from 1; the rate warms up linearly over 4 steps to the section's 0.01.
    let steps: Vec<f32> = seen.iter().map(|s| s.0).collect();
    assert_eq!(steps, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let rates: Vec<f32> = seen.iter().map(|s| s.1).collect();
    for (got, want) in rates.iter().zip([0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01]) {
        assert!((got - want).abs() < 1e-6, "{rates:?}");
    }
}

#[test]
fn a_benchmarked_train_step_keeps_training_finite() {
    let artifact = artifact();
    let mut session = Session::new(&artifact).expect("session");
    let options = BenchOptions {
        batch: 16,
        warmup: 0,
        min_runs: 200,
        min_time: std::time::Duration::ZERO,
        profile: true,
        ..BenchOptions::default()
    };
    let report = bench_entry(&mut session, "train_step", &options).expect("bench");
    assert!(report.runs >= 200);
    // The profile covers the timed series: every launch of every run.
    let launches: u64 = report.kernels.iter().map(|k| k.launches).sum();
    assert_eq!(launches, report.launches * report.runs as u64);
    for (name, tensor) in session.weights() {
        let values = tensor.as_f32().expect("f32 weights");
        assert!(values.iter().all(|v| v.is_finite()), "{name} is not finite");
    }
}

#[test]
fn a_batch_whose_sizes_overflow_is_refused_not_a_panic() {
    let artifact = artifact();
    let mut session = Session::new(&artifact).expect("session");
    let options = BenchOptions {
        batch: u64::MAX,
        ..BenchOptions::default()
    };
    let e = bench_entry(&mut session, "infer", &options).expect_err("too large");
    assert!(matches!(e, RunError::TooLarge { .. }), "{e}");
}

#[test]
fn a_batch_past_the_memory_budget_is_refused_before_allocating() {
    let artifact = artifact();
    let mut session = Session::new(&artifact).expect("session");
    let options = BenchOptions {
        batch: 1 << 32,
        ..BenchOptions::default()
    };
    let e = bench_entry(&mut session, "infer", &options).expect_err("over budget");
    assert!(matches!(e, RunError::OverBudget { .. }), "{e}");
    assert!(e.to_string().contains("--max-memory"), "{e}");
}

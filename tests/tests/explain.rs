//! Attributions from the compiled `explain` entry, checked as the literature checks them:
//! a linear model's attributions are weight x input; integrated gradients are complete
//! (they sum to `f(x) - f(baseline)`); and attributions depend on what the model learned
//! (the model-randomization check of Adebayo et al. 2018, "Sanity Checks for Saliency
//! Maps"). The first two run on the CPU and, with an adapter (lavapipe on a machine
//! without a GPU), on the GPU.

use strata_artifact::weight_keys::WeightKind;
use strata_artifact::weights::encode_weights;
use strata_artifact::{Artifact, HostTensor, TensorData};
use strata_compiler::driver::{Backend, CompileOptions, compile};
use strata_compiler::elaborate::ElaborateOptions;
use strata_compiler::source::SourceFile;
use strata_runtime::Session;
use strata_tests::{TestRng, gpu_available, load_example, root};
use strata_training::explain::methods::Method;
use strata_training::explain::{ExplainSettings, Target, explain};
use strata_training::{TrainOptions, train};

fn artifact(source: &SourceFile, target: Backend, seed: u64) -> Artifact {
    let options = CompileOptions {
        elaborate: ElaborateOptions {
            train: true,
            ..Default::default()
        },
        explain: true,
        target,
        seed,
        ..Default::default()
    };
    compile(source, &options)
        .unwrap_or_else(|e| panic!("{}", e.render(source)))
        .artifact
}

fn session(source: &SourceFile, backend: Backend) -> Session {
    Session::new_with(&artifact(source, backend, 0), backend).expect("loads")
}

/// `n` samples of `width` values uniform in [-2, 2).
fn samples(n: usize, width: usize, seed: u64) -> HostTensor {
    let mut rng = TestRng::new(seed);
    let values = (0..n * width).map(|_| rng.uniform() * 4.0 - 2.0).collect();
    HostTensor::f32(vec![n as u64, width as u64], values).unwrap()
}

fn settings(method: Method, target: Target) -> ExplainSettings {
    ExplainSettings {
        method,
        output: None,
        target,
        input: None,
    }
}

const LINEAR: &str = "model Linear {
    input x: f32[batch, 5]
    output y = x |> dense(3)
}";

fn linear_attributions_are_weight_times_input(backend: Backend) {
    let source = SourceFile::new("linear.strata", LINEAR);
    let mut session = session(&source, backend);
    let weight: Vec<f32> = session
        .weights()
        .find(|(k, _)| k.ends_with("weight"))
        .map(|(_, t)| match &t.data {
            TensorData::F32(v) => v.clone(),
            TensorData::I32(_) => unreachable!(),
        })
        .expect("a dense weight [3, 5]");
    let x = samples(4, 5, 1);
    let TensorData::F32(xs) = &x.data else {
        unreachable!()
    };
    let inputs = [("x".to_string(), x.clone())];
    for method in [
        Method::GradientTimesInput,
        Method::IntegratedGradients {
            steps: 8,
            baseline: vec![0.0; 5],
        },
    ] {
        for k in 0..3 {
            let e = explain(
                &mut session,
                &settings(method.clone(), Target::Index(k)),
                None,
                &inputs,
            )
            .unwrap();
            let got = &e.targets[0].attributions.values;
            for i in 0..4 {
                for j in 0..5 {
                    let want = weight[k * 5 + j] * xs[i * 5 + j];
                    let have = got[i * 5 + j];
                    assert!(
                        (have - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "{}: class {k}, sample {i}, feature {j}: {have} != w x = {want}",
                        method.name()
                    );
                }
            }
        }
    }
}

#[test]
fn linear_attributions_are_weight_times_input_on_cpu() {
    linear_attributions_are_weight_times_input(Backend::Cpu);
}

#[test]
fn linear_attributions_are_weight_times_input_on_gpu() {
    if gpu_available("linear_attributions_are_weight_times_input_on_gpu") {
        linear_attributions_are_weight_times_input(Backend::Gpu);
    }
}

/// A smooth model: along a straight path its output's gradient is smooth, so the
/// midpoint rule's error is second order in the step.
const SMOOTH: &str = "model Smooth {
    input x: f32[batch, 6]
    output logits = x |> dense(16) |> tanh |> dense(8) |> gelu |> dense(4)
}";

fn integrated_gradients_are_complete(backend: Backend) {
    let source = SourceFile::new("smooth.strata", SMOOTH);
    let mut session = session(&source, backend);
    let inputs = [("x".to_string(), samples(8, 6, 2))];
    let method = Method::IntegratedGradients {
        steps: 64,
        baseline: vec![0.0; 6],
    };
    let e = explain(&mut session, &settings(method, Target::All), None, &inputs).unwrap();
    assert_eq!(e.targets.len(), 4);
    for t in &e.targets {
        let a = &t.attributions;
        let base = a.baseline_scores.as_ref().expect("f(baseline)");
        let deltas: Vec<f64> = (0..8)
            .map(|i| a.scores[i] as f64 - base[i] as f64)
            .collect();
        // Relative to the largest difference, as every backend comparison here is.
        let scale = deltas.iter().fold(0f64, |m, d| m.max(d.abs()));
        assert!(scale > 1e-2, "the outputs barely change: {deltas:?}");
        for (i, delta) in deltas.iter().enumerate() {
            let sum: f64 = a.values[i * 6..][..6].iter().map(|v| *v as f64).sum();
            assert!(
                (sum - delta).abs() <= 1e-3 * scale,
                "class {}, sample {i}: attributions sum to {sum}, f(x) - f(x') = {delta}",
                t.targets[i]
            );
        }
    }
}

#[test]
fn integrated_gradients_are_complete_on_cpu() {
    integrated_gradients_are_complete(Backend::Cpu);
}

#[test]
fn integrated_gradients_are_complete_on_gpu() {
    if gpu_available("integrated_gradients_are_complete_on_gpu") {
        integrated_gradients_are_complete(Backend::Gpu);
    }
}

/// Spearman's rank correlation of two equally long lists (no ties expected).
fn rank_correlation(a: &[f32], b: &[f32]) -> f64 {
    let ranks = |v: &[f32]| {
        let mut order: Vec<usize> = (0..v.len()).collect();
        order.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
        let mut r = vec![0f64; v.len()];
        for (rank, i) in order.into_iter().enumerate() {
            r[i] = rank as f64;
        }
        r
    };
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    let mean = (n - 1.0) / 2.0;
    let cov: f64 = ra
        .iter()
        .zip(&rb)
        .map(|(x, y)| (x - mean) * (y - mean))
        .sum();
    let var: f64 = ra.iter().map(|x| (x - mean) * (x - mean)).sum();
    cov / var
}

#[test]
fn attributions_of_a_trained_model_differ_from_a_randomly_initialized_ones() {
    let source = load_example(&root().join("dsl-examples/breast_cancer.strata"));
    let trained_artifact = artifact(&source, Backend::Cpu, 0);
    let config = trained_artifact
        .manifest
        .train
        .clone()
        .expect("a train section");
    let mut trained = Session::new(&trained_artifact).expect("loads");
    let dir = tempfile::tempdir().unwrap();
    let options = TrainOptions {
        run_dir: dir.path().to_path_buf(),
        quiet: true,
        ..Default::default()
    };
    let summary = train(&mut trained, &config, &options).expect("trains");
    let test = summary.test.as_ref().expect("a test split");
    let accuracy = strata_artifact::Metric::from_name("accuracy")
        .and_then(|m| test.metrics.value(m))
        .expect("accuracy");
    assert!(
        accuracy > 0.9,
        "the model did not learn: accuracy {accuracy}"
    );

    // The same architecture re-initialized from another seed, with the trained
    // normalization (the randomization is of the parameters).
    let mut random = Session::new(&artifact(&source, Backend::Cpu, 1)).expect("loads");
    let trained_weights: Vec<(String, HostTensor)> = trained
        .weights()
        .map(|(k, t)| (k.to_string(), t.clone()))
        .collect();
    let mixed: Vec<(String, HostTensor)> = random
        .weights()
        .map(|(k, t)| match WeightKind::of(k) {
            WeightKind::Normalization => trained_weights
                .iter()
                .find(|(name, _)| name == k)
                .cloned()
                .expect("the same buffers"),
            _ => (k.to_string(), t.clone()),
        })
        .collect();
    random
        .load_weights(&encode_weights(mixed.iter().map(|(k, t)| (k.as_str(), t))).unwrap())
        .unwrap();

    let held_out = strata_training::explain::samples::split_samples(
        &trained_artifact.manifest,
        &config,
        None,
        strata_training::driver::EvalSplit::Test,
        16,
    )
    .unwrap();
    let inputs = [("x".to_string(), held_out.features)];
    // The plain gradient: nothing of the input in it, only the model.
    let method = Method::Gradient;
    let of = |session: &mut Session| {
        explain(
            session,
            &settings(method.clone(), Target::Index(0)),
            None,
            &inputs,
        )
        .unwrap()
        .targets
        .remove(0)
        .attributions
        .values
    };
    let (a, b) = (of(&mut trained), of(&mut random));
    // Per sample, how alike the two rankings of the 30 features are (signed: the
    // gradients' magnitudes with respect to raw features are dominated by the fitted
    // normalization's scale, which both models share; measured 0.09 signed against 0.86
    // for magnitudes).
    let mean: f64 = (0..16)
        .map(|i| rank_correlation(&a[i * 30..][..30], &b[i * 30..][..30]))
        .sum::<f64>()
        / 16.0;

    eprintln!("mean rank correlation, trained against re-initialized: {mean:.3}");
    assert!(
        mean < 0.5,
        "attributions hardly depend on the learned parameters: rank correlation {mean}"
    );
    // The same weights twice give the same attributions (the check can tell alike apart).
    let again = of(&mut trained);
    assert_eq!(a, again);
}

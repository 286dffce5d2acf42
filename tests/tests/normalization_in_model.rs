//! A train section's fitted normalization is part of the model: for every example that
//! normalizes its features, a short training run's `best.safetensors`, built into the
//! artifact as `strata build --weights` does, gives an `infer` that scores the *raw*
//! test split exactly as `strata eval` scored it.
//!
//! The GAN is left out: its `infer` draws samples from noise without reading the
//! features, and its evaluation reports losses only.

use strata_artifact::Metric;
use strata_artifact::tensor::{HostTensor, TensorData};
use strata_artifact::train_config::{Task, TrainConfig};
use strata_artifact::weight_keys::{NORMALIZE_OFFSET, NORMALIZE_SCALE};
use strata_compiler::driver::compile;
use strata_runtime::Session;
use strata_tests::{load_example, root, train_check::training_options};
use strata_training::driver::{EvalSplit, Metrics, complete_weights, load_weights_file};
use strata_training::metrics::{ClassificationReport, RegressionReport};
use strata_training::{DataSource, Dataset, Labels, TrainOptions, evaluate, train};

/// The test split of the section's data, raw (as a user holds it).
fn raw_test_split(config: &TrainConfig, sample_shape: &[u64]) -> Dataset {
    let mut data = DataSource::parse(&config.data)
        .and_then(|s| s.load())
        .expect("the data loads");
    data.reshape_features(sample_shape).expect("fits the input");
    let [a, b, c] = config.split;
    let (_, _, test) = if config.sequential_split {
        data.split_sequential((a, b, c))
    } else {
        data.split((a, b, c), config.seed)
    }
    .expect("splits");
    test
}

/// The metrics of `predictions` (what `infer` gave) against the split's labels.
fn metrics_of(
    config: &TrainConfig,
    predictions: &[f32],
    width: usize,
    test: &Dataset,
    normalize: &dyn Fn(&[f32]) -> Vec<f32>,
) -> Metrics {
    match (&config.task, &test.labels) {
        (Task::Unlabelled { .. }, _) => Metrics::Regression(
            RegressionReport::new(predictions, &normalize(&test.features)).expect("mse"),
        ),
        (_, Labels::Classes { values, .. }) => Metrics::Classification(
            ClassificationReport::from_logits(predictions, width, values).expect("report"),
        ),
        (_, Labels::Targets { values, .. }) => {
            Metrics::Regression(RegressionReport::new(predictions, values).expect("mse"))
        }
        (_, Labels::Sequences { .. }) => panic!("no normalized example has sequence labels"),
    }
}

fn infer_reproduces_eval(file: &str) {
    let source = load_example(&root().join("dsl-examples").join(file));
    let mut artifact = compile(&source, &training_options())
        .unwrap_or_else(|e| panic!("{}", e.render(&source)))
        .artifact;
    let config = artifact.manifest.train.clone().expect("a train section");
    assert_ne!(config.normalize, "none", "{file} normalizes its features");

    let dir = tempfile::tempdir().expect("temp dir");
    let mut session = Session::new(&artifact).expect("loads");
    let options = TrainOptions {
        run_dir: dir.path().to_path_buf(),
        epochs_override: Some(1),
        quiet: true,
        ..Default::default()
    };
    let summary = train(&mut session, &config, &options).expect("trains");
    let best = std::fs::read(&summary.paths.best).expect("best.safetensors");

    // `strata eval --weights best.safetensors`.
    let mut scored = Session::new(&artifact).expect("loads");
    load_weights_file(&mut scored, &best, &summary.paths.best).expect("weights load");
    let report = evaluate(&mut scored, &config, None, EvalSplit::Test).expect("evaluates");

    // `strata build --weights best.safetensors`, then `infer` on the raw test split.
    artifact.weights = complete_weights(&artifact.weights, &best, &summary.paths.best)
        .expect("completes")
        .into();
    let mut built = Session::new(&artifact).expect("the built model loads");
    let stats = |key: &str| {
        built
            .weights()
            .find(|(k, _)| *k == key)
            .and_then(|(_, t)| t.as_f32().map(<[f32]>::to_vec))
            .unwrap_or_else(|| panic!("{file}: the built weights carry `{key}`"))
    };
    let (offset, scale) = (stats(NORMALIZE_OFFSET), stats(NORMALIZE_SCALE));
    assert!(
        offset.iter().any(|&o| o != 0.0) || scale.iter().any(|&s| s != 1.0),
        "{file}: the built weights hold fitted statistics, not the identity"
    );
    let infer = built
        .manifest()
        .entries
        .iter()
        .find(|e| e.name == "infer")
        .expect("an infer entry")
        .clone();
    let features = &infer
        .inputs
        .iter()
        .find(|p| p.name == config.features_input)
        .expect("infer takes the features");
    let sample_shape: Vec<u64> = built.manifest().buffers[features.buffer].shape[1..]
        .iter()
        .map(|d| match d {
            strata_kernels::ir::Dim::Fixed(n) => *n,
            strata_kernels::ir::Dim::Batch => panic!("one batch dimension"),
        })
        .collect();
    let test = raw_test_split(&config, &sample_shape);
    let mut shape = vec![test.len as u64];
    shape.extend_from_slice(&sample_shape);
    let x = HostTensor::new(shape, TensorData::F32(test.features.clone())).expect("tensor");
    let outputs = built
        .run("infer", &[(config.features_input.as_str(), x)])
        .expect("infer runs");
    let predictions = outputs
        .iter()
        .find(|(n, _)| *n == config.prediction)
        .and_then(|(_, t)| t.as_f32())
        .expect("the prediction")
        .to_vec();
    let width = predictions.len() / test.len;
    let normalize = |xs: &[f32]| -> Vec<f32> {
        xs.iter()
            .enumerate()
            .map(|(i, &x)| (x - offset[i % offset.len()]) / scale[i % scale.len()])
            .collect()
    };
    let from_infer = metrics_of(&config, &predictions, width, &test, &normalize);

    assert_eq!(report.samples, test.len, "{file}: the same test split");
    for (metric, evaluated) in report.scalars() {
        let inferred = from_infer.value(metric).unwrap_or(f64::NAN);
        let tolerance = match metric {
            // Counts of samples: the same predictions give the same count.
            Metric::Accuracy | Metric::Precision | Metric::Recall | Metric::F1 => 1e-9,
            _ => 1e-5 * evaluated.abs().max(1.0),
        };
        println!("{file}: {metric} eval {evaluated:.6}, infer on raw inputs {inferred:.6}");
        assert!(
            (inferred - evaluated).abs() <= tolerance,
            "{file}: `{metric}` of infer on the raw test split is {inferred}, eval measured {evaluated}"
        );
    }
}

#[test]
fn mlp_infer_on_raw_inputs_reproduces_eval() {
    infer_reproduces_eval("mlp.strata");
}

#[test]
fn cnn_infer_on_raw_inputs_reproduces_eval() {
    infer_reproduces_eval("cnn.strata");
}

#[test]
fn breast_cancer_infer_on_raw_inputs_reproduces_eval() {
    infer_reproduces_eval("breast_cancer.strata");
}

#[test]
fn diabetes_infer_on_raw_inputs_reproduces_eval() {
    infer_reproduces_eval("diabetes.strata");
}

#[test]
fn autoencoder_infer_on_raw_inputs_reproduces_eval() {
    infer_reproduces_eval("autoencoder.strata");
}

#[test]
fn transformer_encoder_infer_on_raw_inputs_reproduces_eval() {
    infer_reproduces_eval("transformer_encoder.strata");
}

#[test]
fn recurrent_infer_on_raw_inputs_reproduces_eval() {
    for file in ["rnn.strata", "lstm.strata", "gru.strata"] {
        infer_reproduces_eval(file);
    }
}

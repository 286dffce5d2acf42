//! Training from given weights (`strata train --weights`) with a frozen layer: the MLP
//! trained once, then trained on another split from its `best.safetensors` with its first
//! layer declared `trainable = false`, continues from the loaded accuracy and leaves the
//! frozen layer bitwise as loaded.

use std::collections::HashMap;

use strata_artifact::{HostTensor, Metric};
use strata_compiler::driver::{CompileOptions, compile};
use strata_compiler::source::SourceFile;
use strata_runtime::Session;
use strata_tests::{load_example, root, train_check::training_options};
use strata_training::driver::{EvalSplit, load_weights_file};
use strata_training::{TrainOptions, evaluate, train};

/// The MLP example, its first dense layer frozen when `frozen`.
fn mlp_source(frozen: bool) -> SourceFile {
    let example = load_example(&root().join("dsl-examples/mlp.strata"));
    let first = "h = x |> dense(hidden, init = he_uniform)";
    assert!(example.text.contains(first), "the example's first layer");
    let text = if frozen {
        example.text.replacen(
            first,
            "h = x |> dense(hidden, init = he_uniform, trainable = false)",
            1,
        )
    } else {
        example.text.clone()
    };
    SourceFile::new("mlp.strata", text)
}

fn compiled(source: &SourceFile, overrides: &[(&str, &str)]) -> strata_artifact::Artifact {
    let options = CompileOptions {
        train_overrides: overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..training_options()
    };
    compile(source, &options)
        .unwrap_or_else(|e| panic!("{}", e.render(source)))
        .artifact
}

fn weights_of(session: &Session) -> HashMap<String, HostTensor> {
    session
        .weights()
        .map(|(k, t)| (k.to_string(), t.clone()))
        .collect()
}

/// A tensor's values as their bit patterns (so -0.0 and 0.0 differ, NaN equals itself).
fn bits(t: &HostTensor) -> Vec<u32> {
    t.as_f32()
        .expect("f32")
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

#[test]
fn training_from_best_weights_with_a_frozen_first_layer_continues_from_its_accuracy() {
    // The first run: the example as it is, a few epochs.
    let first = compiled(&mlp_source(false), &[]);
    let first_config = first.manifest.train.clone().expect("a train section");
    let first_dir = tempfile::tempdir().expect("temp dir");
    let mut session = Session::new(&first).expect("loads");
    let options = TrainOptions {
        run_dir: first_dir.path().to_path_buf(),
        epochs_override: Some(8),
        quiet: true,
        ..Default::default()
    };
    let first_run = train(&mut session, &first_config, &options).expect("trains");
    let best_path = first_run.paths.best.clone();

    // The second run: another split (seed), the first layer frozen, from best.safetensors.
    let second = compiled(&mlp_source(true), &[("seed", "11")]);
    let config = second.manifest.train.clone().expect("a train section");
    assert_ne!(config.seed, first_config.seed, "another split");
    let loaded_accuracy = {
        let mut loaded = Session::new(&second).expect("loads");
        let bytes = std::fs::read(&best_path).expect("best.safetensors");
        load_weights_file(&mut loaded, &bytes, &best_path).expect("loads the weights");
        let report = evaluate(&mut loaded, &config, None, EvalSplit::Val).expect("evaluates");
        report.metrics.value(Metric::Accuracy).expect("accuracy")
    };
    let best = {
        let mut s = Session::new(&second).expect("loads");
        let bytes = std::fs::read(&best_path).expect("best.safetensors");
        load_weights_file(&mut s, &bytes, &best_path).expect("loads the weights");
        weights_of(&s)
    };

    let dir = tempfile::tempdir().expect("temp dir");
    let mut session = Session::new(&second).expect("loads");
    let options = TrainOptions {
        run_dir: dir.path().to_path_buf(),
        epochs_override: Some(2),
        initial_weights: Some(best_path.clone()),
        quiet: true,
        ..Default::default()
    };
    let summary = train(&mut session, &config, &options).expect("trains from the weights");

    let report = summary.initial_weights.as_ref().expect("a load report");
    println!("{report}");
    for key in [
        "dense0.weight",
        "dense0.bias",
        "dense2.weight",
        "normalize.scale",
    ] {
        assert!(
            report.loaded.iter().any(|k| k == key),
            "`{key}` was loaded: {report}"
        );
    }
    assert!(report.missing.is_empty(), "nothing missing: {report}");
    assert!(report.unused.is_empty(), "nothing unused: {report}");

    let after = weights_of(&session);
    for key in ["dense0.weight", "dense0.bias"] {
        assert_eq!(
            bits(&after[key]),
            bits(&best[key]),
            "the frozen `{key}` is bitwise as loaded"
        );
        assert!(
            !after
                .keys()
                .any(|k| k.starts_with("optim.") && k.ends_with(key)),
            "the frozen `{key}` has no optimizer state"
        );
    }
    assert_ne!(
        after["dense2.weight"], best["dense2.weight"],
        "the layers that are not frozen trained"
    );

    let first_epoch = summary.history[0]
        .metrics
        .get("val_accuracy")
        .copied()
        .expect("validation accuracy");
    println!(
        "loaded: val accuracy {loaded_accuracy:.4} on the new split; after one epoch: {first_epoch:.4}"
    );
    assert!(
        first_epoch >= loaded_accuracy,
        "the first epoch ({first_epoch:.4}) continues from the loaded accuracy ({loaded_accuracy:.4})"
    );
}

#[test]
fn a_weights_file_of_another_shape_is_an_error() {
    let source = SourceFile::new(
        "small.strata",
        "model Small {\n    input x: f32[batch, 64]\n    output logits = x |> dense(10)\n}\n\n\
         train Small {\n    data = digits\n    label y: i32[batch]\n    loss = cross_entropy(logits, y)\n}\n",
    );
    let small = compiled(&source, &[]);
    let config = small.manifest.train.clone().expect("a train section");
    let dir = tempfile::tempdir().expect("temp dir");
    let wrong = dir.path().join("wrong.safetensors");
    let tensor = HostTensor::f32(vec![3, 64], vec![0.0; 192]).expect("tensor");
    let bytes =
        strata_artifact::weights::encode_weights([("dense0.weight", &tensor)]).expect("encodes");
    std::fs::write(&wrong, bytes).expect("writes");
    let mut session = Session::new(&small).expect("loads");
    let options = TrainOptions {
        run_dir: dir.path().join("run"),
        epochs_override: Some(1),
        initial_weights: Some(wrong),
        quiet: true,
        ..Default::default()
    };
    let err = train(&mut session, &config, &options).expect_err("a shape mismatch");
    let message = err.to_string();
    assert!(
        message.contains("dense0.weight") && message.contains("[3, 64]"),
        "{message}"
    );
}

const BATCH_NORM: &str = "model Bn {
    input x: f32[batch, 64]
    output logits = x |> dense(16) |> batch_norm(frozen = FROZEN) |> relu |> dense(10)
}

train Bn {
    data = digits
    normalize = scale(16)
    label y: i32[batch]
    loss = cross_entropy(logits, y)
    batch = 64   epochs = 1
}
";

/// Trains the batch-norm model one epoch; returns its weights before and after.
fn train_batch_norm(frozen: bool) -> (HashMap<String, HostTensor>, HashMap<String, HostTensor>) {
    let text = BATCH_NORM.replace("FROZEN", if frozen { "true" } else { "false" });
    let artifact = compiled(&SourceFile::new("bn.strata", text), &[]);
    let config = artifact.manifest.train.clone().expect("a train section");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut session = Session::new(&artifact).expect("loads");
    let before = weights_of(&session);
    let options = TrainOptions {
        run_dir: dir.path().to_path_buf(),
        quiet: true,
        ..Default::default()
    };
    train(&mut session, &config, &options).expect("trains");
    (before, weights_of(&session))
}

#[test]
fn frozen_batch_norm_keeps_its_running_averages_while_the_rest_trains() {
    let (before, after) = train_batch_norm(true);
    for key in ["batch_norm0.running_mean", "batch_norm0.running_var"] {
        assert_eq!(bits(&after[key]), bits(&before[key]), "`{key}` is kept");
    }
    for key in ["batch_norm0.weight", "dense0.weight"] {
        assert_ne!(bits(&after[key]), bits(&before[key]), "`{key}` trains");
    }
    // Not frozen, the running averages follow the batches.
    let (before, after) = train_batch_norm(false);
    assert_ne!(
        bits(&after["batch_norm0.running_mean"]),
        bits(&before["batch_norm0.running_mean"])
    );
}

#[test]
fn trainable_false_on_a_layer_without_parameters_is_an_error() {
    let source = SourceFile::new(
        "bad.strata",
        "model Bad {\n    input x: f32[batch, 4]\n    output y = x |> relu(trainable = false)\n}\n",
    );
    let Err(strata_compiler::driver::CompileError::User(d)) = compile(&source, &training_options())
    else {
        panic!("a diagnostic")
    };
    assert_eq!(d.code.code(), "E0005");
    assert!(d.message.contains("no parameters"), "{}", d.message);
}

#[test]
fn a_checkpoint_gives_its_parameters_and_leaves_its_optimizer_state_unused() {
    let artifact = compiled(&mlp_source(false), &[]);
    let config = artifact.manifest.train.clone().expect("a train section");
    let first = tempfile::tempdir().expect("temp dir");
    let mut session = Session::new(&artifact).expect("loads");
    let options = TrainOptions {
        run_dir: first.path().to_path_buf(),
        epochs_override: Some(1),
        quiet: true,
        ..Default::default()
    };
    let summary = train(&mut session, &config, &options).expect("trains");

    let second = tempfile::tempdir().expect("temp dir");
    let mut session = Session::new(&artifact).expect("loads");
    let options = TrainOptions {
        run_dir: second.path().to_path_buf(),
        epochs_override: Some(1),
        initial_weights: Some(summary.paths.last.clone()),
        quiet: true,
        ..Default::default()
    };
    let summary = train(&mut session, &config, &options).expect("trains from last.ckpt");
    let report = summary.initial_weights.expect("a load report");
    assert_eq!(
        report.loaded.len(),
        8,
        "six parameters and the normalization: {report}"
    );
    assert!(report.missing.is_empty(), "{report}");
    assert_eq!(
        report.unused.len(),
        12,
        "Adam's two moments of six parameters: {report}"
    );
    assert!(
        report.unused.iter().all(|k| k.starts_with("optim.")),
        "{report}"
    );
    let text = report.to_string();
    assert!(
        text.contains("8 loaded, 0 missing (kept initial), 12 unused")
            && text.contains("and 4 more"),
        "{text}"
    );
}

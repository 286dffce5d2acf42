//! The examples trained from files of named arrays reach their bars: the multi-task
//! model scores both heads (digit accuracy, and each pixel row's ink far better than
//! predicting its training mean), and the two-input siamese model tells same-digit pairs
//! from different ones.

use strata_tests::train_run::train_example;
use strata_training::builtin;

#[test]
fn multitask_scores_both_heads() {
    let run = train_example("multitask.strata");
    let accuracy = run.test_metric("accuracy");
    let (mae, mse) = (
        run.test_head_metric("row_ink", "mae"),
        run.test_head_metric("row_ink", "mse"),
    );
    // The baseline: each row's mean ink over the train split, scored on the test split
    // (digit_tasks.npz holds the built-in digits in their order, so the split is theirs).
    let config = run
        .session
        .manifest()
        .train
        .clone()
        .expect("a train section");
    let [a, b, c] = config.split;
    let digits = builtin("digits").expect("built in");
    let (train, _, test) = digits.split((a, b, c), config.seed).expect("splits");
    let rows = |set: &strata_training::Dataset| -> Vec<f64> {
        set.features
            .chunks(8)
            .map(|row| row.iter().map(|&v| f64::from(v)).sum::<f64>() / 128.0)
            .collect()
    };
    let (train_rows, test_rows) = (rows(&train), rows(&test));
    let mut mean = [0.0f64; 8];
    for (i, v) in train_rows.iter().enumerate() {
        mean[i % 8] += v / train.len as f64;
    }
    let baseline = test_rows
        .iter()
        .enumerate()
        .map(|(i, v)| (v - mean[i % 8]).powi(2))
        .sum::<f64>()
        / test_rows.len() as f64;
    println!(
        "multitask: test accuracy {accuracy:.4}, row ink MAE {mae:.4}, MSE {mse:.4} \
         (row means {baseline:.4}), {} parameters, {:.1} s",
        run.parameters, run.seconds
    );
    assert!(accuracy >= 0.95, "test accuracy {accuracy:.4} < 0.95");
    assert!(
        mse < 0.2 * baseline,
        "row ink MSE {mse:.4} is not below a fifth of the row means' {baseline:.4}"
    );
}

#[test]
fn siamese_tells_same_digit_pairs_apart() {
    let run = train_example("siamese.strata");
    let (accuracy, auc) = (run.test_metric("accuracy"), run.test_metric("auc"));
    println!(
        "siamese: test accuracy {accuracy:.4}, AUC {auc:.4} (half the pairs are the same \
         digit), {} parameters, {:.1} s",
        run.parameters, run.seconds
    );
    assert!(accuracy >= 0.85, "test accuracy {accuracy:.4} < 0.85");
    assert!(auc >= 0.95, "test AUC {auc:.4} < 0.95");
}

/// A model with a second input and two labels, one of them class labels scored by a head
/// of their own, trained by the driver from a safetensors file of named arrays: the
/// head's metrics are reported on the test split and logged every epoch, and a missing
/// array stops the run before a step, naming the file and the array.
#[test]
fn a_class_head_on_a_second_label_is_scored_and_logged() {
    use strata_artifact::HostTensor;
    use strata_compiler::driver::compile;
    use strata_compiler::source::SourceFile;
    use strata_runtime::Session;
    use strata_training::{TrainOptions, train};

    let dir = tempfile::tempdir().expect("temp dir");
    let n = 200u64;
    // Label `kind`: which half of `x`'s sum `x + m` falls in; `level`: their mean.
    let mut rng = strata_kernels::rng::Philox::from_seed(3);
    let mut uniform = || (rng.next_u32() >> 8) as f32 / (1 << 24) as f32;
    let x: Vec<f32> = (0..n * 4).map(|_| uniform()).collect();
    let m: Vec<f32> = (0..n * 4).map(|_| uniform()).collect();
    let sums: Vec<f32> = (0..n as usize)
        .map(|i| (0..4).map(|j| x[4 * i + j] + m[4 * i + j]).sum())
        .collect();
    let kind: Vec<i32> = sums.iter().map(|&s| i32::from(s > 4.0)).collect();
    let level: Vec<f32> = sums.iter().map(|&s| s / 8.0).collect();
    let tensors = [
        ("x", HostTensor::f32(vec![n, 4], x).unwrap()),
        ("mask", HostTensor::f32(vec![n, 4], m).unwrap()),
        ("kind", HostTensor::i32(vec![n], kind).unwrap()),
        ("level", HostTensor::f32(vec![n, 1], level).unwrap()),
    ];
    let file = dir.path().join("d.safetensors");
    let bytes =
        strata_artifact::weights::encode_weights(tensors.iter().map(|(k, t)| (*k, t))).unwrap();
    std::fs::write(&file, bytes).unwrap();
    let text = format!(
        r#"
model Two {{
    input x: f32[batch, 4]
    input m: f32[batch, 4]
    h = concat(x, m) |> dense(16) |> relu
    output level_hat = h |> dense(1)
    output kind_logits = h |> dense(2)
}}

train Two {{
    data    = safetensors("{}", m = "mask")
    label   level: f32[batch, 1]
    label   kind: i32[batch]
    loss    = mse(level_hat, level) + cross_entropy(kind_logits, kind)
    metrics = [mae(level_hat, level), accuracy(kind_logits, kind)]
    optimizer = adam(lr = 0.01)
    epochs  = 15
}}
"#,
        file.display()
    );
    let source = SourceFile::new("two.strata", text.clone());
    let artifact = compile(&source, &strata_tests::train_check::training_options())
        .unwrap_or_else(|e| panic!("{}", e.render(&source)))
        .artifact;
    let config = artifact.manifest.train.clone().expect("a train section");
    assert_eq!(config.extra_inputs, vec!["m"]);
    assert_eq!(config.extra_labels, vec!["kind"]);
    let mut session = Session::new(&artifact).expect("loads");
    let options = TrainOptions {
        run_dir: dir.path().join("run"),
        quiet: true,
        ..Default::default()
    };
    let summary = train(&mut session, &config, &options).expect("trains");
    let test = summary.test.as_ref().expect("a test split");
    let head = &test.heads[0];
    assert_eq!(
        (head.output.as_str(), head.label.as_str()),
        ("kind_logits", "kind")
    );
    let accuracy = head
        .metrics
        .value(strata_artifact::Metric::Accuracy)
        .expect("accuracy");
    println!("two inputs, two labels: test kind accuracy {accuracy:.3}");
    assert!(accuracy >= 0.8, "kind accuracy {accuracy:.3}");
    let last = summary.history.last().expect("epochs");
    assert!(
        last.metrics.contains_key("val_kind.accuracy") && last.metrics.contains_key("val_mae"),
        "{:?}",
        last.metrics
    );

    // The same section over a file that lacks the mapped array.
    let (_, partial) = tensors.split_at(1);
    let without_mask: Vec<_> = std::iter::once(&tensors[0])
        .chain(partial.iter().skip(1))
        .map(|(k, t)| (*k, t))
        .collect();
    std::fs::write(
        &file,
        strata_artifact::weights::encode_weights(without_mask).unwrap(),
    )
    .unwrap();
    let mut session = Session::new(&artifact).expect("loads");
    let options = TrainOptions {
        run_dir: dir.path().join("run2"),
        quiet: true,
        ..Default::default()
    };
    let message = train(&mut session, &config, &options)
        .expect_err("a missing array")
        .to_string();
    assert!(
        message.contains(&file.display().to_string())
            && message.contains("no array `mask` for the input `m`"),
        "{message}"
    );
}

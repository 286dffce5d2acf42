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

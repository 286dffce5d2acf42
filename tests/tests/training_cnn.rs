//! Convolutions end to end: `dsl-examples/cnn.strata` learns the built-in digits as
//! 1x8x8 images to 97% test accuracy, and so does `cnn_augmented.strata`, trained on
//! randomly shifted, noisy images; a small CNN's compiled train step (im2col, col2im,
//! pooling, batch norm) agrees with the reference interpreter.

use strata_tests::train_check::assert_train_steps_match;
use strata_tests::train_run::train_example;

#[test]
fn the_cnn_example_reaches_97_percent_test_accuracy_on_digits() {
    let run = train_example("cnn.strata");
    let accuracy = run.test_metric("accuracy");
    println!(
        "cnn on digits ({} weights): test accuracy {accuracy:.4} after {} epochs ({:?}) in {:.2} s",
        run.parameters, run.summary.epochs, run.summary.stop, run.seconds
    );
    assert!(
        accuracy >= 0.97,
        "test accuracy {accuracy:.4} < 0.97 (history: {:#?})",
        run.summary.history
    );
}

#[test]
fn the_cnn_trained_on_shifted_noisy_digits_reaches_97_percent() {
    let run = train_example("cnn_augmented.strata");
    let accuracy = run.test_metric("accuracy");
    println!(
        "cnn_augmented on digits ({} weights): test accuracy {accuracy:.4} after {} epochs ({:?}) in {:.2} s",
        run.parameters, run.summary.epochs, run.summary.stop, run.seconds
    );
    assert!(
        accuracy >= 0.97,
        "test accuracy {accuracy:.4} < 0.97 (history: {:#?})",
        run.summary.history
    );
}

/// Strided, padded and dilated convolutions, both poolings and batch norm over NCHW.
const SMALL_CNN: &str = r#"
model Small {
    input x: f32[batch, 2, 7, 7]
    h = x |> conv2d(3, 3, padding = 1, bias = false) |> batch_norm |> tanh
    h2 = h |> conv2d(4, [2, 3], stride = 2, padding = 2, dilation = 2) |> relu
    p = h2 |> avg_pool2d([1, 2]) |> max_pool2d([5, 2])
    g = h |> global_avg_pool
    output logits = concat(p |> flatten, g, axis = 1) |> dense(4)
}
train Small {
    label y: i32[batch]
    loss = cross_entropy(logits, y)
    optimizer = adam(lr = 0.01)
}
"#;

#[test]
fn a_small_cnn_train_step_matches_the_interpreter() {
    assert_train_steps_match("small_cnn", SMALL_CNN, &[2, 7, 7], 4, 5, 5);
}

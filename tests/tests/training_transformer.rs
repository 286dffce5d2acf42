//! Attention end to end: `dsl-examples/transformer_encoder.strata` learns the built-in
//! digits read as sequences of 8 rows to 95% test accuracy, and small attention models'
//! compiled train steps (batched 4-d products, layer norm, GELU, causal masks,
//! sinusoidal positions) agree with the reference interpreter.

use strata_tests::train_check::assert_train_steps_match;
use strata_tests::train_run::train_example;

#[test]
fn the_transformer_example_reaches_95_percent_test_accuracy_on_digits() {
    let run = train_example("transformer_encoder.strata");
    let accuracy = run.test_metric("accuracy");
    println!(
        "transformer on digits ({} weights): test accuracy {accuracy:.4} after {} epochs ({:?}) in {:.2} s",
        run.parameters, run.summary.epochs, run.summary.stop, run.seconds
    );
    assert!(
        accuracy >= 0.95,
        "test accuracy {accuracy:.4} < 0.95 (history: {:#?})",
        run.summary.history
    );
}

/// One pre-norm encoder layer over sinusoidal positions, then a causal attention head.
const TINY_ATTENTION: &str = r#"
model Tiny {
    input x: f32[batch, 3, 4]
    h = x |> dense(8) |> positional(kind = "sinusoidal")
    h2 = h |> transformer_encoder_layer(heads = 2, ff = 6, norm_first = true)
    h3 = h2 |> self_attention(2, causal = true) |> layer_norm |> gelu
    output logits = mean(h3, axis = 1) |> dense(3)
}
train Tiny {
    label y: i32[batch]
    loss = cross_entropy(logits, y)
    optimizer = adam(lr = 0.01)
}
"#;

#[test]
fn a_tiny_attention_train_step_matches_the_interpreter() {
    assert_train_steps_match("tiny_attention", TINY_ATTENTION, &[3, 4], 3, 4, 5);
}

/// Post-norm, as the example uses, with learned positions. This once departed from the
/// interpreter from step 2: the memory plan let an in-place map's output partly overlap
/// (at a different offset) the input dying there, so its stores overwrote input elements
/// not yet read (the layer norm backward's map over `t200`).
const TINY_POST_NORM: &str = r#"
model TinyPost {
    input x: f32[batch, 4, 3]
    h = x |> dense(4) |> positional
    output logits = h |> transformer_encoder_layer(heads = 2, ff = 5) |> flatten |> dense(2)
}
train TinyPost {
    label y: i32[batch]
    loss = cross_entropy(logits, y)
    optimizer = adam(lr = 0.01)
}
"#;

#[test]
fn a_post_norm_encoder_train_step_matches_the_interpreter() {
    assert_train_steps_match("tiny_post_norm", TINY_POST_NORM, &[4, 3], 2, 3, 5);
}

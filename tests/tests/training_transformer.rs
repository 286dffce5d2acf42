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

/// The sinusoidal table, built by rotation from its rates, against the closed form
/// `sin(t w_i)`, `cos(t w_i)` with `w_i = 10000^(-2i/d)`: in the interpreter (f64) and
/// compiled (f32), for an odd width (the last `sin` column alone).
#[test]
fn sinusoidal_positions_match_the_closed_form() {
    use std::collections::HashMap;
    use strata_artifact::HostTensor;
    use strata_compiler::driver::{CompileOptions, compile};
    use strata_compiler::ir::interpret::{Tensor, interpret};
    use strata_compiler::source::SourceFile;
    use strata_runtime::Session;
    let (t, d) = (300usize, 7usize);
    let text = format!(
        "model P {{ input x: f32[batch, {t}, {d}]\n output y = x |> positional(kind = \"sinusoidal\") }}"
    );
    let source = SourceFile::new("p.strata", text);
    let compiled = compile(&source, &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let expected: Vec<f64> = (0..t)
        .flat_map(|pos| {
            (0..d).map(move |f| {
                let rate = 10000f64.powf(-((f - f % 2) as f64) / d as f64);
                let angle = pos as f64 * rate;
                if f % 2 == 0 { angle.sin() } else { angle.cos() }
            })
        })
        .collect();
    let zeros = Tensor::new(vec![1, t, d], vec![0.0; t * d]).expect("sizes");
    let inputs = HashMap::from([("x".to_string(), zeros)]);
    let interpreted = interpret(&compiled.optimized, &inputs, &HashMap::new()).expect("runs");
    let worst = |got: &mut dyn Iterator<Item = f64>| {
        got.zip(&expected)
            .map(|(g, w)| (g - w).abs())
            .fold(0.0, f64::max)
    };
    let f64_error = worst(&mut interpreted["y"].data.iter().copied());
    assert!(f64_error < 1e-12, "interpreter: error {f64_error:e}");
    let mut session = Session::new(&compiled.artifact).expect("loads");
    let x = HostTensor::f32(vec![1, t as u64, d as u64], vec![0.0; t * d]).expect("sizes");
    let out = session.run("infer", &[("x", x)]).expect("runs");
    let values = out[0].1.as_f32().expect("f32");
    let f32_error = worst(&mut values.iter().map(|&v| f64::from(v)));
    assert!(f32_error < 1e-5, "compiled: error {f32_error:e}");
}

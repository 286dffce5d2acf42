//! Losses written as expressions and the built-in losses added beside `cross_entropy`:
//! each built-in against a closed form computed by hand, every new function and loss on
//! the CPU (and the GPU, where there is an adapter) against the reference interpreter,
//! their gradients against finite differences, and training steps against the
//! interpreter.

use std::collections::HashMap;
use strata_artifact::Backend as Device;
use strata_artifact::HostTensor;
use strata_compiler::driver::{Backend, CompileOptions, compile};
use strata_compiler::ir::interpret::{Tensor, interpret};
use strata_compiler::source::SourceFile;
use strata_runtime::Session;
use strata_tests::gradient_check::assert_gradients_match_finite_differences;
use strata_tests::infer_check::params_of;
use strata_tests::train_check::{assert_train_steps_match, to_tensor, training_options};
use strata_tests::{TestRng, gpu_available};

/// A named input: its shape and values (i32 inputs are given as whole numbers).
struct Input {
    name: &'static str,
    shape: Vec<u64>,
    values: Vec<f64>,
    integer: bool,
}

fn f32_input(name: &'static str, shape: &[u64], values: &[f64]) -> Input {
    Input {
        name,
        shape: shape.to_vec(),
        values: values.to_vec(),
        integer: false,
    }
}

fn i32_input(name: &'static str, shape: &[u64], values: &[i32]) -> Input {
    Input {
        name,
        shape: shape.to_vec(),
        values: values.iter().map(|&v| f64::from(v)).collect(),
        integer: true,
    }
}

/// Runs entry `entry` (`infer`, or `eval` of a trainable model) of `text` on `inputs` in
/// the reference interpreter and on the CPU (and on the GPU when there is an adapter),
/// asserts the backends agree with the interpreter to 1e-5 (GPU 1e-4) of each output's
/// scale, and returns the interpreter's outputs.
fn run_everywhere(text: &str, entry: &str, inputs: &[Input]) -> HashMap<String, Vec<f64>> {
    let source = SourceFile::new("losses.strata", text.to_string());
    let gpu = gpu_available(entry);
    let mut options = if entry == "infer" {
        CompileOptions::default()
    } else {
        training_options()
    };
    if gpu {
        options.target = Backend::Gpu;
    }
    let compiled = compile(&source, &options).unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let graph = match entry {
        "infer" => &compiled.optimized,
        _ => {
            &compiled
                .training
                .iter()
                .find(|e| e.name == entry)
                .expect("the entry")
                .graph
        }
    };
    let host: Vec<(&str, HostTensor)> = inputs
        .iter()
        .map(|i| {
            let t = if i.integer {
                HostTensor::i32(
                    i.shape.clone(),
                    i.values.iter().map(|&v| v as i32).collect(),
                )
            } else {
                HostTensor::f32(
                    i.shape.clone(),
                    i.values.iter().map(|&v| v as f32).collect(),
                )
            };
            (i.name, t.expect("sizes"))
        })
        .collect();
    let reference: HashMap<String, Tensor> = inputs
        .iter()
        .map(|i| {
            let shape = i.shape.iter().map(|&d| d as usize).collect();
            let t = Tensor::new(shape, i.values.clone()).expect("sizes");
            (i.name.to_string(), t)
        })
        .collect();
    let mut cpu = Session::new_with(&compiled.artifact, Device::Cpu).expect("loads");
    let expected = interpret(graph, &reference, &params_of(&cpu)).expect("interprets");
    let mut devices = vec![("CPU", cpu.run(entry, &host).expect("runs on the CPU"), 1e-5)];
    if gpu {
        let mut session = Session::new_with(&compiled.artifact, Device::Gpu).expect("GPU");
        devices.push((
            "GPU",
            session.run(entry, &host).expect("runs on the GPU"),
            1e-4,
        ));
    }
    for (device, outputs, tolerance) in devices {
        for (name, got) in outputs {
            let err = to_tensor(&got).max_relative_error(&expected[&name]);
            assert!(
                err <= tolerance,
                "{device} `{name}`: relative error {err:e} against the interpreter"
            );
        }
    }
    expected.into_iter().map(|(k, t)| (k, t.data)).collect()
}

/// The scalar output `name` of `infer`.
fn scalar(outputs: &HashMap<String, Vec<f64>>, name: &str) -> f64 {
    outputs[name][0]
}

fn assert_close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 1e-6 * want.abs().max(1.0),
        "{what}: got {got}, want {want}"
    );
}

/// A model whose output `loss` is `call` of two inputs `a` and `b` of `[batch, n]`.
fn pair_model(call: &str, a_type: &str, b_type: &str) -> String {
    format!(
        "model M {{\n    input a: {a_type}\n    input b: {b_type}\n    output loss = {call}\n}}\n"
    )
}

#[test]
fn huber_is_quadratic_inside_delta_and_linear_outside() {
    let text = pair_model("huber(a, b, delta = 1)", "f32[batch, 3]", "f32[batch, 3]");
    let out = run_everywhere(
        &text,
        "infer",
        &[
            f32_input("a", &[2, 3], &[0.5, -2.0, 3.0, 1.0, 1.0, 1.0]),
            f32_input("b", &[2, 3], &[0.0, 0.0, 0.5, 1.0, 1.0, 1.0]),
        ],
    );
    // d = 0.5, -2, 2.5: 0.125, 1.5 and 2.0; the second row is exact: 3.625 / 6.
    assert_close(scalar(&out, "loss"), 3.625 / 6.0, "huber");
    let text = pair_model("huber(a, b, delta = 2)", "f32[batch, 1]", "f32[batch, 1]");
    let out = run_everywhere(
        &text,
        "infer",
        &[
            f32_input("a", &[2, 1], &[3.0, 0.0]),
            f32_input("b", &[2, 1], &[0.0, 1.0]),
        ],
    );
    // |d| = 3 > 2: 2 (3 - 1) = 4; |d| = 1: 0.5.
    assert_close(scalar(&out, "loss"), 4.5 / 2.0, "huber delta 2");
}

#[test]
fn hinge_is_pytorchs_multi_margin_loss() {
    let text = pair_model("hinge(a, b)", "f32[batch, 3]", "i32[batch]");
    let out = run_everywhere(
        &text,
        "infer",
        &[
            f32_input("a", &[2, 3], &[1.0, 2.0, 0.5, 3.0, 0.0, 0.0]),
            i32_input("b", &[2], &[0, 0]),
        ],
    );
    // Row 1: max(0, 1 - 1 + 2) + max(0, 1 - 1 + 0.5) = 2.5 over 3 classes; row 2: 0.
    assert_close(scalar(&out, "loss"), 2.5 / 3.0 / 2.0, "hinge");
}

#[test]
fn focal_weights_cross_entropy_by_the_missed_probability() {
    let ln3 = 3f64.ln();
    let inputs = || {
        [
            f32_input("a", &[2, 2], &[0.0, ln3, 0.0, ln3]),
            i32_input("b", &[2], &[1, 0]),
        ]
    };
    let text = pair_model("focal(a, b, gamma = 2)", "f32[batch, 2]", "i32[batch]");
    let out = run_everywhere(&text, "infer", &inputs());
    // p = [1/4, 3/4]: -(1/4)² ln(3/4) and -(3/4)² ln(1/4).
    let want = (-(0.25f64.powi(2)) * 0.75f64.ln() - 0.75f64.powi(2) * 0.25f64.ln()) / 2.0;
    assert_close(scalar(&out, "loss"), want, "focal");
    // With gamma = 0 it is the cross-entropy.
    let text = pair_model("focal(a, b, gamma = 0)", "f32[batch, 2]", "i32[batch]");
    let focal0 = scalar(&run_everywhere(&text, "infer", &inputs()), "loss");
    let text = pair_model("cross_entropy(a, b)", "f32[batch, 2]", "i32[batch]");
    let ce = scalar(&run_everywhere(&text, "infer", &inputs()), "loss");
    assert_close(focal0, ce, "focal(gamma = 0)");
    assert_close(ce, -(0.75f64.ln() + 0.25f64.ln()) / 2.0, "cross_entropy");
}

#[test]
fn kl_divergence_is_the_gaussian_kl_from_the_standard_normal() {
    let text = pair_model("kl_divergence(a, b)", "f32[batch, 2]", "f32[batch, 2]");
    let ln2 = 2f64.ln();
    let out = run_everywhere(
        &text,
        "infer",
        &[
            f32_input("a", &[2, 2], &[1.0, 0.0, 0.0, 0.0]),
            f32_input("b", &[2, 2], &[0.0, ln2, 0.0, 0.0]),
        ],
    );
    // Row 1: -0.5 ((1 + 0 - 1 - 1) + (1 + ln 2 - 0 - 2)); row 2: 0.
    let want = -0.5 * (-1.0 + ln2 - 1.0) / 2.0;
    assert_close(scalar(&out, "loss"), want, "kl_divergence");
}

#[test]
fn cosine_is_one_minus_the_cosine_similarity() {
    let text = pair_model("cosine(a, b)", "f32[batch, 2]", "f32[batch, 2]");
    let out = run_everywhere(
        &text,
        "infer",
        &[
            f32_input("a", &[2, 2], &[1.0, 0.0, 1.0, 2.0]),
            f32_input("b", &[2, 2], &[1.0, 1.0, -2.0, 1.0]),
        ],
    );
    // cos 45° and cos 90°.
    let want = ((1.0 - 0.5f64.sqrt()) + 1.0) / 2.0;
    assert_close(scalar(&out, "loss"), want, "cosine");
}

#[test]
fn casts_one_hot_and_element_wise_functions_match_their_definitions() {
    let text = r#"
model M {
    input x: f32[batch, 4]
    input y: i32[batch]
    output truncated = float(int(x))
    output hot = one_hot(int(x + 2), 4)
    output yhot = one_hot(y, 3)
    output labels = float(y) * 0.5
    output top = maximum(x, 0.25) + minimum(x, -1)
    output clipped = clip(x, -1, 1)
    output powers = square(x) + pow(abs(x), 1.5)
}
"#;
    let xs = [-1.7, 2.9, 0.2, -0.4, 5.5, -3.5, 1.0, 0.0];
    let out = run_everywhere(
        text,
        "infer",
        &[f32_input("x", &[2, 4], &xs), i32_input("y", &[2], &[3, 1])],
    );
    let truncated: Vec<f64> = xs.iter().map(|x: &f64| x.trunc()).collect();
    assert_eq!(out["truncated"], truncated);
    assert_eq!(out["labels"], vec![1.5, 0.5]);
    // int(x + 2): 0, 4 (outside 0..4: no class), 2, 1 | 7 (none), -1 (none), 3, 2.
    let mut hot = vec![0.0; 32];
    for (point, class) in [(0, 0), (2, 2), (3, 1), (6, 3), (7, 2)] {
        hot[point * 4 + class] = 1.0;
    }
    assert_eq!(out["hot"], hot);
    assert_eq!(
        out["yhot"],
        vec![0.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        "3 is outside 0..3"
    );
    let top: Vec<f64> = xs
        .iter()
        .map(|&x: &f64| x.max(0.25) + x.min(-1.0))
        .collect();
    assert_eq!(out["top"], top);
    let clipped: Vec<f64> = xs.iter().map(|&x: &f64| x.clamp(-1.0, 1.0)).collect();
    assert_eq!(out["clipped"], clipped);
    for (got, x) in out["powers"].iter().zip(xs) {
        assert_close(*got, x * x + x.abs().powf(1.5), "square + pow");
    }
}

/// A classifier of 6 features into 3 classes whose train section's loss is `loss`
/// (with `terms` before it).
fn classifier(terms: &str, loss: &str) -> String {
    format!(
        r#"
model Net {{
    input x: f32[batch, 6]
    h = x |> dense(8) |> tanh
    output logits = h |> dense(3)
    output score = sum(h |> dense(1), axis = 1)
}}
train Net {{
    label y: i32[batch]
{terms}
    loss = {loss}
    optimizer = sgd(lr = 0.1)
}}
"#
    )
}

/// The inputs of a batch of `batch` for [`classifier`]: features in [-1, 1), labels
/// in 0..3.
fn classifier_inputs(batch: u64) -> (Vec<Input>, HashMap<String, Tensor>) {
    let mut rng = TestRng::new(3);
    let x: Vec<f64> = (0..batch * 6)
        .map(|_| f64::from(rng.uniform()) * 2.0 - 1.0)
        .collect();
    let y: Vec<i32> = (0..batch).map(|_| (rng.next_u64() % 3) as i32).collect();
    let reference = HashMap::from([
        (
            "x".to_string(),
            Tensor::new(vec![batch as usize, 6], x.clone()).expect("sizes"),
        ),
        (
            "y".to_string(),
            Tensor::new(
                vec![batch as usize],
                y.iter().map(|&v| f64::from(v)).collect(),
            )
            .expect("sizes"),
        ),
    ]);
    (
        vec![
            f32_input("x", &[batch, 6], &x),
            i32_input("y", &[batch], &y),
        ],
        reference,
    )
}

/// Every function a loss expression may use, and every new built-in loss, at once.
const EVERYTHING_TERMS: &str = r#"
    term ce = -mean(sum(one_hot(y, 3) * log_softmax(logits), axis = -1))
    term margin = mean(maximum(0, 1 - score * (2 * float(y) - 1)))
    term spread = sum(square(clip(logits, -0.5, 0.5))) / sum(abs(logits) + 1)
    term mix = huber(score, float(y) / 2) + hinge(logits, y) + focal(logits, y)
    term other = kl_divergence(logits, logits * 0.5) + cosine(logits, exp(logits))
    term powered = mean(pow(exp(-abs(score)), 1.5) + log(1 + exp(score)))
"#;

const EVERYTHING_LOSS: &str = "ce + 0.5 * margin + spread + mix + 0.1 * other + powered";

#[test]
fn a_written_cross_entropy_equals_the_built_in_one() {
    let (inputs, _) = classifier_inputs(5);
    let written = run_everywhere(
        &classifier(
            "",
            "-mean(sum(one_hot(y, 3) * log_softmax(logits), axis = -1))",
        ),
        "eval",
        &inputs,
    );
    let built_in = run_everywhere(&classifier("", "cross_entropy(logits, y)"), "eval", &inputs);
    assert_close(
        scalar(&written, "loss"),
        scalar(&built_in, "loss"),
        "written cross-entropy",
    );
}

#[test]
fn the_batch_mean_divides_by_the_rows_of_each_batch() {
    let text = r#"
model M {
    input x: f32[batch, 2]
    output y = x |> dense(1, bias = false, init = ones)
}
train M {
    loss = mean(y) + 10 * max(y) + 100 * min(sum(x, axis = 1))
}
"#;
    for batch in [1u64, 3] {
        let x: Vec<f64> = (0..batch * 2).map(|i| i as f64).collect();
        let out = run_everywhere(text, "eval", &[f32_input("x", &[batch, 2], &x)]);
        let rows: Vec<f64> = x.chunks(2).map(|r| r[0] + r[1]).collect();
        let mean = rows.iter().sum::<f64>() / batch as f64;
        let max = rows.iter().copied().fold(f64::MIN, f64::max);
        let min = rows.iter().copied().fold(f64::MAX, f64::min);
        assert_close(
            scalar(&out, "loss"),
            mean + 10.0 * max + 100.0 * min,
            &format!("batch {batch}"),
        );
    }
}

#[test]
fn every_term_is_an_output_of_eval_and_adds_up_to_the_loss() {
    let (inputs, _) = classifier_inputs(7);
    let out = run_everywhere(
        &classifier(EVERYTHING_TERMS, EVERYTHING_LOSS),
        "eval",
        &inputs,
    );
    let t = |name: &str| scalar(&out, &format!("term.{name}"));
    let sum =
        t("ce") + 0.5 * t("margin") + t("spread") + t("mix") + 0.1 * t("other") + t("powered");
    assert_close(scalar(&out, "loss"), sum, "loss from its terms");
    assert!(t("margin") > 0.0 && t("ce") > 0.0);
}

#[test]
fn loss_expressions_have_the_gradients_of_finite_differences() {
    let (_, reference) = classifier_inputs(4);
    assert_gradients_match_finite_differences(
        "loss expressions",
        &classifier(EVERYTHING_TERMS, EVERYTHING_LOSS),
        &reference,
        6,
        1e-5,
    );
}

#[test]
fn each_new_loss_has_the_gradients_of_finite_differences() {
    let (_, reference) = classifier_inputs(4);
    for loss in [
        "huber(score, float(y), delta = 0.5)",
        "hinge(logits, y)",
        "focal(logits, y, gamma = 2)",
        "focal(logits, y, gamma = 0.5)",
        "kl_divergence(logits, 0.5 * logits - 1) + 0.1 * cross_entropy(logits, y)",
        "cosine(logits, logits * logits) + 0.1 * cross_entropy(logits, y)",
    ] {
        assert_gradients_match_finite_differences(loss, &classifier("", loss), &reference, 6, 1e-5);
    }
}

#[test]
fn train_steps_with_loss_expressions_match_the_interpreter() {
    let text = classifier(EVERYTHING_TERMS, EVERYTHING_LOSS).replace("[batch, 6]", "[batch, 12]");
    assert_train_steps_match("loss expressions", &text, &[12], 3, 6, 5);
}

#[test]
fn a_metric_that_names_its_output_makes_that_output_the_prediction() {
    let text = r#"
model TwoHeads {
    input x: f32[batch, 6]
    h = x |> dense(8) |> tanh
    output score = h |> dense(1)
    output logits = h |> dense(3)
}
train TwoHeads {
    label y: i32[batch]
    loss = cross_entropy(logits, y) + 0.1 * mean(square(score))
    metrics = [accuracy(logits, y), f1(logits, y)]
}
"#;
    let source = SourceFile::new("two_heads.strata", text);
    let compiled =
        compile(&source, &training_options()).unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let config = compiled.train_config.expect("a train section");
    assert_eq!(config.prediction, "logits");
    assert_eq!(
        config.task,
        strata_artifact::train_config::Task::Classification { classes: 3 }
    );
    let names: Vec<&str> = config.metrics.iter().map(|m| m.name()).collect();
    assert_eq!(names, ["accuracy", "f1"]);
}

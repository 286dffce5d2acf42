//! Augmentation inside a model, `random_flip`, `random_shift` and `noise`: what each
//! draws (the interpreter against the definitions written out here), the identity in
//! `eval` and `infer` unless `at_inference = true`, the CPU and GPU backends against the
//! interpreter, a train step against the interpreter's, and the gradient through the
//! augmented data path against finite differences.

use std::collections::{HashMap, HashSet};
use strata_compiler::driver::{CompileOptions, compile};
use strata_compiler::ir::interpret::{Tensor, interpret};
use strata_compiler::ir::{Graph, Op};
use strata_compiler::source::SourceFile;
use strata_tests::TestRng;
use strata_tests::gradient_check::assert_training_gradients_match_finite_differences;
use strata_tests::infer_check::check_backends;
use strata_tests::train_check::training_options;

/// Every augmentation kept on at inference, so `infer` shows what the train step draws.
const DRAWN: &str = r#"
model Aug {
    input x: f32[batch, 2, 5, 6]
    output f = random_flip(x, at_inference = true)
    output s = random_shift(x, 2, at_inference = true)
    output n = noise(x, 0.5, at_inference = true)
}
"#;

const BATCH: usize = 64;
const SAMPLE: [usize; 3] = [2, 5, 6];

fn random(rng: &mut TestRng, shape: Vec<usize>) -> Tensor {
    let n = shape.iter().product();
    Tensor {
        shape,
        data: (0..n)
            .map(|_| f64::from(rng.uniform()) * 2.0 - 1.0)
            .collect(),
    }
}

/// `DRAWN`'s outputs at `step` for a random batch, by the interpreter, with the input.
fn drawn(step: f64) -> (Tensor, HashMap<String, Tensor>) {
    let source = SourceFile::new("aug.strata", DRAWN.to_string());
    let compiled = compile(&source, &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let x = random(
        &mut TestRng::new(4),
        [vec![BATCH], SAMPLE.to_vec()].concat(),
    );
    let inputs = HashMap::from([
        ("x".to_string(), x.clone()),
        ("step".to_string(), Tensor::scalar(step)),
    ]);
    let out = interpret(&compiled.optimized, &inputs, &HashMap::new()).expect("interprets");
    (x, out)
}

/// Element `[c, i, j]` of sample `b`, zero outside the image.
fn at(x: &Tensor, b: usize, c: usize, i: i64, j: i64) -> f64 {
    let [cs, h, w] = SAMPLE;
    if i < 0 || j < 0 || i >= h as i64 || j >= w as i64 {
        return 0.0;
    }
    x.data[((b * cs + c) * h + i as usize) * w + j as usize]
}

/// Sample `b` of `y` equals `f(c, i, j)` everywhere.
fn sample_is(y: &Tensor, b: usize, f: impl Fn(usize, i64, i64) -> f64) -> bool {
    let [cs, h, w] = SAMPLE;
    (0..cs).all(|c| {
        (0..h).all(|i| (0..w).all(|j| at(y, b, c, i as i64, j as i64) == f(c, i as i64, j as i64)))
    })
}

#[test]
fn random_flip_reverses_whole_samples_about_half_the_time() {
    let (x, out) = drawn(1.0);
    let w = SAMPLE[2] as i64;
    let mut flipped = 0;
    for b in 0..BATCH {
        let same = sample_is(&out["f"], b, |c, i, j| at(&x, b, c, i, j));
        let mirrored = sample_is(&out["f"], b, |c, i, j| at(&x, b, c, i, w - 1 - j));
        assert!(
            same != mirrored,
            "sample {b} is the input or its mirror image"
        );
        flipped += usize::from(mirrored);
    }
    // Binomial(64, 1/2): 16..=48 holds with probability 1 - 5e-5.
    assert!((16..=48).contains(&flipped), "{flipped} of {BATCH} flipped");
}

#[test]
fn random_shift_moves_each_sample_by_up_to_its_pixels_filling_zeros() {
    let (x, out) = drawn(1.0);
    let mut seen = HashSet::new();
    for b in 0..BATCH {
        let shifts: Vec<(i64, i64)> = (-2..=2)
            .flat_map(|dy| (-2..=2).map(move |dx| (dy, dx)))
            .filter(|&(dy, dx)| sample_is(&out["s"], b, |c, i, j| at(&x, b, c, i - dy, j - dx)))
            .collect();
        assert_eq!(
            shifts.len(),
            1,
            "sample {b} is one shift of its input: {shifts:?}"
        );
        seen.insert(shifts[0]);
    }
    // 64 draws of 25 equally likely shifts leave about 2 unseen.
    assert!(
        seen.len() >= 18,
        "only {} shifts drawn: {seen:?}",
        seen.len()
    );
    let (_, again) = drawn(2.0);
    assert_ne!(
        out["s"].data, again["s"].data,
        "another step draws other shifts"
    );
}

#[test]
fn noise_adds_normal_draws_of_its_std() {
    let (x, out) = drawn(1.0);
    let d: Vec<f64> = out["n"]
        .data
        .iter()
        .zip(&x.data)
        .map(|(y, x)| y - x)
        .collect();
    let n = d.len() as f64;
    let mean = d.iter().sum::<f64>() / n;
    let sd = (d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    // 3840 draws: the standard error of the mean is 0.008, of the sd about 0.006.
    assert!(mean.abs() < 0.04, "mean {mean}");
    assert!((sd - 0.5).abs() < 0.03, "sd {sd}");
}

fn count_draws(g: &Graph) -> usize {
    g.values()
        .into_iter()
        .filter(|&v| matches!(g.node(v).op, Op::RandomUniform { .. }))
        .count()
}

#[test]
fn augmentations_are_the_identity_in_eval_and_infer() {
    let text = r#"
model Aug {
    input x: f32[batch, 2, 5, 6]
    output y = x |> random_shift(1) |> random_flip |> noise(0.3)
}
train Aug {
    loss = mse(y, x)
}
"#;
    let source = SourceFile::new("aug.strata", text.to_string());
    let compiled =
        compile(&source, &training_options()).unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let step = compiled
        .training
        .iter()
        .find(|e| e.name == "train_step")
        .unwrap();
    let eval = compiled.training.iter().find(|e| e.name == "eval").unwrap();
    assert_eq!(
        count_draws(&step.graph),
        3,
        "each augmentation draws in train_step"
    );
    for (name, graph) in [("infer", &compiled.optimized), ("eval", &eval.graph)] {
        assert_eq!(count_draws(graph), 0, "`{name}` draws nothing");
        assert_eq!(graph.inputs.len(), 1, "`{name}` takes `x` alone");
    }
    let x = random(&mut TestRng::new(2), vec![3, 2, 5, 6]);
    let out = interpret(
        &compiled.optimized,
        &HashMap::from([("x".to_string(), x.clone())]),
        &HashMap::new(),
    )
    .expect("interprets");
    assert_eq!(out["y"].data, x.data);
}

#[test]
fn augmentations_match_the_interpreter_on_cpu_and_gpu() {
    let source = SourceFile::new("aug.strata", DRAWN.to_string());
    check_backends(
        "augmentations_match_the_interpreter_on_cpu_and_gpu",
        &source,
        &[1, 7, 32],
    );
}

/// Augmentation of the input and of hidden features, trained.
const AUGMENTED_CNN: &str = r#"
model AugCnn {
    input x: f32[batch, 1, 6, 6]
    a = x |> random_shift(1) |> random_flip |> noise(0.1)
    h = a |> conv2d(3, 3, padding = 1) |> tanh |> random_flip(axis = -2) |> noise(0.05)
    output logits = h |> random_shift(2) |> flatten |> dense(3)
}
train AugCnn {
    label y: i32[batch]
    loss = cross_entropy(logits, y)
    optimizer = adam(lr = 0.01)
}
"#;

#[test]
fn an_augmented_train_step_matches_the_interpreter() {
    strata_tests::train_check::assert_train_steps_match(
        "augmented",
        AUGMENTED_CNN,
        &[1, 6, 6],
        3,
        8,
        4,
    );
}

#[test]
fn gradients_flow_through_augmented_features_as_finite_differences_say() {
    let mut rng = TestRng::new(9);
    let x = random(&mut rng, vec![4, 1, 6, 6]);
    let inputs = HashMap::from([
        ("x".to_string(), x),
        (
            "y".to_string(),
            Tensor::new(vec![4], vec![0.0, 2.0, 1.0, 2.0]).unwrap(),
        ),
        ("step".to_string(), Tensor::scalar(3.0)),
    ]);
    assert_training_gradients_match_finite_differences(
        "augmented",
        AUGMENTED_CNN,
        &inputs,
        12,
        1e-6,
    );
}

#[test]
fn augmentation_mistakes_are_located_errors() {
    strata_tests::assert_located_errors(
        "f32[batch, 2, 5, 6]",
        &[
            ("random_flip(x, axis = 0)", "not the batch"),
            ("random_flip(x, p = 1.5)", "in [0, 1]"),
            ("random_shift(reshape(x, [batch, 60]), 2)", "moves images"),
            ("random_shift(x, 0)", "positive integer"),
            ("noise(x, -1)", "a number >= 0"),
            ("noise(x, 0.1, at_inference = \"yes\")", "`at_inference`"),
        ],
    );
}

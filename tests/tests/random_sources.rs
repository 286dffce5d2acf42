//! The DSL's random sources, `normal(…)` and `uniform(…)`: the compiled draws agree with
//! the interpreter's, have the distribution they claim, change with the step and repeat
//! for the same step; they draw in the training step and are their mean in `eval` and
//! `infer` unless `at_inference = true` (which dropout takes too); `stop_gradient` and
//! block instances reach the graph from the DSL.

use std::collections::HashMap;
use strata_artifact::HostTensor;
use strata_compiler::driver::{CompileOptions, compile};
use strata_compiler::ir::Op;
use strata_compiler::ir::interpret::{Tensor, interpret};
use strata_compiler::source::SourceFile;
use strata_runtime::Session;
use strata_tests::infer_check::params_of;
use strata_tests::train_check::to_tensor;

const SOURCES: &str = r#"
model Sources {
    input x: f32[batch, 64]
    output z = x * 0 + normal([batch, 64], mean = 1, std = 2, seed = 9, at_inference = true)
    output u = x * 0 + uniform([batch, 64], low = -3, high = 5, at_inference = true)
}
"#;

fn compiled() -> (strata_compiler::driver::Compiled, Session) {
    let source = SourceFile::new("sources.strata", SOURCES);
    let compiled = compile(&source, &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let session = Session::new(&compiled.artifact).expect("loads");
    (compiled, session)
}

/// `z` and `u` of `batch` rows drawn at `step`.
fn draw(session: &mut Session, batch: u64, step: f32) -> (Vec<f32>, Vec<f32>) {
    let inputs = [
        (
            "x",
            HostTensor::f32(vec![batch, 64], vec![0.0; batch as usize * 64]).unwrap(),
        ),
        ("step", HostTensor::f32(vec![], vec![step]).unwrap()),
    ];
    let out = session.run("infer", &inputs).expect("runs");
    let get = |name: &str| {
        out.iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .as_f32()
            .unwrap()
            .to_vec()
    };
    (get("z"), get("u"))
}

#[test]
fn normal_and_uniform_draws_have_their_distributions() {
    let (_, mut session) = compiled();
    let (mut z, mut u) = (Vec::new(), Vec::new());
    for step in 1..=40 {
        let (a, b) = draw(&mut session, 512, step as f32);
        z.extend(a);
        u.extend(b);
    }
    let n = z.len() as f64;
    assert!(z.iter().chain(&u).all(|v| v.is_finite()));
    let mean = z.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = z
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let within_one_sd = z.iter().filter(|&&v| (v - 1.0).abs() < 2.0).count() as f64 / n;
    let within_two_sd = z.iter().filter(|&&v| (v - 1.0).abs() < 4.0).count() as f64 / n;
    println!(
        "normal: mean {mean:.4} sd {:.4}, within 1 sd {within_one_sd:.4}, 2 sd {within_two_sd:.4}",
        var.sqrt()
    );
    // 1.3M draws: the standard error of the mean is 0.0018, of the sd about 0.0013.
    assert!((mean - 1.0).abs() < 0.01, "mean {mean}");
    assert!((var.sqrt() - 2.0).abs() < 0.01, "sd {}", var.sqrt());
    assert!((within_one_sd - 0.6827).abs() < 0.002, "{within_one_sd}");
    assert!((within_two_sd - 0.9545).abs() < 0.002, "{within_two_sd}");
    let u_mean = u.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    assert!(u.iter().all(|&v| (-3.0..5.0).contains(&v)));
    assert!((u_mean - 1.0).abs() < 0.01, "uniform mean {u_mean}");
}

#[test]
fn draws_change_with_the_step_and_repeat_for_the_same_step() {
    let (_, mut session) = compiled();
    let (z1, u1) = draw(&mut session, 8, 1.0);
    let (z1_again, u1_again) = draw(&mut session, 8, 1.0);
    let (z2, _) = draw(&mut session, 8, 2.0);
    assert_eq!((z1.clone(), u1), (z1_again, u1_again));
    assert_ne!(z1, z2);
}

#[test]
fn compiled_draws_match_the_interpreter() {
    let (compiled, mut session) = compiled();
    let params = params_of(&session);
    for step in [1.0f32, 3.0, 77.0] {
        let (z, u) = draw(&mut session, 64, step);
        let inputs = HashMap::from([
            (
                "x".to_string(),
                Tensor::from_f32(vec![64, 64], &vec![0.0; 64 * 64]).unwrap(),
            ),
            ("step".to_string(), Tensor::scalar(f64::from(step))),
        ]);
        let want = interpret(&compiled.optimized, &inputs, &params).expect("interprets");
        for (name, got) in [("z", z), ("u", u)] {
            let got = to_tensor(&HostTensor::f32(vec![64, 64], got).unwrap());
            // The inverse CDF's log and polynomials in f32 against the interpreter's f64:
            // a few f32 ulps of the largest draw (about 5.4 standard deviations).
            let err = got.max_relative_error(&want[name]);
            assert!(
                err <= 1e-4,
                "`{name}` at step {step}: relative error {err:e}"
            );
        }
    }
}

#[test]
fn stop_gradient_and_block_instances_reach_the_graph() {
    let text = r#"
block Critic(x, hidden) {
    return x |> dense(hidden) |> relu |> dense(1)
}
model M {
    input a: f32[batch, 8]
    input b: f32[batch, 8]
    layer critic = Critic(4)
    output y = (a |> critic) + (stop_gradient(b) |> critic)
}
"#;
    let source = SourceFile::new("m.strata", text);
    let compiled = compile(&source, &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let graph = &compiled.typed;
    let mut paths: Vec<&str> = graph.params().into_iter().map(|(_, p)| p).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "critic.dense0.bias",
            "critic.dense0.weight",
            "critic.dense1.bias",
            "critic.dense1.weight"
        ],
        "both calls share one set of weights"
    );
    let stops = graph
        .values()
        .into_iter()
        .filter(|&v| matches!(graph.node(v).op, Op::StopGradient))
        .count();
    assert_eq!(stops, 1);
}

/// A source draws in `train_step` only: in `eval` and `infer` it is its mean, and they
/// take no `step`; `at_inference = true` keeps one drawing in every entry.
#[test]
fn sources_draw_in_the_train_step_and_are_their_mean_at_inference() {
    let text = r#"
model Noisy {
    input x: f32[batch, 4]
    a = normal([batch, 4], mean = 0.5, std = 2)
    b = uniform([batch, 4], low = 1, high = 2)
    output y = x + a + b
}
train Noisy {
    loss = mse(y, x)
}
"#;
    let source = SourceFile::new("noisy.strata", text);
    let compiled = compile(&source, &strata_tests::train_check::training_options())
        .unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let draws = |g: &strata_compiler::ir::Graph| {
        g.values()
            .into_iter()
            .filter(|&v| matches!(g.node(v).op, Op::RandomUniform { .. }))
            .count()
    };
    let input_names = |g: &strata_compiler::ir::Graph| -> Vec<String> {
        g.inputs
            .iter()
            .map(|&i| match &g.node(i).op {
                Op::Input { name } => name.clone(),
                _ => unreachable!("inputs are Input ops"),
            })
            .collect()
    };
    let step = compiled
        .training
        .iter()
        .find(|e| e.name == "train_step")
        .unwrap();
    let eval = compiled.training.iter().find(|e| e.name == "eval").unwrap();
    assert_eq!(draws(&step.graph), 2, "both sources draw in train_step");
    assert!(input_names(&step.graph).contains(&"step".to_string()));
    for (name, graph) in [("infer", &compiled.optimized), ("eval", &eval.graph)] {
        assert_eq!(draws(graph), 0, "`{name}` draws nothing");
        assert!(
            !input_names(graph).contains(&"step".to_string()),
            "`{name}` takes no step: {:?}",
            input_names(graph)
        );
    }
    let mut session = Session::new(&compiled.artifact).expect("loads");
    let x: Vec<f32> = (0..8).map(|i| i as f32 / 4.0).collect();
    let out = session
        .run(
            "infer",
            &[("x", HostTensor::f32(vec![2, 4], x.clone()).unwrap())],
        )
        .expect("runs without a step");
    let y = out[0].1.as_f32().unwrap();
    for (got, x) in y.iter().zip(&x) {
        assert_eq!(
            *got,
            x + 0.5 + 1.5,
            "x + the normal's mean + the uniform's midpoint"
        );
    }

    let kept = text.replace("std = 2)", "std = 2, at_inference = true)");
    let source = SourceFile::new("kept.strata", kept);
    let compiled = compile(&source, &strata_tests::train_check::training_options())
        .unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let eval = compiled.training.iter().find(|e| e.name == "eval").unwrap();
    assert_eq!(
        draws(&compiled.optimized),
        1,
        "the kept source draws in infer"
    );
    assert_eq!(draws(&eval.graph), 1, "and in eval");
}

#[test]
fn at_inference_is_a_boolean() {
    let text = r#"
model M {
    input x: f32[batch, 4]
    output y = x + normal([batch, 4], at_inference = 1)
}
"#;
    let source = SourceFile::new("m.strata", text);
    let err = compile(&source, &CompileOptions::default())
        .err()
        .expect("refused");
    let rendered = err.render(&source);
    assert!(rendered.contains("`at_inference`"), "{rendered}");
    assert!(rendered.contains("m.strata:4:"), "{rendered}");
}

/// `dropout(…, at_inference = true)` draws masks in `infer` (Monte Carlo dropout): each
/// element is zero or scaled by `1 / (1 - p)`, about `p` of them zero, other masks at
/// another step.
#[test]
fn dropout_kept_at_inference_draws_masks() {
    let text = r#"
model M {
    input x: f32[batch, 64]
    output y = dropout(x, 0.25, at_inference = true)
}
"#;
    let source = SourceFile::new("m.strata", text);
    let compiled = compile(&source, &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let mut session = Session::new(&compiled.artifact).expect("loads");
    let mut run = |step: f32| {
        let inputs = [
            (
                "x",
                HostTensor::f32(vec![16, 64], vec![3.0; 16 * 64]).unwrap(),
            ),
            ("step", HostTensor::f32(vec![], vec![step]).unwrap()),
        ];
        let out = session.run("infer", &inputs).expect("runs");
        out[0].1.as_f32().unwrap().to_vec()
    };
    let y = run(1.0);
    assert!(y.iter().all(|&v| v == 0.0 || v == 4.0), "zero or 3 / 0.75");
    let dropped = y.iter().filter(|&&v| v == 0.0).count() as f64 / y.len() as f64;
    // 1024 draws: the standard error of the fraction is 0.014.
    assert!((dropped - 0.25).abs() < 0.06, "{dropped} dropped");
    assert_ne!(y, run(2.0), "another step, another mask");
}

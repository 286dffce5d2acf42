//! The DSL's random sources, `normal(…)` and `uniform(…)`: the compiled draws agree with
//! the interpreter's, have the distribution they claim, change with the step and repeat
//! for the same step; `stop_gradient` and block instances reach the graph from the DSL.

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
    output z = x * 0 + normal([batch, 64], mean = 1, std = 2, seed = 9)
    output u = x * 0 + uniform([batch, 64], low = -3, high = 5)
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

//! The compiled training step (forward, loss, backward, optimizer update in one graph)
//! agrees with the reference interpreter running the same graph: the weights after ten
//! steps, for every optimizer.

use std::collections::HashMap;
use strata_compiler::driver::{CompileOptions, compile};
use strata_compiler::elaborate::ElaborateOptions;
use strata_compiler::ir::Op;
use strata_compiler::ir::interpret::{Tensor, interpret_values};
use strata_compiler::syntax::SourceFile;
use strata_runtime::{HostTensor, Session, TensorData};
use strata_tests::TestRng;

fn model(optimizer: &str) -> String {
    model_with(optimizer, "|> dense(hidden, init = he_uniform)")
}

/// The test network, with `extra` stages after its first layer.
fn model_with(optimizer: &str, extra: &str) -> String {
    format!(
        r#"
model Net(hidden = 16) {{
    input x: f32[batch, 12]
    h = x {extra} |> tanh
    output logits = h |> dense(hidden) |> relu |> dense(4)
}}
train Net {{
    label y: i32[batch]
    loss = cross_entropy(logits, y) + 1e-3 * l2(weights)
    optimizer = {optimizer}
    clip = 5.0
}}
"#
    )
}

fn to_tensor(t: &HostTensor) -> Tensor {
    let shape = t.shape.iter().map(|&d| d as usize).collect();
    let data = match &t.data {
        TensorData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
    };
    Tensor::new(shape, data).expect("consistent")
}

fn check_optimizer(optimizer: &str) {
    check_model(optimizer, &model(optimizer));
}

fn check_model(optimizer: &str, text: &str) {
    let source = SourceFile::new("net.strata", text.to_string());
    let options = CompileOptions {
        elaborate: ElaborateOptions {
            train: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let compiled = compile(&source, &options).unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let step_graph = &compiled
        .training
        .iter()
        .find(|e| e.name == "train_step")
        .expect("train_step")
        .graph;
    let mut session = Session::new(&compiled.artifact).expect("loads");
    let mut params: HashMap<String, Tensor> = session
        .weights()
        .map(|(k, t)| (k.to_string(), to_tensor(t)))
        .collect();
    let mut rng = TestRng::new(11);
    let batch = 6u64;
    for step in 1..=10u32 {
        let x: Vec<f32> = (0..batch * 12).map(|_| rng.uniform()).collect();
        let y: Vec<i32> = (0..batch).map(|_| (rng.next_u64() % 4) as i32).collect();
        let lr = 0.01f32;
        let host = vec![
            (
                "x",
                HostTensor::f32(vec![batch, 12], x.clone()).expect("sizes"),
            ),
            ("y", HostTensor::i32(vec![batch], y.clone()).expect("sizes")),
            ("lr", HostTensor::f32(vec![], vec![lr]).expect("sizes")),
            (
                "step",
                HostTensor::f32(vec![], vec![step as f32]).expect("sizes"),
            ),
        ];
        let out = session.run("train_step", &host).expect("runs");
        let inputs: HashMap<String, Tensor> = HashMap::from([
            (
                "x".to_string(),
                Tensor::from_f32(vec![batch as usize, 12], &x).expect("sizes"),
            ),
            (
                "y".to_string(),
                Tensor::new(
                    vec![batch as usize],
                    y.iter().map(|&v| f64::from(v)).collect(),
                )
                .expect("sizes"),
            ),
            ("lr".to_string(), Tensor::scalar(f64::from(lr))),
            ("step".to_string(), Tensor::scalar(f64::from(step))),
        ]);
        let values = interpret_values(step_graph, &inputs, &params).expect("interprets");
        let (_, loss_v) = step_graph
            .outputs
            .iter()
            .find(|(n, _)| n == "loss")
            .expect("loss");
        let want_loss = values[loss_v].data[0];
        let got_loss = f64::from(out[0].1.as_f32().expect("f32")[0]);
        assert!(
            (got_loss - want_loss).abs() <= 1e-4 * want_loss.abs().max(1.0),
            "{optimizer} step {step}: loss {got_loss} vs {want_loss}"
        );
        for (param, new) in &step_graph.updates {
            let Op::Param { path, .. } = &step_graph.node(*param).op else {
                unreachable!()
            };
            params.insert(path.clone(), values[new].clone());
        }
    }
    for (key, t) in session.weights() {
        let got = to_tensor(t);
        let err = got.max_relative_error(&params[key]);
        assert!(
            err <= 1e-4,
            "{optimizer}: `{key}` after 10 steps: relative error {err:e}"
        );
    }
}

#[test]
fn sgd_train_step_matches_the_interpreter() {
    check_optimizer("sgd(lr = 0.1)");
}

#[test]
fn nesterov_momentum_train_step_matches_the_interpreter() {
    check_optimizer("sgd(lr = 0.1, momentum = 0.9, nesterov = true)");
}

#[test]
fn adam_train_step_matches_the_interpreter() {
    check_optimizer("adam(lr = 0.01)");
}

#[test]
fn adamw_train_step_matches_the_interpreter() {
    check_optimizer("adamw(lr = 0.01, weight_decay = 0.1)");
}

#[test]
fn rmsprop_train_step_matches_the_interpreter() {
    check_optimizer("rmsprop(lr = 0.01)");
}

#[test]
fn adagrad_train_step_matches_the_interpreter() {
    check_optimizer("adagrad(lr = 0.1)");
}

#[test]
fn batch_norm_train_step_updates_running_statistics_like_the_interpreter() {
    // No bias before batch norm: its gradient is zero in exact arithmetic, so under Adam
    // it would follow each backend's rounding noise.
    check_model(
        "adam + batch_norm",
        &model_with(
            "adam(lr = 0.01)",
            "|> dense(hidden, bias = false) |> batch_norm",
        ),
    );
}

#[test]
fn dropout_train_step_draws_the_interpreters_masks() {
    check_model(
        "adam + dropout",
        &model_with(
            "adam(lr = 0.01)",
            "|> dense(hidden, init = he_uniform) |> dropout(0.3)",
        ),
    );
}

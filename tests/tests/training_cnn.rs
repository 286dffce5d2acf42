//! Convolutions end to end: `dsl-examples/cnn.strata` learns the built-in digits as
//! 1x8x8 images to 97% test accuracy, and a small CNN's compiled train step (im2col,
//! col2im, pooling, batch norm) agrees with the reference interpreter.

use std::collections::HashMap;
use std::time::Instant;

use strata_compiler::driver::{CompileOptions, compile};
use strata_compiler::elaborate::ElaborateOptions;
use strata_compiler::ir::Op;
use strata_compiler::ir::interpret::{Tensor, interpret_values};
use strata_compiler::syntax::SourceFile;
use strata_runtime::train::{TrainOptions, train};
use strata_runtime::{HostTensor, Session, TensorData};
use strata_tests::{TestRng, load_example, root};

fn training_options() -> CompileOptions {
    CompileOptions {
        elaborate: ElaborateOptions {
            train: true,
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn the_cnn_example_reaches_97_percent_test_accuracy_on_digits() {
    let source = load_example(&root().join("dsl-examples/cnn.strata"));
    let artifact = compile(&source, &training_options())
        .unwrap_or_else(|e| panic!("{}", e.render(&source)))
        .artifact;
    let config = artifact.manifest.train.clone().expect("a train section");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut session = Session::new(&artifact).expect("loads");
    let started = Instant::now();
    let options = TrainOptions {
        run_dir: dir.path().to_path_buf(),
        quiet: true,
        ..Default::default()
    };
    let summary = train(&mut session, &config, &options).expect("training runs");
    let seconds = started.elapsed().as_secs_f64();
    let test = summary.test.as_ref().expect("a test split");
    let accuracy = test
        .metrics
        .value("accuracy")
        .expect("accuracy is reported");
    println!(
        "cnn on digits: test accuracy {accuracy:.4} after {} epochs ({:?}) in {seconds:.2} s",
        summary.epochs, summary.stop
    );
    assert!(
        accuracy >= 0.97,
        "test accuracy {accuracy:.4} < 0.97 (history: {:#?})",
        summary.history
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

fn to_tensor(t: &HostTensor) -> Tensor {
    let shape = t.shape.iter().map(|&d| d as usize).collect();
    let data = match &t.data {
        TensorData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
    };
    Tensor::new(shape, data).expect("consistent")
}

#[test]
fn a_small_cnn_train_step_matches_the_interpreter() {
    let source = SourceFile::new("small_cnn.strata", SMALL_CNN.to_string());
    let compiled =
        compile(&source, &training_options()).unwrap_or_else(|e| panic!("{}", e.render(&source)));
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
    let mut rng = TestRng::new(5);
    let batch = 5u64;
    let pixels = 2 * 7 * 7;
    for step in 1..=5u32 {
        let x: Vec<f32> = (0..batch * pixels)
            .map(|_| rng.uniform() * 2.0 - 1.0)
            .collect();
        let y: Vec<i32> = (0..batch).map(|_| (rng.next_u64() % 4) as i32).collect();
        let lr = 0.01f32;
        let host = vec![
            (
                "x",
                HostTensor::f32(vec![batch, 2, 7, 7], x.clone()).expect("sizes"),
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
                Tensor::from_f32(vec![batch as usize, 2, 7, 7], &x).expect("sizes"),
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
        let want = values[loss_v].data[0];
        let got = f64::from(out[0].1.as_f32().expect("f32")[0]);
        assert!(
            (got - want).abs() <= 1e-4 * want.abs().max(1.0),
            "step {step}: loss {got} vs {want}"
        );
        for (param, new) in &step_graph.updates {
            let Op::Param { path, .. } = &step_graph.node(*param).op else {
                unreachable!()
            };
            params.insert(path.clone(), values[new].clone());
        }
    }
    for (key, t) in session.weights() {
        let err = to_tensor(t).max_relative_error(&params[key]);
        assert!(err <= 1e-4, "`{key}` after 5 steps: relative error {err:e}");
    }
}

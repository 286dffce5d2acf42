//! The explain entry's graph, evaluated by the reference interpreter.

use super::explain_graph;
use crate::driver::{CompileOptions, compile};
use crate::elaborate::ElaborateOptions;
use crate::ir::interpret::{Tensor, interpret};
use crate::ir::{Graph, Op};
use crate::source::{ErrorCode, SourceFile};
use std::collections::HashMap;
use strata_artifact::explain_entry::{EXPLAIN_ENTRY, ExplainPorts};

fn graph_of(text: &str) -> Graph {
    let source = SourceFile::new("t.strata", text);
    let program =
        crate::syntax::parse(&source.text).unwrap_or_else(|d| panic!("{}", d.render(&source)));
    crate::elaborate::elaborate(&program, &ElaborateOptions::default())
        .unwrap_or_else(|d| panic!("{}", d.render(&source)))
        .graph
}

fn tensor(shape: &[usize], data: &[f64]) -> Tensor {
    Tensor {
        shape: shape.to_vec(),
        data: data.to_vec(),
    }
}

/// Every parameter of `graph` filled with `value(path, index)`.
fn params(graph: &Graph, value: impl Fn(&str, usize) -> f64) -> HashMap<String, Tensor> {
    graph
        .params()
        .into_iter()
        .map(|(v, path)| {
            let shape: Vec<usize> = graph
                .ty(v)
                .shape
                .dims()
                .iter()
                .map(|d| d.fixed().expect("fixed parameter") as usize)
                .collect();
            let n = shape.iter().product();
            let data = (0..n).map(|i| value(path, i)).collect();
            (path.to_string(), Tensor { shape, data })
        })
        .collect()
}

const LINEAR: &str = "model Linear {
    input x: f32[batch, 3]
    output y = x |> dense(2)
}";

#[test]
fn gradient_of_a_dense_layer_is_the_seeded_rows_of_its_weight() {
    let graph = explain_graph(&graph_of(LINEAR)).unwrap();
    let names: Vec<&str> = graph.outputs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["y", "grad.x"]);
    // weight [2, 3] = 1..6, bias 0.
    let params = params(&graph, |path, i| {
        if path.ends_with("bias") {
            0.0
        } else {
            (i + 1) as f64
        }
    });
    let inputs = HashMap::from([
        (
            "x".to_string(),
            tensor(&[2, 3], &[1.0, 0.0, -1.0, 2.0, 2.0, 2.0]),
        ),
        // Sample 0 explains class 1, sample 1 weighs class 0 by 2 and class 1 by -1.
        (
            "seed.y".to_string(),
            tensor(&[2, 2], &[0.0, 1.0, 2.0, -1.0]),
        ),
    ]);
    let out = interpret(&graph, &inputs, &params).unwrap();
    assert_eq!(out["y"].data, [1.0 - 3.0, 4.0 - 6.0, 12.0, 30.0]);
    assert_eq!(
        out["grad.x"].data,
        [
            4.0,
            5.0,
            6.0,
            2.0 * 1.0 - 4.0,
            2.0 * 2.0 - 5.0,
            2.0 * 3.0 - 6.0
        ]
    );
}

#[test]
fn every_f32_output_gets_a_seed_and_every_f32_input_a_gradient() {
    let graph = explain_graph(&graph_of(
        "model Two {
            input a: f32[batch, 2]
            input b: f32[batch, 2]
            output s = a + b
            output p = a * b
        }",
    ))
    .unwrap();
    let inputs: Vec<&str> = graph
        .inputs
        .iter()
        .map(|&i| match &graph.node(i).op {
            Op::Input { name } => name.as_str(),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(inputs, ["a", "b", "seed.s", "seed.p"]);
    let feed = HashMap::from([
        ("a".to_string(), tensor(&[1, 2], &[1.0, 2.0])),
        ("b".to_string(), tensor(&[1, 2], &[3.0, 5.0])),
        ("seed.s".to_string(), tensor(&[1, 2], &[1.0, 0.0])),
        ("seed.p".to_string(), tensor(&[1, 2], &[0.0, 1.0])),
    ]);
    let out = interpret(&graph, &feed, &HashMap::new()).unwrap();
    // d/da (s0 + p1) = [1, b1], d/db = [1, a1].
    assert_eq!(out["grad.a"].data, [1.0, 5.0]);
    assert_eq!(out["grad.b"].data, [1.0, 2.0]);
}

#[test]
fn a_model_of_token_ids_alone_cannot_be_explained() {
    let graph = graph_of(
        "model Tokens {
            input t: i32[batch, 4]
            output y = t |> embedding(vocab = 5, dim = 2)
        }",
    );
    let e = explain_graph(&graph).unwrap_err();
    assert_eq!(e.code, ErrorCode::DTypeMismatch);
    assert!(e.message.contains("no f32 input"), "{}", e.message);
}

#[test]
fn the_compiled_explain_entry_follows_the_artifact_convention() {
    let text = format!(
        "{LINEAR}
        train Linear {{
            data = iris
            normalize = standardize
            label y_true: i32[batch]
            loss = cross_entropy(y, y_true)
            optimizer = sgd(lr = 0.1)
        }}"
    );
    let text = text.replace("f32[batch, 3]", "f32[batch, 4]");
    let source = SourceFile::new("t.strata", text);
    let options = CompileOptions {
        elaborate: ElaborateOptions {
            train: true,
            ..Default::default()
        },
        explain: true,
        ..Default::default()
    };
    let compiled = compile(&source, &options).unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let manifest = &compiled.artifact.manifest;
    assert!(manifest.entries.iter().any(|e| e.name == EXPLAIN_ENTRY));
    let ports = ExplainPorts::of(manifest).unwrap();
    assert_eq!(ports.gradients, [("x".into(), "grad.x".into())]);
    assert_eq!(ports.seeds, [("y".into(), "seed.y".into())]);
    // Without the option there is no explain entry.
    let options = CompileOptions {
        explain: false,
        ..options
    };
    let compiled = compile(&source, &options).unwrap();
    assert!(ExplainPorts::of(&compiled.artifact.manifest).is_err());
}

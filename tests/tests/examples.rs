//! Every example: its typed IR is a snapshot, and its compiled `infer` entry, run by the
//! runtime on the CPU, agrees with the reference interpreter on random inputs.

use std::collections::HashMap;
use strata_compiler::driver::{CompileOptions, compile};
use strata_compiler::ir::interpret::{Tensor, interpret};
use strata_compiler::ir::print::print_graph;
use strata_compiler::ir::{DType, Op};
use strata_runtime::{HostTensor, Session, TensorData};
use strata_tests::{TestRng, example_files, load_example};

/// The tolerance the foundation issue sets for backends against the interpreter.
const MAX_RELATIVE_ERROR: f64 = 1e-5;

#[test]
fn every_example_has_a_typed_ir_snapshot() {
    for path in example_files() {
        let source = load_example(&path);
        let compiled = compile(&source, &CompileOptions::default())
            .unwrap_or_else(|e| panic!("{}", e.render(&source)));
        let name = source.name.trim_end_matches(".strata").to_string();
        insta::assert_snapshot!(
            format!("typed_{name}"),
            print_graph(&compiled.typed, Some(&source))
        );
    }
}

#[test]
fn every_example_matches_the_interpreter_on_cpu() {
    let files = example_files();
    assert!(files.len() >= 3, "the examples are there");
    for path in files {
        let source = load_example(&path);
        let compiled = compile(&source, &CompileOptions::default())
            .unwrap_or_else(|e| panic!("{}", e.render(&source)));
        let graph = &compiled.optimized;
        let mut session = Session::new(&compiled.artifact).expect("the artifact loads");
        let params: HashMap<String, Tensor> = session
            .weights()
            .map(|(k, t)| {
                let shape = t.shape.iter().map(|&d| d as usize).collect();
                let data = match &t.data {
                    TensorData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
                    TensorData::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
                };
                (k.to_string(), Tensor::new(shape, data).expect("consistent"))
            })
            .collect();
        for (round, batch) in [1u64, 5, 64].into_iter().enumerate() {
            let mut rng = TestRng::new(round as u64 + 1);
            let mut host_inputs = Vec::new();
            let mut ref_inputs = HashMap::new();
            for &i in &graph.inputs {
                let Op::Input { name } = &graph.node(i).op else {
                    unreachable!()
                };
                let ty = graph.ty(i);
                assert_eq!(ty.dtype, DType::F32, "examples take f32 inputs");
                let shape: Vec<u64> = ty.shape.resolve(batch).iter().map(|&d| d as u64).collect();
                let n: u64 = shape.iter().product();
                let data: Vec<f32> = (0..n).map(|_| rng.uniform() * 2.0).collect();
                ref_inputs.insert(
                    name.clone(),
                    Tensor::from_f32(shape.iter().map(|&d| d as usize).collect(), &data)
                        .expect("sizes agree"),
                );
                host_inputs.push((
                    name.clone(),
                    HostTensor::f32(shape, data).expect("sizes agree"),
                ));
            }
            let inputs: Vec<(&str, HostTensor)> = host_inputs
                .iter()
                .map(|(n, t)| (n.as_str(), t.clone()))
                .collect();
            let outputs = session.run("infer", &inputs).expect("the entry runs");
            let expected = interpret(graph, &ref_inputs, &params).expect("the interpreter runs");
            for (name, got) in outputs {
                let want = &expected[&name];
                let got = Tensor::from_f32(
                    got.shape.iter().map(|&d| d as usize).collect(),
                    got.as_f32().expect("f32 output"),
                )
                .expect("sizes agree");
                let err = got.max_relative_error(want);
                eprintln!(
                    "{} `{name}` batch {batch}: max relative error {err:.2e}",
                    source.name
                );
                assert!(
                    err <= MAX_RELATIVE_ERROR,
                    "{} output `{name}` at batch {batch}: relative error {err:e}",
                    source.name
                );
            }
        }
    }
}

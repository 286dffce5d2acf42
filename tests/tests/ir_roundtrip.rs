//! The IR text form reads back: for every example's graphs (typed, inference before and
//! after the passes, and the training entries after autodiff), print -> parse -> print
//! gives the same text, and the parsed graph interprets to the same outputs.

use std::collections::HashMap;
use strata_compiler::driver::{CompileOptions, compile};
use strata_compiler::elaborate::ElaborateOptions;
use strata_compiler::ir::interpret::{Tensor, initial_params, interpret};
use strata_compiler::ir::parse::parse_graph;
use strata_compiler::ir::print::print_graph;
use strata_compiler::ir::{DType, Graph, Op};
use strata_tests::{TestRng, example_files, load_example};

/// Every graph the pipeline produces for one example, named for failure messages.
fn example_graphs() -> Vec<(String, Graph)> {
    let mut graphs = Vec::new();
    for path in example_files() {
        let source = load_example(&path);
        let name = source.name.clone();
        let inference = compile(&source, &CompileOptions::default())
            .unwrap_or_else(|e| panic!("{}", e.render(&source)));
        graphs.push((format!("{name} typed"), inference.typed));
        graphs.push((
            format!("{name} infer before passes"),
            inference.infer_unsimplified,
        ));
        graphs.push((format!("{name} infer"), inference.optimized));
        let options = CompileOptions {
            elaborate: ElaborateOptions {
                train: true,
                training_mode: true,
                ..Default::default()
            },
            ..Default::default()
        };
        let training =
            compile(&source, &options).unwrap_or_else(|e| panic!("{}", e.render(&source)));
        graphs.push((format!("{name} typed (training mode)"), training.typed));
        for entry in training.training {
            graphs.push((
                format!("{name} {} before passes", entry.name),
                entry.unsimplified,
            ));
            graphs.push((format!("{name} {}", entry.name), entry.graph));
        }
    }
    graphs
}

/// Deterministic inputs for `graph` at `batch`: floats in [-1, 1), labels in 0..3.
fn inputs_for(graph: &Graph, batch: u64) -> HashMap<String, Tensor> {
    let mut rng = TestRng::new(7);
    graph
        .inputs
        .iter()
        .map(|&i| {
            let Op::Input { name } = &graph.node(i).op else {
                unreachable!("graph.inputs holds inputs")
            };
            let ty = graph.ty(i);
            let shape = ty.shape.resolve(batch);
            let n: usize = shape.iter().product();
            let data: Vec<f64> = (0..n)
                .map(|_| match ty.dtype {
                    DType::F32 => f64::from(rng.uniform()),
                    DType::I32 => (rng.next_u64() % 3) as f64,
                })
                .collect();
            (name.clone(), Tensor::new(shape, data).expect("sizes agree"))
        })
        .collect()
}

#[test]
fn every_example_graph_prints_parses_and_prints_the_same() {
    let graphs = example_graphs();
    assert!(graphs.len() >= 15, "every example gives several graphs");
    for (name, graph) in graphs {
        let text = print_graph(&graph, None);
        let parsed = parse_graph(&text).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        parsed
            .verify()
            .unwrap_or_else(|e| panic!("{name}: parsed graph: {e}"));
        assert_eq!(print_graph(&parsed, None), text, "{name}");
    }
}

#[test]
fn parsed_example_graphs_interpret_to_the_same_outputs() {
    for (name, graph) in example_graphs() {
        let parsed =
            parse_graph(&print_graph(&graph, None)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let params = initial_params(&graph, 3).expect("parameters initialise");
        let inputs = inputs_for(&graph, 4);
        let want = interpret(&graph, &inputs, &params).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = interpret(&parsed, &inputs, &params).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got.len(), want.len(), "{name}");
        for (out, w) in &want {
            let g = &got[out];
            assert_eq!(g.shape, w.shape, "{name}: output {out}");
            let same = g
                .data
                .iter()
                .zip(&w.data)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{name}: output {out} differs");
        }
    }
}

#[test]
fn lines_with_source_locations_parse() {
    let source = load_example(&strata_tests::root().join("dsl-examples/mlp.strata"));
    let compiled = compile(&source, &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let with_locations = print_graph(&compiled.typed, Some(&source));
    assert!(with_locations.contains("# mlp.strata:"));
    let parsed = parse_graph(&with_locations).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        print_graph(&parsed, None),
        print_graph(&compiled.typed, None)
    );
}

#[test]
fn every_attribute_form_reads_back() {
    let text = r#"graph Attrs {
  %x : f32[batch, 2, 3] = input
  %labels : i32[batch] = input
  @w : f32[3, 3] = param constant(0.5)
  @v : f32[3] = param uniform(0.25)
  %step : f32[] = input
  %5 : f32[] = const -0.0
  %6 : f32[batch, 2, 1] = reduce_max axes=[2] keep_dims %x
  %7 : f32[batch, 3, 2] = transpose perm=[0, 2, 1] %x
  %8 : f32[batch, 2, 6] = concat axis=2 %x, %x
  %9 : f32[batch, 2, 2] = slice axis=2 start=1 len=2 %x
  %10 : f32[batch, 6] = reshape [batch, 6] %x
  %11 : f32[batch, 3, 3] = broadcast [batch, 3, 3] @w
  %12 : f32[batch, 4] = one_hot classes=4 %labels
  %13 : f32[batch, 2] = random_uniform seed=9 [batch, 2] %step
  %14 : f32[batch, 2, 3] = add %x, @v
  %15 : f32[batch, 2, 3] = stop_gradient %14
  %16 : f32[batch, 2, 3] = matmul %15, @w
  %17 : f32[batch, 2, 3] = mul %16, %5
  %18 : i32[batch, 2, 3] = cast to=i32 %17
  %19 : f32[batch] = cast to=f32 %labels
  output y = %17
  output parts = %8
  output whole = %18
  output labels_f = %19
  update @v = @v
}
"#;
    let graph = parse_graph(text).unwrap_or_else(|e| panic!("{e}"));
    graph.verify().expect("the graph is valid");
    assert_eq!(print_graph(&graph, None), text);
}

#[test]
fn errors_name_the_line() {
    let text = "graph G {\n  %x : f32[2] = input\n  %1 : f32[3] = neg %x\n  output y = %1\n}\n";
    let err = parse_graph(text).expect_err("the type does not match");
    assert_eq!(err.line, 3, "{err}");
    let err = parse_graph("graph G {\n  %1 : f32[] = frobnicate\n}\n").expect_err("unknown op");
    assert_eq!(err.line, 2);
    assert!(err.to_string().contains("unknown op `frobnicate`"), "{err}");
    let err = parse_graph("graph G {\n  output y = %4\n}\n").expect_err("undefined value");
    assert_eq!(err.line, 2);
}

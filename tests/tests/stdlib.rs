//! The standard library's blocks, written in the language, compute what the built-in
//! layers they mirror compute (same weights, same inputs, in the interpreter); what they
//! build is located at the call.

use std::collections::HashMap;
use strata_compiler::driver::{CompileOptions, compile};
use strata_compiler::elaborate::ElaborateOptions;
use strata_compiler::ir::Graph;
use strata_compiler::ir::interpret::{Tensor, initial_params, interpret};
use strata_compiler::ir::print::print_graph;
use strata_compiler::source::SourceFile;
use strata_tests::TestRng;

fn graph_of(source: &SourceFile, model: &str) -> Graph {
    let options = CompileOptions {
        elaborate: ElaborateOptions {
            model: Some(model.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    compile(source, &options)
        .unwrap_or_else(|e| panic!("{}", e.render(source)))
        .typed
}

fn random(shape: Vec<usize>, rng: &mut TestRng) -> Tensor {
    let n = shape.iter().product();
    let data = (0..n).map(|_| f64::from(rng.uniform())).collect();
    Tensor::new(shape, data).unwrap()
}

/// Runs `built_in` and `library` on the same inputs, the library model's parameters
/// taken from the built-in's in creation order, and compares output `y`.
fn assert_same(text: &str, inputs: &[(&str, Vec<usize>)]) {
    let source = SourceFile::new("stdlib_check.strata", text.to_string());
    let a = graph_of(&source, "BuiltIn");
    let b = graph_of(&source, "Library");
    let pa = initial_params(&a, 5).unwrap();
    let (la, lb) = (a.params(), b.params());
    assert_eq!(la.len(), lb.len(), "the same parameters");
    let mut pb = HashMap::new();
    for ((va, name_a), (vb, name_b)) in la.iter().zip(&lb) {
        assert_eq!(a.ty(*va), b.ty(*vb), "{name_a} vs {name_b}");
        pb.insert(name_b.to_string(), pa[*name_a].clone());
    }
    let mut rng = TestRng::new(3);
    let feed: HashMap<String, Tensor> = inputs
        .iter()
        .map(|(n, s)| (n.to_string(), random(s.clone(), &mut rng)))
        .collect();
    let ya = &interpret(&a, &feed, &pa).unwrap()["y"];
    let yb = &interpret(&b, &feed, &pb).unwrap()["y"];
    let err = yb.max_relative_error(ya);
    assert!(err < 1e-12, "relative error {err:e}");
    // Every op the library built is located in the model's own file.
    let printed = print_graph(&b, Some(&source));
    assert!(printed.contains("stdlib_check.strata:"), "{printed}");
}

#[test]
fn the_library_encoder_block_is_the_post_norm_encoder_layer() {
    assert_same(
        r#"
model BuiltIn {
    input x: f32[batch, 5, 8]
    output y = x |> transformer_encoder_layer(heads = 2, ff = 16, activation = gelu)
}
model Library {
    input x: f32[batch, 5, 8]
    output y = x |> TransformerEncoderBlock(8, heads = 2, ff = 16)
}
"#,
        &[("x", vec![3, 5, 8])],
    );
}

#[test]
fn the_library_decoder_block_is_the_post_norm_decoder_layer() {
    assert_same(
        r#"
model BuiltIn {
    input x: f32[batch, 4, 8]
    input memory: f32[batch, 6, 8]
    output y = x |> transformer_decoder_layer(memory, heads = 2, ff = 16, activation = gelu)
}
model Library {
    input x: f32[batch, 4, 8]
    input memory: f32[batch, 6, 8]
    output y = x |> TransformerDecoderBlock(memory, 8, heads = 2, ff = 16)
}
"#,
        &[("x", vec![2, 4, 8]), ("memory", vec![2, 6, 8])],
    );
}

#[test]
fn a_mistake_inside_a_library_block_is_reported_at_the_call() {
    let text = "model M {\n    input x: f32[batch, 4, 6]\n    output y = x |> TransformerEncoderBlock(6, heads = 4, ff = 8)\n}\n";
    let source = SourceFile::new("m.strata", text.to_string());
    let Err(e) = compile(&source, &CompileOptions::default()) else {
        panic!("4 heads do not divide 6 features");
    };
    let rendered = e.render(&source);
    assert!(rendered.contains("E0006"), "{rendered}");
    assert!(
        rendered.contains("in `TransformerEncoderBlock`"),
        "{rendered}"
    );
    assert!(rendered.contains("m.strata:3:21"), "{rendered}");
}

#[test]
fn a_files_own_block_takes_precedence_over_the_library() {
    let text = r#"
block TransformerEncoderBlock(x, d) {
    return x * 2
}
model M {
    input x: f32[batch, 3]
    output y = TransformerEncoderBlock(x, 3)
}
"#;
    let source = SourceFile::new("own.strata", text.to_string());
    let g = compile(&source, &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{}", e.render(&source)))
        .typed;
    assert!(
        g.params().is_empty(),
        "the file's block, which has no layers"
    );
}

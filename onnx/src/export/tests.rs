//! The writer's structure: names, types, ops and errors. The exported files are run
//! against Strata's own results by `tests/tests/onnx_export.rs`.

use super::*;
use strata_compiler::driver::{CompileOptions, Compiled, compile};
use strata_compiler::elaborate::ElaborateOptions;

fn compiled(name: &str, text: &str) -> (SourceFile, Compiled) {
    let source = SourceFile::new(name, text);
    let options = CompileOptions {
        elaborate: ElaborateOptions {
            train: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let compiled = compile(&source, &options).unwrap_or_else(|e| panic!("{}", e.render(&source)));
    (source, compiled)
}

fn export(name: &str, text: &str) -> Result<pb::ModelProto, ExportError> {
    let (source, compiled) = compiled(name, text);
    let options = ExportOptions {
        source: Some(source),
        doc: String::new(),
        no_layer_patterns: false,
    };
    export_infer(&compiled.optimized, &compiled.artifact.weights, &options)
}

const DENSE: &str = "
model Small(hidden = 4) {
    input x: f32[batch, 3]
    output y = x |> dense(hidden) |> relu
    output p = softmax(y)
}
";

fn dims(v: &pb::ValueInfoProto) -> Vec<String> {
    use pb::tensor_shape_proto::dimension::Value;
    let Some(pb::type_proto::Value::TensorType(t)) =
        v.r#type.as_ref().and_then(|t| t.value.clone())
    else {
        panic!("{} has no tensor type", v.name)
    };
    t.shape
        .expect("a shape")
        .dim
        .into_iter()
        .map(|d| match d.value {
            Some(Value::DimValue(n)) => n.to_string(),
            Some(Value::DimParam(s)) => s,
            None => "?".into(),
        })
        .collect()
}

#[test]
fn inputs_and_outputs_keep_the_model_files_names_with_a_symbolic_batch() {
    let model = export("small.strata", DENSE).expect("exports");
    let graph = model.graph.expect("a graph");
    let inputs: Vec<_> = graph
        .input
        .iter()
        .map(|i| (i.name.clone(), dims(i)))
        .collect();
    assert_eq!(
        inputs,
        [("x".to_string(), vec!["batch".to_string(), "3".into()])]
    );
    let outputs: Vec<_> = graph
        .output
        .iter()
        .map(|o| (o.name.clone(), dims(o)))
        .collect();
    assert_eq!(
        outputs,
        [
            ("y".to_string(), vec!["batch".to_string(), "4".into()]),
            ("p".to_string(), vec!["batch".to_string(), "4".into()]),
        ]
    );
}

#[test]
fn parameters_are_initializers_named_by_their_paths() {
    let model = export("small.strata", DENSE).expect("exports");
    let graph = model.graph.expect("a graph");
    let weight = graph
        .initializer
        .iter()
        .find(|t| t.name == "dense0.weight")
        .expect("the weight is an initializer");
    assert_eq!(weight.dims, [4, 3]);
    assert_eq!(weight.raw_data.len(), 4 * 12);
}

#[test]
fn the_model_is_opset_17_of_the_default_domain_with_nodes_located_in_the_file() {
    let model = export("small.strata", DENSE).expect("exports");
    assert_eq!(model.opset_import.len(), 1);
    assert_eq!(model.opset_import[0].domain, "");
    assert_eq!(model.opset_import[0].version, 17);
    let graph = model.graph.expect("a graph");
    assert!(graph.node.iter().all(|n| n.domain.is_empty()));
    let matmul = graph
        .node
        .iter()
        .find(|n| n.op_type == "MatMul")
        .expect("dense is a MatMul");
    assert_eq!(matmul.doc_string, "small.strata:4:21");
}

#[test]
fn a_random_draw_in_infer_is_an_error_naming_its_line() {
    let text = "
model Noisy() {
    input x: f32[batch, 4]
    z = normal([batch, 4], seed = 1, at_inference = true)
    output y = x + z
}
";
    let error = export("noisy.strata", text).expect_err("cannot export");
    let message = error.to_string();
    assert!(
        message.starts_with("noisy.strata:4:9: `random_uniform` cannot be exported"),
        "{message}"
    );
}

#[test]
fn a_parameter_missing_from_the_weights_is_an_error_naming_it() {
    let (source, compiled) = compiled("small.strata", DENSE);
    let (_, other) = compiled_without_bias();
    let options = ExportOptions {
        source: Some(source),
        doc: String::new(),
        no_layer_patterns: false,
    };
    let error = export_infer(&compiled.optimized, &other.artifact.weights, &options)
        .expect_err("the bias is missing");
    let message = error.to_string();
    assert!(message.contains("parameter `dense0.bias`"), "{message}");
    assert!(message.contains("no tensor of this name"), "{message}");
}

fn compiled_without_bias() -> (SourceFile, Compiled) {
    compiled(
        "nobias.strata",
        "
model Small(hidden = 4) {
    input x: f32[batch, 3]
    output y = x |> dense(hidden, bias = false)
}
",
    )
}

#[test]
fn bytes_that_are_not_safetensors_are_an_error() {
    let (_, compiled) = compiled("small.strata", DENSE);
    let error = export_infer(
        &compiled.optimized,
        b"not weights",
        &ExportOptions::default(),
    )
    .expect_err("not safetensors");
    assert!(error.to_string().starts_with("the weights: "), "{error}");
}

const CONV: &str = "
model Conv() {
    input x: f32[batch, 2, 6, 6]
    output y = x |> conv2d(4, 3, stride = 2, padding = 1)
}
";

fn op_types(model: &pb::ModelProto) -> Vec<String> {
    let graph = model.graph.as_ref().expect("a graph");
    graph.node.iter().map(|n| n.op_type.clone()).collect()
}

#[test]
fn a_convolution_is_one_conv_node_reading_the_kernel_as_it_is() {
    let model = export("conv.strata", CONV).expect("exports");
    let ops = op_types(&model);
    assert_eq!(ops, ["Conv", "Identity"], "{ops:?}");
    let conv = &model.graph.as_ref().expect("a graph").node[0];
    assert_eq!(conv.input, ["x", "conv2d0.weight", "conv2d0.bias"]);
    let ints = |name: &str| {
        conv.attribute
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.ints.clone())
            .unwrap_or_default()
    };
    assert_eq!(ints("kernel_shape"), [3, 3]);
    assert_eq!(ints("strides"), [2, 2]);
    assert_eq!(ints("pads"), [1, 1, 1, 1]);
}

#[test]
fn without_layer_patterns_a_convolution_is_gathered_windows_and_a_product() {
    let (source, compiled) = compiled("conv.strata", CONV);
    let options = ExportOptions {
        source: Some(source),
        doc: String::new(),
        no_layer_patterns: true,
    };
    let model =
        export_infer(&compiled.optimized, &compiled.artifact.weights, &options).expect("exports");
    let ops = op_types(&model);
    assert!(!ops.contains(&"Conv".to_string()), "{ops:?}");
    for op in ["Pad", "Gather", "MatMul"] {
        assert!(ops.contains(&op.to_string()), "{op} in {ops:?}");
    }
}

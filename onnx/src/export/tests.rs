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
fn a_random_draw_in_infer_is_a_random_uniform_like_of_the_shape_with_the_batch() {
    let text = "
model Noisy() {
    input x: f32[batch, 4]
    z = normal([batch, 4], seed = 1, at_inference = true)
    output y = x + z
}
";
    let model = export("noisy.strata", text).expect("exports");
    let graph = model.graph.as_ref().expect("a graph");
    let draw = graph
        .node
        .iter()
        .find(|n| n.op_type == "RandomUniformLike")
        .expect("one draw");
    assert_eq!(draw.doc_string, "noisy.strata:4:9");
    assert!(draw.name.ends_with("/RandomUniformLike"), "{}", draw.name);
    let like = graph
        .node
        .iter()
        .find(|n| n.output == draw.input)
        .expect("the draw's shape");
    assert_eq!(like.op_type, "Expand");
    // The shape reads the batch from the input.
    let ops = op_types(&model);
    assert!(ops.contains(&"Shape".to_string()), "{ops:?}");
    let note = draws_note(&model).expect("a note");
    assert!(note.contains("(noisy.strata:4:9)"), "{note}");
    assert_eq!(
        draws_note(&export("small.strata", DENSE).expect("exports")),
        None
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

const DECONV: &str = "
model Deconv() {
    input x: f32[batch, 3, 4, 5]
    output y = x |> conv_transpose2d(2, [3, 2], stride = 2, padding = [1, 0], output_padding = 1)
}
";

#[test]
fn a_transposed_convolution_is_one_conv_transpose_node_with_its_pads_and_output_padding() {
    let model = export("deconv.strata", DECONV).expect("exports");
    let ops = op_types(&model);
    assert_eq!(ops, ["ConvTranspose", "Identity"], "{ops:?}");
    let graph = model.graph.as_ref().expect("a graph");
    let deconv = &graph.node[0];
    assert_eq!(
        deconv.input,
        ["x", "conv_transpose2d0.weight", "conv_transpose2d0.bias"]
    );
    let ints = |name: &str| {
        deconv
            .attribute
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.ints.clone())
            .unwrap_or_default()
    };
    assert_eq!(ints("kernel_shape"), [3, 2]);
    assert_eq!(ints("strides"), [2, 2]);
    assert_eq!(ints("dilations"), [1, 1]);
    // Rows: full 9, 1 zero row past the end, 1 cropped from each side: 8 rows.
    // Columns: full 10, 1 zero column past the end, nothing cropped: 11 columns.
    assert_eq!(ints("pads"), [1, 0, 1, 0]);
    assert_eq!(ints("output_padding"), [1, 1]);
    assert_eq!(dims(&graph.output[0]), ["batch", "2", "8", "11"]);
    // Nothing of the replaced chain is left behind: the only initializers are the
    // layer's parameters.
    let names: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        ["conv_transpose2d0.weight", "conv_transpose2d0.bias"]
    );
}

#[test]
fn without_layer_patterns_a_transposed_convolution_folds_its_windows_with_a_product() {
    let (source, compiled) = compiled("deconv.strata", DECONV);
    let options = ExportOptions {
        source: Some(source),
        doc: String::new(),
        no_layer_patterns: true,
    };
    let model =
        export_infer(&compiled.optimized, &compiled.artifact.weights, &options).expect("exports");
    let ops = op_types(&model);
    assert!(!ops.contains(&"ConvTranspose".to_string()), "{ops:?}");
    // The kernel product, then the fold matrix's.
    let products = ops.iter().filter(|op| *op == "MatMul").count();
    assert_eq!(products, 2, "{ops:?}");
}

#[test]
fn a_conv1d_is_one_1d_conv_node_with_its_written_out_padding_as_pads() {
    let model = export(
        "tcn.strata",
        "
model Causal() {
    input x: f32[batch, 2, 12]
    output y = x |> conv1d(3, 3, padding = [4, 1], dilation = 2)
}
",
    )
    .expect("exports");
    let ops = op_types(&model);
    assert_eq!(ops, ["Conv", "Identity"], "{ops:?}");
    let conv = &model.graph.as_ref().expect("a graph").node[0];
    assert_eq!(conv.input, ["x", "conv1d0.weight", "conv1d0.bias"]);
    let ints = |name: &str| {
        conv.attribute
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.ints.clone())
            .unwrap_or_default()
    };
    assert_eq!(ints("kernel_shape"), [3]);
    assert_eq!(ints("pads"), [4, 1]);
    assert_eq!(ints("dilations"), [2]);
    assert_eq!(ints("strides"), [1]);
}

//! Every example's `infer` entry, exported to ONNX (`strata_onnx::export_infer`), run by
//! tract (a Rust ONNX runtime) on the same inputs as Strata's CPU session, agrees with it
//! to 1e-5 of the output's scale (absolute for outputs below 1).
//!
//! The weights are the initial ones perturbed (biases, batch norm statistics and the
//! features' normalization would otherwise be zeros and ones, which would hide a
//! misplaced or dropped one), loaded into the session and given to the export as one
//! safetensors file, as `strata export --weights` reads it.
//!
//! A draw kept at inference (the GAN's noise) exports as ONNX's `RandomUniformLike`,
//! which draws other numbers than Strata's Philox stream: there the comparison replaces
//! each draw by an input fed Strata's own draw for the step, so everything computed from
//! the noise is checked value by value, and the draws themselves are checked apart for
//! their range and distribution (`random_draws_export_as_onnx_draws_of_the_same_law`).

use std::collections::HashMap;
use strata_artifact::{HostTensor, TensorData};
use strata_compiler::driver::{Compiled, compile};
use strata_compiler::ir::{DType, Op};
use strata_kernels::rng::{step_word, uniform_at};
use strata_onnx::proto::{DimSpec, pb, value_info};
use strata_onnx::{ExportError, ExportOptions, export_infer};
use strata_runtime::Session;
use strata_tests::train_check::training_options;
use strata_tests::{TestRng, example_files, load_example, perturbed_weights};
use tract_onnx::prelude::*;

/// Agreement asked of the ONNX runtime against Strata's CPU code.
const TOLERANCE: f64 = 1e-5;

/// Examples whose `infer` cannot be exported, and the op that stops them.
const NOT_EXPORTABLE: &[(&str, &str)] = &[];

/// Random inputs of `infer` at `batch`: uniform in [-2, 2) for f32, tokens in `0..16`.
fn inputs(compiled: &Compiled, batch: u64, rng: &mut TestRng) -> Vec<(String, HostTensor)> {
    let graph = &compiled.optimized;
    graph
        .inputs
        .iter()
        .map(|&i| {
            let Op::Input { name } = &graph.node(i).op else {
                unreachable!("inputs are input ops")
            };
            let ty = graph.ty(i);
            let shape: Vec<u64> = ty.shape.resolve(batch).iter().map(|&d| d as u64).collect();
            let n: u64 = shape.iter().product();
            let tensor = match ty.dtype {
                DType::F32 => HostTensor::f32(shape, (0..n).map(|_| rng.uniform() * 2.0).collect()),
                DType::I32 => HostTensor::i32(
                    shape,
                    (0..n).map(|_| (rng.next_u64() % 16) as i32).collect(),
                ),
            };
            (name.clone(), tensor.expect("sizes agree"))
        })
        .collect()
}

fn to_tract(t: &HostTensor) -> TValue {
    let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    let tensor = match &t.data {
        TensorData::F32(v) => Tensor::from_shape(&shape, v),
        TensorData::I32(v) => Tensor::from_shape(&shape, v),
    };
    tensor.expect("shape and data agree").into_tvalue()
}

/// `max |a - b| / max(1, max |b|)`.
fn error(got: &[f32], want: &[f32]) -> f64 {
    let scale = want.iter().fold(1.0f64, |m, &x| m.max(f64::from(x).abs()));
    let diff = got.iter().zip(want).fold(0.0f64, |m, (&a, &b)| {
        m.max((f64::from(a) - f64::from(b)).abs())
    });
    diff / scale
}

/// A draw of the graph (`random_uniform`) the export wrote as a `RandomUniformLike` node.
struct Draw {
    /// The node's output, made an input of the model the test runs.
    name: String,
    seed: u64,
    shape: strata_compiler::ir::Shape,
}

/// Replaces every `RandomUniformLike` of `model` by an input of the same name, so the test
/// can feed it Strata's own draws, and returns them in the order of the new inputs.
fn draws_as_inputs(compiled: &Compiled, model: &mut pb::ModelProto) -> Vec<Draw> {
    let graph = &compiled.optimized;
    let onnx = model.graph.as_mut().expect("a graph");
    let mut draws = Vec::new();
    for v in graph.values() {
        let Op::RandomUniform { seed, shape } = &graph.node(v).op else {
            continue;
        };
        let at = onnx
            .node
            .iter()
            .position(|n| n.name == format!("{v}/RandomUniformLike"))
            .unwrap_or_else(|| panic!("no RandomUniformLike for {v}"));
        let node = onnx.node.remove(at);
        assert_eq!(node.op_type, "RandomUniformLike");
        let name = node.output[0].clone();
        let dims: Vec<DimSpec> = shape
            .dims()
            .iter()
            .map(|d| match d.fixed() {
                Some(n) => DimSpec::Fixed(n),
                None => DimSpec::Symbol("batch"),
            })
            .collect();
        onnx.input
            .push(value_info(&name, pb::tensor_proto::DataType::Float, &dims));
        draws.push(Draw {
            name,
            seed: *seed,
            shape: shape.clone(),
        });
    }
    draws
}

/// Strata's draw `draw` at `step` and `batch`: what `random_uniform` computes.
fn strata_draw(draw: &Draw, step: f32, batch: u64) -> HostTensor {
    let shape: Vec<u64> = draw
        .shape
        .resolve(batch)
        .iter()
        .map(|&d| d as u64)
        .collect();
    let n: u64 = shape.iter().product();
    let values = (0..n)
        .map(|i| uniform_at(draw.seed, i, step_word(step)))
        .collect();
    HostTensor::f32(shape, values).expect("sizes agree")
}

/// Exports `file`'s `infer` (every op on its own with `no_layer_patterns`), runs it under
/// tract and Strata at batch sizes 1 and 5, and asserts every output agrees; or returns
/// the export error.
fn check_example(file: &std::path::Path, no_layer_patterns: bool) -> Result<(), ExportError> {
    check_source(load_example(file), no_layer_patterns)
}

/// [`check_example`] of a model file's text.
fn check_source(
    source: strata_compiler::source::SourceFile,
    no_layer_patterns: bool,
) -> Result<(), ExportError> {
    let compiled =
        compile(&source, &training_options()).unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let mut session = Session::new(&compiled.artifact).expect("the artifact loads");
    let mut rng = TestRng::new(17);
    let weights = perturbed_weights(&session, &mut rng);
    session.load_weights(&weights).expect("the weights fit");
    let options = ExportOptions {
        source: Some(source.clone()),
        doc: String::new(),
        no_layer_patterns,
    };
    let mut model = export_infer(&compiled.optimized, &weights, &options)?;
    let draws = draws_as_inputs(&compiled, &mut model);
    let bytes = strata_onnx::encode_model(&model);
    let output_names: Vec<String> = model
        .graph
        .as_ref()
        .map(|g| g.output.iter().map(|o| o.name.clone()).collect())
        .unwrap_or_default();
    let what = &source.name;
    let runnable = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .unwrap_or_else(|e| panic!("{what}: tract cannot load the export: {e:?}"));
    for batch in [1, 5] {
        let mut inputs = inputs(&compiled, batch, &mut rng);
        if let Some((_, step)) = inputs.iter().find(|(n, _)| n == "step") {
            let step = step.as_f32().expect("an f32 step")[0].abs() * 10.0;
            let fed: Vec<(String, HostTensor)> = draws
                .iter()
                .map(|d| (d.name.clone(), strata_draw(d, step, batch)))
                .collect();
            for (name, t) in inputs.iter_mut() {
                if name == "step" {
                    *t = HostTensor::f32(vec![], vec![step]).expect("a scalar");
                }
            }
            inputs.extend(fed);
        }
        let fed: Vec<(&str, HostTensor)> = inputs
            .iter()
            .filter(|(n, _)| !draws.iter().any(|d| d.name == *n))
            .map(|(n, t)| (n.as_str(), t.clone()))
            .collect();
        let strata: HashMap<String, HostTensor> = session
            .run("infer", &fed)
            .unwrap_or_else(|e| panic!("{what}: {e}"))
            .into_iter()
            .collect();
        let tract_outputs = runnable
            .run(inputs.iter().map(|(_, t)| to_tract(t)).collect())
            .unwrap_or_else(|e| panic!("{what}: tract cannot run the export: {e:?}"));
        assert_eq!(tract_outputs.len(), output_names.len(), "{what}");
        for (name, got) in output_names.iter().zip(tract_outputs) {
            let want = &strata[name];
            let shape: Vec<u64> = got.shape().iter().map(|&d| d as u64).collect();
            assert_eq!(shape, want.shape, "{what} `{name}` batch {batch}: shape");
            let got = got
                .cast_to::<f32>()
                .unwrap_or_else(|e| panic!("{what} `{name}`: {e:?}"))
                .to_plain_array_view::<f32>()
                .expect("f32")
                .iter()
                .copied()
                .collect::<Vec<f32>>();
            let want = want.as_f32().expect("an f32 output");
            let err = error(&got, want);
            eprintln!(
                "{what} `{name}` batch {batch} (layer patterns {}): error {err:.2e}",
                !no_layer_patterns
            );
            assert!(
                err <= TOLERANCE,
                "{what} output `{name}` at batch {batch}: tract differs from Strata by {err:e}"
            );
        }
    }
    Ok(())
}

#[test]
fn every_examples_infer_exports_and_tract_matches_strata() {
    let files = example_files();
    assert!(files.len() >= 10, "the examples are there");
    for file in files {
        let name = file
            .file_name()
            .expect("a file")
            .to_string_lossy()
            .to_string();
        let expected_failure = NOT_EXPORTABLE.iter().find(|(f, _)| *f == name);
        // Every op on its own first (im2col as Gather), then with layers (Conv).
        if expected_failure.is_none() {
            check_example(&file, true).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        match (check_example(&file, false), expected_failure) {
            (Ok(()), None) => {}
            (Ok(()), Some((_, op))) => {
                panic!("{name} exports: remove it from NOT_EXPORTABLE (`{op}`)")
            }
            (Err(ExportError::Unsupported { op, at, reason }), Some((_, expected)))
                if op == *expected =>
            {
                eprintln!("{name}: skipped: {at}: `{op}` does not export: {reason}");
            }
            (Err(e), _) => panic!("{name}: {e}"),
        }
    }
}

#[test]
fn transposed_convolutions_of_every_geometry_export_and_tract_matches_strata() {
    // Unequal padding and output padding per axis, a dilation, no bias, and a crop that
    // removes more than the output padding adds: each as one ConvTranspose and op by op.
    let text = r#"
model Deconvs {
    input x: f32[batch, 3, 4, 5]
    a = x |> conv_transpose2d(2, [3, 2], stride = 2, padding = [1, 0], output_padding = [1, 0])
    b = x |> conv_transpose2d(2, 3, stride = 3, dilation = 2, padding = 2, output_padding = 1, bias = false)
    c = x |> conv_transpose2d(4, 2)
    output ya = a
    output yb = b
    output yc = relu(c) |> conv_transpose2d(1, 3, padding = 1)
}
"#;
    let source = strata_compiler::source::SourceFile::new("deconvs.strata", text);
    for no_layer_patterns in [false, true] {
        check_source(source.clone(), no_layer_patterns).unwrap_or_else(|e| panic!("{e}"));
    }
    // Every one is recognized: four ConvTranspose nodes and no col2im fold left.
    let compiled =
        compile(&source, &training_options()).unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let model = export_infer(
        &compiled.optimized,
        &compiled.artifact.weights,
        &ExportOptions::default(),
    )
    .expect("exports");
    let ops: Vec<String> = model
        .graph
        .expect("a graph")
        .node
        .into_iter()
        .map(|n| n.op_type)
        .collect();
    let count = |op: &str| ops.iter().filter(|o| *o == op).count();
    assert_eq!(count("ConvTranspose"), 4, "{ops:?}");
    assert_eq!(count("MatMul"), 0, "{ops:?}");
}

/// Mean and standard deviation of `values`.
fn moments(values: &[f32]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var.sqrt())
}

#[test]
fn random_draws_export_as_onnx_draws_of_the_same_law() {
    // Strata's Philox numbers cannot be asked of another runtime: what the export keeps
    // is the law. `u` is uniform in [-1, 3) (mean 1, deviation 4/sqrt(12)), `z` normal
    // with mean 2 and deviation 0.5, through Strata's inverse-CDF arithmetic on ONNX's
    // uniforms. 5 x 4096 draws each: the bounds below are over 6 standard errors wide.
    let source = strata_compiler::source::SourceFile::new(
        "draws.strata",
        r#"
model Draws {
    input x: f32[batch, 1]
    output u = x + uniform([batch, 4096], low = -1, high = 3, seed = 5, at_inference = true)
    output z = x + normal([batch, 4096], mean = 2, std = 0.5, at_inference = true)
}
"#,
    );
    let compiled =
        compile(&source, &training_options()).unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let session = Session::new(&compiled.artifact).expect("the artifact loads");
    let weights = perturbed_weights(&session, &mut TestRng::new(3));
    let options = ExportOptions {
        source: Some(source.clone()),
        ..Default::default()
    };
    let model = export_infer(&compiled.optimized, &weights, &options).expect("exports");
    let graph = model.graph.as_ref().expect("a graph");
    let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(
        ops.iter().filter(|op| **op == "RandomUniformLike").count(),
        2,
        "one draw per source: {ops:?}"
    );
    let bytes = strata_onnx::encode_model(&model);
    let runnable = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .unwrap_or_else(|e| panic!("tract cannot load the export: {e:?}"));
    let names: Vec<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["x", "step"], "the step stays an input, unread");
    let run = || {
        let x = HostTensor::f32(vec![5, 1], vec![0.0; 5]).expect("sizes agree");
        let step = HostTensor::f32(vec![], vec![3.0]).expect("a scalar");
        let outputs = runnable
            .run(tvec![to_tract(&x), to_tract(&step)])
            .unwrap_or_else(|e| panic!("tract cannot run the export: {e:?}"));
        outputs
            .iter()
            .map(|t| {
                assert_eq!(t.shape(), [5, 4096]);
                let view = t.to_plain_array_view::<f32>().expect("f32");
                view.iter().copied().collect::<Vec<f32>>()
            })
            .collect::<Vec<_>>()
    };
    let first = run();
    let (u, z) = (&first[0], &first[1]);
    assert!(u.iter().all(|&x| (-1.0..3.0).contains(&x)), "u in [-1, 3)");
    let (mean, dev) = moments(u);
    eprintln!("uniform draws: mean {mean:.4} (1), deviation {dev:.4} (1.1547)");
    assert!((mean - 1.0).abs() < 0.05, "uniform mean {mean}");
    assert!(
        (dev - 4.0 / 12f64.sqrt()).abs() < 0.03,
        "uniform deviation {dev}"
    );
    let (mean, dev) = moments(z);
    let within = z.iter().filter(|&&x| (x - 2.0).abs() < 0.5).count() as f64 / z.len() as f64;
    eprintln!(
        "normal draws: mean {mean:.4} (2), deviation {dev:.4} (0.5), within one deviation {within:.4} (0.6827)"
    );
    assert!((mean - 2.0).abs() < 0.03, "normal mean {mean}");
    assert!((dev - 0.5).abs() < 0.02, "normal deviation {dev}");
    assert!(
        (within - 0.6827).abs() < 0.02,
        "normal mass within one deviation {within}"
    );
    // Fresh draws at every run, as Strata's are at every step.
    assert_ne!(run()[0], first[0], "a second run draws again");
}

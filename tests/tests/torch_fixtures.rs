//! PyTorch's Transformer layers, weights and outputs written by PyTorch itself
//! (`tests/fixtures/torch/make_fixtures.py`), against Strata's built-in layers: the
//! `state_dict` loads unchanged and the CPU reproduces PyTorch's output.
//!
//! The error is the project's norm, relative to the reference's largest magnitude:
//! `max |strata - torch| / max |torch|`.

use std::collections::HashMap;
use std::path::PathBuf;

use safetensors::SafeTensors;
use strata_artifact::HostTensor;
use strata_artifact::weights::to_host_tensor;
use strata_compiler::driver::{CompileOptions, compile};
use strata_compiler::source::SourceFile;
use strata_runtime::Session;

/// What f32 kernels against PyTorch's f32 (different summation orders and `exp`, `erf`
/// approximations) must reach.
const MAX_RELATIVE_ERROR: f64 = 1e-5;

fn fixture(name: &str) -> PathBuf {
    strata_tests::root().join("tests/fixtures/torch").join(name)
}

/// Every tensor of a safetensors file, by name.
fn read_tensors(name: &str) -> HashMap<String, HostTensor> {
    let bytes = std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let file = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    file.tensors()
        .into_iter()
        .map(|(key, view)| (key, to_host_tensor(&view)))
        .collect()
}

fn values(t: &HostTensor) -> Vec<f64> {
    match &t.data {
        strata_artifact::TensorData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        strata_artifact::TensorData::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
    }
}

/// `max |got - want| / max |want|`, after checking the shapes agree.
fn relative_error(got: &HostTensor, want: &HostTensor) -> f64 {
    assert_eq!(got.shape, want.shape, "shapes");
    let (g, w) = (values(got), values(want));
    let scale = w.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let diff = g
        .iter()
        .zip(&w)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    diff / scale
}

/// Compiles `model`, loads `case.safetensors` as PyTorch wrote it, runs `infer` on the
/// case's inputs and returns the error of output `y` against PyTorch's.
fn error_against_torch(model: &str, case: &str, inputs: &[&str]) -> f64 {
    let source = SourceFile::new(format!("{case}.strata"), model.to_string());
    let compiled = compile(&source, &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let mut session = Session::new(&compiled.artifact).expect("a CPU session");
    let weights = std::fs::read(fixture(&format!("{case}.safetensors"))).expect("weights");
    session
        .load_weights(&weights)
        .unwrap_or_else(|e| panic!("PyTorch's state_dict does not load: {e}"));
    let io = read_tensors(&format!("{case}.io.safetensors"));
    let feed: Vec<(&str, HostTensor)> = inputs.iter().map(|&n| (n, io[n].clone())).collect();
    let outputs = session.run("infer", &feed).expect("infer runs");
    let y = outputs
        .iter()
        .find(|(name, _)| name == "y")
        .map(|(_, t)| t)
        .expect("output y");
    let err = relative_error(y, &io["y"]);
    eprintln!("{case}: relative error {err:.2e}");
    err
}

fn encoder(options: &str) -> String {
    format!(
        "model Encoder {{
    input x: f32[batch, 5, 8]
    layer enc = transformer_encoder_layer(heads = 2, ff = 16{options})
    output y = enc(x)
}}"
    )
}

#[test]
fn a_torch_encoder_layer_with_relu_loads_unchanged_and_matches() {
    let err = error_against_torch(&encoder(""), "encoder_relu", &["x"]);
    assert!(err < MAX_RELATIVE_ERROR, "relative error {err:e}");
}

#[test]
fn a_torch_encoder_layer_with_exact_gelu_loads_unchanged_and_matches() {
    let err = error_against_torch(&encoder(", activation = gelu"), "encoder_gelu", &["x"]);
    assert!(err < MAX_RELATIVE_ERROR, "relative error {err:e}");
}

#[test]
fn a_torch_pre_norm_encoder_layer_loads_unchanged_and_matches() {
    let err = error_against_torch(
        &encoder(", activation = gelu, norm_first = true"),
        "encoder_gelu_norm_first",
        &["x"],
    );
    assert!(err < MAX_RELATIVE_ERROR, "relative error {err:e}");
}

#[test]
fn a_torch_decoder_layer_loads_unchanged_and_matches() {
    let model = "model Decoder {
    input x: f32[batch, 5, 8]
    input memory: f32[batch, 4, 8]
    layer dec = transformer_decoder_layer(heads = 2, ff = 16)
    output y = dec(x, memory)
}";
    let err = error_against_torch(model, "decoder_relu", &["x", "memory"]);
    assert!(err < MAX_RELATIVE_ERROR, "relative error {err:e}");
}

/// The comparison can fail: the ReLU layer's weights under a GELU layer are far off.
#[test]
fn a_layer_with_another_activation_does_not_match() {
    let err = error_against_torch(&encoder(", activation = gelu"), "encoder_relu", &["x"]);
    assert!(err > 1e-3, "relu and gelu layers agree to {err:e}");
}

/// The encoder layer with exact GELU under `mse(y, target)`, trained one step from
/// PyTorch's weights by `optimizer`.
fn encoder_step_model(optimizer: &str) -> String {
    format!(
        "model Encoder {{
    input x: f32[batch, 5, 8]
    layer enc = transformer_encoder_layer(heads = 2, ff = 16, activation = gelu)
    output y = enc(x)
}}
train Encoder {{
    label target: f32[batch, 5, 8]
    loss = mse(y, target)
    optimizer = {optimizer}
}}"
    )
}

/// Runs one `train_step` of `model` from `encoder_gelu`'s weights at learning rate `lr`
/// and returns the errors of the loss and of every parameter's update (`new - old`,
/// all parameters together) against PyTorch's, whose new weights are `prefix.KEY`.
///
/// The key's part of `in_proj_bias` is left out: its gradient is zero in exact
/// arithmetic (the softmax cancels it). Strata's is exactly zero (the bias is not added);
/// PyTorch's is rounding noise, which Adam's first step (about `lr · sign(g)`) turns
/// into updates of either sign.
fn step_errors_against_torch(model: &str, prefix: &str, lr: f32) -> (f64, f64) {
    let source = SourceFile::new("encoder_step.strata", model.to_string());
    let compiled = compile(&source, &strata_tests::train_check::training_options())
        .unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let mut session = Session::new(&compiled.artifact).expect("a CPU session");
    let path = fixture("encoder_gelu.safetensors");
    let weights = std::fs::read(&path).expect("weights");
    strata_training::driver::load_weights_file(&mut session, &weights, &path)
        .unwrap_or_else(|e| panic!("PyTorch's state_dict does not load: {e}"));
    let old = read_tensors("encoder_gelu.safetensors");
    let io = read_tensors("encoder_gelu.io.safetensors");
    let scalar = |v: f32| HostTensor::f32(vec![], vec![v]).expect("a scalar");
    let feed = [
        ("x", io["x"].clone()),
        ("target", io["target"].clone()),
        ("lr", scalar(lr)),
        ("step", scalar(1.0)),
    ];
    let out = session.run("train_step", &feed).expect("train_step runs");
    let loss = out
        .iter()
        .find(|(name, _)| name == "loss")
        .map(|(_, t)| t)
        .expect("output loss");
    let loss_err = relative_error(loss, &io["loss"]);
    let new: HashMap<&str, &HostTensor> = session.weights().collect();
    let (mut got, mut want) = (Vec::new(), Vec::new());
    for (key, before) in &old {
        let before = values(before);
        let ours = values(new[key.as_str()]);
        let theirs = values(&io[&format!("{prefix}.{key}")]);
        let key_bias = if key.ends_with("self_attn.in_proj_bias") {
            let d = before.len() / 3;
            d..2 * d
        } else {
            0..0
        };
        for i in (0..before.len()).filter(|i| !key_bias.contains(i)) {
            got.push((ours[i] - before[i]) as f32);
            want.push((theirs[i] - before[i]) as f32);
        }
    }
    let n = got.len() as u64;
    let update = |v: Vec<f32>| HostTensor::f32(vec![n], v).expect("sizes");
    let update_err = relative_error(&update(got), &update(want));
    eprintln!("{prefix}: loss error {loss_err:.2e}, update error {update_err:.2e}");
    (loss_err, update_err)
}

/// An SGD step is `-lr · gradient`: the update checks every parameter's gradient.
#[test]
fn one_sgd_step_from_torch_weights_matches_torch() {
    let (loss, update) =
        step_errors_against_torch(&encoder_step_model("sgd(lr = 0.1)"), "sgd", 0.1);
    assert!(loss < MAX_RELATIVE_ERROR, "loss relative error {loss:e}");
    assert!(update < 1e-4, "update relative error {update:e}");
}

#[test]
fn one_adam_step_from_torch_weights_matches_torch() {
    let (loss, update) =
        step_errors_against_torch(&encoder_step_model("adam(lr = 0.01)"), "adam", 0.01);
    assert!(loss < MAX_RELATIVE_ERROR, "loss relative error {loss:e}");
    assert!(update < 1e-4, "update relative error {update:e}");
}

/// PyTorch's `ConvTranspose2d(3, 2, (3, 2), stride = 2, padding = (1, 0),
/// output_padding = 1, dilation = 2)` as `ct`.
const CONV_TRANSPOSE: &str = "model Up {
    input x: f32[batch, 3, 4, 5]
    layer ct = conv_transpose2d(2, [3, 2], stride = 2, padding = [1, 0], output_padding = 1, dilation = 2)
    output y = ct(x)
}";

#[test]
fn a_torch_conv_transpose2d_loads_unchanged_and_matches() {
    let err = error_against_torch(CONV_TRANSPOSE, "conv_transpose", &["x"]);
    assert!(err < MAX_RELATIVE_ERROR, "relative error {err:e}");
}

/// One SGD step under `mse(y, target)` from PyTorch's weights: the gradients of the
/// weight `[C, O, kh, kw]` and the bias are PyTorch's.
#[test]
fn one_sgd_step_of_a_torch_conv_transpose2d_matches_torch() {
    let model = format!(
        "{CONV_TRANSPOSE}
train Up {{
    label target: f32[batch, 2, 10, 12]
    loss = mse(y, target)
    optimizer = sgd(lr = 0.1)
}}"
    );
    let source = SourceFile::new("up.strata", model);
    let compiled = compile(&source, &strata_tests::train_check::training_options())
        .unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let mut session = Session::new(&compiled.artifact).expect("a CPU session");
    let weights = std::fs::read(fixture("conv_transpose.safetensors")).expect("weights");
    session
        .load_weights(&weights)
        .unwrap_or_else(|e| panic!("PyTorch's state_dict does not load: {e}"));
    let io = read_tensors("conv_transpose.io.safetensors");
    let scalar = |v: f32| HostTensor::f32(vec![], vec![v]).expect("a scalar");
    let feed = [
        ("x", io["x"].clone()),
        ("target", io["target"].clone()),
        ("lr", scalar(0.1)),
        ("step", scalar(1.0)),
    ];
    let out = session.run("train_step", &feed).expect("train_step runs");
    let loss = &out.iter().find(|(name, _)| name == "loss").expect("loss").1;
    let loss_err = relative_error(loss, &io["loss"]);
    assert!(
        loss_err < MAX_RELATIVE_ERROR,
        "loss relative error {loss_err:e}"
    );
    let new: HashMap<&str, &HostTensor> = session.weights().collect();
    for key in ["ct.weight", "ct.bias"] {
        let err = relative_error(new[key], &io[&format!("sgd.{key}")]);
        eprintln!("{key} after one SGD step: relative error {err:.2e}");
        assert!(err < MAX_RELATIVE_ERROR, "`{key}`: relative error {err:e}");
    }
}

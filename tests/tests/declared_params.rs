//! Declared parameters (`param w: f32[4, 3] = xavier_uniform`) and references to a
//! layer instance's parameters (`enc.weight`): how they parse and elaborate, that
//! gradients from two uses of one parameter add up (against finite differences), that
//! every optimizer trains them as the interpreter does, that they are saved under their
//! names, and that their mistakes are located diagnostics `strata check` lists together.

use std::collections::HashMap;
use strata_artifact::HostTensor;
use strata_compiler::driver::{check, compile};
use strata_compiler::elaborate::{ElaborateOptions, elaborate};
use strata_compiler::ir::interpret::Tensor;
use strata_compiler::ir::parse::parse_graph;
use strata_compiler::ir::print::print_graph;
use strata_compiler::ir::{Graph, Init, Op, ValueId};
use strata_compiler::source::{ErrorCode, SourceFile};
use strata_compiler::syntax::ast::Stmt;
use strata_compiler::syntax::parse::parse;
use strata_runtime::Session;
use strata_tests::TestRng;
use strata_tests::gradient_check::assert_gradients_match_finite_differences;
use strata_tests::train_check::{assert_train_steps_match, training_options};

fn graph_of(text: &str) -> Graph {
    let program = parse(text).unwrap_or_else(|d| panic!("parses: {}", d.message));
    elaborate(&program, &ElaborateOptions::default())
        .unwrap_or_else(|d| panic!("elaborates: {}", d.message))
        .graph
}

/// The parameter at `path`: its value and initializer.
fn param(graph: &Graph, path: &str) -> (ValueId, Init) {
    graph
        .values()
        .into_iter()
        .find_map(|v| match &graph.node(v).op {
            Op::Param { path: p, init } if p == path => Some((v, init.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no parameter `{path}` in {:?}", graph.params()))
}

fn paths(graph: &Graph) -> Vec<String> {
    let mut paths: Vec<String> = graph.params().iter().map(|(_, p)| p.to_string()).collect();
    paths.sort();
    paths
}

#[test]
fn a_param_statement_parses_with_its_type_and_initializer() {
    let program = parse(
        "model M(d = 3) {\n  param w: f32[d, 2] = xavier_uniform\n  param = 2\n  input x: f32[batch, 2]\n  output y = x\n}\n",
    )
    .expect("parses");
    let body = &program.models[0].body;
    let Stmt::Param {
        name, ty, options, ..
    } = &body[0]
    else {
        panic!("a param statement: {:?}", body[0])
    };
    assert_eq!((name.name.as_str(), ty.dtype.name.as_str()), ("w", "f32"));
    assert_eq!(ty.dims.len(), 2);
    assert!(options.is_empty());
    // `param` is a keyword only where a declaration starts: a binding may be named so.
    assert!(matches!(&body[1], Stmt::Let { name, .. } if name.name == "param"));
}

#[test]
fn declared_params_take_every_initializer_and_hyper_parameter_shapes() {
    let graph = graph_of(
        r#"
model M(d = 4, start = 0.5) {
    input x: f32[batch, 4]
    param a: f32[d, 4] = he_normal
    param b: f32[4] = 0
    param c: f32[] = -1.5
    param e: f32[1, d] = normal(0.02)
    param f: f32[4] = uniform(0.1)
    param g: f32[4] = start
    param h: f32[4] = glorot_uniform
    output y = matmul(x, a) * c + b + e + f + g + h
}
"#,
    );
    let init = |p: &str| param(&graph, p).1;
    assert_eq!(init("a"), Init::HeNormal);
    assert_eq!(init("b"), Init::Constant(0.0));
    assert_eq!(init("c"), Init::Constant(-1.5));
    assert_eq!(init("e"), Init::Normal(0.02));
    assert_eq!(init("f"), Init::Uniform(0.1));
    assert_eq!(init("g"), Init::Constant(0.5));
    assert_eq!(init("h"), Init::XavierUniform);
    assert_eq!(graph.ty(param(&graph, "a").0).to_string(), "f32[4, 4]");
    assert_eq!(graph.ty(param(&graph, "c").0).to_string(), "f32[]");
    // `strata ir` shows them, and its text reads back with the same initializers.
    let text = print_graph(&graph, None);
    assert!(
        text.contains("@e : f32[1, 4] = param normal(0.02)"),
        "{text}"
    );
    let reread = parse_graph(&text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    assert_eq!(print_graph(&reread, None), text);
}

#[test]
fn a_param_in_a_block_is_per_call_and_shared_by_an_instance() {
    let graph = graph_of(
        r#"
block Scaled(x) {
    param gain: f32[4] = ones
    return x * gain
}

model M {
    input x: f32[batch, 4]
    layer shared = Scaled()
    a = x |> Scaled |> Scaled
    b = x |> repeat 2 Scaled
    output y = a + b + shared(x) + shared(x)
}
"#,
    );
    assert_eq!(
        paths(&graph),
        [
            "scaled0.gain",
            "scaled1.gain",
            "scaled2.0.gain",
            "scaled2.1.gain",
            "shared.gain"
        ]
    );
}

#[test]
fn a_layer_parameter_reference_is_the_layers_own_value() {
    let graph = graph_of(
        r#"
block Two(x) {
    return x |> dense(3) |> dense(4)
}

model M {
    input x: f32[batch, 4]
    layer enc = dense(3)
    layer two = Two()
    h = x |> enc
    t = x |> two
    output y = matmul(h + enc.bias, enc.weight) + t + two.dense1.bias
}
"#,
    );
    // One parameter each: the reference adds none.
    assert_eq!(
        paths(&graph),
        [
            "enc.bias",
            "enc.weight",
            "two.dense0.bias",
            "two.dense0.weight",
            "two.dense1.bias",
            "two.dense1.weight"
        ]
    );
    let (weight, _) = param(&graph, "enc.weight");
    let users = graph
        .values()
        .into_iter()
        .filter(|&v| graph.operands(v).contains(&weight))
        .count();
    assert_eq!(users, 2, "the layer's transpose and the decoder's matmul");
}

/// A tied-weight autoencoder: the encoder's weight is used by the encoder and, as its
/// transpose, by the decoder; the declared bias and scale are used once.
const TIED: &str = r#"
model Tied(hidden = 3) {
    input x: f32[batch, 5]
    layer enc = dense(hidden)
    param dec_bias: f32[5] = uniform(0.3)
    param scale: f32[] = 1.5
    h = tanh(x |> enc)
    output recon = sigmoid(scale * matmul(h, enc.weight) + dec_bias)
}
train Tied {
    loss = mse(recon, x)
}
"#;

#[test]
fn gradients_of_a_tied_weight_add_both_uses_as_finite_differences_say() {
    let mut rng = TestRng::new(3);
    let x: Vec<f64> = (0..4 * 5).map(|_| f64::from(rng.uniform())).collect();
    let inputs = HashMap::from([("x".to_string(), Tensor::new(vec![4, 5], x).expect("sizes"))]);
    assert_gradients_match_finite_differences("tied", TIED, &inputs, 15, 1e-6);
}

#[test]
fn every_optimizer_trains_declared_and_tied_parameters_as_the_interpreter_does() {
    for optimizer in [
        "sgd(lr = 0.1, momentum = 0.9)",
        "adam(lr = 0.01)",
        "adamw(lr = 0.01, weight_decay = 0.1)",
        "rmsprop(lr = 0.01)",
        "adagrad(lr = 0.1)",
    ] {
        let text = format!(
            r#"
model Tempered {{
    input x: f32[batch, 6]
    layer enc = dense(5)
    param temperature: f32[] = 2.0
    param cls: f32[1, 5] = normal(0.1)
    h = tanh(x |> enc) + cls
    output logits = matmul(h, enc.weight) / temperature
}}
train Tempered {{
    label y: i32[batch]
    loss = cross_entropy(logits, y)
    optimizer = {optimizer}
}}
"#
        );
        assert_train_steps_match(optimizer, &text, &[6], 6, 5, 6);
    }
}

#[test]
fn declared_params_are_saved_under_their_names_and_trained() {
    let source = SourceFile::new("tied.strata", TIED);
    let compiled = compile(&source, &training_options()).expect("compiles");
    let session = Session::new(&compiled.artifact).expect("loads");
    let names: Vec<&str> = session.weights().map(|(k, _)| k).collect();
    for name in ["dec_bias", "scale", "enc.weight", "enc.bias"] {
        assert!(names.contains(&name), "`{name}` in {names:?}");
    }
    let step = compiled
        .training
        .iter()
        .find(|e| e.name == "train_step")
        .expect("train_step");
    let mut updated: Vec<String> = step
        .graph
        .updates
        .iter()
        .filter_map(|(p, _)| match &step.graph.node(*p).op {
            Op::Param { path, .. } if !path.starts_with("optim.") => Some(path.clone()),
            _ => None,
        })
        .collect();
    updated.sort();
    assert_eq!(updated, ["dec_bias", "enc.bias", "enc.weight", "scale"]);
}

#[test]
fn frozen_parameters_stay_frozen_when_named_or_declared() {
    let text = r#"
model Frozen {
    input x: f32[batch, 5]
    layer enc = dense(3, trainable = false)
    param shift: f32[5] = 0.1, trainable = false
    param gain: f32[5] = ones, trainable = true
    h = x |> enc
    output recon = matmul(h, enc.weight) * gain + shift
}
train Frozen {
    loss = mse(recon, x)
}
"#;
    let source = SourceFile::new("frozen.strata", text);
    let compiled = compile(&source, &training_options()).expect("compiles");
    let step = compiled
        .training
        .iter()
        .find(|e| e.name == "train_step")
        .expect("train_step");
    let updated: Vec<&str> = step
        .graph
        .updates
        .iter()
        .filter_map(|(p, _)| match &step.graph.node(*p).op {
            Op::Param { path, .. } => Some(path.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        !updated
            .iter()
            .any(|p| p.starts_with("enc.") || *p == "shift"),
        "frozen parameters are updated: {updated:?}"
    );
    assert!(updated.contains(&"gain"), "{updated:?}");
}

#[test]
fn check_reports_every_declared_parameter_mistake_with_its_line() {
    let text = r#"
model M {
    input x: f32[batch, 4]
    layer enc = dense(4)
    param w: f32[4, 0] = zeros
    param v: f32[4] = xavier_unifrom
    param v2: f32[4] = zeros
    param v2: f32[4] = ones
    param k: i32[4] = zeros
    param r: f32[batch, 4] = zeros
    early = enc.weight
    h = x |> enc
    a = enx.weight
    b = enc.weigth
    c = h.weight
    param t: f32[4] = ones, trainabel = false
    param n: f32[4] = normal(-0.1)
    param s: f32[4] = "zeros"
    param big: f32[4] = normal(1e300)
    output y = h + v2
}
"#;
    let source = SourceFile::new("mistakes.strata", text);
    let errors = match check(&source, &ElaborateOptions::default(), &[]) {
        Ok(_) => panic!("the mistakes are found"),
        Err(errors) => errors,
    };
    let found: Vec<(usize, ErrorCode)> = errors
        .iter()
        .map(|d| (source.line_col(d.span.start as usize).0, d.code))
        .collect();
    assert_eq!(
        found,
        [
            (5, ErrorCode::BadHyperParam),
            (6, ErrorCode::BadArgument),
            (8, ErrorCode::DuplicateBinding),
            (9, ErrorCode::DTypeMismatch),
            (10, ErrorCode::ShapeMismatch),
            (11, ErrorCode::UnknownName),
            (13, ErrorCode::UnknownName),
            (14, ErrorCode::UnknownName),
            (15, ErrorCode::BadArgument),
            (16, ErrorCode::BadArgument),
            (17, ErrorCode::BadArgument),
            (18, ErrorCode::BadArgument),
            (19, ErrorCode::BadArgument),
        ],
        "{errors:#?}"
    );
    let help = |line: usize| {
        errors
            .iter()
            .find(|d| source.line_col(d.span.start as usize).0 == line)
            .map(|d| d.notes.join("\n"))
            .unwrap_or_default()
    };
    assert!(help(6).contains("`xavier_uniform`"), "{}", help(6));
    assert!(help(13).contains("`enc.weight`"), "{}", help(13));
    assert!(help(14).contains("`enc.weight`"), "{}", help(14));
    assert!(help(16).contains("`trainable`"), "{}", help(16));
}

#[test]
fn the_tied_autoencoder_has_fewer_parameters_than_the_untied_one() {
    let count = |file: &str| {
        let source =
            strata_tests::load_example(&strata_tests::root().join("dsl-examples").join(file));
        let checked = check(&source, &ElaborateOptions::default(), &[])
            .unwrap_or_else(|_| panic!("{file} checks"));
        checked[0].parameters
    };
    let (tied, untied) = (
        count("tied_autoencoder.strata"),
        count("autoencoder.strata"),
    );
    assert_eq!((tied, untied), (2440, 4744));
}

#[test]
fn a_scan_cell_declares_parameters_and_names_its_layers_weights() {
    let text = r#"
block Decay(h, x) {
    param rate: f32[4] = 0.5
    layer proj = dense(4)
    p = x |> proj
    return tanh(h * rate + p + proj.bias)
}

model Cell {
    input xs: f32[batch, 5, 3]
    hs = scan(Decay, xs, dense(mean(xs, axis = 1), 4))
    output out = hs |> mean(axis = 1) |> dense(1)
}
train Cell {
    label y: f32[batch, 1]
    loss = mse(out, y)
}
"#;
    let graph = graph_of(text);
    assert!(
        paths(&graph).contains(&"decay0.rate".to_string()),
        "{:?}",
        paths(&graph)
    );
    let mut rng = TestRng::new(9);
    let xs: Vec<f64> = (0..2 * 5 * 3).map(|_| f64::from(rng.uniform())).collect();
    let y: Vec<f64> = (0..2).map(|_| f64::from(rng.uniform())).collect();
    let inputs = HashMap::from([
        (
            "xs".to_string(),
            Tensor::new(vec![2, 5, 3], xs).expect("sizes"),
        ),
        ("y".to_string(), Tensor::new(vec![2, 1], y).expect("sizes")),
    ]);
    assert_gradients_match_finite_differences("cell", text, &inputs, 8, 1e-6);
}

#[test]
fn trained_declared_parameters_save_and_load_back_by_name() {
    let source = SourceFile::new("tied.strata", TIED);
    let artifact = compile(&source, &training_options())
        .expect("compiles")
        .artifact;
    let value = |session: &Session, key: &str| -> Vec<f32> {
        let (_, t) = session
            .weights()
            .find(|(k, _)| *k == key)
            .unwrap_or_else(|| panic!("`{key}` is saved"));
        t.as_f32().expect("f32").to_vec()
    };
    let mut trained = Session::new(&artifact).expect("loads");
    let initial = value(&trained, "scale");
    assert_eq!(initial, [1.5]);
    let mut rng = TestRng::new(4);
    for step in 1..=5 {
        let x: Vec<f32> = (0..8 * 5).map(|_| rng.uniform()).collect();
        let inputs = [
            ("x", HostTensor::f32(vec![8, 5], x).expect("sizes")),
            ("lr", HostTensor::f32(vec![], vec![0.05]).expect("sizes")),
            (
                "step",
                HostTensor::f32(vec![], vec![step as f32]).expect("sizes"),
            ),
        ];
        trained.run("train_step", &inputs).expect("a step runs");
    }
    let bytes = trained.save_weights().expect("saves");
    let mut fresh = Session::new(&artifact).expect("loads");
    fresh.load_weights(&bytes).expect("loads back by name");
    for key in ["scale", "dec_bias", "enc.weight"] {
        assert_eq!(value(&fresh, key), value(&trained, key), "`{key}`");
    }
    assert_ne!(value(&fresh, "scale"), initial, "training moved `scale`");
}

#[test]
fn a_step_updates_a_declared_parameter_by_its_name() {
    let text = r#"
model Calibrated {
    input x: f32[batch, 6]
    layer enc = dense(4)
    param temperature: f32[] = 1.0
    logits = x |> enc
    output scaled = logits / temperature
}
train Calibrated {
    label y: i32[batch]
    step fit {
        loss      = cross_entropy(logits, y)
        updates   = enc
    }
    step calibrate {
        loss      = cross_entropy(scaled, y)
        optimizer = sgd(lr = 0.01)
        updates   = temperature
    }
}
"#;
    let source = SourceFile::new("steps.strata", text);
    let compiled =
        compile(&source, &training_options()).unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let updated = |entry: &str| -> Vec<String> {
        let step = compiled
            .training
            .iter()
            .find(|e| e.name == entry)
            .unwrap_or_else(|| panic!("no entry {entry}"));
        let mut paths: Vec<String> = step
            .graph
            .updates
            .iter()
            .filter_map(|(p, _)| match &step.graph.node(*p).op {
                Op::Param { path, .. } if !path.starts_with("optim.") => Some(path.clone()),
                _ => None,
            })
            .collect();
        paths.sort();
        paths
    };
    assert_eq!(updated("train_fit"), ["enc.bias", "enc.weight"]);
    assert_eq!(updated("train_calibrate"), ["temperature"]);
}

#[test]
fn a_train_section_loss_can_name_a_layer_weight() {
    let text = r#"
model Pen {
    input x: f32[batch, 5]
    layer enc = dense(3)
    param gain: f32[] = 0.5
    output recon = sigmoid(matmul(relu(x |> enc), enc.weight))
}
train Pen {
    loss = mse(recon, x) + 0.1 * sum(enc.weight * enc.weight, axis = [0, 1]) + gain * gain
}
"#;
    let mut rng = TestRng::new(6);
    let x: Vec<f64> = (0..3 * 5).map(|_| f64::from(rng.uniform())).collect();
    let inputs = HashMap::from([("x".to_string(), Tensor::new(vec![3, 5], x).expect("sizes"))]);
    assert_gradients_match_finite_differences("penalty", text, &inputs, 10, 1e-6);
}

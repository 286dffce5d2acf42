//! A session's `infer` after its parameters change sees the new values: a train step or
//! loaded weights between two runs of one session give what a fresh session given the
//! same weights gives, bit for bit. (The CPU keeps row-major copies of the weights its
//! products read through their transpose from one inference to the next.)

use strata_artifact::HostTensor;
use strata_compiler::driver::compile;
use strata_compiler::source::SourceFile;
use strata_runtime::Session;
use strata_tests::train_check::training_options;

const MODEL: &str = r#"
model Tiny(features = 6, hidden = 20, classes = 3) {
    input x: f32[batch, features]
    output logits = x |> dense(hidden) |> tanh |> dense(hidden) |> relu |> dense(classes)
}
train Tiny {
    label     y: i32[batch]
    loss      = cross_entropy(logits, y)
    optimizer = sgd(lr = 0.5)
    batch = 4   epochs = 1   seed = 0
}
"#;

fn session() -> Session {
    let source = SourceFile::new("tiny.strata", MODEL.to_string());
    let compiled =
        compile(&source, &training_options()).unwrap_or_else(|e| panic!("{}", e.render(&source)));
    Session::new(&compiled.artifact).expect("loads")
}

fn x() -> HostTensor {
    let values = (0..4 * 6)
        .map(|i| ((i * 7) % 11) as f32 * 0.3 - 1.5)
        .collect();
    HostTensor::f32(vec![4, 6], values).expect("sizes")
}

/// `infer`'s logits on [`x`], as bit patterns.
fn infer(s: &mut Session) -> Vec<u32> {
    let out = s.run("infer", &[("x", x())]).expect("runs");
    out[0]
        .1
        .as_f32()
        .expect("f32")
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

fn train_step(s: &mut Session) {
    let inputs = [
        ("x", x()),
        (
            "y",
            HostTensor::i32(vec![4], vec![0, 1, 2, 1]).expect("sizes"),
        ),
        ("lr", HostTensor::f32(vec![], vec![0.5]).expect("sizes")),
        ("step", HostTensor::f32(vec![], vec![1.0]).expect("sizes")),
    ];
    s.run("train_step", &inputs).expect("trains");
}

#[test]
fn infer_after_a_train_step_uses_the_updated_weights() {
    let mut s = session();
    let before = infer(&mut s);
    train_step(&mut s);
    let after = infer(&mut s);
    assert_ne!(before, after, "the step changed the weights");
    let mut fresh = session();
    fresh
        .load_weights(&s.save_weights().expect("saves"))
        .expect("loads");
    assert_eq!(after, infer(&mut fresh));
}

#[test]
fn infer_after_loading_weights_uses_the_loaded_ones() {
    let mut trained = session();
    train_step(&mut trained);
    let trained_weights = trained.save_weights().expect("saves");
    let want = infer(&mut trained);
    let mut s = session();
    let original = s.save_weights().expect("saves");
    let first = infer(&mut s);
    s.load_weights(&trained_weights).expect("loads");
    assert_eq!(infer(&mut s), want);
    s.load_weights(&original).expect("loads");
    assert_eq!(infer(&mut s), first);
}

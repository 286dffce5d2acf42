//! `embedding` as a gather of table rows and its gradient as a scatter-add: the CPU and
//! GPU backends against the interpreter (ids inside and outside the table), the rows an
//! out-of-range id reads, the gradient against finite differences, and a train step
//! (whose weight update runs the scatter-add kernel) against the interpreter's.

use std::collections::HashMap;
use strata_artifact::{Backend as Device, HostTensor};
use strata_compiler::driver::{Backend, CompileOptions, compile};
use strata_compiler::ir::interpret::Tensor;
use strata_compiler::source::SourceFile;
use strata_runtime::Session;
use strata_tests::gpu_available;
use strata_tests::gradient_check::assert_gradients_match_finite_differences;
use strata_tests::infer_check::check_backends;
use strata_tests::train_check::assert_train_steps_match;

/// Ids are drawn in `0..16` by `check_backends`: 10 to 15 are outside the table.
const LOOKUP: &str = r#"
model Lookup {
    input ids: i32[batch, 6]
    layer embed = embedding(vocab = 10, dim = 5)
    rows = ids |> embed
    output y = rows
    output z = tanh(rows * 2 + 1)
}
"#;

#[test]
fn embedding_rows_match_the_interpreter_on_every_backend() {
    let source = SourceFile::new("lookup.strata", LOOKUP.to_string());
    check_backends(
        "embedding_rows_match_the_interpreter_on_every_backend",
        &source,
        &[1, 3, 7],
    );
}

#[test]
fn an_id_outside_the_table_reads_a_row_of_zeros() {
    let source = SourceFile::new("lookup.strata", LOOKUP.to_string());
    let ids = [-1, i32::MIN, i32::MAX, 10, 9, 0, 3, 3, -10, 11, 1, 1 << 24];
    let mut devices = vec![(Backend::Cpu, Device::Cpu)];
    if gpu_available("an_id_outside_the_table_reads_a_row_of_zeros") {
        devices.push((Backend::Gpu, Device::Gpu));
    }
    for (target, device) in devices {
        let options = CompileOptions {
            target,
            ..CompileOptions::default()
        };
        let compiled =
            compile(&source, &options).unwrap_or_else(|e| panic!("{}", e.render(&source)));
        let mut session = Session::new_with(&compiled.artifact, device).expect("loads");
        let table: Vec<f32> = session
            .weights()
            .find(|(k, _)| *k == "embed.weight")
            .map(|(_, t)| t.as_f32().expect("f32").to_vec())
            .expect("the table");
        let input = HostTensor::i32(vec![2, 6], ids.to_vec()).expect("sizes");
        let outputs = session.run("infer", &[("ids", input)]).expect("runs");
        let (_, rows) = outputs.iter().find(|(n, _)| n == "y").expect("output y");
        let rows = rows.as_f32().expect("f32");
        for (i, &id) in ids.iter().enumerate() {
            let got = &rows[i * 5..(i + 1) * 5];
            let want: Vec<f32> = match usize::try_from(id) {
                Ok(r) if r < 10 => table[r * 5..(r + 1) * 5].to_vec(),
                _ => vec![0.0; 5],
            };
            assert_eq!(got, want.as_slice(), "{target:?}: id {id}");
        }
    }
}

/// Repeated ids sum their rows' gradients; ids outside the table get none.
const TAGGER: &str = r#"
model Tagger {
    input ids: i32[batch, 5]
    output logits = ids |> embedding(vocab = 7, dim = 3) |> tanh |> flatten |> dense(4)
}
train Tagger {
    label y: i32[batch]
    loss = cross_entropy(logits, y)
    optimizer = sgd(lr = 0.1)
}
"#;

#[test]
fn embedding_gradients_match_finite_differences() {
    let ids = [
        1.0, 1.0, 6.0, -1.0, 7.0, 0.0, 1.0, 3.0, 3.0, 100.0, 2.0, 2.0, 2.0, 5.0, 1.0,
    ];
    let inputs = HashMap::from([
        (
            "ids".to_string(),
            Tensor::new(vec![3, 5], ids.to_vec()).expect("sizes"),
        ),
        (
            "y".to_string(),
            Tensor::new(vec![3], vec![2.0, 0.0, 3.0]).expect("sizes"),
        ),
    ]);
    assert_gradients_match_finite_differences("tagger", TAGGER, &inputs, 21, 1e-6);
}

/// The train-step harness feeds `x` uniform in [0, 1): `int(x * 14 - 2)` gives ids
/// from -1 to 11, a table of 10 rows, so some ids miss it on either side.
const TRAIN: &str = r#"
model Net {
    input x: f32[batch, 8]
    ids = int(x * 14 - 2)
    h = ids |> embedding(vocab = 10, dim = 6) |> positional
    output logits = h |> layer_norm |> flatten |> dense(3)
}
train Net {
    label y: i32[batch]
    loss = cross_entropy(logits, y)
    optimizer = adam(lr = 0.05)
}
"#;

#[test]
fn embedding_train_steps_match_the_interpreter() {
    assert_train_steps_match("embedding", TRAIN, &[8], 3, 5, 3);
}

//! Recurrent models: a scan is a loop, not an unrolled graph, so the IR and the kernels
//! of the LSTM example do not grow with its sequence length, and compiling a sequence of
//! 1000 steps costs what compiling 100 does. (Both lengths are above the fusion's limit
//! for nested reductions: a sum over a sequence of 10 steps is computed inside its user,
//! one kernel fewer.)

use std::time::Instant;
use strata_compiler::driver::{CompileOptions, compile};
use strata_compiler::ir::{Graph, Op};
use strata_tests::train_check::training_options;
use strata_tests::{load_example, root};

/// Every op of `graph`, those of scan bodies included.
fn ops(graph: &Graph) -> usize {
    graph
        .values()
        .into_iter()
        .map(|v| match &graph.node(v).op {
            Op::Scan(scan) => 1 + ops(&scan.body),
            _ => 1,
        })
        .sum()
}

/// Ops and kernels of every entry, compiled with `window = length`.
fn sizes(length: u64) -> (Vec<(String, usize, usize)>, f64) {
    let source = load_example(&root().join("dsl-examples/lstm.strata"));
    let mut options: CompileOptions = training_options();
    options
        .elaborate
        .overrides
        .push(("window".into(), length.to_string()));
    let started = Instant::now();
    let compiled = compile(&source, &options).unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let seconds = started.elapsed().as_secs_f64();
    let mut sizes = vec![(
        "infer".to_string(),
        ops(&compiled.optimized),
        compiled.lowered.kernels.len(),
    )];
    for entry in &compiled.training {
        sizes.push((
            entry.name.clone(),
            ops(&entry.graph),
            entry.lowered.kernels.len(),
        ));
    }
    (sizes, seconds)
}

#[test]
fn the_lstm_ir_does_not_grow_with_the_sequence_length() {
    let (short, short_s) = sizes(100);
    let (long, long_s) = sizes(1000);
    eprintln!(
        "lstm.strata compiled (train_step, eval, infer): T = 100 in {short_s:.3} s, T = 1000 in {long_s:.3} s"
    );
    for ((name, ops, kernels), (_, long_ops, long_kernels)) in short.iter().zip(&long) {
        eprintln!(
            "  {name}: {ops} ops, {kernels} kernels at T = 100; {long_ops} ops, {long_kernels} kernels at T = 1000"
        );
    }
    assert_eq!(
        short, long,
        "same ops and kernels per entry at T = 100 and T = 1000"
    );
    assert!(short.iter().all(|(_, ops, _)| *ops > 0));
    assert!(short.iter().any(|(name, _, _)| name == "train_step"));
}

/// A loop longer than one seated run binds ahead (`runtime/src/launches.rs`): an LSTM of
/// 2,100 steps, whose step product splits across threads (hidden 128), runs as two
/// seated runs and still matches the interpreter, at batch 1 (its cell in two chunks)
/// and 2.
#[test]
fn a_long_recurrent_loop_runs_seated_in_parts_and_matches_the_interpreter() {
    let text = "model Long(features = 4, hidden = 128, steps = 2100) {
    input x: f32[batch, steps, features]
    h = x |> lstm(hidden, return_sequences = false)
    output y = h |> dense(3)
}
";
    let source = strata_compiler::source::SourceFile::new("long.strata", text.to_string());
    let compiled = compile(&source, &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let mut session = strata_runtime::Session::new(&compiled.artifact).expect("it loads");
    strata_tests::infer_check::assert_infer_matches(
        "long.strata",
        &mut session,
        &compiled.optimized,
        &[1, 2],
        1e-4,
    );
}

/// At batch 32 on two or more threads, a recurrent training step's loops run each
/// thread's own batch rows with no barrier between launches (`SeatShares::BatchRows`):
/// an LSTM's and a GRU's train steps (forward loop with its tape, backward loop, weight
/// gradients) still match the interpreter step after step. (SGD: Adam's normalization
/// turns float32's rounding of tiny gradients into relative errors over the bound at
/// any thread count.)
#[test]
fn recurrent_train_steps_by_batch_rows_match_the_interpreter() {
    for cell in ["lstm", "gru"] {
        let text = format!(
            "model Rows(features = 4, hidden = 64, steps = 12) {{
    input x: f32[batch, steps, features]
    h = x |> {cell}(hidden, return_sequences = false)
    output logits = h |> dense(3)
}}
train Rows {{
    label y: i32[batch]
    loss = cross_entropy(logits, y)
    optimizer = sgd(lr = 0.1)
}}
"
        );
        strata_tests::train_check::assert_train_steps_match(cell, &text, &[12, 4], 3, 32, 3);
    }
}

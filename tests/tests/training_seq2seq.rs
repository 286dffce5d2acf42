//! The Transformer decoder end to end: `dsl-examples/transformer_seq2seq.strata` learns
//! to reverse 10 digits and, decoding greedily (each prediction fed back as the next
//! decoder input, through the compiled `infer` entry), gets >= 95% of held-out sequences
//! exactly right; its `infer` entry agrees with the interpreter; the decoder layer's
//! gradients agree with finite differences and its compiled train step with the
//! interpreter; and the key masks hide what they say.

use std::collections::HashMap;
use strata_artifact::{HostTensor, TensorData};
use strata_compiler::driver::{CompileOptions, compile};
use strata_compiler::ir::interpret::Tensor;
use strata_compiler::source::SourceFile;
use strata_runtime::Session;
use strata_runtime::decode::GreedyDecoding;
use strata_tests::gradient_check::assert_gradients_match_finite_differences;
use strata_tests::infer_check::assert_infer_matches;
use strata_tests::train_check::assert_train_steps_match;
use strata_tests::train_run::train_example;
use strata_tests::{TestRng, load_example, root};
use strata_training::{Labels, REVERSE_START, ReverseTask};

const LENGTH: usize = 10;

/// Held-out sequences: drawn with a seed the example's data never uses. Each sample's
/// input is the source, then the start token, then zeros where the decoder's own
/// predictions will go: nothing of the target is given.
fn held_out(samples: usize) -> (HostTensor, Vec<i32>) {
    let task = ReverseTask {
        length: LENGTH,
        samples,
        seed: 2024,
    };
    let data = task.generate().expect("generates");
    let Labels::Sequences { values, .. } = data.labels else {
        panic!("reverse has sequence labels")
    };
    let mut tokens = Vec::with_capacity(samples * 2 * LENGTH);
    for row in data.features.chunks_exact(2 * LENGTH) {
        tokens.extend(row[..LENGTH].iter().map(|&x| x as i32));
        tokens.push(REVERSE_START);
        tokens.extend(std::iter::repeat_n(0, LENGTH - 1));
    }
    let x = HostTensor::i32(vec![samples as u64, 2 * LENGTH as u64], tokens).expect("sizes");
    (x, values)
}

fn greedy() -> GreedyDecoding {
    GreedyDecoding {
        entry: "infer".into(),
        input: "x".into(),
        output: "logits".into(),
        start: LENGTH,
    }
}

#[test]
fn the_seq2seq_example_reverses_95_percent_of_held_out_sequences_decoding_greedily() {
    let mut run = train_example("transformer_seq2seq.strata");
    let teacher_forced = run.test_metric("sequence_accuracy");
    let samples = 1000;
    let (x, targets) = held_out(samples);
    let predicted = greedy()
        .decode(&mut run.session, &[("x", x.clone())])
        .expect("decodes");
    let TensorData::I32(predicted) = &predicted.data else {
        panic!("token ids")
    };
    let exact = predicted
        .chunks_exact(LENGTH)
        .zip(targets.chunks_exact(LENGTH))
        .filter(|(p, t)| p == t)
        .count();
    let positions = predicted
        .iter()
        .zip(&targets)
        .filter(|(p, t)| p == t)
        .count();
    let accuracy = exact as f64 / samples as f64;
    println!(
        "seq2seq reversal ({} weights): greedy exact-sequence accuracy {accuracy:.4} on {samples} held-out sequences \
         (positions {:.4}; teacher-forced test split {teacher_forced:.4}) after {} epochs ({:?}) in {:.2} s",
        run.parameters,
        positions as f64 / targets.len() as f64,
        run.summary.epochs,
        run.summary.stop,
        run.seconds
    );

    // The decoder is causal: fed the whole decoded sequence at once, every position
    // predicts what it predicted when it was the last one known.
    let mut completed = x.clone();
    if let TensorData::I32(ids) = &mut completed.data {
        for (row, p) in ids
            .chunks_exact_mut(2 * LENGTH)
            .zip(predicted.chunks_exact(LENGTH))
        {
            row[LENGTH + 1..].copy_from_slice(&p[..LENGTH - 1]);
        }
    }
    let outputs = run.session.run("infer", &[("x", completed)]).expect("runs");
    let logits = outputs[0].1.as_f32().expect("f32 logits");
    let at_once = strata_training::metrics::argmax_rows(logits, 10).expect("rows");
    assert_eq!(
        &at_once, predicted,
        "one pass over the decoded sequence disagrees with decoding step by step"
    );
    assert!(
        accuracy >= 0.95,
        "greedy exact-sequence accuracy {accuracy:.4} < 0.95 (history: {:#?})",
        run.summary.history
    );
}

#[test]
fn the_seq2seq_infer_entry_matches_the_interpreter() {
    let path = root().join("dsl-examples/transformer_seq2seq.strata");
    let source = load_example(&path);
    let compiled = compile(&source, &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let mut session = Session::new(&compiled.artifact).expect("loads");
    assert_infer_matches(
        "transformer_seq2seq",
        &mut session,
        &compiled.optimized,
        &[1, 5],
        1e-4,
    );
}

/// A post-norm decoder layer over a 3-position target attending to a 4-position memory
/// (both cut from one input), then a pre-norm one without the causal mask.
const TINY_DECODER: &str = r#"
model TinyDecoder {
    input x: f32[batch, 7, 4]
    target = slice(x, 0, 3, axis = 1) |> dense(6) |> positional
    memory = slice(x, 3, 4, axis = 1) |> dense(5)
    h = transformer_decoder_layer(target, memory, heads = 2, ff = 5)
    h2 = transformer_decoder_layer(h, memory, heads = 3, ff = 4, causal = false, norm_first = true)
    output logits = h2 |> cross_attention(memory, heads = 2) |> flatten |> dense(3)
}
train TinyDecoder {
    label y: i32[batch]
    loss = cross_entropy(logits, y)
    optimizer = adam(lr = 0.01)
}
"#;

#[test]
fn a_tiny_decoder_train_step_matches_the_interpreter() {
    assert_train_steps_match("tiny_decoder", TINY_DECODER, &[7, 4], 3, 3, 5);
}

#[test]
fn decoder_layer_gradients_match_finite_differences() {
    let mut rng = TestRng::new(8);
    let batch = 2;
    let x: Vec<f64> = (0..batch * 7 * 4)
        .map(|_| f64::from(rng.uniform()))
        .collect();
    let inputs = HashMap::from([
        (
            "x".to_string(),
            Tensor::new(vec![batch, 7, 4], x).expect("sizes"),
        ),
        (
            "y".to_string(),
            Tensor::new(vec![batch], vec![0.0, 2.0]).expect("sizes"),
        ),
    ]);
    assert_gradients_match_finite_differences("tiny_decoder", TINY_DECODER, &inputs, 4, 1e-5);
}

/// Cross-attention and self-attention with key masks: memory position 3 and sequence
/// position 0 are padding.
const MASKED: &str = r#"
model Masked {
    input x: f32[batch, 2, 4]
    input memory: f32[batch, 4, 3]
    input memory_mask: f32[batch, 4]
    input x_mask: f32[batch, 2]
    h = x |> self_attention(2, key_mask = x_mask)
    h2 = h |> cross_attention(memory, 2, key_mask = memory_mask)
    h3 = transformer_decoder_layer(h2, memory, 2, 6, memory_mask = memory_mask)
    output y = h3 |> transformer_encoder_layer(2, 5, key_mask = x_mask)
}
"#;

#[test]
fn masked_keys_do_not_change_the_result() {
    let source = SourceFile::new("masked.strata", MASKED);
    let compiled = compile(&source, &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let mut session = Session::new(&compiled.artifact).expect("loads");
    let mut rng = TestRng::new(3);
    let mut draw = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.uniform()).collect() };
    let x = draw(2 * 4);
    let memory = draw(4 * 3);
    let run = |session: &mut Session, x: &[f32], memory: &[f32]| {
        let inputs = [
            (
                "x",
                HostTensor::f32(vec![1, 2, 4], x.to_vec()).expect("sizes"),
            ),
            (
                "memory",
                HostTensor::f32(vec![1, 4, 3], memory.to_vec()).expect("sizes"),
            ),
            (
                "memory_mask",
                HostTensor::f32(vec![1, 4], vec![1.0, 1.0, 1.0, 0.0]).expect("sizes"),
            ),
            (
                "x_mask",
                HostTensor::f32(vec![1, 2], vec![0.0, 1.0]).expect("sizes"),
            ),
        ];
        let out = session.run("infer", &inputs).expect("runs");
        out[0].1.as_f32().expect("f32").to_vec()
    };
    let before = run(&mut session, &x, &memory);
    // Change the masked memory position and the masked sequence position's keys only.
    let mut memory2 = memory.clone();
    memory2[9..12].copy_from_slice(&[5.0, -3.0, 2.0]);
    let changed_memory = run(&mut session, &x, &memory2);
    assert_eq!(before, changed_memory, "a masked memory position leaked");
    // The unmasked positions do matter (the test can fail).
    let mut memory3 = memory.clone();
    memory3[0] += 1.0;
    assert_ne!(before, run(&mut session, &x, &memory3));
}

/// The executable's `decode` command decodes as the library does, and refuses a start
/// position that leaves no room for the decoder's tokens.
#[test]
fn the_decode_command_matches_greedy_decoding() {
    use std::process::ExitCode;
    use strata_artifact::executable::append_to_executable;
    use strata_artifact::npy::{read_npy, write_npy};
    let source = load_example(&root().join("dsl-examples/transformer_seq2seq.strata"));
    let compiled = compile(&source, &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let exe = append_to_executable(b"stub", &compiled.artifact.to_bytes().expect("packs"));
    let dir = tempfile::tempdir().expect("temp dir");
    let (x_path, y_path) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
    let (x, _) = held_out(4);
    write_npy(&x_path, &x).expect("writes");
    let decode = |start: &str, out_path: &std::path::Path| {
        let args = [
            "seq2seq".to_string(),
            "decode".into(),
            "--input".into(),
            format!("x={}", x_path.display()),
            "--start".into(),
            start.into(),
            "--output".into(),
            out_path.display().to_string(),
        ];
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = strata_cli::executable::run_cli(args, || Ok(exe.clone()), &mut out, &mut err);
        (code, String::from_utf8_lossy(&err).to_string())
    };
    let (code, err) = decode("10", &y_path);
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    let mut session = Session::new(&compiled.artifact).expect("loads");
    let want = greedy().decode(&mut session, &[("x", x)]).expect("decodes");
    assert_eq!(read_npy(&y_path).expect("reads"), want);
    let (code, err) = decode("15", &y_path);
    assert_eq!(code, ExitCode::from(2), "{err}");
    assert!(err.contains("do not fit the 20 tokens of `x`"), "{err}");
}

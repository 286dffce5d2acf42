//! Every example in docs/language.md compiles (with its train section, if it has one),
//! or fails with exactly the error it claims; an example marked ```` ```strata train ````
//! also takes a few training steps.

use strata_artifact::HostTensor;
use strata_compiler::driver::{Compiled, compile};
use strata_compiler::ir::{DType, Op};
use strata_compiler::source::SourceFile;
use strata_runtime::Session;
use strata_tests::{TestRng, root};

struct DocExample {
    line: usize,
    expect_error: Option<String>,
    /// Marked `train`: run a few training steps too.
    train: bool,
    text: String,
}

fn examples(markdown: &str) -> Vec<DocExample> {
    let mut out = Vec::new();
    let mut current: Option<DocExample> = None;
    for (i, line) in markdown.lines().enumerate() {
        if let Some(ex) = current.as_mut() {
            if line.trim_start().starts_with("```") {
                out.push(current.take().expect("open block"));
            } else {
                ex.text.push_str(line);
                ex.text.push('\n');
            }
        } else if let Some(info) = line.strip_prefix("```strata") {
            let expect_error = info
                .trim()
                .strip_prefix("error=")
                .map(|s| s.trim().to_string());
            current = Some(DocExample {
                line: i + 1,
                expect_error,
                train: info.trim() == "train",
                text: String::new(),
            });
        }
    }
    assert!(current.is_none(), "an example block is never closed");
    out
}

#[test]
fn every_language_doc_example_compiles_or_fails_as_claimed() {
    let markdown = std::fs::read_to_string(root().join("docs/language.md")).expect("docs exist");
    let examples = examples(&markdown);
    assert!(examples.len() >= 15, "found {} examples", examples.len());
    for ex in examples {
        let source = SourceFile::new(format!("language.md:{}", ex.line), ex.text.clone());
        let result = compile(&source, &strata_tests::train_check::training_options());
        match (&ex.expect_error, result) {
            (None, Ok(compiled)) if ex.train => train_a_few_steps(&compiled, ex.line),
            (None, Ok(_)) => {}
            (None, Err(e)) => panic!("example at line {} fails:\n{}", ex.line, e.render(&source)),
            (Some(code), Ok(_)) => panic!("example at line {} should fail with {code}", ex.line),
            (Some(code), Err(strata_compiler::driver::CompileError::User(d))) => {
                assert_eq!(
                    d.code.code(),
                    code,
                    "example at line {}:\n{}",
                    ex.line,
                    d.render(&source)
                );
            }
            (Some(_), Err(e)) => panic!("example at line {}: {}", ex.line, e.render(&source)),
        }
    }
}

/// The examples of declared parameters (those with a `param` and a train section, all
/// on the digits: input `x` of 64 pixels, class labels `y`) train for a few steps, the
/// compiled `train_step` agreeing with the interpreter at every step.
#[test]
fn declared_parameter_examples_train_a_few_steps() {
    let markdown = std::fs::read_to_string(root().join("docs/language.md")).expect("docs exist");
    let trained: Vec<DocExample> = examples(&markdown)
        .into_iter()
        .filter(|ex| ex.expect_error.is_none())
        .filter(|ex| ex.text.contains("\n    param ") && ex.text.contains("\ntrain "))
        .collect();
    assert!(trained.len() >= 2, "found {} examples", trained.len());
    for ex in trained {
        let what = format!("language.md:{}", ex.line);
        strata_tests::train_check::assert_train_steps_match(&what, &ex.text, &[64], 10, 4, 3);
    }
}

/// Runs three batches of 4 random samples through every training entry of `compiled`
/// (f32 inputs uniform in [0, 1), i32 inputs 0, a valid class) and checks each loss is
/// finite and the weights move.
fn train_a_few_steps(compiled: &Compiled, line: usize) {
    let mut session = Session::new(&compiled.artifact).expect("loads");
    let before: Vec<Vec<f32>> = session
        .weights()
        .filter_map(|(_, t)| t.as_f32().map(<[f32]>::to_vec))
        .collect();
    let mut rng = TestRng::new(1);
    let entries: Vec<_> = compiled
        .training
        .iter()
        .filter(|e| e.name.starts_with("train"))
        .collect();
    assert!(
        !entries.is_empty(),
        "example at line {line} has no training entry"
    );
    for step in 1..=3 {
        for entry in &entries {
            let graph = &entry.graph;
            let inputs: Vec<(String, HostTensor)> = graph
                .inputs
                .iter()
                .map(|&i| {
                    let Op::Input { name } = &graph.node(i).op else {
                        unreachable!("inputs are Input ops")
                    };
                    let shape: Vec<u64> = graph
                        .ty(i)
                        .shape
                        .resolve(4)
                        .iter()
                        .map(|&d| d as u64)
                        .collect();
                    let n = shape.iter().product::<u64>() as usize;
                    let tensor = match (name.as_str(), graph.ty(i).dtype) {
                        ("lr", _) => HostTensor::f32(shape, vec![0.01]),
                        ("step", _) => HostTensor::f32(shape, vec![step as f32]),
                        (_, DType::F32) => {
                            HostTensor::f32(shape, (0..n).map(|_| rng.uniform()).collect())
                        }
                        (_, DType::I32) => HostTensor::i32(shape, vec![0; n]),
                    };
                    (name.clone(), tensor.expect("sizes"))
                })
                .collect();
            let inputs: Vec<(&str, HostTensor)> = inputs
                .iter()
                .map(|(n, t)| (n.as_str(), t.clone()))
                .collect();
            let outputs = session
                .run(&entry.name, &inputs)
                .unwrap_or_else(|e| panic!("example at line {line}, `{}`: {e}", entry.name));
            for (name, t) in &outputs {
                let values = t.as_f32().expect("f32 outputs");
                assert!(
                    values.iter().all(|v| v.is_finite()),
                    "example at line {line}, `{}` step {step}: `{name}` is {values:?}",
                    entry.name
                );
            }
        }
    }
    let after: Vec<Vec<f32>> = session
        .weights()
        .filter_map(|(_, t)| t.as_f32().map(<[f32]>::to_vec))
        .collect();
    assert_ne!(
        before, after,
        "example at line {line}: training moved no weight"
    );
}

//! Every example in docs/language.md compiles (with its train section, if it has one),
//! or fails with exactly the error it claims.

use strata_compiler::driver::compile;
use strata_compiler::source::SourceFile;
use strata_tests::root;

struct DocExample {
    line: usize,
    expect_error: Option<String>,
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

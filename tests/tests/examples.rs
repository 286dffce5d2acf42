//! Every example: its typed IR is a snapshot, and its compiled `infer` entry, run by the
//! runtime on the CPU, agrees with the reference interpreter on random inputs.

use strata_compiler::driver::{CompileOptions, compile};
use strata_compiler::ir::print::print_graph;
use strata_compiler::passes::{pipeline, run_pipeline};
use strata_runtime::Session;
use strata_tests::infer_check::assert_infer_matches;
use strata_tests::train_check::training_options;
use strata_tests::{example_files, load_example};

/// The tolerance the foundation issue sets for backends against the interpreter.
const MAX_RELATIVE_ERROR: f64 = 1e-5;

#[test]
fn every_example_has_a_typed_ir_snapshot() {
    for path in example_files() {
        let source = load_example(&path);
        let compiled = compile(&source, &CompileOptions::default())
            .unwrap_or_else(|e| panic!("{}", e.render(&source)));
        let name = source.name.trim_end_matches(".strata").to_string();
        insta::assert_snapshot!(
            format!("typed_{name}"),
            print_graph(&compiled.typed, Some(&source))
        );
    }
}

/// Every entry of every example is a valid graph after each pass (the compiler checks
/// this itself only in debug builds; the tests run optimized).
#[test]
fn every_pass_leaves_every_example_entry_valid() {
    for path in example_files() {
        let source = load_example(&path);
        let compiled = compile(&source, &training_options())
            .unwrap_or_else(|e| panic!("{}", e.render(&source)));
        let entries = std::iter::once(("infer", &compiled.infer_unsimplified)).chain(
            compiled
                .training
                .iter()
                .map(|e| (e.name.as_str(), &e.unsimplified)),
        );
        let mut checked = 0;
        for (entry, graph) in entries {
            let mut graph = graph.clone();
            run_pipeline(&mut graph, |pass, g| {
                g.verify()
                    .unwrap_or_else(|e| panic!("{} `{entry}` after `{pass}`: {e}", source.name));
                checked += 1;
            })
            .unwrap_or_else(|e| panic!("{} `{entry}`: {e}", source.name));
        }
        assert_eq!(
            checked,
            (1 + compiled.training.len()) * pipeline().len(),
            "{}: every entry after every pass",
            source.name
        );
    }
}

#[test]
fn every_example_matches_the_interpreter_on_cpu() {
    let files = example_files();
    assert!(files.len() >= 3, "the examples are there");
    for path in files {
        let source = load_example(&path);
        let compiled = compile(&source, &CompileOptions::default())
            .unwrap_or_else(|e| panic!("{}", e.render(&source)));
        let mut session = Session::new(&compiled.artifact).expect("the artifact loads");
        assert_infer_matches(
            &source.name,
            &mut session,
            &compiled.optimized,
            &[1, 5, 64],
            MAX_RELATIVE_ERROR,
        );
    }
}

/// A compiled artifact stores no fresh optimizer state (it starts at zero and the
/// runtime makes it), yet a session has every optimizer buffer, at zero.
#[test]
fn artifacts_leave_fresh_optimizer_state_out() {
    let mut with_state = 0;
    for path in example_files() {
        let source = load_example(&path);
        let compiled = compile(&source, &training_options())
            .unwrap_or_else(|e| panic!("{}", e.render(&source)));
        let stored = strata_artifact::weights::weight_names(&compiled.artifact.weights).unwrap();
        assert!(
            !stored.iter().any(|k| k.starts_with("optim.")),
            "{}: {stored:?}",
            source.name
        );
        let session = Session::new(&compiled.artifact).expect("the artifact loads");
        for (key, value) in session.weights() {
            if key.starts_with("optim.") {
                with_state += 1;
                assert!(
                    value.as_f32().unwrap().iter().all(|&x| x == 0.0),
                    "{}: {key}",
                    source.name
                );
            } else {
                assert!(stored.iter().any(|k| k == key), "{}: {key}", source.name);
            }
        }
    }
    assert!(with_state > 0, "some example has optimizer state");
}

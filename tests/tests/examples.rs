//! Every example: its typed IR is a snapshot, and its compiled `infer` entry, run by the
//! runtime on the CPU, agrees with the reference interpreter on random inputs.

use strata_compiler::driver::{CompileOptions, compile};
use strata_compiler::ir::print::print_graph;
use strata_runtime::Session;
use strata_tests::infer_check::assert_infer_matches;
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

//! Snapshots of the later stages for a few whole examples: the fused kernels
//! (`lower::print::print_kernels`) and the memory plan (`plan::print::print_plan`) of the
//! `infer` and `train_step` entries of a dense model (`mlp`), a recurrent one (`rnn`) and
//! a convolutional one (`cnn`).
//!
//! They show how the rules combine on real models; the rules themselves are covered one
//! small case at a time by the golden tests of `lower_golden.rs` (`tests/golden/lower`
//! and `tests/golden/plan`), where a failing case names the rule it breaks. A snapshot of
//! every example (thousands of lines, re-blessed rather than read) would add no rule.

use strata_compiler::driver::compile;
use strata_compiler::lower::print::print_kernels;
use strata_compiler::plan::print::print_plan;
use strata_tests::load_example;
use strata_tests::train_check::training_options;

const EXAMPLES: [&str; 3] = ["mlp", "rnn", "cnn"];

#[test]
fn representative_examples_have_kernel_and_plan_snapshots() {
    for name in EXAMPLES {
        let path = strata_tests::root().join(format!("dsl-examples/{name}.strata"));
        let source = load_example(&path);
        let compiled = compile(&source, &training_options())
            .unwrap_or_else(|e| panic!("{}", e.render(&source)));
        insta::assert_snapshot!(
            format!("kernels_{name}_infer"),
            print_kernels(&compiled.lowered)
        );
        insta::assert_snapshot!(
            format!("plan_{name}_infer"),
            print_plan(&compiled.lowered, &compiled.plan)
        );
        let step = compiled
            .training
            .iter()
            .find(|e| e.name == "train_step")
            .unwrap_or_else(|| panic!("{name} has a train_step"));
        insta::assert_snapshot!(
            format!("kernels_{name}_train_step"),
            print_kernels(&step.lowered)
        );
        insta::assert_snapshot!(
            format!("plan_{name}_train_step"),
            print_plan(&step.lowered, &step.plan)
        );
    }
}

/// `strata ir --format json`: each stage's own form (a graph, the kernels, the plan), of a
/// model small enough to read.
#[test]
fn each_stage_has_its_own_json_form() {
    use strata_compiler::ir::json::graph_to_json;
    use strata_compiler::lower::json::kernels_to_json;
    use strata_compiler::plan::json::plan_to_json;
    let source = strata_compiler::source::SourceFile::new(
        "tiny.strata",
        "model Tiny {\n    input x: f32[batch, 4]\n    output y = x |> dense(2) |> relu\n}\n",
    );
    let compiled =
        compile(&source, &Default::default()).unwrap_or_else(|e| panic!("{}", e.render(&source)));
    let pretty = |v: serde_json::Value| serde_json::to_string_pretty(&v).expect("serializes");
    let stages = [
        ("json_typed", pretty(graph_to_json(&compiled.typed))),
        ("json_optimized", pretty(graph_to_json(&compiled.optimized))),
        ("json_kernels", pretty(kernels_to_json(&compiled.lowered))),
        (
            "json_plan",
            pretty(plan_to_json(&compiled.lowered, &compiled.plan)),
        ),
    ];
    // The graph, the kernels and the plan: each stage's own form.
    for ((name, text), key) in
        stages
            .iter()
            .zip(["\"values\"", "\"values\"", "\"launches\"", "\"arena\""])
    {
        assert!(text.contains(key), "{name} holds {key}");
    }
    for (name, text) in stages {
        insta::assert_snapshot!(name, text);
    }
}

//! Snapshots of the later stages for every example: the fused kernels
//! (`lower::print::print_kernels`) and the memory plan (`plan::print::print_plan`) of the
//! `infer` entry and, for examples with a train section, the `train_step` entry.

use strata_compiler::driver::{CompileOptions, compile};
use strata_compiler::elaborate::ElaborateOptions;
use strata_compiler::lower::print::print_kernels;
use strata_compiler::plan::print::print_plan;
use strata_tests::{example_files, load_example};

#[test]
fn every_example_has_kernel_and_plan_snapshots() {
    let options = CompileOptions {
        elaborate: ElaborateOptions {
            train: true,
            ..Default::default()
        },
        ..Default::default()
    };
    for path in example_files() {
        let source = load_example(&path);
        let compiled =
            compile(&source, &options).unwrap_or_else(|e| panic!("{}", e.render(&source)));
        let name = source.name.trim_end_matches(".strata").to_string();
        insta::assert_snapshot!(
            format!("kernels_{name}_infer"),
            print_kernels(&compiled.lowered)
        );
        insta::assert_snapshot!(
            format!("plan_{name}_infer"),
            print_plan(&compiled.lowered, &compiled.plan)
        );
        if let Some(step) = compiled.training.iter().find(|e| e.name == "train_step") {
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
}

use strata_compiler::driver::{CompileOptions, compile};
use strata_tests::{example_files, load_example};
#[test]
fn scratch() {
    for path in example_files() {
        let source = load_example(&path);
        let compiled = compile(&source, &CompileOptions{ elaborate: strata_compiler::elaborate::ElaborateOptions{train: true, ..Default::default()}, ..Default::default()}).unwrap();
        for e in &compiled.training {
            if e.name != "train_step" { continue; }
            println!("{} {}: ops {} kernels {} arena {:?} naive {:?} lb {:?}", source.name, e.name, e.graph.len(), e.lowered.kernels.len(), e.plan.arena, e.plan.naive, e.plan.lower_bound);
            if source.name == "mlp.strata" && std::env::var("SHOW").is_ok() { println!("{}", strata_compiler::lower::print::print_kernels(&e.lowered)); println!("{}", strata_compiler::plan::print::print_plan(&e.lowered, &e.plan)); }
        }
    }
}

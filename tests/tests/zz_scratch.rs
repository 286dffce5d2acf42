use strata_compiler::driver::{CompileOptions, compile};
use strata_compiler::ir::print::print_graph;
use strata_tests::{example_files, load_example};
#[test]
fn scratch() {
    for path in example_files() {
        let source = load_example(&path);
        let compiled = compile(&source, &CompileOptions{ elaborate: strata_compiler::elaborate::ElaborateOptions{train: true, ..Default::default()}, ..Default::default()}).unwrap();
        for e in &compiled.training {
            if e.name != "train_step" { continue; }
            println!("{} {}: ops {} kernels {} arena {:?} naive {:?} lb {:?}", source.name, e.name, e.graph.len(), e.lowered.kernels.len(), e.plan.arena, e.plan.naive, e.plan.lower_bound);
            if source.name == "mlp.strata" { println!("{}", print_graph(&e.graph, None)); }
        }
    }
}

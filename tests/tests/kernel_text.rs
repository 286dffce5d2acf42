//! The kernel IR's text form read back on real kernels: every kernel of every entry of
//! every example model prints, parses to the same kernel, and prints to the same text.

use strata_compiler::driver::compile;
use strata_compiler::lower::print::print_kernels;
use strata_kernels::parse::{parse_kernel, parse_kernels};
use strata_tests::golden::kernel_blocks;
use strata_tests::train_check::training_options;
use strata_tests::{example_files, load_example};

#[test]
fn every_example_kernel_reads_back_as_it_was() {
    let mut kernels = 0;
    for path in example_files() {
        let source = load_example(&path);
        let compiled = compile(&source, &training_options())
            .unwrap_or_else(|e| panic!("{}", e.render(&source)));
        let entries = std::iter::once(("infer", &compiled.lowered)).chain(
            compiled
                .training
                .iter()
                .map(|e| (e.name.as_str(), &e.lowered)),
        );
        for (entry, lowered) in entries {
            for k in &lowered.kernels {
                let text = k.to_string();
                let parsed = parse_kernel(&text)
                    .unwrap_or_else(|e| panic!("{} {entry}: {e}\n{text}", source.name));
                assert_eq!(&parsed, k, "{} {entry}:\n{text}", source.name);
                assert_eq!(parsed.to_string(), text, "{} {entry}", source.name);
                kernels += 1;
            }
            // The kernels of a whole entry's listing, read in one go.
            let listing = kernel_blocks(&print_kernels(lowered));
            let parsed = parse_kernels(&listing)
                .unwrap_or_else(|e| panic!("{} {entry}: {e}\n{listing}", source.name));
            assert!(parsed == lowered.kernels, "{} {entry}", source.name);
        }
    }
    assert!(
        kernels > 200,
        "only {kernels} kernels: are the examples there?"
    );
}

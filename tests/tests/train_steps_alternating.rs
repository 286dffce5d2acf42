//! Sections with several `step` blocks: each step's compiled entry, run in the driver's
//! order, agrees with the interpreter, and updates only the parameters it names.

use strata_tests::root;
use strata_tests::steps_check::assert_step_entries_match;

#[test]
fn the_gan_examples_alternating_steps_match_the_interpreter() {
    let text = std::fs::read_to_string(root().join("dsl-examples/gan.strata")).expect("exists");
    // A smaller copy of the example: the same graph structure.
    let text = text
        .replace("noise = 16", "noise = 4")
        .replace("hidden = 128", "hidden = 6");
    let entries = assert_step_entries_match("gan", &text, &[64], 5, 4);
    assert_eq!(entries, ["train_discriminator", "train_generator"]);
}

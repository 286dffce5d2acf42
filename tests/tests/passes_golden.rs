//! Golden tests of the simplification passes: `tests/golden/<pass>/<case>.before.ir` is
//! parsed, verified, run through the one pass named by its folder, verified again and
//! printed; the text must equal `<case>.after.ir`. Cases named `unchanged_*` must also
//! leave the graph as it was.
//!
//! `STRATA_BLESS=1 cargo test -p strata-tests --test passes_golden` rewrites the `after`
//! files from what the passes now print (then review the diff).

use std::path::{Path, PathBuf};
use strata_compiler::ir::parse::parse_graph;
use strata_compiler::ir::print::print_graph;
use strata_compiler::passes::pass_named;
use strata_tests::golden::{case_name, compare};

fn golden_dir() -> PathBuf {
    strata_tests::golden::dir()
}

/// Every `(pass, before file)`, sorted. (The `lower` and `plan` folders hold the `.ir`
/// cases of `lower_golden.rs`, none named `.before.ir`.)
fn cases() -> Vec<(String, PathBuf)> {
    let mut cases = Vec::new();
    for dir in std::fs::read_dir(golden_dir()).expect("tests/golden exists") {
        let dir = dir.expect("readable").path();
        if !dir.is_dir() {
            continue;
        }
        let pass = dir
            .file_name()
            .expect("a folder")
            .to_string_lossy()
            .to_string();
        for file in std::fs::read_dir(&dir).expect("readable") {
            let file = file.expect("readable").path();
            if file.to_string_lossy().ends_with(".before.ir") {
                cases.push((pass.clone(), file));
            }
        }
    }
    cases.sort();
    cases
}

fn after_path(before: &Path) -> PathBuf {
    PathBuf::from(before.to_string_lossy().replace(".before.ir", ".after.ir"))
}

/// Parses `before`, runs `pass`, returns `(before printed, after printed)`.
fn run_case(pass: &str, before: &Path) -> Result<(String, String), String> {
    let text = std::fs::read_to_string(before).map_err(|e| e.to_string())?;
    let mut graph = parse_graph(&text).map_err(|e| e.to_string())?;
    graph.verify().map_err(|e| format!("before: {e}"))?;
    let printed_before = print_graph(&graph, None);
    let p = pass_named(pass).ok_or_else(|| format!("no pass named `{pass}`"))?;
    (p.run)(&mut graph)?;
    graph.verify().map_err(|e| format!("after: {e}"))?;
    Ok((printed_before, print_graph(&graph, None)))
}

#[test]
fn every_pass_matches_its_golden_files() {
    let cases = cases();
    assert!(cases.len() >= 20, "the golden cases are there");
    let mut failures = Vec::new();
    for (pass, before) in &cases {
        let case = case_name(before);
        let (printed_before, got) = match run_case(pass, before) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{case}: {e}"));
                continue;
            }
        };
        if let Err(e) = compare(&after_path(before), &got) {
            failures.push(format!("{case}: {e}"));
        }
        let unchanged = before
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("unchanged_"));
        if unchanged && printed_before != got {
            failures.push(format!("{case}: must not change, but became\n{got}"));
        }
        if !unchanged && printed_before == got {
            failures.push(format!("{case}: the pass changed nothing"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_algebraic_rule_has_a_golden_case() {
    for (rule, _) in strata_compiler::passes::algebraic::RULES {
        let before = golden_dir().join(format!("algebraic/{rule}.before.ir"));
        assert!(before.exists(), "no golden case for rule `{rule}`");
    }
}

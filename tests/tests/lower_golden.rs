//! Golden tests of lowering and memory planning, one small graph per rule.
//!
//! - `tests/golden/lower/<case>.ir` is parsed, verified and lowered
//!   (`strata_compiler::lower::lower`: fusion, kernels, grouping into parts); the listing
//!   `lower::print::print_kernels` writes must equal `<case>.kernels`, and its kernels must
//!   read back through the kernel IR parser as the very kernels lowered.
//! - `tests/golden/plan/<case>.ir` is lowered the same way and planned
//!   (`strata_compiler::plan::plan_memory`, proven safe by `check_plan`); the launch order
//!   then `plan::print::print_plan`'s text must equal `<case>.plan`.
//!
//! The graphs go straight to lowering, without the simplification passes, so each case
//! says exactly what the lowering sees. A case named `no_fuse_<rule>_*` shows where a
//! rule must not apply, and must lower to as many kernels as it would with that rule off:
//! one per op needing a kernel (`lower_unfused`), or, for `parts`, one launch per kernel.
//! Every rule has such a case and one where it applies (`<rule>_*`).
//!
//! `STRATA_BLESS=1 cargo test -p strata-tests --test lower_golden` rewrites the
//! `.kernels` and `.plan` files from what the compiler now writes (then review the diff).

use std::fmt::Write;
use std::path::{Path, PathBuf};
use strata_compiler::ir::Graph;
use strata_compiler::ir::parse::parse_graph;
use strata_compiler::lower::print::print_kernels;
use strata_compiler::lower::{BufferRole, Lowered, lower, lower_unfused, lower_without_parts};
use strata_compiler::plan::print::print_plan;
use strata_compiler::plan::{check_plan, plan_memory};
use strata_kernels::parse::parse_kernels;
use strata_tests::golden::{case_name, cases, compare, kernel_blocks};

/// The rules of `compiler/src/lower/fuse.rs` and of `compiler/src/lower/group.rs`
/// (`parts`), by the names their module docs give them.
const RULES: [&str; 7] = [
    "needs-storage",
    "nested-reduce",
    "summed-product",
    "epilogue",
    "inline",
    "update-group",
    "parts",
];

fn with_extension(path: &Path, extension: &str) -> PathBuf {
    path.with_extension(extension)
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// The graph of a case, verified.
fn graph_of(path: &Path) -> Result<Graph, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let graph = parse_graph(&text).map_err(|e| e.to_string())?;
    graph.verify()?;
    Ok(graph)
}

/// The rule a `no_fuse_<rule>_*` case is about.
fn no_fuse_rule(stem: &str) -> Option<&'static str> {
    let rest = stem.strip_prefix("no_fuse_")?;
    RULES
        .into_iter()
        .find(|r| rest.starts_with(&format!("{}_", r.replace('-', "_"))))
}

/// For a `no_fuse_<rule>_*` case, that turning the rule off would change nothing: as
/// many kernels as the unfused lowering; for `update-group`, one update map per update;
/// for `parts`, one launch per kernel.
fn check_nothing_fused(stem: &str, graph: &Graph, grouped: &Lowered) -> Result<(), String> {
    let Some(rule) = no_fuse_rule(stem) else {
        return Ok(());
    };
    let e = |e: strata_compiler::lower::LowerError| e.to_string();
    let (got, want, what) = match rule {
        "parts" => (
            grouped.kernels.len(),
            lower_without_parts(graph).map_err(e)?.kernels.len(),
            "kernel(s) without grouping",
        ),
        "update-group" => (
            update_maps(&lower_without_parts(graph).map_err(e)?),
            graph.updates.len(),
            "updates",
        ),
        _ => (
            lower_without_parts(graph).map_err(e)?.kernels.len(),
            lower_unfused(graph).map_err(e)?.kernels.len(),
            "kernel(s) unfused",
        ),
    };
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "must not fuse by rule `{rule}`, but lowers to {got} kernel(s) for {want} {what}"
        ))
    }
}

/// The kernels that store to a parameter: the update maps.
fn update_maps(l: &Lowered) -> usize {
    l.launches
        .iter()
        .filter(|launch| {
            let body = &l.kernels[launch.kernel].body;
            body.written_slots()
                .iter()
                .any(|s| matches!(l.buffers[launch.bindings[*s]].role, BufferRole::Param(_)))
        })
        .count()
}

/// Lowers a `lower/` case: the listing, after checking the kernels read back.
fn lower_case(path: &Path) -> Result<String, String> {
    let graph = graph_of(path)?;
    let lowered = lower(&graph).map_err(|e| e.to_string())?;
    check_nothing_fused(&file_stem(path), &graph, &lowered)?;
    let listing = print_kernels(&lowered);
    let read_back = parse_kernels(&kernel_blocks(&listing))
        .map_err(|e| format!("the listing's kernels do not parse: {e}\n{listing}"))?;
    if read_back != lowered.kernels {
        return Err(format!(
            "the listing's kernels read back otherwise:\n{listing}"
        ));
    }
    Ok(listing)
}

/// Plans a `plan/` case: the launches (with the half-steps of the plan's lifetimes), then
/// the plan.
fn plan_case(path: &Path) -> Result<String, String> {
    let graph = graph_of(path)?;
    let lowered = lower(&graph).map_err(|e| e.to_string())?;
    let plan = plan_memory(&lowered);
    check_plan(&lowered, &plan).map_err(|e| format!("unsafe plan: {e}"))?;
    let mut out = String::new();
    let names = |buffers: Vec<usize>, bindings: &[usize]| -> String {
        let names: Vec<&str> = buffers
            .into_iter()
            .map(|s| lowered.buffers[bindings[s]].name.as_str())
            .collect();
        names.join(", ")
    };
    for (i, launch) in lowered.launches.iter().enumerate() {
        for lp in lowered.loops.iter().filter(|lp| lp.start == i) {
            let _ = writeln!(
                out,
                "# loop over {} steps: launches {}..{}",
                lp.count, lp.start, lp.end
            );
        }
        let kernel = &lowered.kernels[launch.kernel];
        let step = i + 1;
        let _ = writeln!(
            out,
            "# launch {i} (half-steps {}..={}): {} reads ({}) writes ({})",
            2 * step,
            2 * step + 1,
            kernel.name,
            names(kernel.body.read_slots(), &launch.bindings),
            names(kernel.body.written_slots(), &launch.bindings)
        );
    }
    out.push_str(&print_plan(&lowered, &plan));
    Ok(out)
}

/// Runs every case of `folder` through `run`, comparing with its `extension` file.
fn check_folder(folder: &str, extension: &str, run: fn(&Path) -> Result<String, String>) {
    let cases = cases(folder, ".ir");
    assert!(cases.len() >= 5, "the {folder} cases are there");
    let mut failures = Vec::new();
    for case in &cases {
        let result = run(case).and_then(|got| compare(&with_extension(case, extension), &got));
        if let Err(e) = result {
            failures.push(format!("{}: {e}", case_name(case)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_lowering_case_matches_its_kernels() {
    check_folder("lower", "kernels", lower_case);
}

#[test]
fn every_planning_case_matches_its_plan() {
    check_folder("plan", "plan", plan_case);
}

#[test]
fn every_rule_has_a_case_that_fuses_and_one_that_must_not() {
    let stems: Vec<String> = cases("lower", ".ir").iter().map(|p| file_stem(p)).collect();
    for rule in RULES {
        let prefix = format!("{}_", rule.replace('-', "_"));
        assert!(
            stems.iter().any(|s| s.starts_with(&prefix)),
            "no case `lower/{prefix}*.ir` where rule `{rule}` applies"
        );
        assert!(
            stems.iter().any(|s| no_fuse_rule(s) == Some(rule)),
            "no case `lower/no_fuse_{prefix}*.ir` where rule `{rule}` must not apply"
        );
    }
}

#[test]
fn every_golden_output_has_its_input() {
    for (folder, extension) in [("lower", ".kernels"), ("plan", ".plan")] {
        for output in cases(folder, extension) {
            assert!(
                output.with_extension("ir").exists(),
                "{} has no .ir: delete it",
                case_name(&output)
            );
        }
    }
}

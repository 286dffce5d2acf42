//! Graph-to-graph passes, run in the order [`pipeline`] lists them.
//!
//! Each pass lives in its own file. In debug builds the graph is verified after every
//! pass; the test suite (built optimized) verifies every example's entries and random
//! graphs after every pass itself.
//!
//! - [`autodiff`]: reverse-mode gradients (run while the training graphs are built).
//! - [`const_fold`]: scalar constant folding.
//! - [`cse`]: common-subexpression elimination.
//! - [`algebraic`]: algebraic identities (a table of named rules).
//! - [`dce`]: dead-code elimination.
//! - [`scan_operands`]: constants into scan bodies; the pipeline run on every body.
//!
//! Lowering runs one more on a copy of the graph: [`scan_projection`], a projected
//! sequence computed inside its scan's loop (a schedule for the kernels; the graph IR,
//! and what is exported from it, keeps the projection before the loop).

pub mod algebraic;
pub mod autodiff;
pub mod const_fold;
pub mod cse;
pub mod dce;
pub mod scan_operands;
pub mod scan_projection;

use crate::ir::Graph;

/// One named pass over the graph.
pub struct Pass {
    pub name: &'static str,
    pub run: fn(&mut Graph) -> Result<(), String>,
}

/// The simplification passes applied to every entry's graph, in order. CSE runs twice:
/// folding and the algebraic rules expose new duplicates (the optimizer's bias
/// corrections, one per parameter, become one).
pub fn pipeline() -> Vec<Pass> {
    vec![
        Pass {
            name: "verify",
            run: |g| g.verify(),
        },
        Pass {
            name: "cse",
            run: cse::eliminate_common_subexpressions,
        },
        Pass {
            name: "const_fold",
            run: const_fold::fold_constants,
        },
        Pass {
            name: "algebraic",
            run: algebraic::simplify_algebra,
        },
        Pass {
            name: "cse",
            run: cse::eliminate_common_subexpressions,
        },
        Pass {
            name: "scan_operands",
            run: scan_operands::simplify_scans,
        },
        Pass {
            name: "dce",
            run: |g| {
                dce::eliminate_dead_code(g, false);
                Ok(())
            },
        },
    ]
}

/// Runs every pass, verifying after each in debug builds; `observe` sees the
/// graph after each pass (for `--dump-dir`).
pub fn run_pipeline(
    graph: &mut Graph,
    mut observe: impl FnMut(&str, &Graph),
) -> Result<(), String> {
    run_passes(graph, &pipeline(), &mut observe)
}

/// Runs `passes` in order, verifying after each in debug builds.
pub fn run_passes(
    graph: &mut Graph,
    passes: &[Pass],
    observe: &mut impl FnMut(&str, &Graph),
) -> Result<(), String> {
    for pass in passes {
        (pass.run)(graph).map_err(|e| format!("pass `{}`: {e}", pass.name))?;
        if cfg!(debug_assertions) {
            graph
                .verify()
                .map_err(|e| format!("after pass `{}`: {e}", pass.name))?;
        }
        observe(pass.name, graph);
    }
    Ok(())
}

/// The pass named `name` (for tests that run one pass alone).
pub fn pass_named(name: &str) -> Option<Pass> {
    pipeline().into_iter().find(|p| p.name == name)
}

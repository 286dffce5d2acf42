//! Graph-to-graph passes, run in the order [`pipeline`] lists them.
//!
//! Each pass lives in its own file. In debug builds and tests the graph is verified
//! after every pass.

pub mod autodiff;
pub mod dce;

use crate::ir::Graph;

/// One named pass over the graph.
pub struct Pass {
    pub name: &'static str,
    pub run: fn(&mut Graph) -> Result<(), String>,
}

/// The passes applied to an inference graph, in order.
pub fn pipeline() -> Vec<Pass> {
    vec![Pass {
        name: "verify",
        run: |g| g.verify(),
    }]
}

/// Runs every pass, verifying after each in debug builds; `observe` sees the graph after
/// each pass (for `--dump-dir`).
pub fn run_pipeline(
    graph: &mut Graph,
    mut observe: impl FnMut(&str, &Graph),
) -> Result<(), String> {
    for pass in pipeline() {
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

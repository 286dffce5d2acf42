//! The whole pipeline in one place: source -> AST -> graph -> passes -> kernels ->
//! plan -> CLIF -> artifact. Every stage's value is kept for inspection.

use crate::artifact::build_artifact;
use crate::elaborate::{ElaborateOptions, Elaborated, elaborate};
use crate::ir::Graph;
use crate::lower::{Lowered, lower};
use crate::plan::{MemoryPlan, check_plan, plan_memory};
use crate::syntax::{Diagnostic, SourceFile, parse};
use strata_runtime::Artifact;

/// What to compile and how.
#[derive(Clone, Debug, Default)]
pub struct CompileOptions {
    pub elaborate: ElaborateOptions,
    /// Seed of the parameters' initial values.
    pub seed: u64,
}

/// Why compilation stopped.
#[derive(Debug)]
pub enum CompileError {
    /// A mistake in the model file.
    User(Diagnostic),
    /// A compiler bug: an invariant broke inside the pipeline.
    Internal(String),
}

impl CompileError {
    /// The message for a terminal: a rendered diagnostic or the internal error.
    pub fn render(&self, source: &SourceFile) -> String {
        match self {
            CompileError::User(d) => d.render(source),
            CompileError::Internal(e) => format!("internal compiler error: {e}\n"),
        }
    }
}

impl From<Diagnostic> for CompileError {
    fn from(d: Diagnostic) -> CompileError {
        CompileError::User(d)
    }
}

/// Every stage of one compilation.
pub struct Compiled {
    /// The graph as elaborated (the `typed` stage).
    pub typed: Graph,
    /// After the pass pipeline.
    pub optimized: Graph,
    pub lowered: Lowered,
    pub plan: MemoryPlan,
    pub clif: String,
    pub artifact: Artifact,
}

/// Parses and elaborates: the checks `strata check` runs.
pub fn check(source: &SourceFile, options: &ElaborateOptions) -> Result<Elaborated, Diagnostic> {
    let program = parse(&source.text)?;
    elaborate(&program, options)
}

/// Compiles a model file all the way to an artifact.
pub fn compile(source: &SourceFile, options: &CompileOptions) -> Result<Compiled, CompileError> {
    let elaborated = check(source, &options.elaborate)?;
    let typed = elaborated.graph;
    let mut optimized = typed.clone();
    crate::passes::run_pipeline(&mut optimized, |_, _| {}).map_err(CompileError::Internal)?;
    let lowered = lower(&optimized).map_err(|e| CompileError::Internal(e.to_string()))?;
    let plan = plan_memory(&lowered);
    check_plan(&lowered, &plan).map_err(|e| CompileError::Internal(format!("memory plan: {e}")))?;
    let clif = strata_kernels::cpu::emit_clif(&lowered.kernels)
        .map_err(|e| CompileError::Internal(e.to_string()))?;
    let artifact = build_artifact(&optimized, &lowered, &plan, clif.clone(), options.seed)
        .map_err(CompileError::Internal)?;
    Ok(Compiled {
        typed,
        optimized,
        lowered,
        plan,
        clif,
        artifact,
    })
}

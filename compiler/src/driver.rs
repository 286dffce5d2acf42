//! The whole pipeline in one place: source -> AST -> graph -> (training graphs) ->
//! passes -> kernels -> plan -> CLIF -> artifact. Every stage's value is kept for
//! inspection.

use crate::artifact::{EntryBuild, build_artifact};
use crate::elaborate::{ElaborateOptions, elaborate};
use crate::ir::Graph;
use crate::lower::{Lowered, lower};
use crate::plan::stats::{EntryStats, UnfusedFigures, entry_stats, unfused_figures};
use crate::plan::{MemoryPlan, check_plan, plan_memory};
use crate::source::{Diagnostic, SourceFile};
use crate::syntax::parse;
use rayon::prelude::*;
use strata_artifact::Artifact;
pub use strata_artifact::Backend;
use strata_artifact::train_config::TrainConfig;

/// What to compile and how.
#[derive(Clone, Debug, Default)]
pub struct CompileOptions {
    pub elaborate: ElaborateOptions,
    /// Seed of the parameters' initial values.
    pub seed: u64,
    /// The device the artifact is for: `Gpu` adds WGSL (validated by naga) to the CPU
    /// code and makes the GPU the executable's default device.
    pub target: Backend,
    /// Command-line overrides of `train` settings (`lr`, `epochs`, …).
    pub train_overrides: Vec<(String, String)>,
    /// Lower without horizontal fusion (every kernel its own launch), to measure what
    /// the kernels with parts save.
    pub without_parts: bool,
    /// Training entries also output the gradient of their loss with respect to each
    /// parameter they update, as `grad.PATH` (before clipping), for `strata step`.
    pub gradient_outputs: bool,
    /// Keep only what the artifact is built from: the graphs before the passes are not
    /// kept (`Compiled::infer_unsimplified` and every `CompiledEntry::unsimplified` are
    /// then empty graphs), and the artifact carries no CLIF text. `strata build` prints
    /// no stage, and a deep model's training graph is a good part of its compile-time
    /// memory.
    pub only_artifact: bool,
    /// Add the `explain` entry: the gradients of the outputs with respect to the inputs,
    /// weighted by seeds fed at run time ([`crate::explain`]).
    pub explain: bool,
    /// Also lower each entry one kernel per op, beside its fused lowering, and keep that
    /// program's figures ([`CompiledEntry::unfused`]): what `strata ir --stats` compares
    /// the fused program with.
    pub unfused_figures: bool,
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

/// Wall time per stage of one compilation, in pipeline order (a stage that runs once
/// per entry is summed over entries): what `strata bench` prints as the compile-time
/// breakdown.
#[derive(Clone, Debug, Default)]
pub struct StageTimes(pub Vec<(&'static str, std::time::Duration)>);

impl StageTimes {
    /// Runs `f`, adding its time to `stage`.
    fn time<T>(&mut self, stage: &'static str, f: impl FnOnce() -> T) -> T {
        let started = std::time::Instant::now();
        let value = f();
        self.add_one(stage, started.elapsed());
        value
    }

    /// Adds `other`'s times to this one's, stage by stage.
    fn add(&mut self, other: &StageTimes) {
        for &(stage, elapsed) in &other.0 {
            self.add_one(stage, elapsed);
        }
    }

    fn add_one(&mut self, stage: &'static str, elapsed: std::time::Duration) {
        match self.0.iter_mut().find(|(s, _)| *s == stage) {
            Some((_, total)) => *total += elapsed,
            None => self.0.push((stage, elapsed)),
        }
    }

    pub fn total(&self) -> std::time::Duration {
        self.0.iter().map(|(_, d)| *d).sum()
    }
}

/// One entry's graph after the passes, its kernels and its memory plan.
pub struct CompiledEntry {
    pub name: String,
    /// The graph before the passes (`--stage train` for `train_step`).
    pub unsimplified: Graph,
    pub graph: Graph,
    pub lowered: Lowered,
    pub plan: MemoryPlan,
    /// The graph lowered one kernel per op, summed (with
    /// [`CompileOptions::unfused_figures`]).
    pub unfused: Option<UnfusedFigures>,
}

impl CompiledEntry {
    /// The entry's figures (`strata ir --stats`); the unfused ones are those compiled
    /// beside it, else computed here.
    pub fn stats(&self) -> Result<EntryStats, String> {
        let unfused = match self.unfused {
            Some(figures) => figures,
            None => unfused_figures(&self.graph)?,
        };
        Ok(entry_stats(
            &self.name,
            self.unsimplified.len(),
            &self.graph,
            &self.lowered,
            &self.plan,
            unfused,
        ))
    }
}

/// Every stage of one compilation up to the memory plans: what `strata ir` prints. No
/// machine code, CLIF text or artifact is made ([`compile`] goes on to those).
pub struct Stages {
    /// The graph as elaborated (the `typed` stage); with a train section it also holds
    /// the label input and the loss.
    pub typed: Graph,
    /// The `infer` entry.
    pub infer: CompiledEntry,
    /// `train_step` and `eval`, when the model has a train section.
    pub training: Vec<CompiledEntry>,
    pub train_config: Option<TrainConfig>,
    /// How long each stage took.
    pub times: StageTimes,
}

impl Stages {
    /// Every entry, `infer` first.
    pub fn entries(&self) -> impl Iterator<Item = &CompiledEntry> {
        std::iter::once(&self.infer).chain(&self.training)
    }

    /// Every entry's figures (`strata ir --stats`), `infer` first. The unfused figures
    /// are the ones compiled beside the entries, else computed here.
    pub fn stats(&self) -> Result<Vec<EntryStats>, String> {
        self.entries().map(CompiledEntry::stats).collect()
    }

    /// The CLIF of every entry's kernels for this host (as a run compiles them), in
    /// order: one function per kernel part, so the
    /// entries' texts one after the other are the whole program's (joined at their exact
    /// size: the text is a good part of a deep model's memory).
    pub fn clif(&self) -> Result<String, CompileError> {
        let host = strata_kernels::cpu::Features::host();
        self.entries()
            .map(|e| strata_kernels::cpu::emit_clif_for(&e.lowered.kernels, host))
            .collect::<Result<Vec<String>, _>>()
            .map(|texts| texts.concat())
            .map_err(|e| CompileError::Internal(e.to_string()))
    }
}

/// Every stage of one compilation.
pub struct Compiled {
    /// The graph as elaborated (the `typed` stage); with a train section it also holds
    /// the label input and the loss.
    pub typed: Graph,
    /// The `infer` entry after the pass pipeline.
    pub optimized: Graph,
    /// The `infer` entry before the passes.
    pub infer_unsimplified: Graph,
    /// The `infer` entry's kernels and plan.
    pub lowered: Lowered,
    pub plan: MemoryPlan,
    /// `train_step` and `eval`, when the model has a train section.
    pub training: Vec<CompiledEntry>,
    pub train_config: Option<TrainConfig>,
    /// The artifact, with the generated CLIF (`artifact.clif`).
    pub artifact: Artifact,
    /// How long each stage took.
    pub times: StageTimes,
}

/// One model of a file that `strata check` found well-formed.
#[derive(Clone, Debug)]
pub struct CheckedModel {
    pub name: String,
    /// Operations of its graph as elaborated (the `typed` stage).
    pub ops: usize,
    pub parameters: u64,
    /// Whether it has a train section (checked with it).
    pub trained: bool,
}

/// How many diagnostics `strata check` prints before it only counts the rest.
pub const MAX_SHOWN_ERRORS: usize = 20;

/// The checks `strata check` runs, on the whole file: parsing, then every model
/// elaborated with its train section (each model, statement and setting recovering from
/// its mistake, see [`crate::elaborate::elaborate_model`]), and every train section's
/// settings read as `strata train` reads them ([`crate::train::check_section`]), with
/// `train_overrides` (`--set lr=…`) applied. `options.model` checks that model only;
/// `options.overrides` apply to it (the first model when none is named).
///
/// Every mistake, in the order of the file (a syntax error stops everything), or the
/// models found well-formed. Nothing is compiled.
pub fn check(
    source: &SourceFile,
    options: &ElaborateOptions,
    train_overrides: &[(String, String)],
) -> Result<Vec<CheckedModel>, Vec<Diagnostic>> {
    let program = parse(&source.text).map_err(|d| vec![d])?;
    let selected = crate::elaborate::select_model(&program, options.model.as_deref())
        .map_err(|d| vec![d])?
        .name
        .name
        .clone();
    let mut errors = crate::elaborate::check_train_targets(&program);
    errors.extend(crate::sweep::check_sections(&program, &source.text));
    let mut models = Vec::new();
    for model in &program.models {
        let is_selected = model.name.name == selected;
        if options.model.is_some() && !is_selected {
            continue;
        }
        let model_options = ElaborateOptions {
            model: Some(model.name.name.clone()),
            overrides: match is_selected {
                true => options.overrides.clone(),
                false => Vec::new(),
            },
            train: true,
            training_mode: false,
            limits: options.limits,
        };
        let outcome = crate::elaborate::elaborate_model(&program, model, &model_options);
        let elaborated = outcome.elaborated;
        let mut model_errors = outcome.errors;
        if elaborated.train.is_some() {
            model_errors.extend(crate::train::check_section(&elaborated, train_overrides));
        }
        if model_errors.is_empty() {
            let graph = &elaborated.graph;
            models.push(CheckedModel {
                name: model.name.name.clone(),
                ops: graph.len(),
                parameters: graph
                    .params()
                    .iter()
                    .map(|(v, _)| graph.ty(*v).shape.fixed_elements())
                    .sum(),
                trained: elaborated.train.is_some(),
            });
        }
        for d in model_errors {
            // A block two models call reports its mistake once.
            if !errors.contains(&d) {
                errors.push(d);
            }
        }
    }
    if errors.is_empty() {
        return Ok(models);
    }
    errors.sort_by_key(|d| d.span.start);
    Err(errors)
}

/// Passes, lowering (kernels named `{prefix}k…`) and memory planning of one entry.
fn compile_entry(
    name: &str,
    mut graph: Graph,
    prefix: &str,
    options: &CompileOptions,
    times: &mut StageTimes,
) -> Result<CompiledEntry, CompileError> {
    let unsimplified = match options.only_artifact {
        true => Graph::new(graph.name.clone()),
        false => graph.clone(),
    };
    times
        .time("passes", || {
            crate::passes::run_pipeline(&mut graph, |_, _| {})
        })
        .map_err(CompileError::Internal)?;
    // The unfused figures need only the graph: summed on another thread meanwhile. (Not
    // joined without them: a join from outside the thread pool moves the work onto it.)
    let (lowered_and_plan, unfused) = match options.unfused_figures {
        true => rayon::join(
            || lower_and_plan(name, &graph, prefix, options, times),
            || unfused_figures(&graph).map(Some),
        ),
        false => (
            lower_and_plan(name, &graph, prefix, options, times),
            Ok(None),
        ),
    };
    let (lowered, plan) = lowered_and_plan?;
    let unfused =
        unfused.map_err(|e| CompileError::Internal(format!("{name}: unfused lowering: {e}")))?;
    Ok(CompiledEntry {
        name: name.to_string(),
        unsimplified,
        graph,
        lowered,
        plan,
        unfused,
    })
}

/// Lowering (kernels named `{prefix}k…`) and memory planning of one entry's graph.
fn lower_and_plan(
    name: &str,
    graph: &Graph,
    prefix: &str,
    options: &CompileOptions,
    times: &mut StageTimes,
) -> Result<(Lowered, MemoryPlan), CompileError> {
    let lowered = times.time("lowering", || match options.without_parts {
        false => lower(graph),
        true => crate::lower::lower_without_parts(graph),
    });
    let mut lowered = lowered.map_err(|e| CompileError::Internal(format!("{name}: {e}")))?;
    for k in &mut lowered.kernels {
        k.name = format!("{prefix}{}", k.name);
    }
    let plan = times.time("planning", || plan_memory(&lowered));
    times
        .time("plan check", || check_plan(&lowered, &plan))
        .map_err(|e| CompileError::Internal(format!("{name}: memory plan: {e}")))?;
    Ok((lowered, plan))
}

/// One entry's graph after every stage, as `(file name, text)` in pipeline order: the
/// files `strata ir --dump-dir` writes. `00-typed.ir` is the graph given, then one
/// `NN-<pass>.ir` per pass of [`crate::passes::pipeline`], `NN-scan_projection.ir` when
/// lowering moves a projected sequence into its loop (a training step), then
/// `NN-fused.kernels` and `NN-planned.plan`. Kernel names carry the prefix [`compile`] gives them.
pub fn stage_dumps(name: &str, graph: &Graph) -> Result<Vec<(String, String)>, CompileError> {
    let mut files = vec![(
        "00-typed.ir".to_string(),
        crate::ir::print::print_graph(graph, None),
    )];
    let mut passed = graph.clone();
    crate::passes::run_pipeline(&mut passed, |pass, g| {
        let n = files.len();
        files.push((
            format!("{n:02}-{pass}.ir"),
            crate::ir::print::print_graph(g, None),
        ));
    })
    .map_err(CompileError::Internal)?;
    // What lowering does to the graph before fusing it (a training step's projected
    // sequences moved into their loops), when it does anything.
    if let Some(sunk) =
        crate::passes::scan_projection::sunk(&passed).map_err(CompileError::Internal)?
    {
        let n = files.len();
        files.push((
            format!("{n:02}-scan_projection.ir"),
            crate::ir::print::print_graph(&sunk, None),
        ));
    }
    let prefix = if name == "infer" {
        String::new()
    } else {
        format!("{name}_")
    };
    // The same passes again inside, so the kernels and plan are exactly `compile`'s.
    let entry = compile_entry(
        name,
        graph.clone(),
        &prefix,
        &CompileOptions::default(),
        &mut StageTimes::default(),
    )?;
    let n = files.len();
    files.push((
        format!("{n:02}-fused.kernels"),
        crate::lower::print::print_kernels(&entry.lowered),
    ));
    files.push((
        format!("{:02}-planned.plan", n + 1),
        crate::plan::print::print_plan(&entry.lowered, &entry.plan),
    ));
    Ok(files)
}

/// Compiles a model file through the passes, lowering and memory planning of every
/// entry (what [`compile`] does before emitting code). With `elaborate.train` and a
/// `train` section, the entries include `train_step` and `eval`; with `explain`, the
/// `explain` entry.
pub fn compile_stages(
    source: &SourceFile,
    options: &CompileOptions,
) -> Result<Stages, CompileError> {
    let mut times = StageTimes::default();
    let program = times.time("parse and check", || parse(&source.text))?;
    let elaborated = times.time("parse and check", || {
        elaborate(&program, &options.elaborate)
    })?;
    let typed = elaborated.graph.clone();
    let (infer_graph, extra, train_config) = if elaborated.train.is_some() {
        let training_options = ElaborateOptions {
            training_mode: true,
            ..options.elaborate.clone()
        };
        let training = times.time("parse and check", || elaborate(&program, &training_options))?;
        let tg = times.time("training graphs", || {
            crate::train::build(
                &elaborated,
                &training,
                &options.train_overrides,
                options.gradient_outputs,
            )
        })?;
        let mut entries = tg.steps;
        entries.push(("eval".to_string(), tg.eval));
        (tg.infer, entries, Some(tg.config))
    } else {
        (typed.clone(), Vec::new(), None)
    };
    // A `train X` for no model of the file: last, as `check` sorts it after the
    // sections before it.
    if let Some(first) = crate::elaborate::check_train_targets(&program)
        .into_iter()
        .next()
    {
        return Err(first.into());
    }
    let mut extra = extra;
    if options.explain {
        let graph = times.time("explain graph", || {
            crate::explain::explain_graph(&infer_graph)
        })?;
        extra.push((
            strata_artifact::explain_entry::EXPLAIN_ENTRY.to_string(),
            graph,
        ));
    }
    // The entries are independent: compiled side by side (a deep model's `train_step`
    // is most of the work; `infer` and `eval` compile beside it), each with its own
    // stage times, summed afterwards. A build compiles one at a time: the threads'
    // separate heaps held 10% more memory at its peak (1,024 residual blocks).
    let mut jobs = vec![("infer".to_string(), infer_graph)];
    jobs.extend(extra);
    let job = |(name, g): (String, Graph)| {
        let prefix = match name.as_str() {
            "infer" => String::new(),
            _ => format!("{name}_"),
        };
        let mut entry_times = StageTimes::default();
        compile_entry(&name, g, &prefix, options, &mut entry_times).map(|e| (e, entry_times))
    };
    let compiled = match options.only_artifact {
        true => jobs.into_iter().map(job).collect::<Result<Vec<_>, _>>()?,
        false => jobs
            .into_par_iter()
            .map(job)
            .collect::<Result<Vec<_>, _>>()?,
    };
    let mut entries = compiled.into_iter().map(|(e, entry_times)| {
        times.add(&entry_times);
        e
    });
    let infer = entries
        .next()
        .ok_or_else(|| CompileError::Internal("no infer entry".into()))?;
    let training: Vec<CompiledEntry> = entries.collect();
    Ok(Stages {
        typed,
        infer,
        training,
        train_config,
        times,
    })
}

/// Compiles a model file all the way to an artifact: [`compile_stages`], then CLIF
/// text (not for `only_artifact`), the artifact and, for the GPU target, WGSL.
pub fn compile(source: &SourceFile, options: &CompileOptions) -> Result<Compiled, CompileError> {
    let mut stages = compile_stages(source, options)?;
    // A build (`only_artifact`) carries no CLIF text: nothing runs it, and at 1,024
    // residual blocks printing it was half the build's time.
    let mut times = std::mem::take(&mut stages.times);
    let clif = times.time("CLIF emission", || match options.only_artifact {
        true => Ok(String::new()),
        false => stages.clif(),
    })?;
    let entries: Vec<EntryBuild> = stages
        .entries()
        .map(|e| EntryBuild {
            name: &e.name,
            graph: &e.graph,
            lowered: &e.lowered,
            plan: &e.plan,
        })
        .collect();
    let mut artifact = times
        .time("artifact", || {
            build_artifact(&entries, clif, options.seed, stages.train_config.clone())
        })
        .map_err(CompileError::Internal)?;
    if options.target == Backend::Gpu {
        // A module naga refuses is a compiler bug: the error names the kernel.
        artifact.wgsl = times
            .time("WGSL emission", || {
                strata_kernels::gpu::emit_wgsl(&artifact.manifest.kernels)
            })
            .map_err(|e| CompileError::Internal(e.to_string()))?;
    }
    let Stages {
        typed,
        infer,
        training,
        train_config,
        times: _,
    } = stages;
    Ok(Compiled {
        typed,
        optimized: infer.graph,
        infer_unsimplified: infer.unsimplified,
        lowered: infer.lowered,
        plan: infer.plan,
        training,
        train_config,
        artifact,
        times,
    })
}

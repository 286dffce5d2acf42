//! `strata sweep FILE --space NAME=RANGE …`: search hyper-parameters against the
//! validation split, then score the chosen trial once on the test split.
//!
//! The sweep directory (default `runs/<file stem>-sweep`) holds everything:
//! `sweep.json` (what was asked), `sweep.jsonl` (one line per finished trial rung),
//! `trial-NNN/` (each trial's run directory and training log), and at the end
//! `table.txt`, `sweep.svg`, `best.json` and `best.strata`. See [`crate::sweep`] for
//! the space, the methods and how trials run.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use clap::Args;
use clap::ValueEnum;
use strata_artifact::Artifact;
use strata_compiler::driver::{CompileError, compile};
use strata_compiler::source::{Diagnostic, ErrorCode, SourceFile};

use super::{Common, ErrorFormat, Target, compile_or_report, fail, options, trainable};
use crate::sweep::best_file::rewrite;
use crate::sweep::plan::{Method, Plan};
use crate::sweep::record::{self, Header, Status, TrialRecord};
use crate::sweep::report::{ranked, status_name, svg, table};
use crate::sweep::space::{Config, Space};
use crate::sweep::trial::{Job, Launcher, MetricKey};

#[derive(Args, Debug)]
pub(super) struct SweepCommand {
    #[command(flatten)]
    common: Common,
    /// A dimension of the search: `lr=log(1e-4,1e-1)`, `dropout=uniform(0,0.5)`,
    /// `layers=int(1,4)`, `hidden=[64,128,256]` (repeatable; any name `--set` takes). It
    /// adds to (or replaces a range of) the file's `sweep` section.
    #[arg(long, value_name = "NAME=RANGE")]
    space: Vec<String>,
    /// How to search: every combination, random draws, or successive halving (random
    /// draws trained briefly, the best third trained on, until the full epochs)
    /// [default: the sweep section's, else random].
    #[arg(long, value_enum)]
    method: Option<Method>,
    /// How many configurations to try (for the grid: at most this many) [default: 20].
    #[arg(long)]
    trials: Option<usize>,
    /// Values per continuous dimension in a grid [default: 3].
    #[arg(long)]
    grid_points: Option<usize>,
    /// Halving keeps 1/ETA of a rung's trials and trains them ETA times as long
    /// [default: 3].
    #[arg(long)]
    eta: Option<usize>,
    /// What ranks trials: `val.loss`, `val.accuracy`, … [default: the train section's
    /// early-stopping monitor, else val.loss].
    #[arg(long, value_name = "SPLIT.METRIC")]
    metric: Option<String>,
    /// Seed of the search's draws (the parameters' initial values take `--seed`)
    /// [default: 0].
    #[arg(long)]
    search_seed: Option<u64>,
    /// Trials trained at once [default: the cores divided by --threads].
    #[arg(long)]
    jobs: Option<usize>,
    /// Threads each trial's training uses.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Where the sweep goes [default: runs/<model>-sweep].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Continue the sweep in the directory (after a kill or Ctrl-C).
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// Start a new sweep even if the directory holds one (its trials are deleted).
    #[arg(long)]
    overwrite: bool,
    /// Print only the table and the choice.
    #[arg(long, short = 'q')]
    quiet: bool,
}

pub(super) fn run(a: &SweepCommand) -> ExitCode {
    match sweep(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

fn sweep(a: &SweepCommand) -> Result<(), ExitCode> {
    let (source, compiled) = compile_or_report(&a.common)?;
    let (artifact, config) = trainable(&a.common, compiled)?;
    let s = settings(a, &source, &artifact.manifest.model)?;
    let space = Space::parse(&s.space).map_err(usage)?;
    if s.trials == 0 || a.threads == 0 || a.jobs == Some(0) || s.grid_points == 0 || s.eta < 2 {
        return Err(usage(
            "trials, --threads, --jobs and grid_points take at least 1, eta at least 2",
        ));
    }
    let metric = match &s.metric {
        Some(m) => MetricKey::parse(m).map_err(usage)?,
        None => match &config.early_stop {
            Some(es) => MetricKey {
                name: es.monitor.clone(),
                maximize: es.maximize,
            },
            None => MetricKey::parse("val.loss").expect("a valid metric"),
        },
    };
    let plan = Plan::new(
        s.method,
        &space,
        s.trials,
        s.grid_points,
        s.search_seed,
        config.epochs,
        s.eta,
    );
    if s.method == Method::Grid && space.grid_size(s.grid_points) > s.trials {
        eprintln!(
            "warning: the grid has {} points; --trials {} runs the first {}",
            space.grid_size(s.grid_points),
            s.trials,
            s.trials
        );
    }
    // Every configuration compiles before any trial starts, so a bad value is reported
    // now, with the trial it belongs to.
    for (i, c) in plan.configs.iter().enumerate() {
        compile_config(&source, &a.common, c).map_err(|e| {
            eprint!("{e}");
            fail(format!("trial {i} ({}) does not compile", set_line(c)))
        })?;
    }

    let dir = a.dir.clone().unwrap_or_else(|| {
        let stem = a.common.file.file_stem().unwrap_or("model".as_ref());
        PathBuf::from("runs").join(format!("{}-sweep", stem.to_string_lossy()))
    });
    let header = Header {
        file: a.common.file.display().to_string(),
        model: a.common.model.clone(),
        fixed: a.common.set.clone(),
        space: s.space.clone(),
        method: s.method,
        trials: s.trials,
        grid_points: s.grid_points,
        eta: s.eta,
        search_seed: s.search_seed,
        init_seed: a.common.seed,
        metric: metric.name.clone(),
    };
    let _lock = claim(&dir, &header, a.resume, a.overwrite)?;
    let jsonl = dir.join("sweep.jsonl");
    let mut records = record::read(&jsonl).map_err(fail)?;

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let jobs = a.jobs.unwrap_or((cores / a.threads).max(1));
    let launcher = Launcher {
        program: std::env::current_exe().map_err(|e| fail(format!("cannot find strata: {e}")))?,
        base: trial_args(&a.common, "train", a.threads),
        sweep_dir: dir.clone(),
        metric: metric.clone(),
    };
    if !a.quiet {
        println!(
            "sweep of {}: {} trials ({}, rungs of {:?} epochs), {} at a time, {} thread(s) each, ranked by {}; in {}",
            a.common.file.display(),
            plan.configs.len(),
            format!("{:?}", s.method).to_lowercase(),
            plan.rungs,
            jobs,
            a.threads,
            metric.name,
            dir.display()
        );
    }

    let mut alive: Vec<usize> = (0..plan.configs.len()).collect();
    for (rung, &epochs) in plan.rungs.iter().enumerate() {
        let todo: Vec<Job> = alive
            .iter()
            .filter(|t| !records.iter().any(|r| r.trial == **t && r.rung == rung))
            .map(|&trial| Job {
                trial,
                rung,
                epochs,
                config: plan.configs[trial].clone(),
            })
            .collect();
        let total = plan.configs.len();
        launcher
            .run_all(&todo, jobs, |r| {
                record::append(&jsonl, &r)
                    .map_err(|e| format!("cannot write {}: {e}", jsonl.display()))?;
                if !a.quiet {
                    println!(
                        "trial {:>3}/{total} rung {rung} ({} epochs): {} -> {} {} [{}] {:.1} s",
                        r.trial,
                        r.epochs,
                        set_line(&plan.configs[r.trial]),
                        metric.name,
                        r.value.map_or("-".into(), |v| format!("{v:.4}")),
                        match (&r.status, &r.message) {
                            (Status::Failed, Some(m)) => m.clone(),
                            (s, _) => status_name(*s).to_string(),
                        },
                        r.seconds
                    );
                }
                records.push(r);
                Ok(())
            })
            .map_err(fail)?;
        if rung + 1 == plan.rungs.len() {
            break;
        }
        // The rung's best go on; the other finished ones are pruned.
        let mut done: Vec<&TrialRecord> = records
            .iter()
            .filter(|r| r.rung == rung && alive.contains(&r.trial) && r.status == Status::Done)
            .collect();
        done.sort_by(|x, y| metric.order(x.value, y.value).then(x.trial.cmp(&y.trial)));
        let keep = plan.promoted(alive.len());
        let promoted: Vec<usize> = done.iter().take(keep).map(|r| r.trial).collect();
        let pruned: Vec<TrialRecord> = done
            .iter()
            .skip(keep)
            .filter(|r| {
                !records
                    .iter()
                    .any(|p| p.trial == r.trial && p.rung == rung && p.status == Status::Pruned)
            })
            .map(|r| TrialRecord {
                status: Status::Pruned,
                seconds: 0.0,
                ..(*r).clone()
            })
            .collect();
        for p in pruned {
            record::append(&jsonl, &p)
                .map_err(|e| fail(format!("cannot write {}: {e}", jsonl.display())))?;
            records.push(p);
        }
        alive = promoted;
        alive.sort_unstable();
    }

    let ranking = ranked(&records, &metric);
    let text = table(&ranking, &space, &metric);
    print!("{text}");
    write(&dir.join("table.txt"), &text)?;
    write(&dir.join("sweep.svg"), &svg(&records, &space, &metric))?;
    let Some(best) = ranking
        .iter()
        .find(|r| r.value.is_some() && matches!(r.status, Status::Done | Status::EarlyStopped))
    else {
        return Err(fail("no trial finished: see the trials' train-rung*.log"));
    };
    choose(a, &source, &launcher, &plan.configs[best.trial], best, &dir)
}

/// The sweep's settings: the file's `sweep` section, then the command line's.
struct Settings {
    /// `NAME=RANGE`, the file's first, a command-line range of the same name replacing it.
    space: Vec<String>,
    method: Method,
    trials: usize,
    grid_points: usize,
    eta: usize,
    search_seed: u64,
    metric: Option<String>,
}

fn settings(a: &SweepCommand, source: &SourceFile, model: &str) -> Result<Settings, ExitCode> {
    let report = |d: Diagnostic| {
        super::report(&d, source, a.common.error_format);
        ExitCode::FAILURE
    };
    // The section's mistakes (as `strata check` reports them) are refused here, located.
    let section = strata_compiler::sweep::section(source, model)
        .map_err(report)?
        .unwrap_or_default();
    let mut s = Settings {
        space: Vec::new(),
        method: Method::Random,
        trials: 20,
        grid_points: 3,
        eta: 3,
        search_seed: 0,
        metric: None,
    };
    for setting in &section {
        let bad = |why: String| {
            report(Diagnostic::error(
                ErrorCode::BadArgument,
                why,
                setting.value_span,
            ))
        };
        let count = || -> Result<u64, ExitCode> {
            setting
                .value
                .parse()
                .map_err(|_| bad(format!("`{}` is a whole number", setting.key)))
        };
        match setting.key.as_str() {
            "method" => {
                s.method = Method::from_str(&setting.value, false)
                    .map_err(|_| bad("`method` is grid, random or halving".into()))?;
            }
            "trials" => s.trials = count()? as usize,
            "grid_points" => s.grid_points = count()? as usize,
            "eta" => s.eta = count()? as usize,
            "search_seed" => s.search_seed = count()?,
            "metric" => s.metric = Some(setting.value.clone()),
            // A range: `section` has checked it reads and is not set twice.
            key => s.space.push(format!("{key}={}", setting.value)),
        }
    }
    for spec in &a.space {
        let name = spec.split_once('=').map_or(spec.as_str(), |p| p.0).trim();
        s.space
            .retain(|x| x.split_once('=').map(|p| p.0) != Some(name));
        s.space.push(spec.clone());
    }
    if s.space.is_empty() {
        return Err(usage(format!(
            "nothing to search: give --space NAME=RANGE, or write a `sweep {model} {{ … }}` section"
        )));
    }
    s.method = a.method.unwrap_or(s.method);
    s.trials = a.trials.unwrap_or(s.trials);
    s.grid_points = a.grid_points.unwrap_or(s.grid_points);
    s.eta = a.eta.unwrap_or(s.eta);
    s.search_seed = a.search_seed.unwrap_or(s.search_seed);
    s.metric = a.metric.clone().or(s.metric);
    Ok(s)
}

/// Reports the chosen trial: its `--set` line, its test score (the only time the sweep
/// looks at the test split), `best.json` and, when the rewrite is proven, `best.strata`.
fn choose(
    a: &SweepCommand,
    source: &SourceFile,
    launcher: &Launcher,
    config: &Config,
    best: &TrialRecord,
    dir: &Path,
) -> Result<(), ExitCode> {
    let weights = launcher
        .trial_dir(best.trial)
        .join(strata_training::driver::BEST_FILE);
    let mut eval = Command::new(&launcher.program);
    eval.args(trial_args(&a.common, "eval", a.threads));
    for (k, v) in config {
        eval.arg("--set").arg(format!("{k}={v}"));
    }
    eval.arg("--weights")
        .arg(&weights)
        .args(["--split", "test", "--json"])
        .stderr(Stdio::inherit());
    let output = eval
        .output()
        .map_err(|e| fail(format!("cannot run eval: {e}")))?;
    if !output.status.success() {
        return Err(fail(format!(
            "scoring trial {} on the test split failed",
            best.trial
        )));
    }
    let test: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| fail(format!("eval printed no JSON report: {e}")))?;
    let line = set_line(config);
    println!(
        "best: trial {} ({} {:.4} at epoch {}): {line}",
        best.trial,
        launcher.metric.name,
        best.value.unwrap_or(f64::NAN),
        best.best_epoch.unwrap_or(0)
    );
    println!(
        "test: {}  (trial {}, {})",
        scores(&test),
        best.trial,
        weights.display()
    );

    let file = match best_file(source, &a.common, config) {
        Ok(text) => {
            let path = dir.join("best.strata");
            write(&path, &text)?;
            println!("the chosen model as a file: {}", path.display());
            Some(path)
        }
        Err(why) => {
            println!("no best.strata: {why}; use the --set line");
            None
        }
    };
    let summary = serde_json::json!({
        "trial": best.trial,
        "config": best.config,
        "set": line,
        "metric": launcher.metric.name,
        "value": best.value,
        "best_epoch": best.best_epoch,
        "weights": weights.display().to_string(),
        "model_file": file.map(|p| p.display().to_string()),
        "test": test,
    });
    write(
        &dir.join("best.json"),
        &format!(
            "{}\n",
            serde_json::to_string_pretty(&summary).expect("json")
        ),
    )
}

/// `loss 0.1234  accuracy 0.9700 …` from an eval JSON report.
fn scores(report: &serde_json::Value) -> String {
    let mut parts = vec![format!("loss {}", number(&report["loss"]))];
    if let Some(metrics) = report["metrics"].as_object() {
        for (k, v) in metrics {
            parts.push(format!("{k} {}", number(v)));
        }
    }
    parts.join("  ")
}

fn number(v: &serde_json::Value) -> String {
    v.as_f64().map_or("NaN".into(), |x| format!("{x:.4}"))
}

/// The model file with the chosen values written in, if compiling it gives the same
/// model as the original with the values set on the command line.
fn best_file(source: &SourceFile, common: &Common, config: &Config) -> Result<String, String> {
    let mut all: Config = pairs(&common.set);
    all.extend(config.iter().cloned());
    let text = rewrite(&source.text, &all)?;
    let original = compile_config(source, common, config)?;
    let bare = Common {
        set: Vec::new(),
        ..common.clone()
    };
    let rewritten = SourceFile::new(source.name.clone(), text.clone());
    let new = compile_config(&rewritten, &bare, &[])
        .map_err(|_| "the rewritten file does not compile".to_string())?;
    if !same_model(&original, &new) {
        return Err("the rewritten file compiles to a different model".into());
    }
    let header = format!(
        "// The configuration `strata sweep` chose: {}\n",
        set_line(config)
    );
    Ok(header + &text)
}

fn same_model(a: &Artifact, b: &Artifact) -> bool {
    serde_json::to_string(&a.manifest).ok() == serde_json::to_string(&b.manifest).ok()
        && a.weights == b.weights
}

/// Compiles `source` with the command line's settings plus `config`; the error is the
/// rendered diagnostic.
fn compile_config(
    source: &SourceFile,
    common: &Common,
    config: &[(String, String)],
) -> Result<Artifact, String> {
    let mut c = common.clone();
    c.set.extend(config.iter().map(|(k, v)| format!("{k}={v}")));
    c.error_format = ErrorFormat::Human;
    let opts = options(&c).map_err(|_| "bad --set".to_string())?;
    match compile(source, &opts) {
        Ok(compiled) => Ok(compiled.artifact),
        Err(CompileError::User(d)) => Err(d.render(source)),
        Err(e) => Err(e.render(source)),
    }
}

fn pairs(sets: &[String]) -> Config {
    sets.iter()
        .filter_map(|s| s.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// `--set lr=0.01 --set hidden=256`
fn set_line(config: &[(String, String)]) -> String {
    config
        .iter()
        .map(|(k, v)| format!("--set {k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `strata SUBCOMMAND FILE` with the sweep's shared compile settings.
fn trial_args(c: &Common, subcommand: &str, threads: usize) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![subcommand.into(), c.file.clone().into()];
    if let Some(m) = &c.model {
        args.extend(["--model".into(), m.into()]);
    }
    args.extend(["--seed".into(), c.seed.to_string().into()]);
    if c.target == Target::Gpu {
        args.extend(["--target".into(), "gpu".into()]);
    }
    for s in &c.set {
        args.extend(["--set".into(), s.into()]);
    }
    if subcommand == "train" {
        args.extend(["--threads".into(), threads.to_string().into()]);
        args.extend(["--quiet".into(), "--no-test".into()]);
    }
    args
}

/// Claims the sweep directory: one sweep at a time (a lock), a fresh sweep only in an
/// empty one (or with `--overwrite`), a resumed one only for the same question.
fn claim(
    dir: &Path,
    header: &Header,
    resume: bool,
    overwrite: bool,
) -> Result<std::fs::File, ExitCode> {
    let io = |e: std::io::Error| fail(format!("{}: {e}", dir.display()));
    let header_path = dir.join("sweep.json");
    if resume && !header_path.is_file() {
        return Err(usage(format!(
            "{} holds no sweep to resume; run without --resume",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".lock"))
        .map_err(io)?;
    if lock.try_lock().is_err() {
        return Err(fail(format!(
            "{} is in use by another sweep",
            dir.display()
        )));
    }
    if header_path.is_file() {
        if resume {
            let text = std::fs::read_to_string(&header_path).map_err(io)?;
            let old: Header = serde_json::from_str(&text)
                .map_err(|e| fail(format!("{}: {e}", header_path.display())))?;
            if &old != header {
                return Err(usage(format!(
                    "{} holds a different sweep (of {} over {}); resume it with the same \
                     arguments, or start over with --overwrite",
                    dir.display(),
                    old.file,
                    old.space.join(" ")
                )));
            }
            return Ok(lock);
        }
        if !overwrite {
            return Err(usage(format!(
                "{} holds a sweep: continue it with --resume, or start over with --overwrite",
                dir.display()
            )));
        }
        // Starting over: the old trials' checkpoints must not be resumed by the new ones.
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with("trial-") && entry.file_type().map_err(io)?.is_dir() {
                std::fs::remove_dir_all(entry.path()).map_err(io)?;
            } else if name == "sweep.jsonl" {
                std::fs::remove_file(entry.path()).map_err(io)?;
            }
        }
    }
    let text = serde_json::to_string_pretty(header).expect("json");
    write(&header_path, &format!("{text}\n"))?;
    Ok(lock)
}

fn write(path: &Path, text: &str) -> Result<(), ExitCode> {
    strata_training::atomic_file::write_atomic(path, text.as_bytes())
        .map_err(|e| fail(format!("cannot write {}: {e}", path.display())))
}

fn usage(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

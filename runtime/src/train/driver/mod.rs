//! The training driver: runs a compiled model's `train_step` over a dataset epoch after
//! epoch, evaluates it, logs, checkpoints, stops early and resumes.
//!
//! The artifact follows the entry conventions of
//! [`TrainConfig`](crate::artifact::train_config): `train_step` updates the weights in
//! place and returns the loss, `eval` returns the loss and the prediction. Everything
//! else is here:
//!
//! 1. Load the data ([`DataSource`](crate::train::DataSource)), view each sample with the
//!    features input's shape, split it by the config's fractions and seed, and normalize
//!    every split with statistics of the train split.
//! 2. For each epoch: shuffle the train split with
//!    [`epoch_shuffle_seed`](crate::train::epoch_shuffle_seed)`(seed, epoch)`, run
//!    `train_step` on every batch (the last partial one too) with the scheduled learning
//!    rate ([`schedule`]) and the 1-based global step, then run `eval` over the
//!    validation split and compute the configured metrics.
//! 3. Log the epoch (`metrics.jsonl`, `curves.svg`), save `last.ckpt`, and save
//!    `best.safetensors` when the monitored value improves (see [`state`] for the run
//!    directory's files); stop early when it has not improved for `patience` epochs.
//! 4. Optionally put the best weights back, then score the test split.
//!
//! # Determinism and exact resume
//!
//! Every random choice derives from `(seed, epoch)` (the split from the seed, each
//! epoch's batch order from the seed and the epoch) and every learning rate from
//! `(step, epoch)`; nothing reads the clock or global state. A checkpoint holds every
//! persistent buffer (parameters and optimizer state), the step, the epoch and the
//! driver's counters, so a run resumed from it takes the same steps on the same batches
//! with the same rates as one that never stopped, and ends with bitwise the same
//! weights. That includes a run interrupted part-way through an epoch: the checkpoint
//! says how many of the epoch's batches were done, and the resumed run skips them.
//!
//! # Failure
//!
//! A non-finite loss stops the run with [`TrainError::Diverged`], naming the step and
//! epoch; the weights it produced are never saved, so `last.ckpt` stays the last good
//! state (a fresh run writes one for step 0 before its first step). Ctrl-C (see
//! [`interrupt_on_ctrl_c`]) is checked after every step: the run saves `last.ckpt` and
//! returns [`StopReason::Interrupted`].

pub mod schedule;
pub mod state;

mod data;
mod evaluation;
mod progress;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

pub use data::{EVAL_ENTRY, TRAIN_ENTRY};
pub use evaluation::{EvalReport, EvalSplit, Metrics, evaluate};
pub use schedule::{StepPosition, learning_rate};
pub use state::{OPTIMIZER_PREFIX, RunPaths, load_params, merge_params, params_safetensors};

use self::data::{Ports, load_splits};
use self::evaluation::{score, task_has_metric};
use self::progress::Progress;
use self::state::{PartialEpoch, RunState, write_atomic};
use crate::artifact::train_config::TrainConfig;
use crate::error::{RunError, WeightsError};
use crate::session::{Backend, Session};
use crate::train::{
    Checkpoint, CheckpointError, DataError, EpochRecord, LogError, MetricError, MetricsLog,
    epoch_shuffle_seed, plot_curves,
};

/// Why training stopped, or could not start.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("metrics: {0}")]
    Metric(#[from] MetricError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("weights: {0}")]
    Weights(#[from] WeightsError),
    /// The artifact does not follow the training entry conventions.
    #[error("this model cannot be trained: {0}")]
    Model(String),
    /// The train settings or the data do not fit the model.
    #[error("{0}")]
    Config(String),
    #[error("`{entry}` failed: {source}")]
    Run {
        entry: &'static str,
        source: RunError,
    },
    /// The loss became NaN or infinite.
    #[error("{}", diverged_text(*step, *epoch, *loss, *lr, checkpoint.as_ref()))]
    Diverged {
        step: u64,
        epoch: u64,
        loss: f32,
        lr: f32,
        /// The last good checkpoint and the epoch it ends.
        checkpoint: Option<(PathBuf, u64)>,
    },
    #[error("cannot resume: {0}")]
    Resume(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn diverged_text(step: u64, epoch: u64, loss: f32, lr: f32, checkpoint: Option<&(PathBuf, u64)>) -> String {
    let mut text = format!(
        "training diverged: the loss is {loss} at step {step} (epoch {epoch}); \
         try a smaller learning rate than {lr}"
    );
    if let Some((path, done)) = checkpoint {
        text.push_str(&format!(
            "; the last good checkpoint, after epoch {done}, is {}",
            path.display()
        ));
    }
    text
}

/// How to run [`train`].
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// Where the checkpoints, the log and the plot go (created if missing).
    pub run_dir: PathBuf,
    /// A data source spec to use instead of the train section's.
    pub data_override: Option<String>,
    /// Train this many epochs in all instead of the train section's count.
    pub epochs_override: Option<u64>,
    /// Continue the run in `run_dir` from its `last.ckpt`.
    pub resume: bool,
    /// Draw a progress bar (only on a terminal, and never when `quiet`).
    pub progress: bool,
    /// Print nothing.
    pub quiet: bool,
    /// Set (by a Ctrl-C handler, or a test) to stop after the current step.
    pub interrupt: Option<Arc<AtomicBool>>,
}

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// Every epoch ran.
    Completed,
    /// The monitored value stopped improving after this epoch.
    EarlyStopped { epoch: u64 },
    /// Interrupted after `step`, in `epoch` (not finished); `last.ckpt` holds that state.
    Interrupted { step: u64, epoch: u64 },
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub stop: StopReason,
    /// Epochs completed, resumed ones included.
    pub epochs: u64,
    /// Optimizer steps taken in all.
    pub steps: u64,
    /// What chose the best epoch (`val.loss`, `val.accuracy`, or `train.loss` without a
    /// validation split), its best value and the epoch it was reached.
    pub monitor: String,
    pub best_value: Option<f64>,
    pub best_epoch: Option<u64>,
    /// Whether the session holds the best epoch's parameters at the end (`restore_best`).
    pub restored_best: bool,
    /// Every epoch's record, resumed ones included.
    pub history: Vec<EpochRecord>,
    /// The test split's scores of the final weights (None if the split is empty or the
    /// run was interrupted).
    pub test: Option<EvalReport>,
    pub paths: RunPaths,
}

/// A flag that Ctrl-C sets, for [`TrainOptions::interrupt`]. The handler is installed
/// once per process (the operating system has one SIGINT disposition); later calls
/// return the same flag, cleared.
pub fn interrupt_on_ctrl_c() -> Result<Arc<AtomicBool>, String> {
    static FLAG: OnceLock<Result<Arc<AtomicBool>, String>> = OnceLock::new();
    let flag = FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let set = Arc::clone(&flag);
        ctrlc::set_handler(move || set.store(true, Ordering::SeqCst))
            .map(|()| flag)
            .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))
    });
    let flag = flag.clone()?;
    flag.store(false, Ordering::SeqCst);
    Ok(flag)
}

/// What picks the best epoch and stops early.
struct Monitor {
    /// `val.loss`, `val.<metric>` or `train.loss`.
    name: String,
    maximize: bool,
    min_delta: f64,
    /// Stop after this many epochs without improvement (None: never).
    patience: Option<u64>,
    restore_best: bool,
}

impl Monitor {
    fn of(config: &TrainConfig, has_val: bool) -> Result<Monitor, TrainError> {
        let Some(es) = &config.early_stop else {
            let name = if has_val { "val.loss" } else { "train.loss" };
            return Ok(Monitor {
                name: name.into(),
                maximize: false,
                min_delta: 0.0,
                patience: None,
                restore_best: false,
            });
        };
        let metric = es.monitor.strip_prefix("val.").unwrap_or(&es.monitor);
        if metric != "loss" && !task_has_metric(&config.task, metric) {
            return Err(TrainError::Config(format!(
                "early stopping watches `{}`, which this {} model does not compute",
                es.monitor,
                match config.task {
                    crate::artifact::train_config::Task::Classification { .. } => "classification",
                    crate::artifact::train_config::Task::Regression { .. } => "regression",
                }
            )));
        }
        if !has_val {
            return Err(TrainError::Config(format!(
                "early stopping watches `{}` but the validation split is empty (split {:?})",
                es.monitor, config.split
            )));
        }
        Ok(Monitor {
            name: format!("val.{metric}"),
            // Errors go down however the section put it; scores go up.
            maximize: !["loss", "mae", "mse"].contains(&metric),
            min_delta: es.min_delta.abs(),
            patience: Some(es.patience.max(1)),
            restore_best: es.restore_best,
        })
    }

    /// The monitored value of an epoch (NaN where undefined).
    fn value(&self, train_loss: f64, val: Option<&EvalReport>) -> f64 {
        match (self.name.as_str(), val) {
            ("train.loss", _) => train_loss,
            ("val.loss", Some(v)) => v.loss,
            (name, Some(v)) => v.metrics.value(name.trim_start_matches("val.")).unwrap_or(f64::NAN),
            (_, None) => f64::NAN,
        }
    }

    fn improves(&self, value: f64, best: Option<f64>) -> bool {
        if value.is_nan() {
            return false;
        }
        match best {
            None => true,
            Some(b) if self.maximize => value > b + self.min_delta,
            Some(b) => value < b - self.min_delta,
        }
    }
}

/// The run's counters, as checkpointed.
struct Counters {
    step: u64,
    /// Epochs completed.
    epoch: u64,
    best: Option<f64>,
    state: RunState,
}

/// Trains the session's model as `config` says (see the module docs), leaving the
/// trained weights in the session.
pub fn train(
    session: &mut Session,
    config: &TrainConfig,
    options: &TrainOptions,
) -> Result<TrainSummary, TrainError> {
    if session.backend() != Backend::Cpu {
        // The GPU engine keeps the updated weights on the device; checkpoints read the
        // host copy, which would silently hold the initial weights.
        return Err(TrainError::Config(
            "training runs on the CPU for now: a GPU session does not read its updated \
             weights back for checkpoints (use --device cpu)"
                .into(),
        ));
    }
    let ports = Ports::of(session.manifest(), config, true)?;
    let spec = options.data_override.as_deref().unwrap_or(&config.data);
    let data = load_splits(spec, config, &ports)?;
    let batch = usize::try_from(config.batch)
        .ok()
        .filter(|&b| b > 0)
        .ok_or_else(|| TrainError::Config(format!("batch size {} is not a positive count", config.batch)))?;
    let epochs = options.epochs_override.unwrap_or(config.epochs);
    let steps_per_epoch = data.train.batch_count(batch) as u64;
    let monitor = Monitor::of(config, !data.val.is_empty())?;
    for name in &config.metrics {
        if !task_has_metric(&config.task, name) {
            return Err(TrainError::Config(format!("metric `{name}` does not apply to this model's task")));
        }
    }
    let paths = RunPaths::new(&options.run_dir);
    std::fs::create_dir_all(&paths.dir).map_err(|source| TrainError::Io { path: paths.dir.clone(), source })?;

    let fresh_state = RunState {
        seed: config.seed,
        batch: config.batch,
        train_samples: data.train.len as u64,
        normalizer: data.normalizer.clone(),
        monitor: monitor.name.clone(),
        best_epoch: 0,
        bad_epochs: 0,
        stopped_early: false,
        partial: None,
    };
    let (mut counters, mut log, mut history) = if options.resume {
        let (counters, log, history) = resume(session, &paths, fresh_state)?;
        (counters, log, history)
    } else {
        // A best.safetensors from an earlier run in this directory must not be restored.
        match std::fs::remove_file(&paths.best) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(TrainError::Io { path: paths.best.clone(), source: e });
            }
            _ => {}
        }
        let counters = Counters { step: 0, epoch: 0, best: None, state: fresh_state };
        save_last(session, &paths, &counters)?;
        (counters, MetricsLog::create(&paths.metrics)?, Vec::new())
    };

    let columns: Vec<String> = if config.metrics.is_empty() {
        Vec::new()
    } else {
        config.metrics.iter().map(|m| format!("val_{m}")).collect()
    };
    let mut progress = Progress::new(options.quiet, options.progress, columns);
    if options.resume {
        progress.line(&format!(
            "resuming {} after epoch {} (step {})",
            paths.last.display(),
            counters.epoch,
            counters.step
        ));
    }
    progress.line(&format!(
        "training on {}: {} train / {} validation / {} test samples, batch {batch}, {} steps an epoch, {} ({})",
        data.spec,
        data.train.len,
        data.val.len,
        data.test.len,
        steps_per_epoch,
        config.optimizer,
        config.lr
    ));
    progress.header();

    let mut stop = if counters.state.stopped_early {
        StopReason::EarlyStopped { epoch: counters.epoch }
    } else {
        StopReason::Completed
    };
    let interrupted = || options.interrupt.as_ref().is_some_and(|f| f.load(Ordering::SeqCst));
    while stop == StopReason::Completed && counters.epoch < epochs {
        let epoch = counters.epoch + 1;
        let started = Instant::now();
        let partial = counters.state.partial.take();
        let (skip, mut loss_sum, mut samples) =
            partial.map_or((0, 0.0, 0), |p| (p.batches, p.loss_sum, p.samples));
        progress.start_epoch(epoch, epochs, steps_per_epoch, skip);
        let shuffle = epoch_shuffle_seed(config.seed, epoch);
        for (index, b) in data.train.batches(batch, Some(shuffle))?.enumerate().skip(skip as usize) {
            let step = counters.step + 1;
            let lr = learning_rate(
                &config.schedule,
                config.lr,
                StepPosition { step, epoch, total_steps: epochs * steps_per_epoch },
            );
            let len = b.len as u64;
            let outputs = session
                .run(TRAIN_ENTRY, &ports.train_inputs(b, lr, step)?)
                .map_err(|source| TrainError::Run { entry: TRAIN_ENTRY, source })?;
            let loss = outputs
                .iter()
                .find(|(n, _)| n == "loss")
                .and_then(|(_, t)| t.as_f32())
                .and_then(|v| v.first().copied())
                .ok_or_else(|| TrainError::Model(format!("`{TRAIN_ENTRY}` returned no f32 `loss`")))?;
            if !loss.is_finite() {
                progress.finish_epoch();
                let checkpoint = paths.last.is_file().then(|| (paths.last.clone(), counters.epoch));
                return Err(TrainError::Diverged { step, epoch, loss, lr, checkpoint });
            }
            counters.step = step;
            loss_sum += f64::from(loss) * len as f64;
            samples += len;
            progress.step(step, loss, len);
            if interrupted() {
                progress.finish_epoch();
                counters.state.partial = Some(PartialEpoch { batches: index as u64 + 1, loss_sum, samples });
                save_last(session, &paths, &counters)?;
                progress.line(&format!(
                    "interrupted at step {step} (epoch {epoch}); saved {} — continue with --resume",
                    paths.last.display()
                ));
                let summary = summary(&counters, StopReason::Interrupted { step, epoch }, &monitor, false, history, None, paths);
                return Ok(summary);
            }
        }
        progress.finish_epoch();
        counters.epoch = epoch;
        let train_loss = loss_sum / samples.max(1) as f64;
        let val = if data.val.is_empty() {
            None
        } else {
            Some(score(session, &ports, config, &data.val, EvalSplit::Val, &data.class_names)?)
        };
        let value = monitor.value(train_loss, val.as_ref());
        let improved = monitor.improves(value, counters.best);
        if improved {
            counters.best = Some(value);
            counters.state.best_epoch = epoch;
            counters.state.bad_epochs = 0;
            write_atomic(&paths.best, &params_safetensors(session)?)?;
        } else {
            counters.state.bad_epochs += 1;
        }
        let record = EpochRecord {
            epoch,
            step: counters.step,
            train_loss,
            val_loss: val.as_ref().map(|v| v.loss),
            metrics: val
                .as_ref()
                .map(|v| v.scalars().into_iter().filter(|(k, _)| config.metrics.contains(k)).map(|(k, x)| (format!("val_{k}"), x)).collect())
                .unwrap_or_default(),
            seconds: started.elapsed().as_secs_f64(),
        };
        log.append(&record)?;
        history.push(record);
        plot_curves(&history, &paths.curves)?;
        if monitor.patience.is_some_and(|p| counters.state.bad_epochs >= p) {
            counters.state.stopped_early = true;
            stop = StopReason::EarlyStopped { epoch };
        }
        let due = match config.checkpoint_every {
            0 => true,
            n => epoch % n == 0,
        };
        if due || epoch == epochs || stop != StopReason::Completed {
            save_last(session, &paths, &counters)?;
        }
        let note = if improved { format!("* best {}", monitor.name) } else { String::new() };
        progress.row(history.last().expect("just pushed"), &note);
    }
    if let StopReason::EarlyStopped { epoch } = stop {
        progress.line(&format!(
            "stopped early after epoch {epoch}: {} has not improved for {} epochs",
            monitor.name, counters.state.bad_epochs
        ));
    }

    let restored = monitor.restore_best && counters.state.best_epoch > 0 && paths.best.is_file();
    if restored {
        let bytes = std::fs::read(&paths.best).map_err(|source| TrainError::Io { path: paths.best.clone(), source })?;
        load_params(session, &bytes)?;
        progress.line(&format!(
            "restored the best weights (epoch {}, {} {:.4})",
            counters.state.best_epoch,
            monitor.name,
            counters.best.unwrap_or(f64::NAN)
        ));
    }
    let test = if data.test.is_empty() {
        None
    } else {
        Some(score(session, &ports, config, &data.test, EvalSplit::Test, &data.class_names)?)
    };
    if let Some(report) = &test {
        let mut line = format!("test: loss {:.4}", report.loss);
        for (name, value) in report.scalars() {
            line.push_str(&format!("  {name} {value:.4}"));
        }
        progress.line(&line);
    }
    progress.line(&format!("run saved in {}", paths.dir.display()));
    Ok(summary(&counters, stop, &monitor, restored, history, test, paths))
}

fn summary(
    counters: &Counters,
    stop: StopReason,
    monitor: &Monitor,
    restored_best: bool,
    history: Vec<EpochRecord>,
    test: Option<EvalReport>,
    paths: RunPaths,
) -> TrainSummary {
    TrainSummary {
        stop,
        epochs: counters.epoch,
        steps: counters.step,
        monitor: monitor.name.clone(),
        best_value: counters.best,
        best_epoch: (counters.state.best_epoch > 0).then_some(counters.state.best_epoch),
        restored_best,
        history,
        test,
        paths,
    }
}

/// Saves the session's weights and the counters as `last.ckpt`.
fn save_last(session: &Session, paths: &RunPaths, counters: &Counters) -> Result<(), TrainError> {
    let checkpoint = Checkpoint {
        weights: session.weights().map(|(k, t)| (k.to_string(), t.clone())).collect(),
        step: counters.step,
        epoch: counters.epoch,
        rng_state: counters.state.seed,
        best_metric: counters.best,
        extra: counters.state.to_json()?,
    };
    checkpoint.save_atomic(&paths.last)?;
    Ok(())
}

/// Loads `last.ckpt` into the session and checks that it belongs to this run (`fresh`
/// is the state a new run would start with); reopens the log up to its epoch.
fn resume(
    session: &mut Session,
    paths: &RunPaths,
    fresh: RunState,
) -> Result<(Counters, MetricsLog, Vec<EpochRecord>), TrainError> {
    let path = &paths.last;
    if !path.is_file() {
        return Err(TrainError::Resume(format!(
            "{} does not exist; train without --resume to start a run there",
            path.display()
        )));
    }
    let checkpoint = Checkpoint::load(path)?;
    checkpoint
        .check_against(session.weights().map(|(k, t)| (k.to_string(), t.shape.clone())))
        .map_err(|e| TrainError::Resume(format!("{}: {e}", path.display())))?;
    let state = RunState::from_json(path, &checkpoint.extra)?;
    let differs = |what: &str, then: String, now: String| {
        TrainError::Resume(format!(
            "{} was trained with {what} {then}, this run has {now}; start a new run instead",
            path.display()
        ))
    };
    if state.seed != fresh.seed || checkpoint.rng_state != fresh.seed {
        return Err(differs("seed", state.seed.to_string(), fresh.seed.to_string()));
    }
    if state.batch != fresh.batch {
        return Err(differs("batch size", state.batch.to_string(), fresh.batch.to_string()));
    }
    if state.train_samples != fresh.train_samples || state.normalizer != fresh.normalizer {
        return Err(differs(
            "a train split of",
            format!("{} samples", state.train_samples),
            format!("{} samples (or different data)", fresh.train_samples),
        ));
    }
    if state.monitor != fresh.monitor {
        return Err(differs("early stopping on", state.monitor, fresh.monitor));
    }
    session.load_weights(&checkpoint.weights_safetensors()?)?;
    let (log, history) = MetricsLog::resume(&paths.metrics, checkpoint.epoch)?;
    Ok((
        Counters {
            step: checkpoint.step,
            epoch: checkpoint.epoch,
            best: checkpoint.best_metric,
            state,
        },
        log,
        history,
    ))
}

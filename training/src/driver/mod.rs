//! The training driver: runs a compiled model's `train_step` over a dataset epoch after
//! epoch, evaluates it, logs, checkpoints, stops early and resumes.
//!
//! The artifact follows the entry conventions of
//! [`TrainConfig`](strata_artifact::train_config): `train_step` updates the weights in
//! place and returns the loss, `eval` returns the loss and the prediction. Everything
//! else is here:
//!
//! 1. Load the data ([`DataSource`](crate::DataSource)), view each sample with the
//!    features input's shape, split it by the config's fractions and seed, and fit the
//!    normalization on the train split. The splits stay raw: the compiled entries
//!    normalize their features with statistics held in the model's own buffers, which a
//!    fresh run fills with the fitted ones ([`normalization`]), so they are saved with
//!    the weights and a built executable applies them to raw inputs.
//! 2. For each epoch: shuffle the train split with
//!    [`epoch_shuffle_seed`]`(seed, epoch)`, run
//!    `train_step` on every batch (the last partial one too) with the scheduled learning
//!    rate ([`learning_rate`]) and the 1-based global step, then run `eval` over the
//!    validation split and compute the configured metrics. A section with several
//!    steps runs each step's entry on every batch, in order, with the same step number
//!    (so a GAN's two steps see the same noise, as in the usual alternating update).
//! 3. Log the epoch (`metrics.jsonl`, `curves.svg`), save `last.ckpt`, and save
//!    `best.safetensors` when the monitored value improves (see [`state`] for the run
//!    directory's files); stop early when it has not improved for `patience` epochs.
//! 4. Optionally put the best weights back, then score the test split with the weights
//!    `best.safetensors` holds (the ones the run recommends; the last epoch's too when
//!    they differ), and draw the train section's image grid if it asks for one
//!    ([`images`]).
//!
//! Before it touches the run directory, a run claims it ([`run_directory`]): a lock
//! for one training at a time, no temporary files left by a killed run, and no fresh
//! run over an earlier one without `--overwrite`.
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
//! A checkpoint also holds a [`Fingerprint`](fingerprint) of what it was trained from
//! (the compiled graph, the optimizers, the data, the normalization): `--resume` with a
//! changed model is refused with the parts that changed, instead of continuing a run
//! that can no longer match an uninterrupted one.
//!
//! # Failure
//!
//! A non-finite loss stops the run with [`TrainError::Diverged`], naming the step and
//! epoch; the weights it produced are never saved, so `last.ckpt` stays the last good
//! state (a fresh run writes one for step 0 before its first step). The session is left
//! with the failed step's weights. Ctrl-C (see
//! [`interrupt_on_ctrl_c`]) is checked after every step: the run saves `last.ckpt` and
//! returns [`StopReason::Interrupted`].

mod background_writes;
pub mod state;

pub(crate) mod data;
mod evaluation;
mod fingerprint;
mod images;
mod initial_weights;
mod monitor;
mod normalization;
mod progress;
mod run_directory;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

pub use data::{EVAL_ENTRY, TRAIN_ENTRY};
pub use evaluation::{EvalReport, EvalSplit, Metrics, evaluate};
pub use initial_weights::WeightsReport;
pub use monitor::LATEST_EPOCH;
pub use state::{
    BEST_FILE, LAST_FILE, OPTIMIZER_PREFIX, RunPaths, complete_weights, load_params,
    load_weights_file, merge_params, params_safetensors,
};
pub use strata_artifact::schedule::{StepPosition, learning_rate};

use self::background_writes::BackgroundWrites;
use self::data::{Ports, Splits, load_splits};
use self::evaluation::score;
use self::fingerprint::Fingerprint;
use self::monitor::Monitor;
use self::progress::Progress;
use self::run_directory::Claim;
use self::state::{PartialEpoch, RunState};
use crate::image_grid::ImageGridError;
use crate::{
    Checkpoint, CheckpointError, DataError, EpochRecord, LogError, MetricError, MetricsLog,
    epoch_shuffle_seed, plot_curves,
};
use strata_artifact::WeightsError;
use strata_artifact::train_config::TrainConfig;
use strata_runtime::RunError;
use strata_runtime::session::Session;

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
    #[error("cannot read the weights back from the GPU: {0}")]
    Gpu(#[from] strata_runtime::gpu::GpuError),
    #[error("weights: {0}")]
    Session(#[from] strata_runtime::SessionError),
    #[error(transparent)]
    Image(#[from] ImageGridError),
    /// The artifact does not follow the training entry conventions.
    #[error("this model cannot be trained: {0}")]
    Model(String),
    /// The train settings or the data do not fit the model.
    #[error("{0}")]
    Config(String),
    #[error("`{entry}` failed: {source}")]
    Run { entry: String, source: RunError },
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
    /// Another training holds the run directory's lock.
    #[error(
        "{} is in use by another training{}; wait for it to end, or train into another \
         directory with --run-dir",
        dir.display(),
        holder.map(|pid| format!(" (process {pid})")).unwrap_or_default()
    )]
    RunLocked { dir: PathBuf, holder: Option<u32> },
    /// A fresh run over a directory that holds one, without `overwrite`.
    #[error(
        "{} already holds a run ({files}); continue it with --resume, start over there \
         with --overwrite (its best.safetensors stays until the new run's first epoch \
         replaces it), or train into another directory with --run-dir",
        dir.display()
    )]
    RunExists { dir: PathBuf, files: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn diverged_text(
    step: u64,
    epoch: u64,
    loss: f32,
    lr: f32,
    checkpoint: Option<&(PathBuf, u64)>,
) -> String {
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

/// `test: loss 0.1234  accuracy 0.9700 …  (WEIGHTS)`: the score of the weights the run
/// recommends. Scripts read the line that starts with `test:`; a score of other weights
/// starts otherwise ([`other_test_line`]).
fn test_line(weights: &str, report: &EvalReport) -> String {
    format!("test: {}  ({weights})", scores(report))
}

/// `test, WEIGHTS: loss 0.1234 …`: the test score of weights the run does not recommend.
fn other_test_line(weights: &str, report: &EvalReport) -> String {
    format!("test, {weights}: {}", scores(report))
}

/// `loss 0.1234  accuracy 0.9700 …`.
fn scores(report: &EvalReport) -> String {
    let mut line = format!("loss {:.4}", report.loss);
    for (name, value) in report.scalars() {
        line.push_str(&format!("  {name} {value:.4}"));
    }
    for (name, value) in report.head_scalars() {
        line.push_str(&format!("  {name} {value:.4}"));
    }
    line
}

/// The optimizers in words: `adam (lr 0.001)`, or per step
/// `discriminator: adam (lr 0.0002), generator: adam (lr 0.0002)`.
fn describe_steps(steps: &[strata_artifact::train_config::TrainStep]) -> String {
    let one =
        |s: &strata_artifact::train_config::TrainStep| format!("{} (lr {})", s.optimizer, s.lr);
    match steps {
        [only] => one(only),
        _ => steps
            .iter()
            .map(|s| format!("{}: {}", s.name, one(s)))
            .collect::<Vec<_>>()
            .join(", "),
    }
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
    /// Continue the run in `run_dir` from its `last.ckpt` (the same model, data, seed and
    /// batch size; a run that stopped early stays stopped).
    pub resume: bool,
    /// Start a new run even if `run_dir` holds one (without it, that is an error). The
    /// earlier `best.safetensors` stays until the new run's first epoch replaces it.
    pub overwrite: bool,
    /// Start a new run from these weights (`best.safetensors`, a full weights file or a
    /// checkpoint) instead of the model's initial ones: see [`WeightsReport`].
    pub initial_weights: Option<PathBuf>,
    /// Draw a progress bar (only on a terminal, and never when `quiet`).
    pub progress: bool,
    /// Print nothing.
    pub quiet: bool,
    /// Do not score the test split at the end (a hyper-parameter search's trials).
    pub skip_test: bool,
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
    /// The test split's scores of the weights `best.safetensors` holds, the ones a run
    /// recommends (None if the split is empty or the run was interrupted). The session
    /// still ends with the last epoch's weights unless they were restored.
    pub test: Option<EvalReport>,
    pub paths: RunPaths,
    /// The image grid the train section asked for, once written.
    pub images: Option<PathBuf>,
    /// What [`TrainOptions::initial_weights`] gave the run.
    pub initial_weights: Option<WeightsReport>,
}

/// A flag that Ctrl-C sets, for [`TrainOptions::interrupt`]; a second Ctrl-C before the
/// run stops ends the process at once (exit code 130). The handler is installed once per
/// process (the operating system has one SIGINT disposition); later calls return the
/// same flag, cleared.
pub fn interrupt_on_ctrl_c() -> Result<Arc<AtomicBool>, String> {
    static FLAG: OnceLock<Result<Arc<AtomicBool>, String>> = OnceLock::new();
    let flag = FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let set = Arc::clone(&flag);
        ctrlc::set_handler(move || {
            if set.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        })
        .map(|()| flag)
        .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))
    });
    let flag = flag.clone()?;
    flag.store(false, Ordering::SeqCst);
    Ok(flag)
}

/// The run's counters, as checkpointed.
struct Counters {
    step: u64,
    /// Epochs completed.
    epoch: u64,
    best: Option<f64>,
    state: RunState,
}

/// How an epoch's steps ended.
enum EpochEnd {
    /// Every batch ran: the summed, batch-size-weighted loss (of every step together,
    /// and of each step) and the samples seen.
    Finished {
        loss_sum: f64,
        samples: u64,
        step_loss_sums: Vec<f64>,
        /// Each named term's sum, weighted the same way.
        term_sums: Vec<f64>,
    },
    /// The interrupt flag was set after `step`.
    Interrupted { step: u64 },
}

/// One training run in progress: what [`train`] sets up, and the loop's state.
struct Run<'a> {
    session: &'a mut Session,
    config: &'a TrainConfig,
    options: &'a TrainOptions,
    ports: Ports,
    data: Splits,
    monitor: Monitor,
    paths: RunPaths,
    progress: Progress,
    counters: Counters,
    /// Every epoch's record, resumed ones included, and the open log they go to.
    history: Vec<EpochRecord>,
    log: Option<MetricsLog>,
    batch: usize,
    /// Epochs of the whole run.
    epochs: u64,
    steps_per_epoch: u64,
    initial_weights: Option<WeightsReport>,
    /// `best.safetensors` and `last.ckpt` as epochs end, written while the next trains.
    writes: BackgroundWrites,
}

/// Trains the session's model as `config` says (see the module docs), leaving the
/// trained weights in the session.
pub fn train(
    session: &mut Session,
    config: &TrainConfig,
    options: &TrainOptions,
) -> Result<TrainSummary, TrainError> {
    if options.resume && options.initial_weights.is_some() {
        return Err(TrainError::Config(
            "--weights starts a new run from given weights; --resume continues the run in \
             the run directory: use one of them"
                .into(),
        ));
    }
    let run = Run::start(session, config, options)?;
    let claim = match (options.resume, options.overwrite) {
        (true, _) => Claim::Resume,
        (false, true) => Claim::Overwrite,
        (false, false) => Claim::Fresh,
    };
    let mut written = vec![LAST_FILE, BEST_FILE, "metrics.jsonl", "curves.svg"];
    written.extend(config.images.as_ref().map(|grid| grid.file.as_str()));
    // Held until this function returns, whichever way.
    let _lock = run_directory::claim(&run.paths, claim, &written)?;
    // `run`, and with it any checkpoint write still in flight, ends in there: before the
    // lock does, however it ends.
    train_claimed(run, options)
}

/// [`train`] in a run directory it holds.
fn train_claimed(mut run: Run<'_>, options: &TrainOptions) -> Result<TrainSummary, TrainError> {
    if options.resume {
        run.resume()?;
    } else {
        run.begin()?;
    }
    run.announce();
    run.prepare()?;
    let mut stop = if run.counters.state.stopped_early {
        StopReason::EarlyStopped {
            epoch: run.counters.epoch,
        }
    } else {
        StopReason::Completed
    };
    while stop == StopReason::Completed && run.counters.epoch < run.epochs {
        let epoch = run.counters.epoch + 1;
        let started = Instant::now();
        match run.train_epoch(epoch)? {
            EpochEnd::Interrupted { step } => {
                run.writes.finish()?;
                let stop = StopReason::Interrupted { step, epoch };
                return Ok(run.summary(stop, false, None, None));
            }
            EpochEnd::Finished {
                loss_sum,
                samples,
                step_loss_sums,
                term_sums,
            } => {
                let per_sample = |sum: f64| sum / samples.max(1) as f64;
                let step_losses: Vec<f64> = step_loss_sums.into_iter().map(per_sample).collect();
                let terms: Vec<f64> = term_sums.into_iter().map(per_sample).collect();
                stop = run.end_epoch(epoch, per_sample(loss_sum), &step_losses, &terms, started)?;
            }
        }
    }
    run.finish(stop)
}

impl<'a> Run<'a> {
    /// Loads and splits the data and checks the settings; touches no file.
    fn start(
        session: &'a mut Session,
        config: &'a TrainConfig,
        options: &'a TrainOptions,
    ) -> Result<Run<'a>, TrainError> {
        let ports = Ports::of(session.manifest(), config, true)?;
        let spec = options.data_override.as_deref().unwrap_or(&config.data);
        let data = load_splits(spec, config, &ports)?;
        let batch = usize::try_from(config.batch)
            .ok()
            .filter(|&b| b > 0)
            .ok_or_else(|| {
                TrainError::Config(format!(
                    "batch size {} is not a positive count",
                    config.batch
                ))
            })?;
        let monitor = Monitor::of(config, !data.val.is_empty())?;
        if let Some(name) = config.metrics.iter().find(|m| !m.applies_to(&config.task)) {
            return Err(TrainError::Config(format!(
                "metric `{name}` does not apply to this model's task"
            )));
        }
        // Each named term shows its train and validation means beside the loss.
        let columns = config
            .terms
            .iter()
            .flat_map(|t| [format!("train_{t}"), format!("val_{t}")])
            .chain(config.metrics.iter().map(|m| format!("val_{m}")))
            .chain(
                config
                    .heads
                    .iter()
                    .flat_map(|h| h.metrics.iter().map(|m| format!("val_{}.{m}", h.label))),
            )
            .collect();
        let fingerprint = Fingerprint::of(session.manifest(), config, spec)?;
        let counters = Counters {
            step: 0,
            epoch: 0,
            best: None,
            state: RunState {
                seed: config.seed,
                batch: config.batch,
                train_samples: data.train.len as u64,
                normalizer: data.normalizer.clone(),
                monitor: monitor.name.clone(),
                fingerprint,
                best_epoch: 0,
                bad_epochs: 0,
                stopped_early: false,
                partial: None,
            },
        };
        Ok(Run {
            session,
            config,
            options,
            steps_per_epoch: data.train.batch_count(batch) as u64,
            ports,
            data,
            monitor,
            paths: RunPaths::new(&options.run_dir),
            progress: Progress::new(options.quiet, options.progress, columns),
            counters,
            history: Vec::new(),
            log: None,
            batch,
            epochs: options.epochs_override.unwrap_or(config.epochs),
            initial_weights: None,
            writes: BackgroundWrites::default(),
        })
    }

    /// Starts a fresh run in the claimed directory: the normalization fitted on the train
    /// split (or carried by `--weights`) in the model's buffers, a new log and a
    /// checkpoint of step 0 to fall back to. An earlier run's `best.safetensors`
    /// (`--overwrite`) stays until this run's first epoch replaces it; it is never
    /// restored into this run, whose best epoch is 0 until then.
    fn begin(&mut self) -> Result<(), TrainError> {
        normalization::install(self.session, &self.data.normalizer)?;
        if let Some(path) = &self.options.initial_weights {
            let bytes = std::fs::read(path).map_err(|source| TrainError::Io {
                path: path.clone(),
                source,
            })?;
            let report = initial_weights::load_initial_weights(self.session, &bytes, path)?;
            self.progress.line(&report.to_string());
            if report.has_normalization() {
                self.progress.line(
                    "the features are normalized as the given weights were trained \
                     (not refitted on this data)",
                );
            }
            self.initial_weights = Some(report);
        }
        self.log = Some(MetricsLog::create(&self.paths.metrics)?);
        self.save_last()
    }

    /// Loads `last.ckpt` into the session after checking that it belongs to this run,
    /// and reopens the log up to its epoch.
    fn resume(&mut self) -> Result<(), TrainError> {
        let path = &self.paths.last;
        if path.is_dir() {
            return Err(TrainError::Resume(format!(
                "{} is a directory, not a checkpoint file; move it away to resume",
                path.display()
            )));
        }
        if !path.is_file() {
            return Err(TrainError::Resume(format!(
                "{} does not exist; train without --resume to start a run there",
                path.display()
            )));
        }
        let checkpoint = Checkpoint::load(path)?;
        // Whether the tensors fit, and what changed (a changed model usually changes its
        // tensors too, and the fingerprint says how): both, when both differ.
        let fits = checkpoint.check_against(
            self.session
                .weights()
                .map(|(k, t)| (k.to_string(), t.shape.clone())),
        );
        let state = RunState::from_json(path, &checkpoint.extra)?;
        let fresh = &self.counters.state;
        let changes = state.fingerprint.changes(&fresh.fingerprint);
        if !changes.is_empty() {
            let misfit = fits.err().map(|e| format!(" ({e})")).unwrap_or_default();
            return Err(TrainError::Resume(format!(
                "{} was trained from a different model: {} changed since{misfit}; resume \
                 with the model it was trained from, or start a new run with --overwrite or \
                 --run-dir",
                path.display(),
                changes.join("; ")
            )));
        }
        fits.map_err(|e| TrainError::Resume(format!("{}: {e}", path.display())))?;
        let differs = |what: &str, then: String, now: String| {
            TrainError::Resume(format!(
                "{} was trained with {what} {then}, this run has {now}; start a new run instead",
                path.display()
            ))
        };
        if state.seed != fresh.seed || checkpoint.rng_state != fresh.seed {
            return Err(differs(
                "seed",
                state.seed.to_string(),
                fresh.seed.to_string(),
            ));
        }
        if state.batch != fresh.batch {
            return Err(differs(
                "batch size",
                state.batch.to_string(),
                fresh.batch.to_string(),
            ));
        }
        if state.train_samples != fresh.train_samples || state.normalizer != fresh.normalizer {
            return Err(differs(
                "a train split of",
                format!("{} samples", state.train_samples),
                format!("{} samples (or different data)", fresh.train_samples),
            ));
        }
        if state.monitor != fresh.monitor {
            return Err(differs(
                "early stopping on",
                state.monitor,
                fresh.monitor.clone(),
            ));
        }
        self.session
            .load_weights(&checkpoint.weights_safetensors()?)?;
        let (log, history) = MetricsLog::resume(&self.paths.metrics, checkpoint.epoch)?;
        self.log = Some(log);
        self.history = history;
        self.counters = Counters {
            step: checkpoint.step,
            epoch: checkpoint.epoch,
            best: checkpoint.best_metric,
            state,
        };
        Ok(())
    }

    /// The lines above the table, and its header.
    fn announce(&self) {
        let (data, counters) = (&self.data, &self.counters);
        if self.options.resume {
            self.progress.line(&format!(
                "resuming {} after epoch {} (step {})",
                self.paths.last.display(),
                counters.epoch,
                counters.step
            ));
        }
        self.progress.line(&format!(
            "training on {}: {} train / {} validation / {} test samples, batch {}, \
             {} steps an epoch, {}",
            data.spec,
            data.train.len,
            data.val.len,
            data.test.len,
            self.batch,
            self.steps_per_epoch,
            describe_steps(&self.config.steps)
        ));
        self.progress.header();
    }

    /// Compiles the update steps' entries for the batch size before the first epoch's
    /// clock starts (as the peers' benchmarks leave their compilation out of a step's
    /// time): an epoch's seconds are its steps' and its evaluation's.
    fn prepare(&mut self) -> Result<(), TrainError> {
        for update in &self.config.steps {
            self.session
                .prepare(&update.entry, self.batch as u64)
                .map_err(|source| TrainError::Run {
                    entry: update.entry.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    fn interrupted(&self) -> bool {
        self.options
            .interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::SeqCst))
    }

    /// Runs the training step (each of the section's steps in turn) on every batch of
    /// `epoch` (those an interrupted run already took are skipped), stopping at a
    /// non-finite loss or an interrupt.
    fn train_epoch(&mut self, epoch: u64) -> Result<EpochEnd, TrainError> {
        let partial = self.counters.state.partial.take();
        let steps = &self.config.steps;
        let (skip, mut loss_sum, mut samples, mut step_sums, mut term_sums) = match partial {
            Some(p) => (
                p.batches,
                p.loss_sum,
                p.samples,
                p.step_loss_sums,
                p.term_sums,
            ),
            None => (0, 0.0, 0, Vec::new(), Vec::new()),
        };
        step_sums.resize(steps.len(), 0.0);
        term_sums.resize(self.ports.terms.len(), 0.0);
        self.progress
            .start_epoch(epoch, self.epochs, self.steps_per_epoch, skip);
        let shuffle = epoch_shuffle_seed(self.config.seed, epoch);
        let batches = self.data.train.batches(self.batch, Some(shuffle))?;
        for (index, batch) in batches.enumerate().skip(skip as usize) {
            let step = self.counters.step + 1;
            let at = StepPosition {
                step,
                epoch,
                total_steps: self.epochs * self.steps_per_epoch,
            };
            let len = batch.len as u64;
            let mut batch_loss = 0.0f32;
            for (k, update) in steps.iter().enumerate() {
                let lr = learning_rate(&self.config.schedule, update.lr, at);
                let inputs = self
                    .ports
                    .train_inputs(batch.clone(), &update.entry, lr, step)?;
                let outputs =
                    self.session
                        .run(&update.entry, &inputs)
                        .map_err(|source| TrainError::Run {
                            entry: update.entry.clone(),
                            source,
                        })?;
                let loss = outputs
                    .iter()
                    .find(|(n, _)| n == "loss")
                    .and_then(|(_, t)| t.as_f32())
                    .and_then(|v| v.first().copied())
                    .ok_or_else(|| {
                        TrainError::Model(format!("`{}` returned no f32 `loss`", update.entry))
                    })?;
                if !loss.is_finite() {
                    self.progress.finish_epoch();
                    let checkpoint = self
                        .paths
                        .last
                        .is_file()
                        .then(|| (self.paths.last.clone(), self.counters.epoch));
                    return Err(TrainError::Diverged {
                        step,
                        epoch,
                        loss,
                        lr,
                        checkpoint,
                    });
                }
                step_sums[k] += f64::from(loss) * len as f64;
                batch_loss += loss;
                // The first update's entry outputs the terms (before any update).
                if k == 0 {
                    for (sum, (_, output)) in term_sums.iter_mut().zip(&self.ports.terms) {
                        let value = outputs
                            .iter()
                            .find(|(n, _)| n == output)
                            .and_then(|(_, t)| t.as_f32())
                            .and_then(|v| v.first().copied())
                            .ok_or_else(|| {
                                TrainError::Model(format!(
                                    "`{}` returned no f32 `{output}`",
                                    update.entry
                                ))
                            })?;
                        *sum += f64::from(value) * len as f64;
                    }
                }
            }
            self.counters.step = step;
            loss_sum += f64::from(batch_loss) * len as f64;
            samples += len;
            self.progress.step(step, batch_loss, len);
            if self.interrupted() {
                self.progress.finish_epoch();
                self.counters.state.partial = Some(PartialEpoch {
                    batches: index as u64 + 1,
                    loss_sum,
                    samples,
                    step_loss_sums: step_sums,
                    term_sums,
                });
                self.save_last()?;
                return Ok(EpochEnd::Interrupted { step });
            }
        }
        self.progress.finish_epoch();
        Ok(EpochEnd::Finished {
            loss_sum,
            samples,
            step_loss_sums: step_sums,
            term_sums,
        })
    }

    /// Validates after `epoch`, keeps the best weights, logs, checkpoints, and says
    /// whether to stop early.
    fn end_epoch(
        &mut self,
        epoch: u64,
        train_loss: f64,
        step_losses: &[f64],
        terms: &[f64],
        started: Instant,
    ) -> Result<StopReason, TrainError> {
        self.counters.epoch = epoch;
        let val = if self.data.val.is_empty() {
            None
        } else {
            Some(self.score_split(EvalSplit::Val)?)
        };
        let value = self.monitor.value(epoch, train_loss, val.as_ref());
        let improved = self.monitor.improves(value, self.counters.best);
        let state = &mut self.counters.state;
        if improved {
            self.counters.best = Some(value);
            state.best_epoch = epoch;
            state.bad_epochs = 0;
            let best = params_safetensors(self.session)?;
            self.writes.write(self.paths.best.clone(), best)?;
        } else {
            state.bad_epochs += 1;
        }
        let mut metrics: std::collections::BTreeMap<String, f64> = val
            .as_ref()
            .map(|v| {
                v.scalars()
                    .into_iter()
                    .filter(|(k, _)| self.config.metrics.contains(k))
                    .map(|(k, x)| (format!("val_{k}"), x))
                    .collect()
            })
            .unwrap_or_default();
        for (name, value) in val.iter().flat_map(|v| v.head_scalars()) {
            metrics.insert(format!("val_{name}"), value);
        }
        // With several steps, each one's loss too (the losses above are their sum).
        if self.config.steps.len() > 1 {
            for (update, loss) in self.config.steps.iter().zip(step_losses) {
                metrics.insert(format!("train_{}_loss", update.name), *loss);
            }
            for (name, loss) in val.iter().flat_map(|v| &v.step_losses) {
                metrics.insert(format!("val_{name}_loss"), *loss);
            }
        }
        // Each named term, on the train split (as trained on) and the validation split.
        for ((name, _), value) in self.ports.terms.iter().zip(terms) {
            metrics.insert(format!("train_{name}"), *value);
        }
        for (name, value) in val.iter().flat_map(|v| &v.terms) {
            metrics.insert(format!("val_{name}"), *value);
        }
        let record = EpochRecord {
            epoch,
            step: self.counters.step,
            train_loss,
            val_loss: val.as_ref().map(|v| v.loss),
            metrics,
            seconds: started.elapsed().as_secs_f64(),
        };
        if let Some(log) = &mut self.log {
            log.append(&record)?;
        }
        let note = if improved && self.monitor.name != monitor::LATEST_EPOCH {
            format!("* best {}", self.monitor.name)
        } else {
            String::new()
        };
        self.progress.row(&record, &note);
        self.history.push(record);
        plot_curves(&self.history, &self.paths.curves)?;

        let state = &mut self.counters.state;
        let stop = if self.monitor.patience.is_some_and(|p| state.bad_epochs >= p) {
            state.stopped_early = true;
            StopReason::EarlyStopped { epoch }
        } else {
            StopReason::Completed
        };
        let checkpoint = self.checkpoint()?.to_bytes()?;
        self.writes
            .write(self.paths.last.clone(), checkpoint.clone())?;
        // `checkpoint_every = N` also keeps every Nth epoch's checkpoint.
        let every = self.config.checkpoint_every;
        if every > 0 && epoch.is_multiple_of(every) {
            self.writes.write(self.paths.snapshot(epoch), checkpoint)?;
        }
        Ok(stop)
    }

    /// Puts the best weights back if asked to, scores the test split, and sums up.
    fn finish(mut self, stop: StopReason) -> Result<TrainSummary, TrainError> {
        // `best.safetensors` is read below, and the run is done when its files are.
        self.writes.finish()?;
        if let StopReason::EarlyStopped { epoch } = stop {
            self.progress.line(&format!(
                "stopped early after epoch {epoch}: {} has not improved for {} epochs",
                self.monitor.name, self.counters.state.bad_epochs
            ));
        }
        let restored = self.monitor.restore_best
            && self.counters.state.best_epoch > 0
            && self.paths.best.is_file();
        if restored {
            let bytes = std::fs::read(&self.paths.best).map_err(|source| TrainError::Io {
                path: self.paths.best.clone(),
                source,
            })?;
            load_params(self.session, &bytes)?;
            self.progress.line(&format!(
                "restored the best weights (epoch {}, {} {:.4})",
                self.counters.state.best_epoch,
                self.monitor.name,
                self.counters.best.unwrap_or(f64::NAN)
            ));
        }
        let test = if self.data.test.is_empty() || self.options.skip_test {
            None
        } else {
            Some(self.score_test(restored)?)
        };
        let images = match &self.config.images {
            None => None,
            Some(grid) => {
                let path = images::write_image_grid(
                    self.session,
                    self.config,
                    grid,
                    &self.data,
                    self.counters.step,
                    &self.paths.dir,
                )?;
                self.progress.line(&format!("images: {}", path.display()));
                Some(path)
            }
        };
        self.progress
            .line(&format!("run saved in {}", self.paths.dir.display()));
        Ok(self.summary(stop, restored, test, images))
    }

    /// Scores the test split with the weights `best.safetensors` holds, the ones a run
    /// recommends, and prints it; when the session ends with other weights (the last
    /// epoch was not the best and they were not restored), prints their score first,
    /// then scores the best ones and puts the last ones back.
    fn score_test(&mut self, restored: bool) -> Result<EvalReport, TrainError> {
        let best_epoch = self.counters.state.best_epoch;
        let holds_best = restored || best_epoch == 0 || best_epoch == self.counters.epoch;
        if holds_best || !self.paths.best.is_file() {
            let report = self.score_split(EvalSplit::Test)?;
            let weights = if self.monitor.name == monitor::LATEST_EPOCH {
                format!("latest epoch {best_epoch}, {}", self.paths.best.display())
            } else if best_epoch > 0 && holds_best {
                format!("best weights, epoch {best_epoch}")
            } else {
                format!("epoch {}", self.counters.epoch)
            };
            self.progress.line(&test_line(&weights, &report));
            return Ok(report);
        }
        let last = self.score_split(EvalSplit::Test)?;
        self.progress.line(&other_test_line(
            &format!("last epoch {}, not saved as best", self.counters.epoch),
            &last,
        ));
        let final_weights = self.session.save_weights()?;
        let best = std::fs::read(&self.paths.best).map_err(|source| TrainError::Io {
            path: self.paths.best.clone(),
            source,
        })?;
        load_params(self.session, &best)?;
        let report = self.score_split(EvalSplit::Test);
        self.session.load_weights(&final_weights)?;
        let report = report?;
        self.progress.line(&test_line(
            &format!(
                "best weights, epoch {best_epoch}, {}",
                self.paths.best.display()
            ),
            &report,
        ));
        Ok(report)
    }

    /// Scores the session's weights on the validation or the test split.
    fn score_split(&mut self, split: EvalSplit) -> Result<EvalReport, TrainError> {
        let data = match split {
            EvalSplit::Val => &self.data.val,
            EvalSplit::Test | EvalSplit::All => &self.data.test,
        };
        score(
            self.session,
            &self.ports,
            self.config,
            data,
            split,
            &self.data.class_names,
        )
    }

    fn summary(
        self,
        stop: StopReason,
        restored_best: bool,
        test: Option<EvalReport>,
        images: Option<PathBuf>,
    ) -> TrainSummary {
        let counters = &self.counters;
        TrainSummary {
            stop,
            epochs: counters.epoch,
            steps: counters.step,
            monitor: self.monitor.name.clone(),
            best_value: counters.best,
            best_epoch: (counters.state.best_epoch > 0).then_some(counters.state.best_epoch),
            restored_best,
            history: self.history,
            test,
            paths: self.paths,
            images,
            initial_weights: self.initial_weights,
        }
    }

    /// Saves the session's weights and the counters as `last.ckpt`.
    fn save_last(&mut self) -> Result<(), TrainError> {
        // After the epochs' writes, which would otherwise replace this one.
        self.writes.finish()?;
        self.checkpoint()?.save_atomic(&self.paths.last)?;
        Ok(())
    }

    /// The session's weights and the counters as a checkpoint.
    fn checkpoint(&self) -> Result<Checkpoint, TrainError> {
        // A GPU session reads its weights back here: an error, not a panic in weights().
        self.session.sync_weights()?;
        let counters = &self.counters;
        Ok(Checkpoint {
            weights: self
                .session
                .weights()
                .map(|(k, t)| (k.to_string(), t.clone()))
                .collect(),
            step: counters.step,
            epoch: counters.epoch,
            rng_state: counters.state.seed,
            best_metric: counters.best,
            extra: counters.state.to_json()?,
        })
    }
}

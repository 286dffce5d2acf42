//! Running trials: each rung of a trial is a `strata train` process of its own with the
//! trial's `--set` values, in the trial's own run directory, `jobs` at a time.
//!
//! A process per trial keeps trials apart (a diverging or crashing trial cannot take the
//! sweep down, and each has its own thread count) and makes a killed sweep resumable
//! with the machinery `train` already has: a trial that was running resumes its run
//! directory's `last.ckpt` and ends bitwise as if it had never stopped.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strata_training::driver::state::RunPaths;
use strata_training::log::{EpochRecord, read_log};

use super::record::{Status, TrialRecord};
use super::space::Config;

/// One rung of one trial to run.
#[derive(Clone, Debug)]
pub struct Job {
    pub trial: usize,
    pub rung: usize,
    /// Epochs to have trained in all at the end.
    pub epochs: u64,
    pub config: Config,
}

/// How to start a trial's training process.
pub struct Launcher {
    /// The `strata` binary.
    pub program: PathBuf,
    /// `train FILE` and the arguments every trial shares.
    pub base: Vec<OsString>,
    pub sweep_dir: PathBuf,
    /// How the sweep's metric is read from a trial's log.
    pub metric: MetricKey,
}

impl Launcher {
    /// A trial's run directory: `trial-007`.
    pub fn trial_dir(&self, trial: usize) -> PathBuf {
        self.sweep_dir.join(format!("trial-{trial:03}"))
    }

    fn spawn(&self, job: &Job) -> std::io::Result<Child> {
        let dir = self.trial_dir(job.trial);
        std::fs::create_dir_all(&dir)?;
        let paths = RunPaths::new(&dir);
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.base);
        for (k, v) in &job.config {
            cmd.arg("--set").arg(format!("{k}={v}"));
        }
        cmd.arg("--run-dir").arg(&dir);
        cmd.arg("--epochs").arg(job.epochs.to_string());
        // A later rung, or a trial a killed sweep left part-way, continues its run.
        if paths.last.is_file() {
            cmd.arg("--resume");
        } else {
            cmd.arg("--overwrite");
        }
        let log = std::fs::File::create(dir.join(format!("train-rung{}.log", job.rung)))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut cmd);
        cmd.spawn()
    }

    /// Runs `jobs` with at most `parallel` processes at once, calling `done` with each
    /// result as it ends (in the order they end).
    pub fn run_all(
        &self,
        jobs: &[Job],
        parallel: usize,
        mut done: impl FnMut(TrialRecord) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut pending = jobs.iter();
        let mut running: Vec<(Job, Child, Instant)> = Vec::new();
        loop {
            while running.len() < parallel.max(1) {
                let Some(job) = pending.next() else { break };
                let child = self.spawn(job).map_err(|e| {
                    format!(
                        "cannot start trial {} ({}): {e}",
                        job.trial,
                        self.program.display()
                    )
                })?;
                running.push((job.clone(), child, Instant::now()));
            }
            if running.is_empty() {
                return Ok(());
            }
            let mut finished = None;
            for (i, (_, child, _)) in running.iter_mut().enumerate() {
                if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                    finished = Some((i, status.success()));
                    break;
                }
            }
            match finished {
                Some((i, success)) => {
                    let (job, _, started) = running.swap_remove(i);
                    done(self.result(&job, success, started.elapsed().as_secs_f64()))?;
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// What a finished trial process left: its status and best metric value.
    fn result(&self, job: &Job, success: bool, seconds: f64) -> TrialRecord {
        let dir = self.trial_dir(job.trial);
        let history = read_log(&RunPaths::new(&dir).metrics).unwrap_or_default();
        let (value, best_epoch) = match self.metric.best(&history) {
            Some((v, e)) => (Some(v), Some(e)),
            None => (None, None),
        };
        let trained = history.last().map_or(0, |r| r.epoch);
        let (status, message) = if !success {
            (Status::Failed, Some(last_error(&dir, job.rung)))
        } else if value.is_none() {
            (
                Status::Failed,
                Some(format!("no `{}` in its log", self.metric.name)),
            )
        } else if trained < job.epochs {
            (Status::EarlyStopped, None)
        } else {
            (Status::Done, None)
        };
        TrialRecord {
            trial: job.trial,
            rung: job.rung,
            epochs: trained,
            config: job.config.iter().cloned().collect(),
            status,
            value,
            best_epoch,
            seconds,
            message,
        }
    }
}

/// The last `error:` line a trial's training printed (or its last line).
fn last_error(dir: &Path, rung: usize) -> String {
    let text =
        std::fs::read_to_string(dir.join(format!("train-rung{rung}.log"))).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines
        .iter()
        .rev()
        .find(|l| l.starts_with("error"))
        .or(lines.last())
        .map_or("the training process failed".to_string(), |l| l.to_string())
}

/// A trial's training process is killed with the sweep, so a killed sweep leaves no
/// training running that would hold a trial's run directory when the sweep resumes.
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: between fork and exec only async-signal-safe calls are made: prctl and
    // getppid, which touch no memory of the parent's.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died before prctl took effect.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}

/// The metric a sweep ranks trials by, as named on the command line (`val.accuracy`,
/// `val.loss`, `train.loss`), and where a log line holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricKey {
    pub name: String,
    /// Larger is better (accuracy, F1, AUC) or smaller (losses, MAE, MSE).
    pub maximize: bool,
}

impl MetricKey {
    pub fn parse(name: &str) -> Result<MetricKey, String> {
        Ok(MetricKey {
            name: name.to_string(),
            maximize: strata_compiler::sweep::space::metric_direction(name)?,
        })
    }

    fn value(&self, r: &EpochRecord) -> Option<f64> {
        match self.name.as_str() {
            "train.loss" => Some(r.train_loss),
            "val.loss" => r.val_loss,
            other => r.metrics.get(&other.replacen('.', "_", 1)).copied(),
        }
        .filter(|v| v.is_finite())
    }

    /// The best value over a log and its epoch (the first epoch on ties).
    pub fn best(&self, history: &[EpochRecord]) -> Option<(f64, u64)> {
        let mut best: Option<(f64, u64)> = None;
        for r in history {
            if let Some(v) = self.value(r)
                && best.is_none_or(|(b, _)| self.better(v, b))
            {
                best = Some((v, r.epoch));
            }
        }
        best
    }

    /// Whether `a` beats `b`.
    pub fn better(&self, a: f64, b: f64) -> bool {
        if self.maximize { a > b } else { a < b }
    }

    /// Orders values best first; no value comes last, equal values tie.
    pub fn order(&self, a: Option<f64>, b: Option<f64>) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        match (a, b) {
            (Some(x), Some(y)) if self.better(x, y) => Ordering::Less,
            (Some(x), Some(y)) if self.better(y, x) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            _ => Ordering::Equal,
        }
    }
}

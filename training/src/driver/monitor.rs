//! What picks the best epoch and decides to stop early: the monitored value (`val.loss`,
//! `val.<metric>`, or `train.loss` without a validation split), its direction, and the
//! patience of [`EarlyStop`](strata_artifact::train_config::EarlyStop). A section with
//! several steps (a GAN) and no `early_stop` monitors the epoch itself
//! ([`LATEST_EPOCH`]): its `best.safetensors` is the latest epoch's.

use super::TrainError;
use super::evaluation::EvalReport;
use strata_artifact::Metric;
use strata_artifact::train_config::TrainConfig;

/// What picks the best epoch and stops early.
pub(super) struct Monitor {
    /// `val.loss`, `val.<metric>` or `train.loss`.
    pub name: String,
    maximize: bool,
    min_delta: f64,
    /// Stop after this many epochs without improvement (None: never).
    pub patience: Option<u64>,
    pub restore_best: bool,
}

/// The monitor of a section with several steps and no `early_stop`: adversarial losses
/// (a GAN's) do not say which epoch is best, so the latest epoch is.
pub const LATEST_EPOCH: &str = "epoch";

impl Monitor {
    pub fn of(config: &TrainConfig, has_val: bool) -> Result<Monitor, TrainError> {
        if config.early_stop.is_none() && config.steps.len() > 1 {
            return Ok(Monitor {
                name: LATEST_EPOCH.into(),
                maximize: true,
                min_delta: 0.0,
                patience: None,
                restore_best: false,
            });
        }
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
        if metric != "loss"
            && !Metric::from_name(metric).is_some_and(|m| m.applies_to(&config.task))
        {
            return Err(TrainError::Config(format!(
                "early stopping watches `{}`, which this {} model does not compute",
                es.monitor,
                config.task.describe()
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
            maximize: Metric::from_name(metric).is_some_and(Metric::maximize),
            min_delta: es.min_delta.abs(),
            patience: Some(es.patience.max(1)),
            restore_best: es.restore_best,
        })
    }

    /// The monitored value of `epoch` (NaN where undefined).
    pub fn value(&self, epoch: u64, train_loss: f64, val: Option<&EvalReport>) -> f64 {
        match (self.name.as_str(), val) {
            (LATEST_EPOCH, _) => epoch as f64,
            ("train.loss", _) => train_loss,
            ("val.loss", Some(v)) => v.loss,
            (name, Some(v)) => Metric::from_name(name.trim_start_matches("val."))
                .and_then(|m| v.metrics.value(m))
                .unwrap_or(f64::NAN),
            (_, None) => f64::NAN,
        }
    }

    pub fn improves(&self, value: f64, best: Option<f64>) -> bool {
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

//! What a run shows while it trains: a progress bar on stderr (epoch, step, loss,
//! samples per second, time left in the epoch) and a table on stdout with one row per
//! epoch. The bar is drawn only on a terminal; `quiet` silences both.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::EpochRecord;

pub(super) struct Progress {
    quiet: bool,
    /// Whether to draw a bar at all (a terminal, not quiet, asked for).
    bar_enabled: bool,
    bar: Option<ProgressBar>,
    /// The metric columns of the table, in order (log keys, e.g. `val_accuracy`).
    columns: Vec<String>,
    epoch_start: Instant,
    epoch_samples: u64,
}

impl Progress {
    pub fn new(quiet: bool, bar: bool, columns: Vec<String>) -> Progress {
        Progress {
            quiet,
            bar_enabled: bar && !quiet && std::io::stderr().is_terminal(),
            bar: None,
            columns,
            epoch_start: Instant::now(),
            epoch_samples: 0,
        }
    }

    /// A line of text on stdout (above the bar, if one is drawn). A closed stdout (the
    /// run piped into `head`) does not stop training.
    pub fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        let print = || {
            let _ = writeln!(std::io::stdout().lock(), "{text}");
        };
        match &self.bar {
            Some(bar) => bar.suspend(print),
            None => print(),
        }
    }

    /// The table's header.
    pub fn header(&self) {
        let mut head = format!("{:>5}  {:>10}  {:>10}", "epoch", "train loss", "val loss");
        for c in &self.columns {
            head.push_str(&format!("  {:>w$}", column_head(c), w = column_width(c)));
        }
        head.push_str(&format!("  {:>7}", "time"));
        self.line(&head);
    }

    /// Starts the bar of `epoch` (of `epochs`), `steps` long, `done` steps already done.
    pub fn start_epoch(&mut self, epoch: u64, epochs: u64, steps: u64, done: u64) {
        self.epoch_start = Instant::now();
        self.epoch_samples = 0;
        if !self.bar_enabled {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(steps), ProgressDrawTarget::stderr());
        let style =
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}")
                .map(|s| s.progress_chars("=> "));
        if let Ok(style) = style {
            bar.set_style(style);
        }
        bar.set_prefix(format!("{epoch}/{epochs}"));
        bar.set_position(done);
        bar.enable_steady_tick(Duration::from_millis(200));
        self.bar = Some(bar);
    }

    /// One step done: its loss and how many samples it took.
    pub fn step(&mut self, step: u64, loss: f32, samples: u64) {
        self.epoch_samples += samples;
        if let Some(bar) = &self.bar {
            let seconds = self.epoch_start.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "step {step} loss {loss:.4} {:.0} samples/s",
                self.epoch_samples as f64 / seconds
            ));
            bar.inc(1);
        }
    }

    /// Clears the bar (before validation output or at the end of an epoch).
    pub fn finish_epoch(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    /// Prints the table row of an epoch.
    pub fn row(&self, record: &EpochRecord, note: &str) {
        self.line(&self.row_text(record, note));
    }

    /// The table row of an epoch.
    fn row_text(&self, record: &EpochRecord, note: &str) -> String {
        // "-" is a value not measured; NaN and infinities show as themselves.
        let number = |v: f64| {
            if v.is_finite() {
                format!("{v:.4}")
            } else {
                format!("{v}")
            }
        };
        let mut row = format!(
            "{:>5}  {:>10}  {:>10}",
            record.epoch,
            number(record.train_loss),
            record.val_loss.map_or("-".to_string(), number)
        );
        for c in &self.columns {
            row.push_str(&format!(
                "  {:>w$}",
                record
                    .metrics
                    .get(c)
                    .map_or("-".to_string(), |v| number(*v)),
                w = column_width(c)
            ));
        }
        row.push_str(&format!("  {:>6.2}s", record.seconds));
        if !note.is_empty() {
            row.push_str("  ");
            row.push_str(note);
        }
        row
    }
}

/// A column's head: a validation metric by its name (`accuracy`), a term's column by
/// its split and name (`train recon`, `val recon`).
fn column_head(column: &str) -> String {
    match column.strip_prefix("val_") {
        Some(metric) if strata_artifact::Metric::from_name(metric).is_some() => metric.into(),
        _ => column.replacen('_', " ", 1),
    }
}

fn column_width(column: &str) -> usize {
    column_head(column).len().max(9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn term_columns_say_their_split_and_metric_columns_their_name() {
        assert_eq!(column_head("val_accuracy"), "accuracy");
        assert_eq!(column_head("train_kl"), "train kl");
        assert_eq!(column_head("val_kl"), "val kl");
        // A long term's column is as wide as its head.
        assert_eq!(
            column_width("train_reconstruction"),
            "train reconstruction".len()
        );
        let progress = Progress::new(
            true,
            false,
            vec!["train_reconstruction".into(), "val_accuracy".into()],
        );
        let record = EpochRecord {
            epoch: 1,
            step: 10,
            train_loss: 1.0,
            val_loss: None,
            metrics: [("train_reconstruction".to_string(), 0.25)].into(),
            seconds: 0.5,
        };
        let row = progress.row_text(&record, "");
        assert!(row.contains(&format!("  {:>20}", "0.2500")), "{row}");
    }

    #[test]
    fn a_nan_loss_is_shown_as_nan_and_a_missing_one_as_a_dash() {
        let progress = Progress::new(true, false, vec!["accuracy".into()]);
        let record = |val_loss| EpochRecord {
            epoch: 3,
            step: 30,
            train_loss: f64::NAN,
            val_loss,
            metrics: Default::default(),
            seconds: 0.5,
        };
        let row = progress.row_text(&record(Some(f64::NAN)), "");
        assert_eq!(row.matches("NaN").count(), 2, "{row}");
        let row = progress.row_text(&record(None), "");
        assert_eq!(row.matches("NaN").count(), 1, "{row}");
        assert!(row.contains(" - "), "{row}");
    }
}

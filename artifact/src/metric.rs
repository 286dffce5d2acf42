//! The metrics a train section may ask for (`metrics = [accuracy, f1]`): their names,
//! which tasks they apply to, and which direction is better.
//!
//! This is the one list of metrics. The compiler checks a section's names against it,
//! the manifest carries them by name, and the training driver computes each one
//! (`strata_training::driver::evaluation`). Adding a metric means a variant here and its
//! computation there.

use crate::train_config::Task;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One evaluation metric, named in model files and logs by [`Metric::name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// The share of samples (or positions) whose top class is the label.
    Accuracy,
    /// Macro-averaged precision over the classes present.
    Precision,
    /// Macro-averaged recall over the classes present.
    Recall,
    /// Macro-averaged F1.
    F1,
    /// Area under the ROC curve (one-vs-rest mean for several classes).
    Auc,
    /// The share of sequences whose every position is right.
    SequenceAccuracy,
    /// Mean absolute error.
    Mae,
    /// Mean squared error.
    Mse,
}

impl Metric {
    /// Every metric, in the order messages list them.
    pub const ALL: [Metric; 8] = [
        Metric::Accuracy,
        Metric::Precision,
        Metric::Recall,
        Metric::F1,
        Metric::Auc,
        Metric::SequenceAccuracy,
        Metric::Mae,
        Metric::Mse,
    ];

    /// The name a model file, the metrics log and `val.<name>` use.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::Precision => "precision",
            Metric::Recall => "recall",
            Metric::F1 => "f1",
            Metric::Auc => "auc",
            Metric::SequenceAccuracy => "sequence_accuracy",
            Metric::Mae => "mae",
            Metric::Mse => "mse",
        }
    }

    /// The metric called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether larger values are better (scores) rather than smaller (errors).
    pub fn maximize(self) -> bool {
        !matches!(self, Metric::Mae | Metric::Mse)
    }

    /// Whether a model of `task` can report this metric.
    pub fn applies_to(self, task: &Task) -> bool {
        match task {
            Task::Classification { .. } => !matches!(self, Metric::Mae | Metric::Mse),
            Task::Regression { .. } => matches!(self, Metric::Mae | Metric::Mse),
            Task::Unlabelled { reconstruction } => {
                *reconstruction && matches!(self, Metric::Mae | Metric::Mse)
            }
        }
    }

    /// Every metric's name, comma-separated, for messages.
    pub fn names_list() -> String {
        let names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        names.join(", ")
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for m in Metric::ALL {
            assert_eq!(Metric::from_name(m.name()), Some(m));
            assert_eq!(
                serde_json::to_string(&m).unwrap(),
                format!("\"{}\"", m.name())
            );
        }
        assert_eq!(Metric::from_name("top5"), None);
    }

    #[test]
    fn errors_are_minimized_and_apply_to_regression_only() {
        let regression = Task::Regression { width: 1 };
        let classification = Task::Classification { classes: 3 };
        assert!(!Metric::Mse.maximize() && Metric::F1.maximize());
        assert!(Metric::Mae.applies_to(&regression) && !Metric::Mae.applies_to(&classification));
        assert!(Metric::Auc.applies_to(&classification) && !Metric::Auc.applies_to(&regression));
        let label_free = Task::Unlabelled {
            reconstruction: false,
        };
        assert!(Metric::ALL.iter().all(|m| !m.applies_to(&label_free)));
    }
}

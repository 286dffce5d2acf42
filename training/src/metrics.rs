//! Evaluation metrics for classification and regression, computed on the host in `f64`.
//!
//! Class predictions come from scores shaped `[n, classes]` (logits or probabilities,
//! row-major) by [`argmax_rows`] (ties go to the lowest class index; NaN scores never
//! win), or from a single score per sample by [`threshold_scores`]. Targets are class
//! indices in `0..classes`.
//!
//! # Conventions
//!
//! - A ratio whose denominator is 0 is defined as 0: the precision of a class never
//!   predicted, the recall of a class absent from the targets, and F1 when precision
//!   and recall are both 0. (scikit-learn's `zero_division=0`.)
//! - Macro averages are taken over the classes that occur in the targets or in the
//!   predictions, as scikit-learn does when no label list is given: a class that the
//!   dataset has but this split never mentions does not drag the average down.
//! - AUC-ROC is the probability that a random positive scores above a random negative,
//!   ties counting one half: the Mann-Whitney U statistic with average ranks for tied
//!   scores, which equals the area under the ROC curve drawn with trapezoids across
//!   ties (Hanley & McNeil 1982). It is undefined when only one class is present.
//!   The multi-class version is the unweighted mean of one-vs-rest AUCs over the
//!   classes for which it is defined.

use super::error::MetricError;
use strata_artifact::tensor::argmax;

fn check_len(what: &'static str, expected: usize, found: usize) -> Result<(), MetricError> {
    if expected == found {
        Ok(())
    } else {
        Err(MetricError::LengthMismatch {
            what,
            expected,
            found,
        })
    }
}

/// The number of rows of `[n, classes]` scores.
fn rows(scores: &[f32], classes: usize) -> Result<usize, MetricError> {
    if classes == 0 {
        return Err(MetricError::NoClasses);
    }
    let n = scores.len() / classes;
    check_len("scores (a whole number of rows)", n * classes, scores.len())?;
    Ok(n)
}

fn check_targets(targets: &[i32], classes: usize) -> Result<(), MetricError> {
    match targets
        .iter()
        .enumerate()
        .find(|&(_, &t)| t < 0 || t as usize >= classes)
    {
        Some((index, &value)) => Err(MetricError::ClassOutOfRange {
            index,
            value,
            classes,
        }),
        None => Ok(()),
    }
}

/// The class with the highest score in each row of `[n, classes]` scores. Ties go to
/// the lowest index; a NaN never beats a number (a row of NaNs predicts class 0).
pub fn argmax_rows(scores: &[f32], classes: usize) -> Result<Vec<i32>, MetricError> {
    rows(scores, classes)?;
    Ok(scores
        .chunks_exact(classes)
        .map(|row| argmax(row) as i32)
        .collect())
}

/// Row-wise softmax of `[n, classes]` logits (max-subtracted, summed in f64).
pub fn softmax_rows(logits: &[f32], classes: usize) -> Result<Vec<f32>, MetricError> {
    rows(logits, classes)?;
    let mut out = Vec::with_capacity(logits.len());
    for row in logits.chunks_exact(classes) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f64> = row.iter().map(|&x| f64::from(x - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        out.extend(exps.iter().map(|&e| (e / sum) as f32));
    }
    Ok(out)
}

/// Binary class predictions from one score per sample: 1 where `score > threshold`
/// (use 0 for logits, 0.5 for probabilities), else 0.
pub fn threshold_scores(scores: &[f32], threshold: f32) -> Vec<i32> {
    scores.iter().map(|&s| i32::from(s > threshold)).collect()
}

/// The fraction of predictions equal to their target.
pub fn accuracy(predicted: &[i32], targets: &[i32]) -> Result<f64, MetricError> {
    check_len("predictions", targets.len(), predicted.len())?;
    if targets.is_empty() {
        return Err(MetricError::Empty);
    }
    let correct = predicted
        .iter()
        .zip(targets)
        .filter(|(p, t)| p == t)
        .count();
    Ok(correct as f64 / targets.len() as f64)
}

/// Precision, recall and F1 of one class, and how many targets it has.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClassMetrics {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Number of samples whose target is this class.
    pub support: u64,
}

/// Counts of (target, predicted) pairs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfusionMatrix {
    pub classes: usize,
    /// `counts[target * classes + predicted]`: rows are targets, columns predictions.
    pub counts: Vec<u64>,
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

impl ConfusionMatrix {
    /// Counts `predicted` against `targets`; both must be class indices in `0..classes`.
    pub fn new(
        predicted: &[i32],
        targets: &[i32],
        classes: usize,
    ) -> Result<ConfusionMatrix, MetricError> {
        if classes == 0 {
            return Err(MetricError::NoClasses);
        }
        check_len("predictions", targets.len(), predicted.len())?;
        check_targets(targets, classes)?;
        check_targets(predicted, classes)?;
        let mut counts = vec![0; classes * classes];
        for (&p, &t) in predicted.iter().zip(targets) {
            counts[t as usize * classes + p as usize] += 1;
        }
        Ok(ConfusionMatrix { classes, counts })
    }

    /// How many samples of class `target` were predicted as `predicted`.
    pub fn get(&self, target: usize, predicted: usize) -> u64 {
        if target < self.classes && predicted < self.classes {
            self.counts[target * self.classes + predicted]
        } else {
            0
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Correct predictions: the diagonal.
    pub fn correct(&self) -> u64 {
        (0..self.classes).map(|c| self.get(c, c)).sum()
    }

    /// Correct over total (0 for an empty matrix).
    pub fn accuracy(&self) -> f64 {
        ratio(self.correct(), self.total())
    }

    /// Samples whose target is `class` (its row sum).
    pub fn support(&self, class: usize) -> u64 {
        (0..self.classes).map(|p| self.get(class, p)).sum()
    }

    /// Samples predicted as `class` (its column sum).
    pub fn predicted_count(&self, class: usize) -> u64 {
        (0..self.classes).map(|t| self.get(t, class)).sum()
    }

    /// True positives over predicted positives (0 if `class` is never predicted).
    pub fn precision(&self, class: usize) -> f64 {
        ratio(self.get(class, class), self.predicted_count(class))
    }

    /// True positives over actual positives (0 if `class` never occurs).
    pub fn recall(&self, class: usize) -> f64 {
        ratio(self.get(class, class), self.support(class))
    }

    /// Harmonic mean of precision and recall (0 if both are 0).
    pub fn f1(&self, class: usize) -> f64 {
        let (p, r) = (self.precision(class), self.recall(class));
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }

    /// The metrics of every class, by index.
    pub fn per_class(&self) -> Vec<ClassMetrics> {
        (0..self.classes)
            .map(|c| ClassMetrics {
                precision: self.precision(c),
                recall: self.recall(c),
                f1: self.f1(c),
                support: self.support(c),
            })
            .collect()
    }

    /// Unweighted means of precision, recall and F1 over the classes that occur in the
    /// targets or the predictions (all zero for an empty matrix).
    pub fn macro_average(&self) -> (f64, f64, f64) {
        let present: Vec<usize> = (0..self.classes)
            .filter(|&c| self.support(c) > 0 || self.predicted_count(c) > 0)
            .collect();
        if present.is_empty() {
            return (0.0, 0.0, 0.0);
        }
        let n = present.len() as f64;
        let mean = |f: &dyn Fn(usize) -> f64| present.iter().map(|&c| f(c)).sum::<f64>() / n;
        (
            mean(&|c| self.precision(c)),
            mean(&|c| self.recall(c)),
            mean(&|c| self.f1(c)),
        )
    }
}

/// Binary AUC-ROC of `scores` (higher means more likely positive) against 0/1
/// `targets`, ties in score counting one half (see the module docs).
pub fn auc_roc(scores: &[f32], targets: &[i32]) -> Result<f64, MetricError> {
    check_len("scores", targets.len(), scores.len())?;
    if let Some((index, &value)) = targets.iter().enumerate().find(|&(_, &t)| t != 0 && t != 1) {
        return Err(MetricError::NotBinary { index, value });
    }
    let positive: Vec<bool> = targets.iter().map(|&t| t == 1).collect();
    auc_of(scores, &positive)
}

/// AUC of `scores` for the samples flagged `positive` against the rest.
fn auc_of(scores: &[f32], positive: &[bool]) -> Result<f64, MetricError> {
    if scores.is_empty() {
        return Err(MetricError::Empty);
    }
    if let Some(index) = scores.iter().position(|s| s.is_nan()) {
        return Err(MetricError::NanScore { index });
    }
    let n_pos = positive.iter().filter(|&&p| p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return Err(MetricError::Undefined(format!(
            "AUC-ROC needs both positive and negative samples; there are {n_pos} positive and \
             {n_neg} negative"
        )));
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the (1-based, tie-averaged) ranks of the positives.
    let mut rank_sum = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        let average_rank = (start + 1 + end) as f64 / 2.0;
        let positives = order[start..end].iter().filter(|&&i| positive[i]).count();
        rank_sum += average_rank * positives as f64;
        start = end;
    }
    let (p, q) = (n_pos as f64, n_neg as f64);
    Ok((rank_sum - p * (p + 1.0) / 2.0) / (p * q))
}

/// One-vs-rest macro AUC-ROC from per-class scores `[n, classes]` (probabilities or
/// logits: only their order within a column matters). Classes that are absent from the
/// targets, or are every target, have no AUC and are left out of the mean.
pub fn auc_roc_ovr(scores: &[f32], classes: usize, targets: &[i32]) -> Result<f64, MetricError> {
    let n = rows(scores, classes)?;
    check_len("targets", n, targets.len())?;
    check_targets(targets, classes)?;
    let mut sum = 0.0;
    let mut defined = 0;
    for c in 0..classes {
        let positive: Vec<bool> = targets.iter().map(|&t| t as usize == c).collect();
        if !positive.contains(&true) || !positive.contains(&false) {
            continue;
        }
        let column: Vec<f32> = scores.iter().skip(c).step_by(classes).copied().collect();
        sum += auc_of(&column, &positive)?;
        defined += 1;
    }
    if defined == 0 {
        return Err(MetricError::Undefined(
            "one-vs-rest AUC-ROC needs at least two classes among the targets".into(),
        ));
    }
    Ok(sum / defined as f64)
}

/// Mean of `|prediction - target|` over all values (any shape, flattened alike).
pub fn mean_absolute_error(predictions: &[f32], targets: &[f32]) -> Result<f64, MetricError> {
    mean_of(predictions, targets, |d| d.abs())
}

/// Mean of `(prediction - target)^2` over all values (any shape, flattened alike).
pub fn mean_squared_error(predictions: &[f32], targets: &[f32]) -> Result<f64, MetricError> {
    mean_of(predictions, targets, |d| d * d)
}

fn mean_of(predictions: &[f32], targets: &[f32], f: fn(f64) -> f64) -> Result<f64, MetricError> {
    check_len("predictions", targets.len(), predictions.len())?;
    if targets.is_empty() {
        return Err(MetricError::Empty);
    }
    let sum: f64 = predictions
        .iter()
        .zip(targets)
        .map(|(&p, &t)| f(f64::from(p) - f64::from(t)))
        .sum();
    Ok(sum / targets.len() as f64)
}

/// Every classification metric of one evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassificationReport {
    pub accuracy: f64,
    pub confusion: ConfusionMatrix,
    pub per_class: Vec<ClassMetrics>,
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub macro_f1: f64,
    /// Binary AUC, or the one-vs-rest macro AUC for more classes; None where undefined
    /// (a split with a single class).
    pub auc_roc: Option<f64>,
}

impl ClassificationReport {
    /// The report for `[n, classes]` logits (or probabilities) against class targets.
    /// With `classes == 1` the single column is a binary logit: class 1 where it is
    /// above 0.
    pub fn from_logits(
        logits: &[f32],
        classes: usize,
        targets: &[i32],
    ) -> Result<ClassificationReport, MetricError> {
        let n = rows(logits, classes)?;
        check_len("targets", n, targets.len())?;
        if n == 0 {
            return Err(MetricError::Empty);
        }
        let (predicted, matrix_classes, auc) = if classes == 1 {
            let predicted = threshold_scores(logits, 0.0);
            check_targets(targets, 2)?;
            (predicted, 2, auc_roc(logits, targets))
        } else {
            let predicted = argmax_rows(logits, classes)?;
            check_targets(targets, classes)?;
            let auc = if classes == 2 {
                let p1: Vec<f32> = softmax_rows(logits, 2)?
                    .into_iter()
                    .skip(1)
                    .step_by(2)
                    .collect();
                auc_roc(&p1, targets)
            } else {
                auc_roc_ovr(&softmax_rows(logits, classes)?, classes, targets)
            };
            (predicted, classes, auc)
        };
        let auc_roc = match auc {
            Ok(a) => Some(a),
            Err(MetricError::Undefined(_) | MetricError::NanScore { .. }) => None,
            Err(e) => return Err(e),
        };
        let confusion = ConfusionMatrix::new(&predicted, targets, matrix_classes)?;
        let (macro_precision, macro_recall, macro_f1) = confusion.macro_average();
        Ok(ClassificationReport {
            accuracy: confusion.accuracy(),
            per_class: confusion.per_class(),
            confusion,
            macro_precision,
            macro_recall,
            macro_f1,
            auc_roc,
        })
    }

    /// The scalar metrics by name, for the log: `accuracy`, `precision`, `recall`, `f1`
    /// (macro) and `auc_roc` where defined.
    pub fn scalars(&self) -> Vec<(String, f64)> {
        let mut out = vec![
            ("accuracy".to_string(), self.accuracy),
            ("precision".to_string(), self.macro_precision),
            ("recall".to_string(), self.macro_recall),
            ("f1".to_string(), self.macro_f1),
        ];
        if let Some(auc) = self.auc_roc {
            out.push(("auc_roc".to_string(), auc));
        }
        out
    }
}

/// Every regression metric of one evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RegressionReport {
    pub mae: f64,
    pub mse: f64,
}

impl RegressionReport {
    pub fn new(predictions: &[f32], targets: &[f32]) -> Result<RegressionReport, MetricError> {
        Ok(RegressionReport {
            mae: mean_absolute_error(predictions, targets)?,
            mse: mean_squared_error(predictions, targets)?,
        })
    }

    /// The scalar metrics by name, for the log: `mae`, `mse`.
    pub fn scalars(&self) -> Vec<(String, f64)> {
        vec![("mae".to_string(), self.mae), ("mse".to_string(), self.mse)]
    }
}

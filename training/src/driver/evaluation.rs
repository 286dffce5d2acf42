//! Evaluating a model on a split: the `eval` entry run batch by batch, the loss averaged
//! over samples, and the metrics computed from the concatenated predictions.

use std::fmt;

use super::TrainError;
use super::data::{EVAL_ENTRY, Ports, load_splits};
use super::normalization;
use crate::dataset::NamedArray;
use crate::metrics::{ClassificationReport, RegressionReport, argmax_rows};
use crate::{Dataset, Labels};
use strata_artifact::Metric;
use strata_artifact::tensor::TensorData;
use strata_artifact::train_config::{Task, TrainConfig};
use strata_runtime::session::Session;

/// Which samples [`evaluate`] scores (`--split test|val|all` on the command line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EvalSplit {
    /// The held-out test split (what training never saw).
    Test,
    /// The validation split (what early stopping watched).
    Val,
    /// Every sample of the data.
    All,
}

impl fmt::Display for EvalSplit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EvalSplit::Test => "test",
            EvalSplit::Val => "validation",
            EvalSplit::All => "all",
        })
    }
}

/// The metrics of one evaluation, by task.
#[derive(Clone, Debug, PartialEq)]
pub enum Metrics {
    Classification(ClassificationReport),
    /// Regression against the labels, or (label-free) a reconstruction against the
    /// features.
    Regression(RegressionReport),
    /// Sequence labels: the classification metrics over every position, and the
    /// fraction of samples whose every position is right.
    Sequences {
        positions: ClassificationReport,
        sequence_accuracy: f64,
    },
    /// Label-free training of a model whose prediction is no reconstruction: the loss
    /// is the only score.
    LossOnly,
}

impl Metrics {
    /// A metric's value; None if the task has no such metric or it is undefined (AUC of
    /// a split with one class). For sequences, the classification metrics count
    /// positions; for single labels, `sequence_accuracy` is the accuracy (a sequence of
    /// one).
    pub fn value(&self, metric: Metric) -> Option<f64> {
        match (self, metric) {
            (Metrics::Classification(r), Metric::SequenceAccuracy) => Some(r.accuracy),
            (Metrics::Classification(r), m) => classification_value(r, m),
            (
                Metrics::Sequences {
                    sequence_accuracy, ..
                },
                Metric::SequenceAccuracy,
            ) => Some(*sequence_accuracy),
            (Metrics::Sequences { positions, .. }, m) => classification_value(positions, m),
            (Metrics::Regression(r), Metric::Mae) => Some(r.mae),
            (Metrics::Regression(r), Metric::Mse) => Some(r.mse),
            (Metrics::Regression(_) | Metrics::LossOnly, _) => None,
        }
    }

    /// Every metric the report has, in the order it prints them.
    pub fn names(&self) -> &'static [Metric] {
        use Metric::*;
        match self {
            Metrics::Classification(_) => &[Accuracy, Precision, Recall, F1, Auc],
            Metrics::Regression(_) => &[Mae, Mse],
            Metrics::Sequences { .. } => &[Accuracy, SequenceAccuracy, Precision, Recall, F1, Auc],
            Metrics::LossOnly => &[],
        }
    }
}

fn classification_value(r: &ClassificationReport, metric: Metric) -> Option<f64> {
    match metric {
        Metric::Accuracy => Some(r.accuracy),
        Metric::Precision => Some(r.macro_precision),
        Metric::Recall => Some(r.macro_recall),
        Metric::F1 => Some(r.macro_f1),
        Metric::Auc => r.auc_roc,
        Metric::SequenceAccuracy | Metric::Mae | Metric::Mse => None,
    }
}

/// The result of evaluating a model on a split.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalReport {
    pub split: EvalSplit,
    pub samples: usize,
    /// The loss averaged over samples (each batch's mean loss weighted by its size);
    /// with several steps, the sum of theirs.
    pub loss: f64,
    /// With several steps: each step's loss, averaged the same way, by step name.
    pub step_losses: Vec<(String, f64)>,
    /// Each named term of the loss (`term NAME = …`), averaged the same way, by name.
    pub terms: Vec<(String, f64)>,
    pub metrics: Metrics,
    /// The metrics the train section asks for, in its order (every metric of the task
    /// when it names none).
    pub selected: Vec<Metric>,
    /// Class names, where the data has them (for the confusion matrix).
    pub class_names: Vec<String>,
    /// The outputs scored against the section's other labels.
    pub heads: Vec<HeadReport>,
}

/// The metrics of an output scored against a label other than the first.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadReport {
    pub output: String,
    pub label: String,
    pub metrics: Metrics,
    /// The metrics the train section asks of it, in its order.
    pub selected: Vec<Metric>,
}

impl EvalReport {
    /// The selected metrics' values (NaN where undefined).
    pub fn scalars(&self) -> Vec<(Metric, f64)> {
        self.selected
            .iter()
            .map(|&m| (m, self.metrics.value(m).unwrap_or(f64::NAN)))
            .collect()
    }

    /// The heads' selected metrics as `LABEL.METRIC` and their values (NaN where
    /// undefined).
    pub fn head_scalars(&self) -> Vec<(String, f64)> {
        self.heads
            .iter()
            .flat_map(|h| {
                h.selected.iter().map(|&m| {
                    (
                        format!("{}.{m}", h.label),
                        h.metrics.value(m).unwrap_or(f64::NAN),
                    )
                })
            })
            .collect()
    }
}

impl EvalReport {
    /// The report as JSON (`eval --json`), numbers at full precision (`null` where a
    /// metric is undefined):
    ///
    /// ```json
    /// {"split": "test", "samples": 180, "loss": 0.0712…,
    ///  "metrics": {"accuracy": 0.97…, "f1": 0.96…, …},
    ///  "step_losses": {}, "terms": {},
    ///  "classes": [{"class": 0, "name": "0", "precision": 1.0, "recall": 0.94…,
    ///               "f1": 0.97…, "support": 18}, …],
    ///  "confusion": [[17, 0, …], …]}
    /// ```
    /// `metrics` holds every metric of the task; `classes` and `confusion` only for
    /// class labels (for sequence labels they count positions).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::{Value, json};
        let number = |x: f64| if x.is_finite() { json!(x) } else { Value::Null };
        let metrics: serde_json::Map<String, Value> = self
            .metrics
            .names()
            .iter()
            .map(|&m| {
                (
                    m.to_string(),
                    self.metrics.value(m).map_or(Value::Null, number),
                )
            })
            .collect();
        let step_losses: serde_json::Map<String, Value> = self
            .step_losses
            .iter()
            .map(|(name, loss)| (name.clone(), number(*loss)))
            .collect();
        let terms: serde_json::Map<String, Value> = self
            .terms
            .iter()
            .map(|(name, value)| (name.clone(), number(*value)))
            .collect();
        let heads: serde_json::Map<String, Value> = self
            .heads
            .iter()
            .map(|h| {
                let metrics: serde_json::Map<String, Value> = h
                    .metrics
                    .names()
                    .iter()
                    .map(|&m| {
                        (
                            m.to_string(),
                            h.metrics.value(m).map_or(Value::Null, number),
                        )
                    })
                    .collect();
                (
                    h.label.clone(),
                    json!({"output": h.output, "metrics": metrics}),
                )
            })
            .collect();
        let mut report = json!({
            "split": self.split.to_string(),
            "samples": self.samples,
            "loss": number(self.loss),
            "metrics": metrics,
            "step_losses": step_losses,
            "terms": terms,
            "heads": heads,
        });
        if let Metrics::Classification(r) | Metrics::Sequences { positions: r, .. } = &self.metrics
        {
            let classes: Vec<Value> = r
                .per_class
                .iter()
                .enumerate()
                .map(|(c, m)| {
                    json!({
                        "class": c,
                        "name": self.class_names.get(c).cloned().unwrap_or_else(|| c.to_string()),
                        "precision": number(m.precision),
                        "recall": number(m.recall),
                        "f1": number(m.f1),
                        "support": m.support,
                    })
                })
                .collect();
            let n = r.confusion.classes;
            let confusion: Vec<Vec<u64>> = (0..n)
                .map(|t| (0..n).map(|p| r.confusion.get(t, p)).collect())
                .collect();
            report["classes"] = json!(classes);
            report["confusion"] = json!(confusion);
        }
        report
    }
}

impl fmt::Display for EvalReport {
    /// Loss, every metric of the task, and for classification the confusion matrix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} split: {} samples", self.split, self.samples)?;
        writeln!(f, "  {:<10} {:.4}", "loss", self.loss)?;
        for (name, loss) in &self.step_losses {
            writeln!(f, "  {:<10} {loss:.4}", format!("{name} loss"))?;
        }
        for (name, value) in &self.terms {
            writeln!(f, "  {name:<10} {value:.4}")?;
        }
        for &name in self.metrics.names() {
            match self.metrics.value(name) {
                Some(v) => writeln!(f, "  {name:<10} {v:.4}")?,
                None => writeln!(f, "  {name:<10} undefined")?,
            }
        }
        for head in &self.heads {
            writeln!(f, "{} against {}:", head.output, head.label)?;
            for &name in head.metrics.names() {
                match head.metrics.value(name) {
                    Some(v) => writeln!(f, "  {name:<10} {v:.4}")?,
                    None => writeln!(f, "  {name:<10} undefined")?,
                }
            }
        }
        match &self.metrics {
            Metrics::Classification(report)
            | Metrics::Sequences {
                positions: report, ..
            } => write_confusion(f, report, &self.class_names)?,
            Metrics::Regression(_) | Metrics::LossOnly => {}
        }
        Ok(())
    }
}

/// The confusion matrix, rows the true classes and columns the predicted ones.
fn write_confusion(
    f: &mut fmt::Formatter<'_>,
    report: &ClassificationReport,
    names: &[String],
) -> fmt::Result {
    let matrix = &report.confusion;
    let label = |c: usize| names.get(c).cloned().unwrap_or_else(|| c.to_string());
    let label_width = (0..matrix.classes)
        .map(|c| label(c).len())
        .max()
        .unwrap_or(1)
        .max(4);
    let cell = matrix
        .counts
        .iter()
        .map(|n| n.to_string().len())
        .max()
        .unwrap_or(1)
        .max(3);
    writeln!(f, "confusion matrix (rows: true class, columns: predicted)")?;
    write!(f, "  {:>label_width$}", "")?;
    for c in 0..matrix.classes {
        // Column heads are indices: names are too wide for a grid.
        write!(f, " {:>cell$}", c)?;
    }
    writeln!(f)?;
    for t in 0..matrix.classes {
        write!(f, "  {:>label_width$}", label(t))?;
        for p in 0..matrix.classes {
            write!(f, " {:>cell$}", matrix.get(t, p))?;
        }
        writeln!(f)?;
    }
    Ok(())
}

/// The `eval` entry over a dataset, in order.
pub(super) struct EvalPass {
    pub loss: f64,
    /// Each step's loss, in [`Ports::step_losses`]' order.
    pub step_losses: Vec<f64>,
    /// Each term, in [`Ports::terms`]' order.
    pub terms: Vec<f64>,
    /// The prediction output of every sample, concatenated.
    pub predictions: Vec<f32>,
    /// Each head's output of every sample, in [`Ports::heads`]' order.
    pub head_predictions: Vec<Vec<f32>>,
}

/// Runs `eval` over `data` in batches of `batch`.
pub(super) fn eval_pass(
    session: &mut Session,
    ports: &Ports,
    data: &Dataset,
    batch: usize,
) -> Result<EvalPass, TrainError> {
    let mut loss_sum = 0.0;
    let mut step_sums = vec![0.0; ports.step_losses.len()];
    let mut term_sums = vec![0.0; ports.terms.len()];
    let mut predictions = Vec::with_capacity(data.len * ports.prediction_width);
    let mut head_predictions: Vec<Vec<f32>> = ports
        .heads
        .iter()
        .map(|h| Vec::with_capacity(data.len * h.width))
        .collect();
    let scalar_of = |v: &[f32]| f64::from(v.first().copied().unwrap_or(f32::NAN));
    for b in data.batches(batch, None)? {
        let len = b.len as f64;
        let outputs = session
            .run(EVAL_ENTRY, &ports.inputs(b, EVAL_ENTRY)?)
            .map_err(|source| TrainError::Run {
                entry: EVAL_ENTRY.to_string(),
                source,
            })?;
        let (loss, prediction) = (find(&outputs, "loss")?, find(&outputs, &ports.prediction)?);
        loss_sum += scalar_of(loss) * len;
        for (sum, (_, output)) in step_sums.iter_mut().zip(&ports.step_losses) {
            *sum += scalar_of(find(&outputs, output)?) * len;
        }
        for (sum, (_, output)) in term_sums.iter_mut().zip(&ports.terms) {
            *sum += scalar_of(find(&outputs, output)?) * len;
        }
        predictions.extend_from_slice(prediction);
        for (values, port) in head_predictions.iter_mut().zip(&ports.heads) {
            values.extend_from_slice(find(&outputs, &port.head.output)?);
        }
    }
    let samples = data.len.max(1) as f64;
    Ok(EvalPass {
        loss: loss_sum / samples,
        step_losses: step_sums.into_iter().map(|s| s / samples).collect(),
        terms: term_sums.into_iter().map(|s| s / samples).collect(),
        predictions,
        head_predictions,
    })
}

fn find<'o>(
    outputs: &'o [(String, strata_artifact::HostTensor)],
    name: &str,
) -> Result<&'o [f32], TrainError> {
    outputs
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, t)| t.as_f32())
        .ok_or_else(|| TrainError::Model(format!("`{EVAL_ENTRY}` returned no f32 output `{name}`")))
}

/// Evaluates the session's current weights on `data`: loss and metrics.
pub(super) fn score(
    session: &mut Session,
    ports: &Ports,
    config: &TrainConfig,
    data: &Dataset,
    split: EvalSplit,
    class_names: &[String],
) -> Result<EvalReport, TrainError> {
    let pass = eval_pass(session, ports, data, config.batch.max(1) as usize)?;
    let metrics = match (&config.task, &data.labels) {
        (
            Task::Unlabelled {
                reconstruction: true,
            },
            _,
        ) => {
            // The model reconstructs its input as it sees it: normalized.
            let target = normalization::model_view(session, &data.features)?;
            Metrics::Regression(RegressionReport::new(&pass.predictions, &target)?)
        }
        (Task::Unlabelled { .. }, _) => Metrics::LossOnly,
        (_, labels) => labelled_metrics(
            labels,
            &pass.predictions,
            ports.prediction_width,
            &ports.prediction,
            data.len,
        )?,
    };
    let selected = if config.metrics.is_empty() {
        metrics.names().to_vec()
    } else {
        config.metrics.clone()
    };
    let mut heads = Vec::new();
    for (port, predictions) in ports.heads.iter().zip(&pass.head_predictions) {
        let array = data
            .arrays
            .iter()
            .find(|a| a.name == port.head.label)
            .ok_or_else(|| {
                TrainError::Model(format!("the data has no label `{}`", port.head.label))
            })?;
        let labels = array_labels(array, data.len);
        heads.push(HeadReport {
            output: port.head.output.clone(),
            label: port.head.label.clone(),
            metrics: labelled_metrics(
                &labels,
                predictions,
                port.width,
                &port.head.output,
                data.len,
            )?,
            selected: port.head.metrics.clone(),
        });
    }
    Ok(EvalReport {
        split,
        samples: data.len,
        loss: pass.loss,
        step_losses: ports
            .step_losses
            .iter()
            .map(|(name, _)| name.clone())
            .zip(pass.step_losses)
            .collect(),
        terms: ports
            .terms
            .iter()
            .map(|(name, _)| name.clone())
            .zip(pass.terms)
            .collect(),
        metrics,
        selected,
        class_names: class_names.to_vec(),
        heads,
    })
}

/// The metrics of `predictions` (`width` values per sample of output `output`) against
/// `labels`, for `samples` samples.
fn labelled_metrics(
    labels: &Labels,
    predictions: &[f32],
    width: usize,
    output: &str,
    samples: usize,
) -> Result<Metrics, TrainError> {
    Ok(match labels {
        Labels::Classes { values, .. } => Metrics::Classification(
            ClassificationReport::from_logits(predictions, width, values)?,
        ),
        Labels::Targets { values, .. } => {
            Metrics::Regression(RegressionReport::new(predictions, values)?)
        }
        Labels::Sequences { values, length, .. } => {
            let classes = width / (*length).max(1);
            if classes * length != width {
                return Err(TrainError::Model(format!(
                    "the prediction `{output}` has {width} values per sample, not a score per class for each of {length} positions"
                )));
            }
            let positions = ClassificationReport::from_logits(predictions, classes, values)?;
            let predicted = argmax_rows(predictions, classes)?;
            let exact = predicted
                .chunks_exact(*length)
                .zip(values.chunks_exact(*length))
                .filter(|(p, t)| p == t)
                .count();
            Metrics::Sequences {
                positions,
                sequence_accuracy: exact as f64 / samples.max(1) as f64,
            }
        }
    })
}

/// A further label's array as [`Labels`]: integers are class indices (a sequence of them
/// when a sample has several), floats targets.
fn array_labels(array: &NamedArray, samples: usize) -> Labels {
    let per_sample = match &array.data {
        TensorData::F32(v) => v.len(),
        TensorData::I32(v) => v.len(),
    } / samples.max(1);
    match &array.data {
        TensorData::F32(values) => Labels::Targets {
            values: values.clone(),
            width: per_sample,
        },
        TensorData::I32(values) => {
            let classes = values.iter().max().map_or(0, |&m| m.max(0) as usize + 1);
            match per_sample {
                1 => Labels::Classes {
                    values: values.clone(),
                    classes,
                },
                length => Labels::Sequences {
                    values: values.clone(),
                    classes,
                    length,
                },
            }
        }
    }
}

/// Evaluates the session's current weights on a split of `data` (default: the train
/// section's data). The split is recomputed exactly as training made it (same fractions,
/// same seed), so `Test` scores the samples training held out; the samples are fed raw,
/// and the model normalizes them with the statistics its weights carry.
pub fn evaluate(
    session: &mut Session,
    config: &TrainConfig,
    data: Option<&str>,
    split: EvalSplit,
) -> Result<EvalReport, TrainError> {
    let ports = Ports::of(session.manifest(), config, false)?;
    let splits = load_splits(data.unwrap_or(&config.data), config, &ports)?;
    let chosen = match split {
        EvalSplit::Test => splits.test,
        EvalSplit::Val => splits.val,
        EvalSplit::All => {
            // The three splits hold every sample once; their order does not matter.
            let mut all = splits.train;
            for part in [splits.val, splits.test] {
                all.features.extend_from_slice(&part.features);
                match (&mut all.labels, part.labels) {
                    (Labels::Classes { values, .. }, Labels::Classes { values: more, .. }) => {
                        values.extend(more)
                    }
                    (Labels::Targets { values, .. }, Labels::Targets { values: more, .. }) => {
                        values.extend(more)
                    }
                    (Labels::Sequences { values, .. }, Labels::Sequences { values: more, .. }) => {
                        values.extend(more)
                    }
                    _ => return Err(TrainError::Model("splits disagree on their labels".into())),
                }
                for (array, more) in all.arrays.iter_mut().zip(part.arrays) {
                    array.extend(more)?;
                }
                all.len += part.len;
            }
            all
        }
    };
    if chosen.is_empty() {
        return Err(TrainError::Config(format!(
            "the {split} split of `{}` is empty (split {:?})",
            splits.spec, config.split
        )));
    }
    score(session, &ports, config, &chosen, split, &splits.class_names)
}

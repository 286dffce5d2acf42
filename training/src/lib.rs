//! Training a compiled model: the driver that runs its training step, and what it needs:
//! the data it feeds, the metrics it reports, the checkpoints it saves and resumes from,
//! and the log and plot of its progress. The `strata` command and every built executable
//! share it, command-line arguments included ([`args`]).
//!
//! What a train section *means* (its losses, optimizers and the `train_step`/`eval`
//! graphs) is the compiler's (`strata_compiler::train`); what it asks the driver to do
//! arrives in the artifact's [`TrainConfig`](strata_artifact::train_config::TrainConfig).
//!
//! - [`args`]: the command-line arguments of `train` and `eval`.
//! - [`driver`]: the training loop ([`train`]) and evaluation ([`evaluate`]).
//! - [`dataset`]: an in-memory [`Dataset`], seeded splits, normalization, batches.
//! - [`builtin`](mod@builtin): the small real datasets embedded in the binary (`digits`, `iris`, …).
//! - [`generated`]: datasets drawn from a seed (`reverse`, a sequence-to-sequence task).
//! - [`loaders`]: CSV, NPY, IDX and safetensors files, and [`DataSource`] specs from
//!   the command line.
//! - [`metrics`]: accuracy, precision/recall/F1, confusion matrix, AUC-ROC, MAE, MSE.
//! - [`checkpoint`]: a [`Checkpoint`] as one safetensors file, saved atomically
//!   ([`atomic_file`]: how every file of a run directory is written).
//! - [`log`]: the JSON-lines metrics log and the SVG training-curve plot.
//! - [`explain`]: attributions (gradient, gradient x input, integrated gradients,
//!   SmoothGrad) from a model's `explain` entry, and their pictures.
//! - [`image_grid`]: samples drawn as a grid of grayscale images, encoded as PNG.
//! - [`error`]: the error types.

pub mod args;
pub mod atomic_file;
pub mod builtin;
pub mod checkpoint;
pub mod dataset;
pub mod driver;
pub mod error;
pub mod explain;
pub mod generated;
pub mod image_grid;
pub mod loaders;
pub mod log;
pub mod metrics;

pub use builtin::{BUILTIN_DATASETS, builtin, builtin_feature_names, builtin_series};
pub use checkpoint::Checkpoint;
pub use dataset::{
    Batch, Batches, Dataset, Labels, Normalization, Normalizer, epoch_shuffle_seed,
    normalize_splits, windowed,
};
pub use driver::{
    EvalReport, EvalSplit, StopReason, TrainError, TrainOptions, TrainSummary, evaluate,
    interrupt_on_ctrl_c, train,
};
pub use error::{CheckpointError, DataError, Location, LogError, MetricError};
pub use generated::{AddingTask, REVERSE_START, ReverseTask};
pub use loaders::{CsvOptions, DataSource};
pub use log::{EpochRecord, MetricsLog, plot_curves};

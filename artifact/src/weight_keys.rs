//! What each persistent buffer of a model is, read off its key.
//!
//! A model's persistent buffers are of three kinds, and the compiler, the training
//! driver and `info` all need to tell them apart:
//!
//! - the model's parameters (`dense1.weight`, and batch norm's running statistics);
//! - the fitted normalization of the features input ([`NORMALIZE_OFFSET`],
//!   [`NORMALIZE_SCALE`]): statistics of the train split that the compiled entries apply
//!   to raw features as `(x - offset) / scale`, written once by the training driver and
//!   never trained;
//! - optimizer state ([`OPTIMIZER_PREFIX`]: Adam's moments, momentum), which only the
//!   training entries read. It starts at zero, and a weights file may leave it out: an
//!   optimizer-state buffer a file does not hold is zero ([`starts_at_zero`]). So an
//!   artifact stores no fresh optimizer state (two thirds of an Adam-trained model's
//!   initial weights were zeros), and a checkpoint stores what training made of it.

/// The prefix of optimizer-state keys (`optim.m.dense1.weight`).
pub const OPTIMIZER_PREFIX: &str = "optim.";

/// The per-feature offset subtracted from the raw features input (shape: one sample's).
pub const NORMALIZE_OFFSET: &str = "normalize.offset";

/// The per-feature divisor applied after the offset (shape: one sample's).
pub const NORMALIZE_SCALE: &str = "normalize.scale";

/// The prefix the normalization's keys share (no parameter of a model may start with it).
pub const NORMALIZE_PREFIX: &str = "normalize.";

/// Whether the buffer stored under `key` is zero when a weights file leaves it out
/// (optimizer state); every other key must be in the file.
pub fn starts_at_zero(key: &str) -> bool {
    WeightKind::of(key) == WeightKind::OptimizerState
}

/// The kind of a persistent buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WeightKind {
    /// Part of the model (learned, or a running statistic).
    Parameter,
    /// The features' fitted normalization.
    Normalization,
    /// State of the optimizer, not of the model.
    OptimizerState,
}

impl WeightKind {
    /// The kind of the buffer stored under `key`.
    pub fn of(key: &str) -> WeightKind {
        if key.starts_with(OPTIMIZER_PREFIX) {
            WeightKind::OptimizerState
        } else if key.starts_with(NORMALIZE_PREFIX) {
            WeightKind::Normalization
        } else {
            WeightKind::Parameter
        }
    }

    /// Whether a weights file of the model (`best.safetensors`, `--weights`) carries it:
    /// parameters and the normalization, not optimizer state.
    pub fn is_model_state(self) -> bool {
        self != WeightKind::OptimizerState
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_the_three_kinds_apart_by_key() {
        assert_eq!(WeightKind::of("dense1.weight"), WeightKind::Parameter);
        assert_eq!(
            WeightKind::of("bn.running_mean"),
            WeightKind::Parameter,
            "running statistics are the model's"
        );
        assert_eq!(WeightKind::of(NORMALIZE_SCALE), WeightKind::Normalization);
        assert_eq!(
            WeightKind::of("optim.m.dense1.weight"),
            WeightKind::OptimizerState
        );
        assert!(!WeightKind::OptimizerState.is_model_state());
        assert!(WeightKind::Normalization.is_model_state());
    }
}

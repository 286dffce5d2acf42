//! `reverse` is the sequence-to-sequence task of reversing `length` random digits, the
//! classic test of an encoder-decoder (Sutskever et al. 2014 reversed the source to ease
//! learning; a Transformer must learn to attend from target position `i` to source
//! position `length - 1 - i`). Each sample's features are two rows of token ids,
//! `[2, length]`, held as f32 like every dataset's features (a model reads them through
//! an `i32` input):
//!
//! - row 0, the source: `length` digits `0..9`;
//! - row 1, the decoder's input under teacher forcing: the start token
//!   [`REVERSE_START`] (10) then the first `length - 1` digits of the target;
//!
//! and its labels are the target, the source reversed: a [`Labels::Sequences`] of
//! `length` classes `0..9`. The digits are uniform and independent, so with the default
//! 10 digits a split's samples are distinct from another's but for chance (10^10
//! sequences).

use strata_kernels::rng::{Philox, key_from_seed};

use crate::dataset::{Dataset, Labels, uniform_below};
use crate::error::DataError;

/// The token that starts the decoder's input: one past the digits.
pub const REVERSE_START: i32 = 10;

/// The largest sequence length and sample count a `reverse` spec may ask for, so a typo
/// cannot allocate the machine's memory away.
const MAX_LENGTH: usize = 4096;
const MAX_VALUES: usize = 1 << 28;

/// The stream purpose word of the digit draws ("REVS"), apart from the split and batch
/// streams that the same seed keys.
const REVERSE_STREAM: u32 = 0x5245_5653;

/// `reverse(length, samples, seed)`: see the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReverseTask {
    pub length: usize,
    pub samples: usize,
    pub seed: u64,
}

impl Default for ReverseTask {
    fn default() -> ReverseTask {
        ReverseTask {
            length: 10,
            samples: 10_000,
            seed: 0,
        }
    }
}

impl ReverseTask {
    /// The dataset, the same for the same task on every machine.
    pub fn generate(&self) -> Result<Dataset, DataError> {
        let (length, samples) = (self.length, self.samples);
        if !(1..=MAX_LENGTH).contains(&length) {
            return Err(DataError::Invalid(format!(
                "`reverse` needs a length in 1..={MAX_LENGTH}, got {length}"
            )));
        }
        if samples == 0 || samples.saturating_mul(2 * length) > MAX_VALUES {
            return Err(DataError::Invalid(format!(
                "`reverse` needs between 1 and {} samples of length {length}, got {samples}",
                MAX_VALUES / (2 * length)
            )));
        }
        let mut rng = Philox::new(key_from_seed(self.seed), [0, 0, 0, REVERSE_STREAM]);
        let mut features = Vec::with_capacity(samples * 2 * length);
        let mut targets = Vec::with_capacity(samples * length);
        for _ in 0..samples {
            let source: Vec<i32> = (0..length)
                .map(|_| uniform_below(&mut rng, 10) as i32)
                .collect();
            let target: Vec<i32> = source.iter().rev().copied().collect();
            features.extend(source.iter().map(|&t| t as f32));
            features.push(REVERSE_START as f32);
            features.extend(target[..length - 1].iter().map(|&t| t as f32));
            targets.extend_from_slice(&target);
        }
        Dataset::new(
            features,
            vec![2, length as u64],
            Labels::Sequences {
                values: targets,
                classes: 10,
                length,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_hold_the_source_the_shifted_target_and_the_reversal() {
        let task = ReverseTask {
            length: 4,
            samples: 3,
            seed: 9,
        };
        let data = task.generate().unwrap();
        assert_eq!(data.feature_shape, vec![2, 4]);
        let Labels::Sequences { values, length, .. } = &data.labels else {
            panic!("sequence labels")
        };
        assert_eq!(*length, 4);
        for i in 0..3 {
            let row = data.sample(i).unwrap();
            let source: Vec<i32> = row[..4].iter().map(|&x| x as i32).collect();
            let target: Vec<i32> = source.iter().rev().copied().collect();
            assert_eq!(&values[i * 4..(i + 1) * 4], &target[..]);
            assert_eq!(row[4] as i32, REVERSE_START);
            let shifted: Vec<i32> = row[5..].iter().map(|&x| x as i32).collect();
            assert_eq!(shifted, &target[..3]);
        }
        assert_eq!(data, task.generate().unwrap());
        let other = ReverseTask { seed: 10, ..task };
        assert_ne!(data, other.generate().unwrap());
    }

    #[test]
    fn bad_sizes_are_errors() {
        for (length, samples) in [(0, 10), (10, 0), (5000, 1), (10, usize::MAX)] {
            let task = ReverseTask {
                length,
                samples,
                seed: 0,
            };
            let e = task.generate().unwrap_err().to_string();
            assert!(e.contains("`reverse` needs"), "{e}");
        }
    }
}

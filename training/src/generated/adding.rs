//! The adding problem (Hochreiter & Schmidhuber 1997, section 5.4, in the form of Le et
//! al. 2015): a sequence of `length` pairs `(value, marker)`, values drawn from
//! `U(0, 1)`, markers 0 except at two positions, one in each half of the sequence; the
//! target is the sum of the two marked values. Predicting the mean, 1, scores an MSE of
//! 1/6 ≈ 0.167; a model must carry the marked values across up to `length` steps to do
//! better. Draws come from Philox4x32-10 ([`strata_kernels::rng`]) keyed by the seed.

use crate::dataset::{Dataset, Labels};
use crate::error::DataError;
use strata_kernels::rng::uniform_at;

/// The most values (`samples * length * 2`) a spec may ask for, so a typo cannot
/// allocate the machine's memory away.
const MAX_VALUES: usize = 1 << 28;

/// `adding(length, samples, seed)`: see the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddingTask {
    pub length: usize,
    pub samples: usize,
    pub seed: u64,
}

impl Default for AddingTask {
    fn default() -> AddingTask {
        AddingTask {
            length: 100,
            samples: 10_000,
            seed: 0,
        }
    }
}

impl AddingTask {
    /// The task with `key=value` options (`length`, `samples`, `seed`) over the defaults.
    pub fn parse(options: &str) -> Result<AddingTask, String> {
        let mut task = AddingTask::default();
        super::parse_options("adding", options, |key, n| {
            let size =
                || usize::try_from(n).map_err(|_| format!("`{key}` of `adding` is too large"));
            match key {
                "length" => task.length = size()?,
                "samples" => task.samples = size()?,
                "seed" => task.seed = n,
                other => {
                    return Err(format!(
                        "unknown option `{other}` for `adding` (known: length, samples, seed)"
                    ));
                }
            }
            Ok(())
        })?;
        Ok(task)
    }

    /// The dataset: features `[length, 2]` per sample, one target.
    pub fn generate(&self) -> Result<Dataset, DataError> {
        let (length, samples, seed) = (self.length, self.samples, self.seed);
        if length < 2 {
            return Err(DataError::Invalid(format!(
                "`adding` needs a length of at least 2, got {length}"
            )));
        }
        if samples == 0 || samples.saturating_mul(2 * length) > MAX_VALUES {
            return Err(DataError::Invalid(format!(
                "`adding` needs between 1 and {} samples of length {length}, got {samples}",
                MAX_VALUES / (2 * length)
            )));
        }
        let half = length / 2;
        let mut features = Vec::with_capacity(samples * length * 2);
        let mut targets = Vec::with_capacity(samples);
        for s in 0..samples {
            let base = (s * length) as u64;
            // Step 0 draws the values, step 1 the two marked positions.
            let first = pick(uniform_at(seed, 2 * s as u64, 1), half);
            let second = half + pick(uniform_at(seed, 2 * s as u64 + 1, 1), length - half);
            let mut sum = 0.0f32;
            for t in 0..length {
                let value = uniform_at(seed, base + t as u64, 0);
                let marked = t == first || t == second;
                if marked {
                    sum += value;
                }
                features.push(value);
                features.push(if marked { 1.0 } else { 0.0 });
            }
            targets.push(sum);
        }
        Dataset::new(
            features,
            vec![length as u64, 2],
            Labels::Targets {
                values: targets,
                width: 1,
            },
        )
    }
}

/// An index in `0..n` from a uniform draw in `[0, 1)`.
fn pick(u: f32, n: usize) -> usize {
    ((u * n as f32) as usize).min(n - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(options: &str) -> AddingTask {
        AddingTask::parse(options).expect("valid options")
    }

    #[test]
    fn marks_one_position_in_each_half_and_sums_them() {
        let data = task("length=10,samples=50,seed=3")
            .generate()
            .expect("generates");
        assert_eq!(data.feature_shape, vec![10, 2]);
        let Labels::Targets { values, .. } = &data.labels else {
            panic!("regression targets");
        };
        for (s, &target) in values.iter().enumerate() {
            let sample = &data.features[s * 20..(s + 1) * 20];
            let marked: Vec<usize> = (0..10).filter(|t| sample[2 * t + 1] == 1.0).collect();
            assert_eq!(marked.len(), 2, "two markers");
            assert!(
                marked[0] < 5 && marked[1] >= 5,
                "one in each half: {marked:?}"
            );
            let sum: f32 = marked.iter().map(|t| sample[2 * t]).sum();
            assert_eq!(sum, target);
        }
        // The mean predictor's error is near 1/6.
        let mse: f32 = values.iter().map(|v| (v - 1.0) * (v - 1.0)).sum::<f32>() / 50.0;
        assert!((0.08..0.26).contains(&mse), "{mse}");
        let again = task("length=10,samples=50,seed=3").generate().unwrap();
        assert_eq!(again.features, data.features, "same seed, same samples");
    }

    #[test]
    fn bad_options_are_errors() {
        for bad in ["samples=x", "depth=3", "seed"] {
            assert!(AddingTask::parse(bad).is_err(), "{bad}");
        }
        assert!(task("length=1").generate().is_err());
        assert!(task("samples=0").generate().is_err());
        assert!(task("samples=100000000").generate().is_err());
    }
}

//! Datasets generated from a seed: synthetic tasks that test what a model can learn,
//! the same samples on every machine.
//!
//! `adding` is the adding problem (Hochreiter & Schmidhuber 1997, section 5.4, in the
//! form of Le et al. 2015): a sequence of `length` pairs `(value, marker)`, values drawn
//! from `U(0, 1)`, markers 0 except at two positions, one in each half of the sequence;
//! the target is the sum of the two marked values. Predicting the mean, 1, scores an
//! MSE of 1/6 ≈ 0.167; a model must carry the marked values across up to `length` steps
//! to do better. Draws come from Philox4x32-10 ([`strata_kernels::rng`]) keyed by the
//! seed.

use super::dataset::{Dataset, Labels};
use super::error::DataError;
use strata_kernels::rng::uniform_at;

/// The names of the generated datasets.
pub const GENERATED_DATASETS: &[&str] = &["adding"];

/// A generated dataset and its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Generator {
    Adding {
        length: usize,
        samples: usize,
        seed: u64,
    },
}

impl Generator {
    /// The generator `name` with `key=value` options (`length`, `samples`, `seed`), or
    /// None if `name` is not a generated dataset.
    pub fn parse(name: &str, options: &[&str]) -> Option<Result<Generator, String>> {
        if name != "adding" {
            return None;
        }
        let mut length = 100;
        let mut samples = 10_000;
        let mut seed = 0;
        for option in options {
            let Some((key, value)) = option.split_once('=') else {
                return Some(Err(format!("`{option}` is not `key=value`")));
            };
            let Ok(n) = value.trim().parse::<u64>() else {
                return Some(Err(format!(
                    "`{key}` of `adding` takes a non-negative integer, got `{value}`"
                )));
            };
            match key.trim() {
                "length" if n >= 2 => length = n as usize,
                "samples" if n >= 1 => samples = n as usize,
                "seed" => seed = n,
                "length" | "samples" => {
                    return Some(Err(format!("`{key}` of `adding` is too small: {n}")));
                }
                other => {
                    return Some(Err(format!(
                        "unknown option `{other}` for `adding` (known: length, samples, seed)"
                    )));
                }
            }
        }
        if length
            .checked_mul(samples)
            .and_then(|n| n.checked_mul(2))
            .is_none_or(|n| n > 1 << 28)
        {
            return Some(Err(format!(
                "`adding` with {samples} samples of length {length} is too large"
            )));
        }
        Some(Ok(Generator::Adding {
            length,
            samples,
            seed,
        }))
    }

    /// Generates the samples.
    pub fn generate(&self) -> Result<Dataset, DataError> {
        match *self {
            Generator::Adding {
                length,
                samples,
                seed,
            } => Ok(adding(length, samples, seed)),
        }
    }
}

impl std::fmt::Display for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Generator::Adding {
                length,
                samples,
                seed,
            } => write!(f, "adding,length={length},samples={samples},seed={seed}"),
        }
    }
}

/// The adding problem: features `[length, 2]` per sample, one target.
fn adding(length: usize, samples: usize, seed: u64) -> Dataset {
    let half = length / 2;
    let mut features = Vec::with_capacity(samples * length * 2);
    let mut targets = Vec::with_capacity(samples);
    for s in 0..samples {
        let base = (s * length) as u64;
        // Stream 0: the values; stream 1: the two marked positions.
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
    Dataset {
        features,
        feature_shape: vec![length as u64, 2],
        labels: Labels::Targets {
            values: targets,
            width: 1,
        },
        len: samples,
        class_names: Vec::new(),
    }
}

/// An index in `0..n` from a uniform draw in `[0, 1)`.
fn pick(u: f32, n: usize) -> usize {
    ((u * n as f32) as usize).min(n - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_marks_one_position_in_each_half_and_sums_them() {
        let data = Generator::parse("adding", &["length=10", "samples=50", "seed=3"])
            .expect("a generator")
            .expect("valid options")
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
        let again = Generator::parse("adding", &["length=10", "samples=50", "seed=3"])
            .unwrap()
            .unwrap()
            .generate()
            .unwrap();
        assert_eq!(again.features, data.features, "same seed, same samples");
    }

    #[test]
    fn bad_options_are_errors() {
        for bad in [&["length=1"][..], &["samples=x"], &["depth=3"], &["seed"]] {
            assert!(Generator::parse("adding", bad).unwrap().is_err(), "{bad:?}");
        }
        assert!(Generator::parse("digits", &[]).is_none());
    }
}

//! The attribution methods, each a few passes of the explain entry's gradient.
//!
//! Every method gets a [`GradientSource`]: the gradient of `seed · f(x)` with respect to
//! one input, row by row, and the outputs `f(x)`. With `g(x)` that gradient:
//!
//! - [`Method::Gradient`]: `g(x)` (Simonyan et al. 2014, "saliency").
//! - [`Method::GradientTimesInput`]: `x ⊙ g(x)` (Shrikumar et al. 2016); for a linear
//!   model, each feature's share `w_i x_i` of the output.
//! - [`Method::IntegratedGradients`]: `(x - x') ⊙ mean_k g(x' + α_k (x - x'))` over `steps`
//!   points `α_k = (k + ½) / steps` (the midpoint rule), from a baseline `x'` (Sundararajan
//!   et al. 2017). Completeness: the attributions sum to `f(x) - f(x')` up to the
//!   quadrature's error, which [`Attributions::baseline_scores`] lets a caller check.
//! - [`Method::SmoothGrad`]: the mean of `g(x + ε)` over `samples` draws of
//!   `ε ~ N(0, (σ (max x - min x))²)` per sample, drawn from a seeded Philox stream
//!   (Smilkov et al. 2017), so a run is reproducible.
//!
//! The extra points of a sample (integration steps, noisy copies) are evaluated as rows
//! of one batch, at most [`MAX_ROWS`] rows (and [`MAX_VALUES`] input values) a run, so
//! memory does not grow with `steps` or `samples`.

use strata_kernels::rng::Philox;

/// The most rows one run of the gradient is given (integration points and noisy copies
/// of several samples share runs).
pub const MAX_ROWS: usize = 512;

/// The most input values one run is given (16 MiB of `f32`): wide inputs run fewer rows.
pub const MAX_VALUES: usize = 1 << 22;

/// How attributions are computed.
#[derive(Clone, Debug, PartialEq)]
pub enum Method {
    Gradient,
    GradientTimesInput,
    /// `baseline`: one sample's worth of values (`x'`, the same for every sample) or one
    /// per sample.
    IntegratedGradients {
        steps: usize,
        baseline: Vec<f32>,
    },
    SmoothGrad {
        samples: usize,
        /// The noise's standard deviation as a fraction of each sample's value range.
        sigma: f32,
        seed: u64,
    },
}

impl Method {
    /// The name the command line uses.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Gradient => "grad",
            Method::GradientTimesInput => "grad-input",
            Method::IntegratedGradients { .. } => "ig",
            Method::SmoothGrad { .. } => "smoothgrad",
        }
    }
}

/// The gradient of a weighted output with respect to one input, for rows of samples.
pub trait GradientSource {
    /// Values of the input per sample.
    fn input_width(&self) -> usize;
    /// Values of the output per sample (the length of a seed row).
    fn output_width(&self) -> usize;
    /// For each row `r`: the input `x[r]`, the sample it belongs to `samples[r]` (which
    /// picks the row of the model's other inputs) and its seed `seeds[r]`, gives the
    /// outputs `f(x[r])` and the gradient of `seeds[r] · f(x[r])` with respect to `x[r]`.
    fn gradients(
        &mut self,
        x: &[f32],
        samples: &[usize],
        seeds: &[f32],
    ) -> Result<(Vec<f32>, Vec<f32>), String>;
}

/// The attributions of `n` samples, each for its own seed.
#[derive(Clone, Debug, PartialEq)]
pub struct Attributions {
    /// `n * input_width` values, sample by sample.
    pub values: Vec<f32>,
    /// `seed · f(x)` per sample: the explained score.
    pub scores: Vec<f32>,
    /// `seed · f(x')` per sample for integrated gradients: completeness says the
    /// attributions of a sample sum to `scores - baseline_scores`.
    pub baseline_scores: Option<Vec<f32>>,
}

/// The rows one run is given: at most [`MAX_ROWS`], and at most [`MAX_VALUES`] input
/// values in all, so a run's memory stays bounded whatever the method asks for.
fn rows_per_run(input_width: usize) -> usize {
    (MAX_VALUES / input_width.max(1)).clamp(1, MAX_ROWS)
}

/// Runs `source` on `rows` rows (`x`, `samples`, `seeds` as in
/// [`GradientSource::gradients`]), [`rows_per_run`] at a time.
fn chunked(
    source: &mut dyn GradientSource,
    x: &[f32],
    samples: &[usize],
    seeds: &[f32],
) -> Result<(Vec<f32>, Vec<f32>), String> {
    let (wi, wo) = (source.input_width(), source.output_width());
    let per_run = rows_per_run(wi);
    let mut outputs = Vec::with_capacity(samples.len() * wo);
    let mut grads = Vec::with_capacity(samples.len() * wi);
    for start in (0..samples.len()).step_by(per_run) {
        let end = (start + per_run).min(samples.len());
        let (o, g) = source.gradients(
            &x[start * wi..end * wi],
            &samples[start..end],
            &seeds[start * wo..end * wo],
        )?;
        outputs.extend(o);
        grads.extend(g);
    }
    Ok((outputs, grads))
}

/// Sums, per sample, the gradients at `points` points of each of `n` samples: point `k`
/// of sample `i` is written by `point(i, k, row)` (sample-major order, so a random
/// stream drawn in it is reproducible). Rows run [`rows_per_run`] at a time, whatever
/// `points` is.
fn summed_gradients(
    source: &mut dyn GradientSource,
    n: usize,
    points: usize,
    seeds: &[f32],
    mut point: impl FnMut(usize, usize, &mut [f32]),
) -> Result<Vec<f64>, String> {
    let (wi, wo) = (source.input_width(), source.output_width());
    let per_run = rows_per_run(wi);
    let total = n
        .checked_mul(points)
        .ok_or_else(|| format!("{n} samples x {points} points is too many"))?;
    let mut sums = vec![0f64; n * wi];
    let mut rows = Vec::with_capacity(per_run.min(total) * wi);
    let mut samples = Vec::with_capacity(per_run.min(total));
    let mut row_seeds = Vec::with_capacity(per_run.min(total) * wo);
    for start in (0..total).step_by(per_run) {
        rows.clear();
        samples.clear();
        row_seeds.clear();
        for r in start..(start + per_run).min(total) {
            let (i, k) = (r / points, r % points);
            let at = rows.len();
            rows.resize(at + wi, 0.0);
            point(i, k, &mut rows[at..]);
            samples.push(i);
            row_seeds.extend_from_slice(&seeds[i * wo..][..wo]);
        }
        let (_, grads) = source.gradients(&rows, &samples, &row_seeds)?;
        if grads.len() != samples.len() * wi {
            return Err(format!(
                "the gradient has {} values for {} rows of {wi}",
                grads.len(),
                samples.len()
            ));
        }
        for (g, &i) in grads.chunks(wi).zip(&samples) {
            for (s, g) in sums[i * wi..][..wi].iter_mut().zip(g) {
                *s += *g as f64;
            }
        }
    }
    Ok(sums)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(a, b)| (*a as f64) * (*b as f64))
        .sum::<f64>() as f32
}

/// Attributions of the samples `x` (`n * input_width`) for the seeds `seeds`
/// (`n * output_width`, one row a sample) by `method`.
pub fn attribute(
    source: &mut dyn GradientSource,
    method: &Method,
    x: &[f32],
    seeds: &[f32],
) -> Result<Attributions, String> {
    let (wi, wo) = (source.input_width(), source.output_width());
    if wi == 0 || wo == 0 {
        return Err("the input or the output has no values".into());
    }
    let n = x.len() / wi;
    if x.len() != n * wi || seeds.len() != n * wo {
        return Err(format!(
            "{} input values and {} seed values do not make whole samples of {wi} and {wo}",
            x.len(),
            seeds.len()
        ));
    }
    let samples: Vec<usize> = (0..n).collect();
    let (outputs, grads) = chunked(source, x, &samples, seeds)?;
    let scores: Vec<f32> = (0..n)
        .map(|i| dot(&seeds[i * wo..][..wo], &outputs[i * wo..][..wo]))
        .collect();
    let values = match method {
        Method::Gradient => grads,
        Method::GradientTimesInput => grads.iter().zip(x).map(|(g, x)| g * x).collect(),
        Method::IntegratedGradients { steps, baseline } => {
            return integrated_gradients(source, x, seeds, *steps, baseline, scores);
        }
        Method::SmoothGrad {
            samples: draws,
            sigma,
            seed,
        } => smooth_grad(source, x, seeds, *draws, *sigma, *seed)?,
    };
    Ok(Attributions {
        values,
        scores,
        baseline_scores: None,
    })
}

fn integrated_gradients(
    source: &mut dyn GradientSource,
    x: &[f32],
    seeds: &[f32],
    steps: usize,
    baseline: &[f32],
    scores: Vec<f32>,
) -> Result<Attributions, String> {
    let (wi, wo) = (source.input_width(), source.output_width());
    let n = x.len() / wi;
    if steps == 0 {
        return Err("integrated gradients needs at least one step".into());
    }
    let base = |i: usize| -> &[f32] {
        match baseline.len() == wi {
            true => baseline,
            false => &baseline[i * wi..][..wi],
        }
    };
    if baseline.len() != wi && baseline.len() != n * wi {
        return Err(format!(
            "the baseline has {} values: one sample's ({wi}) or one per sample ({})",
            baseline.len(),
            n * wi
        ));
    }
    // The baseline's own scores, then the path's points, sample by sample.
    let mut base_rows = Vec::with_capacity(n * wi);
    for i in 0..n {
        base_rows.extend_from_slice(base(i));
    }
    let all: Vec<usize> = (0..n).collect();
    let (base_outputs, _) = chunked(source, &base_rows, &all, seeds)?;
    let baseline_scores = (0..n)
        .map(|i| dot(&seeds[i * wo..][..wo], &base_outputs[i * wo..][..wo]))
        .collect();
    let sums = summed_gradients(source, n, steps, seeds, |i, k, row| {
        let alpha = (k as f32 + 0.5) / steps as f32;
        let (xi, bi) = (&x[i * wi..][..wi], base(i));
        for ((r, x), b) in row.iter_mut().zip(xi).zip(bi) {
            *r = b + alpha * (x - b);
        }
    })?;
    let values = (0..n * wi)
        .map(|e| {
            let (i, j) = (e / wi, e % wi);
            ((x[e] - base(i)[j]) as f64 * sums[e] / steps as f64) as f32
        })
        .collect();
    Ok(Attributions {
        values,
        scores,
        baseline_scores: Some(baseline_scores),
    })
}

fn smooth_grad(
    source: &mut dyn GradientSource,
    x: &[f32],
    seeds: &[f32],
    draws: usize,
    sigma: f32,
    seed: u64,
) -> Result<Vec<f32>, String> {
    let wi = source.input_width();
    let n = x.len() / wi;
    if draws == 0 {
        return Err("SmoothGrad needs at least one sample".into());
    }
    if !(sigma.is_finite() && sigma >= 0.0) {
        return Err(format!("SmoothGrad's sigma must be >= 0, got {sigma}"));
    }
    let mut rng = Philox::from_seed(seed);
    let mut spread = 0f32;
    let sums = summed_gradients(source, n, draws, seeds, |i, k, row| {
        let xi = &x[i * wi..][..wi];
        if k == 0 {
            let (lo, hi) = xi
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
                    (lo.min(*v), hi.max(*v))
                });
            spread = sigma * (hi - lo).max(f32::MIN_POSITIVE);
        }
        for (r, v) in row.iter_mut().zip(xi) {
            *r = v + spread * rng.next_normal() as f32;
        }
    })?;
    let values = sums.iter().map(|s| (s / draws as f64) as f32).collect();
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `f(x) = [Σ w_j x_j², Σ x_j]`: a known gradient `[2 w ⊙ x, 1]`.
    struct Quadratic {
        w: Vec<f32>,
        /// The most rows one call was given.
        widest: usize,
    }

    fn quadratic(w: &[f32]) -> Quadratic {
        Quadratic {
            w: w.to_vec(),
            widest: 0,
        }
    }

    impl GradientSource for Quadratic {
        fn input_width(&self) -> usize {
            self.w.len()
        }
        fn output_width(&self) -> usize {
            2
        }
        fn gradients(
            &mut self,
            x: &[f32],
            samples: &[usize],
            seeds: &[f32],
        ) -> Result<(Vec<f32>, Vec<f32>), String> {
            let d = self.w.len();
            self.widest = self.widest.max(samples.len());
            let mut outputs = Vec::new();
            let mut grads = Vec::new();
            for r in 0..samples.len() {
                let (xr, s) = (&x[r * d..][..d], &seeds[r * 2..][..2]);
                outputs.push(self.w.iter().zip(xr).map(|(w, x)| w * x * x).sum());
                outputs.push(xr.iter().sum());
                grads.extend(
                    self.w
                        .iter()
                        .zip(xr)
                        .map(|(w, x)| s[0] * 2.0 * w * x + s[1]),
                );
            }
            Ok((outputs, grads))
        }
    }

    #[test]
    fn gradient_times_input_multiplies_elementwise() {
        let mut q = quadratic(&[1.0, 2.0]);
        let a = attribute(
            &mut q,
            &Method::GradientTimesInput,
            &[3.0, -1.0],
            &[1.0, 0.0],
        )
        .unwrap();
        assert_eq!(a.values, [3.0 * 6.0, -1.0 * -4.0]);
        assert_eq!(a.scores, [9.0 + 2.0]);
    }

    #[test]
    fn integrated_gradients_of_a_quadratic_are_exact_at_the_midpoints() {
        // Along the path the gradient is linear in α, so the midpoint rule is exact.
        let mut q = quadratic(&[1.0, 2.0]);
        let method = Method::IntegratedGradients {
            steps: 4,
            baseline: vec![1.0, 1.0],
        };
        let a = attribute(&mut q, &method, &[3.0, -1.0], &[1.0, 0.0]).unwrap();
        // w (x² - x'²) per feature.
        assert!((a.values[0] - 8.0).abs() < 1e-5, "{:?}", a.values);
        assert!(a.values[1].abs() < 1e-5, "{:?}", a.values);
        assert_eq!(a.baseline_scores, Some(vec![3.0]));
    }

    #[test]
    fn many_integration_steps_run_in_bounded_batches() {
        let mut q = quadratic(&[1.0, 2.0]);
        let method = Method::IntegratedGradients {
            steps: 3 * MAX_ROWS + 7,
            baseline: vec![1.0, 1.0],
        };
        let a = attribute(
            &mut q,
            &method,
            &[3.0, -1.0, 2.0, 2.0],
            &[1.0, 0.0, 1.0, 0.0],
        )
        .unwrap();
        assert!(q.widest <= MAX_ROWS, "{} rows in one run", q.widest);
        // w (x² - x'²) per feature, for both samples.
        for (got, want) in a.values.iter().zip([8.0, 0.0, 3.0, 6.0]) {
            assert!((got - want).abs() < 1e-4, "{:?}", a.values);
        }
    }

    #[test]
    fn smooth_grad_is_reproducible_and_averages_out_the_noise() {
        let mut q = quadratic(&[1.0, 1.0]);
        let method = Method::SmoothGrad {
            samples: 400,
            sigma: 0.1,
            seed: 9,
        };
        let x = [1.0, 3.0];
        let a = attribute(&mut q, &method, &x, &[1.0, 0.0]).unwrap();
        let b = attribute(&mut q, &method, &x, &[1.0, 0.0]).unwrap();
        assert_eq!(a, b);
        // E[2 (x + ε)] = 2x; the noise's deviation is 0.1 * 2.
        assert!((a.values[0] - 2.0).abs() < 0.05, "{:?}", a.values);
        assert!((a.values[1] - 6.0).abs() < 0.05, "{:?}", a.values);
    }

    #[test]
    fn a_baseline_of_the_wrong_size_is_refused() {
        let mut q = quadratic(&[1.0, 1.0]);
        let method = Method::IntegratedGradients {
            steps: 4,
            baseline: vec![0.0; 3],
        };
        let e = attribute(&mut q, &method, &[1.0, 3.0], &[1.0, 0.0]).unwrap_err();
        assert!(e.contains("baseline has 3 values"), "{e}");
    }
}

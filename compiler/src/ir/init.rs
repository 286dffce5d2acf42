//! Parameter initial values, drawn reproducibly from a seed.
//!
//! A parameter's values depend on the seed, its dotted path and the element index, and on
//! nothing else: not on the order parameters are created in, the thread count or the
//! backend. Element `i` (row-major) of the parameter at `path` takes one Philox4x32-10
//! block ([`strata_kernels::rng`]):
//!
//! ```text
//! h     = fnv1a64(path)                    # over the path's UTF-8 bytes
//! block = philox4x32([i_lo, i_hi, h_lo, h_hi], [seed_lo, seed_hi])
//! ```
//!
//! Uniform draws use `uniform_f64(block[0], block[1])`; normal draws use
//! `standard_normal(block)`. Values are computed in `f64` and rounded to `f32` once.
//!
//! Fans follow PyTorch's `_calculate_fan_in_and_fan_out`, so Xavier and He scales match
//! PyTorch's for the same layouts (see [`fans`]).

use super::op::Init;
use rayon::prelude::*;
use strata_kernels::rng::{key_from_seed, philox4x32, standard_normal, uniform_f64};

/// FNV-1a 64-bit offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The 64-bit FNV-1a hash of `path`'s UTF-8 bytes: the stable per-parameter stream id.
pub fn path_hash(path: &str) -> u64 {
    path.bytes().fold(FNV_OFFSET, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// `(fan_in, fan_out)` of a parameter shape, PyTorch's convention:
///
/// - rank 0: `(1, 1)`;
/// - rank 1 (a bias): both are the length;
/// - rank 2 (a dense weight `[out, in]`): `(in, out)`;
/// - rank >= 3 (a convolution kernel `[o, i, k...]`, OIHW): `(i * r, o * r)` with `r`
///   the product of the kernel extents.
pub fn fans(shape: &[u64]) -> (u64, u64) {
    match shape {
        [] => (1, 1),
        [n] => (*n, *n),
        [out, inp, kernel @ ..] => {
            let receptive: u64 = kernel.iter().product();
            (inp * receptive, out * receptive)
        }
    }
}

/// The initial values of the parameter at `path` with `shape`, row-major, for `seed`.
///
/// Xavier and He scales use [`fans`]; `Uniform(a)` draws from U(-a, a) and `Normal(s)`
/// from N(0, s²). A shape with a zero extent gives no values. The caller bounds the
/// element count (the result is allocated in full).
pub fn init_param(path: &str, init: &Init, shape: &[u64], seed: u64) -> Vec<f32> {
    let count: u64 = shape.iter().product();
    let (fan_in, fan_out) = fans(shape);
    let (fan_in, fan_out) = (fan_in as f64, fan_out as f64);
    let sample = match *init {
        Init::Zeros => Sample::Constant(0.0),
        Init::Ones => Sample::Constant(1.0),
        Init::Constant(c) => Sample::Constant(c),
        Init::XavierUniform => Sample::Uniform((6.0 / (fan_in + fan_out)).sqrt()),
        Init::XavierNormal => Sample::Normal((2.0 / (fan_in + fan_out)).sqrt()),
        Init::HeUniform => Sample::Uniform((6.0 / fan_in).sqrt()),
        Init::HeNormal => Sample::Normal((2.0 / fan_in).sqrt()),
        Init::Uniform(a) => Sample::Uniform(a),
        Init::Normal(std) => Sample::Normal(std),
    };
    let key = key_from_seed(seed);
    let h = path_hash(path);
    let block = |i: u64| {
        philox4x32(
            [i as u32, (i >> 32) as u32, h as u32, (h >> 32) as u32],
            key,
        )
    };
    let value = |i: u64| {
        let x = match sample {
            Sample::Constant(c) => c,
            Sample::Uniform(a) => {
                let b = block(i);
                a * (2.0 * uniform_f64(b[0], b[1]) - 1.0)
            }
            Sample::Normal(std) => std * standard_normal(block(i)),
        };
        x as f32
    };
    // Each element is its own draw, so a large parameter's are drawn on every core (a
    // deep model's build spent a tenth of its time in Philox rounds); the values do not
    // depend on the split.
    if count >= PARALLEL_INIT_ELEMENTS && !matches!(sample, Sample::Constant(_)) {
        (0..count).into_par_iter().map(value).collect()
    } else {
        (0..count).map(value).collect()
    }
}

/// The fewest elements of a parameter drawn on several threads.
const PARALLEL_INIT_ELEMENTS: u64 = 1 << 14;

/// The distribution an [`Init`] reduces to once its scale is known.
#[derive(Clone, Copy)]
enum Sample {
    Constant(f64),
    /// U(-a, a).
    Uniform(f64),
    /// N(0, std²).
    Normal(f64),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_and_variance(xs: &[f32]) -> (f64, f64) {
        let n = xs.len() as f64;
        let mean = xs.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = xs
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n;
        (mean, var)
    }

    /// Checks the mean is ~0 and the variance is `expected_var` within 3%, on 65,536
    /// draws (the standard errors are ~0.4% of the std and ~0.6% of the variance).
    fn assert_moments(init: Init, shape: &[u64], expected_var: f64) {
        let xs = init_param("layer.weight", &init, shape, 1234);
        assert_eq!(xs.len() as u64, shape.iter().product::<u64>());
        let (mean, var) = mean_and_variance(&xs);
        let std = expected_var.sqrt();
        assert!(mean.abs() < 0.03 * std, "{init}: mean {mean}, std {std}");
        assert!(
            (var / expected_var - 1.0).abs() < 0.03,
            "{init}: variance {var}, expected {expected_var}"
        );
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(path_hash(""), 0xcbf29ce484222325);
        assert_eq!(path_hash("a"), 0xaf63dc4c8601ec8c);
        assert_eq!(path_hash("foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn fans_follow_pytorch_conventions() {
        assert_eq!(fans(&[]), (1, 1));
        assert_eq!(fans(&[10]), (10, 10));
        assert_eq!(fans(&[128, 64]), (64, 128));
        assert_eq!(fans(&[16, 3, 5, 5]), (75, 400));
        assert_eq!(fans(&[8, 4, 3]), (12, 24));
    }

    #[test]
    fn xavier_uniform_has_variance_2_over_fan_sum_and_stays_in_bounds() {
        assert_moments(Init::XavierUniform, &[256, 256], 2.0 / 512.0);
        let bound = (6.0f64 / 512.0).sqrt() as f32;
        let xs = init_param("w", &Init::XavierUniform, &[256, 256], 5);
        assert!(xs.iter().all(|x| x.abs() <= bound));
    }

    #[test]
    fn xavier_normal_has_variance_2_over_fan_sum() {
        assert_moments(Init::XavierNormal, &[256, 256], 2.0 / 512.0);
    }

    #[test]
    fn he_uniform_has_variance_2_over_fan_in() {
        // A conv kernel: fan_in = 64 * 3 * 3.
        assert_moments(Init::HeUniform, &[64, 64, 3, 3], 2.0 / 576.0);
        assert_moments(Init::HeUniform, &[256, 256], 2.0 / 256.0);
    }

    #[test]
    fn he_normal_has_variance_2_over_fan_in() {
        assert_moments(Init::HeNormal, &[256, 256], 2.0 / 256.0);
    }

    #[test]
    fn uniform_and_normal_take_their_scale_as_given() {
        assert_moments(Init::Uniform(0.5), &[256, 256], 0.25 / 3.0);
        assert_moments(Init::Normal(0.02), &[256, 256], 0.0004);
    }

    #[test]
    fn constants_fill_every_element() {
        assert_eq!(init_param("b", &Init::Zeros, &[3], 0), vec![0.0; 3]);
        assert_eq!(init_param("b", &Init::Ones, &[2, 2], 0), vec![1.0; 4]);
        assert_eq!(
            init_param("b", &Init::Constant(0.25), &[2], 0),
            vec![0.25; 2]
        );
        assert_eq!(init_param("s", &Init::Constant(3.0), &[], 0), vec![3.0]);
    }

    #[test]
    fn values_depend_only_on_seed_path_and_index() {
        let a = init_param("enc.w", &Init::XavierNormal, &[32, 16], 7);
        let b = init_param("enc.w", &Init::XavierNormal, &[32, 16], 7);
        assert_eq!(a, b);
        // Element i does not depend on the shape beyond the scale: a longer tensor with
        // the same fans starts with the same (scaled) values.
        let n = init_param("enc.w", &Init::Normal(1.0), &[100], 7);
        let m = init_param("enc.w", &Init::Normal(1.0), &[10, 10], 7);
        assert_eq!(n, m);
    }

    #[test]
    fn different_paths_and_seeds_give_different_values() {
        let a = init_param("enc.w", &Init::HeUniform, &[32, 16], 7);
        let b = init_param("dec.w", &Init::HeUniform, &[32, 16], 7);
        let c = init_param("enc.w", &Init::HeUniform, &[32, 16], 8);
        assert!(a.iter().zip(&b).all(|(x, y)| x != y));
        assert!(a.iter().zip(&c).all(|(x, y)| x != y));
    }

    #[test]
    fn element_values_match_the_documented_philox_mapping() {
        let (seed, path) = (0x1_0000_0002u64, "head.bias");
        let h = path_hash(path);
        let b = philox4x32([3, 0, h as u32, (h >> 32) as u32], [2, 1]);
        let expected = (0.1 * (2.0 * uniform_f64(b[0], b[1]) - 1.0)) as f32;
        assert_eq!(
            init_param(path, &Init::Uniform(0.1), &[4], seed)[3],
            expected
        );
    }

    #[test]
    fn zero_extent_gives_no_values() {
        assert!(init_param("w", &Init::XavierUniform, &[0, 4], 1).is_empty());
    }
}

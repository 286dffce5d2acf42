//! The single-precision error function both backends compute: one algorithm and one set
//! of coefficients, which the CLIF emitter ([`crate::cpu`]) and the WGSL emitter
//! ([`crate::gpu`]) spell in their own instructions, and [`erf_f32`] in Rust for the
//! tests that measure it.
//!
//! With `a = min(|x|, 3.92)` (beyond it `erf` rounds to ±1 in `f32`):
//! - `a < 1`: `erf(a) = a · P(a²)`, `P` of degree 6;
//! - `a >= 1`: `erf(a) = 1 - e^(-a²) · Q(1/a)`, `Q` of degree 10 approximating
//!   `erfc(a) e^(a²)`, which is smooth and slowly varying there;
//!
//! and the sign of `x` put back (`erf` is odd). The form is Cephes' (`ndtrf.c`: a power
//! series near zero, `erfc`'s asymptotic factor `e^(-x²)` beyond); the coefficients are
//! least-squares fits on Chebyshev nodes against the `f64` `erf`. Evaluated in `f32`
//! (Horner's scheme, the backends' `exp`), the absolute error is below 1.5e-7 (about
//! 2.5 ulp of the result near 1) over the whole line; `erf(±inf) = ±1`, NaN -> NaN.

// The fitted coefficients are written with more digits than an f32 holds.
#![allow(clippy::excessive_precision)]

/// Below this `|x|` the odd polynomial is used, at or above it the `erfc` form.
pub const SPLIT: f32 = 1.0;

/// Above this `|x|`, `erf(x)` rounds to ±1 in `f32`.
pub const SATURATION: f32 = 3.92;

/// `P` in `erf(a) = a · P(a²)` for `a < 1`, highest power first.
pub const SMALL: [f32; 7] = [
    7.882_497_107_127_262e-5,
    -8.018_854_991_972_291e-4,
    5.189_311_942_604_375e-3,
    -2.685_432_879_602_975_3e-2,
    1.128_359_746_348_730_3e-1,
    -3.761_262_690_358_047_6e-1,
    1.128_379_165_881_502_3,
];

/// `Q` in `erf(a) = 1 - e^(-a²) · Q(1/a)` for `a >= 1`, highest power first.
pub const LARGE: [f32; 11] = [
    -3.516_774_854_678_869_6e-2,
    2.458_236_616_102_668_4e-1,
    -7.593_179_738_170_507e-1,
    1.343_075_134_693_112_7,
    -1.442_179_046_949_149,
    8.440_642_772_539_046e-1,
    -4.387_586_458_730_003e-2,
    -2.929_546_101_074_102e-1,
    4.532_995_193_678_833e-3,
    5.635_483_716_558_435e-1,
    3.437_904_511_945_275e-5,
];

fn horner(x: f32, coeffs: &[f32]) -> f32 {
    coeffs.iter().fold(0.0, |p, &k| p * x + k)
}

/// `erf(x)` in `f32` by the backends' algorithm (with Rust's `exp`, which, like the
/// backends', is within about an ulp).
pub fn erf_f32(x: f32) -> f32 {
    let a = x.abs().min(SATURATION);
    let small = a * horner(a * a, &SMALL);
    let b = a.max(SPLIT);
    let large = 1.0 - (-(b * b)).exp() * horner(1.0 / b, &LARGE);
    let r = if a < SPLIT { small } else { large };
    if x.is_nan() { x } else { r.copysign(x) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_f32_is_within_1_5e_7_of_the_f64_erf_everywhere() {
        let mut worst = (0.0f64, 0.0f32);
        for i in -600_000..=600_000 {
            let x = i as f32 * 1e-5;
            let err = (f64::from(erf_f32(x)) - libm::erf(f64::from(x))).abs();
            if err > worst.0 {
                worst = (err, x);
            }
        }
        assert!(worst.0 < 1.5e-7, "error {} at {}", worst.0, worst.1);
    }

    #[test]
    fn erf_f32_keeps_the_special_values() {
        assert_eq!(erf_f32(f32::INFINITY), 1.0);
        assert_eq!(erf_f32(f32::NEG_INFINITY), -1.0);
        assert_eq!(erf_f32(0.0).to_bits(), 0.0f32.to_bits());
        assert_eq!(erf_f32(-0.0).to_bits(), (-0.0f32).to_bits());
        assert!(erf_f32(f32::NAN).is_nan());
        assert!(erf_f32(1e-30) > 0.0, "tiny inputs keep their sign and size");
    }
}

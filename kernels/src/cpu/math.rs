//! Transcendental functions in CLIF, since Cranelift has no `exp`, `log` or `tanh`.
//!
//! All of them are branch-free straight-line code (special cases are `select`s), so
//! they can sit anywhere in a loop body, written once for `f32` and `f32x4`
//! ([`Lanes`]): the vector form is the same instructions lane by lane, so it computes the
//! same bits. The algorithms and coefficients are Cephes'
//! single-precision ones (S. L. Moshier, *Methods and Programs for Mathematical
//! Functions*, `expf.c`, `logf.c`): a range reduction, a short minimax polynomial, and a
//! reconstruction; `tanh` is built on `exp`'s (see [`tanh`]).
//!
//! Their multiply-adds (the polynomials' steps, `exp`'s range reduction) are single `fma`
//! instructions when the target has FMA ([`Lanes::fused`], from [`super::Features`]),
//! else a multiplication and an addition (Cranelift would turn an `fma` into a library
//! call there). Fused, each step rounds once instead of twice and the chain of dependent
//! operations is shorter: an LSTM cell, five such functions in a row per point, is bound
//! by that chain's latency. So the last bits of a result depend on whether the host has
//! FMA, as a matrix product's do on the host's vector width; on one host they are the same
//! in scalar and vector code and on every thread.
//!
//! Accuracy, measured against `f64` over the whole `f32` range where the result is normal
//! (see `runtime/tests/cpu_kernels.rs`): `exp` and `log` within 1 ulp, `tanh` and `sigmoid`
//! within 2.5 ulp (relative errors below 2e-7); `erf` (see [`crate::erf`])
//! within 1.5e-7 absolute. Special cases follow C99 Annex F:
//!
//! | function | special cases |
//! |---|---|
//! | `exp` | `exp(x) = inf` for `x > ln(FLT_MAX)`; `0` for `x < ln(2^-126)`, where the result would be subnormal (the runtime flushes subnormals to zero anyway); NaN -> NaN |
//! | `log` | `log(0) = -inf`, `log(x < 0) = NaN`, `log(inf) = inf`, NaN -> NaN; subnormal inputs are exact |
//! | `tanh` | `tanh(±inf) = ±1`, `tanh(-0) = -0`, NaN -> NaN |
//! | `sigmoid` | computed as `e / (1 + e)` with `e = exp(-x)` flipped for `x < 0`, so it does not overflow; like `exp`, 0 where the result would be subnormal |
//! | `pow` | `exp(b * log|a|)`; `pow(a, 0) = 1` and `pow(1, b) = 1` even for NaN, `pow(-1, ±inf) = 1`; for `a < 0` the result is NaN unless `b` is an integer, negated when `b` is odd; `pow(±0, b < 0) = ±inf` |
//!
//! `pow`'s relative error grows with `|b * log a|` (about `|b log a| * 6e-8`), as for any
//! `exp(b * log a)` in single precision; the emitter turns the common constant exponents
//! (`2`, `3`, `-1`, `0.5`, ...) into multiplications and square roots instead.

// Cephes' coefficients are written as published, with more digits than an f32 holds.
#![allow(clippy::excessive_precision)]

use super::lanes::Lanes;
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;

/// Horner's scheme: `((coeffs[0] * x + coeffs[1]) * x + ...) + coeffs[last]`.
fn horner(b: &mut FunctionBuilder, l: Lanes, x: Value, coeffs: &[f32]) -> Value {
    let mut p = l.f(b, coeffs[0]);
    for &k in &coeffs[1..] {
        let k = l.f(b, k);
        p = l.mul_add(b, p, x, k);
    }
    p
}

/// `coeffs` (highest degree first) as a polynomial in `x`, given `x2 = x * x`, evaluated
/// in pairs: `(c0 x + c1) x2 + (c2 x + c3)`, and so on. The pairs do not depend on each
/// other, so the longest chain of dependent operations is about half of Horner's. That
/// chain is what bounds a map evaluating several functions in sequence per point (an
/// LSTM cell: `exp` inside a sigmoid, then inside the `tanh` of the new cell state), where
/// the core has only about one loop iteration in flight.
fn pairs(b: &mut FunctionBuilder, l: Lanes, x: Value, x2: Value, coeffs: &[f32]) -> Value {
    let (head, rest) = coeffs.split_at(coeffs.len() % 2);
    let mut terms: Vec<Value> = head.iter().map(|&c| l.f(b, c)).collect();
    for pair in rest.chunks(2) {
        let hi = l.f(b, pair[0]);
        let lo = l.f(b, pair[1]);
        terms.push(l.mul_add(b, hi, x, lo));
    }
    let mut p = terms[0];
    for &t in &terms[1..] {
        p = l.mul_add(b, p, x2, t);
    }
    p
}

/// `exp(x)` (Cephes `expf`): `x = n ln2 + r` with `|r| <= ln2 / 2`, `exp(r)` by a degree-7
/// polynomial (its terms in pairs, see [`pairs`]), then `2^n` added to the result's exponent field.
///
/// `n` is rounded by adding `1.5 * 2^23`, which leaves `n` in the sum's low mantissa bits,
/// so the exponent comes from those bits with one shift (no float-to-int conversion, whose
/// saturating vector form is seven instructions on x86-64). Inputs outside
/// `[ln 2^-126, ln FLT_MAX]` are selected afterwards: 0 below (the results there are
/// subnormal, which the runtime flushes to zero anyway), `inf` above, and NaN stays NaN.
/// Inside the range the bits are those of Cephes' `ldexpf(p, n)`.
pub fn exp(b: &mut FunctionBuilder, l: Lanes, x: Value) -> Value {
    exp_over(b, l, x, Sign::Any)
}

/// What an argument of [`exp_over`] can be, besides NaN.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sign {
    Any,
    /// At most 0 (`sigmoid`'s `-|x|`, `erf`'s `-x²`): never above the overflow bound, so
    /// only NaN needs that select, and it is kept by selecting `x` itself.
    NonPositive,
}

/// The range reduction and polynomial [`exp`] and [`tanh`] share: `x = n ln2 + r` with
/// `|r| <= ln2 / 2`; returns `x log2(e) + 1.5 * 2^23` (whose low mantissa bits hold `n`,
/// see [`exp`]) and `expm1(r)`, a degree-7 polynomial (its terms in pairs, see [`pairs`]).
fn reduce(b: &mut FunctionBuilder, l: Lanes, x: Value) -> (Value, Value) {
    let log2e = l.f(b, std::f32::consts::LOG2_E);
    // `t = x log2(e)` rounded to an integer: exact for |t| < 2^22, rounding to nearest
    // even as `nearest` does (fused, `t` itself is not rounded first); larger |t| lies
    // outside the range the callers select.
    let round = l.f(b, 12_582_912.0); // 1.5 * 2^23
    let shifted = l.mul_add(b, x, log2e, round);
    let n = b.ins().fsub(shifted, round);
    // ln2 split in two: C1 has 9 significant bits, so `n * C1` and `x - n * C1` are exact.
    let c1 = l.f(b, 0.693_359_375);
    let c2 = l.f(b, -2.121_944_40e-4);
    let r = l.neg_mul_add(b, n, c1, x);
    let r = l.neg_mul_add(b, n, c2, r);
    let rr = b.ins().fmul(r, r);
    let p = pairs(
        b,
        l,
        r,
        rr,
        &[
            1.987_569_150_0e-4,
            1.398_199_950_7e-3,
            8.333_451_907_3e-3,
            4.166_579_589_4e-2,
            1.666_666_545_9e-1,
            5.000_000_120_1e-1,
        ],
    );
    (shifted, l.mul_add(b, p, rr, r))
}

/// [`exp`] for an argument of `sign`: the selects that `sign` makes impossible are left
/// out (fewer instructions and fewer constants held in registers in a loop of them, an
/// LSTM cell's five). The same bits as [`exp`] for every such argument and NaN.
fn exp_over(b: &mut FunctionBuilder, l: Lanes, x: Value, sign: Sign) -> Value {
    let (shifted, y) = reduce(b, l, x);
    let one = l.f(b, 1.0);
    let y = b.ins().fadd(y, one);
    // The low bits of `shifted` are `n + 2^22`; shifted into the exponent field, the
    // `2^22` and the sum's own exponent fall off the top, leaving `n << 23` (mod 2^32).
    let shifted_bits = l.to_bits(b, shifted);
    let n_bits = l.shl_imm(b, shifted_bits, 23);
    let y_bits = l.to_bits(b, y);
    let scaled = b.ins().iadd(y_bits, n_bits);
    let scaled = l.from_bits(b, scaled);
    // The f32 just above ln 2^-126: from it up, n >= -126 and the result is normal.
    let lo = l.f(b, -87.336_54);
    let zero = l.f(b, 0.0);
    let below = b.ins().fcmp(FloatCC::LessThan, x, lo);
    let r = l.select(b, below, zero, scaled);
    if sign == Sign::NonPositive {
        // NaN in, NaN out (the integer steps above may have made a number of it).
        let nan = b.ins().fcmp(FloatCC::Unordered, x, x);
        return l.select(b, nan, x, r);
    }
    // The f32 just below ln FLT_MAX: above it the result overflows (`x * inf` is `inf`),
    // and a NaN input gives `NaN * inf`, NaN.
    let hi = l.f(b, 88.722_83);
    let inf = l.f(b, f32::INFINITY);
    let above = b.ins().fcmp(FloatCC::UnorderedOrGreaterThan, x, hi);
    let overflow = b.ins().fmul(x, inf);
    l.select(b, above, overflow, r)
}

/// `log(x)` (Cephes `logf`): `x = 2^e m` with `sqrt(1/2) <= m < sqrt(2)`, `log(m)` by a
/// degree-9 polynomial in `m - 1`, plus `e ln2` with ln2 split in two.
pub fn log(b: &mut FunctionBuilder, l: Lanes, x: Value) -> Value {
    // Subnormal inputs are scaled into the normal range first.
    let min_normal = l.f(b, f32::MIN_POSITIVE);
    let is_sub = b.ins().fcmp(FloatCC::LessThan, x, min_normal);
    let scale = l.f(b, 8_388_608.0); // 2^23
    let scaled = b.ins().fmul(x, scale);
    let xs = l.select(b, is_sub, scaled, x);
    let bits = l.to_bits(b, xs);
    // frexp: m in [0.5, 1), x = m * 2^e.
    let exp_bits = l.ushr_imm(b, bits, 23);
    let exp_bits = l.band_imm(b, exp_bits, 0xff);
    let e = l.iadd_imm(b, exp_bits, -126);
    let sub_adjust = l.i(b, 23);
    let zero_i = l.i(b, 0);
    let adj = l.select(b, is_sub, sub_adjust, zero_i);
    let e = b.ins().isub(e, adj);
    let mant_bits = l.band_imm(b, bits, 0x807f_ffff);
    let mant_bits = l.bor_imm(b, mant_bits, 0x3f00_0000);
    let m = l.from_bits(b, mant_bits);
    // Move m to [sqrt(1/2), sqrt(2)) and subtract 1 (both exact).
    let sqrth = l.f(b, std::f32::consts::FRAC_1_SQRT_2);
    let small = b.ins().fcmp(FloatCC::LessThan, m, sqrth);
    let one_i = l.i(b, 1);
    let dec = l.select(b, small, one_i, zero_i);
    let e = b.ins().isub(e, dec);
    let m2 = b.ins().fadd(m, m);
    let m = l.select(b, small, m2, m);
    let one = l.f(b, 1.0);
    let f = b.ins().fsub(m, one);
    let fe = b.ins().fcvt_from_sint(l.float, e);
    let z = b.ins().fmul(f, f);
    let p = horner(
        b,
        l,
        f,
        &[
            7.037_683_629_2e-2,
            -1.151_461_031_0e-1,
            1.167_699_874_0e-1,
            -1.242_014_084_6e-1,
            1.424_932_278_7e-1,
            -1.666_805_766_5e-1,
            2.000_071_476_5e-1,
            -2.499_999_399_3e-1,
            3.333_333_117_4e-1,
        ],
    );
    let y = b.ins().fmul(p, f);
    let y = b.ins().fmul(y, z);
    let c2 = l.f(b, -2.121_944_40e-4);
    let y = l.mul_add(b, fe, c2, y);
    let half = l.f(b, -0.5);
    let y = l.mul_add(b, z, half, y);
    let r = b.ins().fadd(f, y);
    let c1 = l.f(b, 0.693_359_375);
    let r = l.mul_add(b, fe, c1, r);
    // Special cases, last one wins: +inf -> +inf, ±0 -> -inf, x < 0 or NaN -> NaN.
    let inf = l.f(b, f32::INFINITY);
    let is_inf = b.ins().fcmp(FloatCC::Equal, x, inf);
    let r = l.select(b, is_inf, inf, r);
    let zero = l.f(b, 0.0);
    let neg_inf = l.f(b, f32::NEG_INFINITY);
    let is_zero = b.ins().fcmp(FloatCC::Equal, x, zero);
    let r = l.select(b, is_zero, neg_inf, r);
    let nan = l.f(b, f32::NAN);
    let bad = b.ins().fcmp(FloatCC::UnorderedOrLessThan, x, zero);
    l.select(b, bad, nan, r)
}

/// `tanh(x) = e / (e + 2)` with `e = expm1(2|x|)` and the sign of `x`. `expm1` comes from
/// [`exp`]'s reduction: `expm1(t) = 2^n expm1(r) + (2^n - 1)`, one multiply-add whose
/// terms never cancel (for `n >= 1`, `2^n (1 + expm1(r)) >= 1.4`) and exact `2^n - 1`
/// (`n <= 26` here), so small `|x|` keeps its relative accuracy without a second
/// polynomial (Cephes `tanhf` evaluates an odd one below 0.625 and `1 - 2 / (exp(2|x|) +
/// 1)` above, and a vector computes both). `|x|` is capped at 9, where `e + 2` rounds to
/// `e` and the result is 1 (tanh(±inf) = ±1); NaN stays NaN.
pub fn tanh(b: &mut FunctionBuilder, l: Lanes, x: Value) -> Value {
    let z = l.abs(b, x);
    let cap = l.f(b, 9.0);
    let over = b.ins().fcmp(FloatCC::GreaterThan, z, cap);
    let z = l.select(b, over, cap, z);
    let t = b.ins().fadd(z, z);
    let (shifted, y) = reduce(b, l, t);
    // `2^n`: `n << 23` (see `exp_over`) plus the exponent field of 1.
    let shifted_bits = l.to_bits(b, shifted);
    let n_bits = l.shl_imm(b, shifted_bits, 23);
    let one_bits = l.i(b, 0x3f80_0000);
    let scale = b.ins().iadd(n_bits, one_bits);
    let scale = l.from_bits(b, scale);
    let one = l.f(b, 1.0);
    let scale_less_one = b.ins().fsub(scale, one);
    let e = l.mul_add(b, scale, y, scale_less_one);
    let two = l.f(b, 2.0);
    let den = b.ins().fadd(e, two);
    let r = b.ins().fdiv(e, den);
    // tanh is odd; this also keeps tanh(-0) = -0.
    l.or_sign(b, r, x)
}

/// `erf(x)` by the algorithm and coefficients of [`crate::erf`]: an odd polynomial below
/// `|x| = 1`, `1 - exp(-x²) Q(1/|x|)` above, both computed and one selected.
pub fn erf(b: &mut FunctionBuilder, l: Lanes, x: Value) -> Value {
    use crate::erf::{LARGE, SATURATION, SMALL, SPLIT};
    let ax = b.ins().fabs(x);
    let cap = l.f(b, SATURATION);
    // fmin propagates NaN, so erf(NaN) is NaN.
    let a = b.ins().fmin(ax, cap);
    let a2 = b.ins().fmul(a, a);
    let p = horner(b, l, a2, &SMALL);
    let small = b.ins().fmul(a, p);
    let split = l.f(b, SPLIT);
    // The large branch is evaluated at max(a, 1) so that 1/a stays finite.
    let big = b.ins().fmax(a, split);
    let one = l.f(b, 1.0);
    let inv = b.ins().fdiv(one, big);
    let q = horner(b, l, inv, &LARGE);
    let big2 = b.ins().fmul(big, big);
    let neg = b.ins().fneg(big2);
    let e = exp_over(b, l, neg, Sign::NonPositive);
    let eq = b.ins().fmul(e, q);
    let large = b.ins().fsub(one, eq);
    let is_small = b.ins().fcmp(FloatCC::LessThan, a, split);
    let r = l.select(b, is_small, small, large);
    l.copysign(b, r, x)
}

/// `sigmoid(x) = 1 / (1 + exp(-x))`, computed as `1 / (1 + e)` for `x >= 0` and
/// `e / (1 + e)` for `x < 0`, with `e = exp(-|x|)`, so no branch overflows.
pub fn sigmoid(b: &mut FunctionBuilder, l: Lanes, x: Value) -> Value {
    let nax = l.neg_abs(b, x);
    let e = exp_over(b, l, nax, Sign::NonPositive);
    let one = l.f(b, 1.0);
    let zero = l.f(b, 0.0);
    let nonneg = b.ins().fcmp(FloatCC::GreaterThanOrEqual, x, zero);
    let num = l.select(b, nonneg, one, e);
    let den = b.ins().fadd(one, e);
    b.ins().fdiv(num, den)
}

/// `a ** b` as `exp(b * log|a|)` with the sign and special cases of C's `powf` (see the
/// module docs).
pub fn pow(b: &mut FunctionBuilder, l: Lanes, a: Value, e: Value) -> Value {
    let aa = b.ins().fabs(a);
    let lg = log(b, l, aa);
    let y = b.ins().fmul(e, lg);
    let r = exp(b, l, y);
    // Integer and odd exponents: every f32 beyond 2^24 is an even integer.
    let rounded = b.ins().nearest(e);
    let is_int = b.ins().fcmp(FloatCC::Equal, rounded, e);
    let half_c = l.f(b, 0.5);
    let half = b.ins().fmul(e, half_c);
    let half_rounded = b.ins().nearest(half);
    let half_frac = b.ins().fcmp(FloatCC::NotEqual, half_rounded, half);
    let is_odd = b.ins().band(is_int, half_frac);
    let signed = l.copysign(b, r, a);
    let r = l.select(b, is_odd, signed, r);
    let zero = l.f(b, 0.0);
    let neg_base = b.ins().fcmp(FloatCC::LessThan, a, zero);
    let not_int = l.not(b, is_int);
    let nan_case = b.ins().band(neg_base, not_int);
    let nan = l.f(b, f32::NAN);
    let r = l.select(b, nan_case, nan, r);
    // pow(a, 0) = 1, pow(1, b) = 1, pow(-1, ±inf) = 1.
    let one = l.f(b, 1.0);
    let inf = l.f(b, f32::INFINITY);
    let zero_exp = b.ins().fcmp(FloatCC::Equal, e, zero);
    let unit_base = b.ins().fcmp(FloatCC::Equal, a, one);
    let abs_e = b.ins().fabs(e);
    let inf_exp = b.ins().fcmp(FloatCC::Equal, abs_e, inf);
    let unit_abs = b.ins().fcmp(FloatCC::Equal, aa, one);
    let minus_one_inf = b.ins().band(unit_abs, inf_exp);
    let is_one = b.ins().bor(zero_exp, unit_base);
    let is_one = b.ins().bor(is_one, minus_one_inf);
    l.select(b, is_one, one, r)
}

//! Philox4x32-10 in CLIF: the CPU's copy of [`crate::rng::uniform_at`], bit for bit.
//!
//! Straight-line `i32` code, so it sits anywhere in a loop body. Each round's two
//! 32x32 -> 64-bit products are `imul` (the low word) and `umulhi` (the high word) on
//! `i32`, which the x86-64 backend lowers to one widening `mul` each. The seed is a
//! constant of the expression, so the round keys (`key + r * W`,
//! [`crate::rng::round_keys`]) are constants too, and no key arithmetic runs.

use crate::rng::{self, PHILOX_M0, PHILOX_M1};
use cranelift_codegen::ir::{InstBuilder, Value, types};
use cranelift_frontend::FunctionBuilder;

/// An `i32` constant with the bits of `x`.
fn word(b: &mut FunctionBuilder, x: u32) -> Value {
    b.ins().iconst(types::I32, i64::from(x))
}

/// `uniform_at(seed, index, step_word(step))` for an `i64` element `index` and an `f32`
/// `step`: an `f32` in `[0, 1)`.
pub fn uniform(b: &mut FunctionBuilder, seed: u64, index: Value, step: Value) -> Value {
    let index_hi = b.ins().ushr_imm_u(index, 32);
    let mut c = [
        b.ins().ireduce(types::I32, index),
        b.ins().ireduce(types::I32, index_hi),
        // Truncating, saturating, NaN -> 0: `rng::step_word`.
        b.ins().fcvt_to_uint_sat(types::I32, step),
        word(b, 0),
    ];
    let m0 = word(b, PHILOX_M0);
    let m1 = word(b, PHILOX_M1);
    for [k0, k1] in rng::round_keys(rng::key_from_seed(seed)) {
        let lo0 = b.ins().imul(m0, c[0]);
        let hi0 = b.ins().umulhi(m0, c[0]);
        let lo1 = b.ins().imul(m1, c[2]);
        let hi1 = b.ins().umulhi(m1, c[2]);
        let x0 = b.ins().bxor(hi1, c[1]);
        let x0 = b.ins().bxor_imm_u(x0, i64::from(k0));
        let x2 = b.ins().bxor(hi0, c[3]);
        let x2 = b.ins().bxor_imm_u(x2, i64::from(k1));
        c = [x0, lo1, x2, lo0];
    }
    // `rng::uniform_f32`: the top 24 bits, exactly representable, times 2^-24 (exact).
    let top = b.ins().ushr_imm_u(c[0], 8);
    let top = b.ins().fcvt_from_uint(types::F32, top);
    let scale = b.ins().f32const(1.0 / 16_777_216.0);
    b.ins().fmul(top, scale)
}

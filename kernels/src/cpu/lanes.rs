//! One `f32` or four at once: the handful of instructions whose form differs between a
//! scalar and an `f32x4` value, so that [`super::math`] and the expression lowering are
//! written once for both.
//!
//! A scalar comparison gives an `i8` (0 or 1) and chooses with `select`; a vector
//! comparison gives an `i32x4` lane mask (all ones or all zeros) and chooses with
//! `bitselect`. Integer immediates are splatted for vectors, since Cranelift's `*_imm`
//! instructions are scalar only. The scalar forms are exactly the instructions the emitter
//! has always written, so scalar code does not change.

use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

/// The shape of the values being computed: `f32` with `i32` integers, or `f32x4` with
/// `i32x4`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lanes {
    /// The float type: `f32` or `f32x4`.
    pub float: Type,
    /// The integer type of the same shape: `i32` or `i32x4`.
    pub int: Type,
    /// Whether a multiply-add is one fused instruction (`fma`: the target has FMA, see
    /// [`super::Features`]) or a multiplication and an addition.
    pub fused: bool,
}

impl Lanes {
    /// One value.
    pub const SCALAR: Lanes = Lanes {
        float: types::F32,
        int: types::I32,
        fused: false,
    };
    /// Four values in a 128-bit register.
    pub const X4: Lanes = Lanes {
        float: types::F32X4,
        int: types::I32X4,
        fused: false,
    };
    /// How many values a vector of this shape holds.
    pub const WIDTH: i64 = 4;

    /// The same shape, its multiply-adds fused or not.
    pub fn fused(self, fused: bool) -> Lanes {
        Lanes { fused, ..self }
    }

    /// `a * x + c`: one `fma` (rounded once) when fused, else a multiplication and an
    /// addition.
    pub fn mul_add(self, b: &mut FunctionBuilder, a: Value, x: Value, c: Value) -> Value {
        if self.fused {
            b.ins().fma(a, x, c)
        } else {
            let ax = b.ins().fmul(a, x);
            b.ins().fadd(ax, c)
        }
    }

    /// `c - a * x`: one `fma` of `-a` when fused, else a multiplication and a
    /// subtraction.
    pub fn neg_mul_add(self, b: &mut FunctionBuilder, a: Value, x: Value, c: Value) -> Value {
        if self.fused {
            let na = b.ins().fneg(a);
            b.ins().fma(na, x, c)
        } else {
            let ax = b.ins().fmul(a, x);
            b.ins().fsub(c, ax)
        }
    }

    pub fn is_vector(self) -> bool {
        self.float.is_vector()
    }

    /// The float constant `x` in every lane.
    pub fn f(self, b: &mut FunctionBuilder, x: f32) -> Value {
        let s = b.ins().f32const(x);
        self.splat_float(b, s)
    }

    /// A scalar `f32` value in every lane (itself for scalars).
    pub fn splat_float(self, b: &mut FunctionBuilder, s: Value) -> Value {
        if self.is_vector() {
            b.ins().splat(self.float, s)
        } else {
            s
        }
    }

    /// The integer constant `x` in every lane.
    pub fn i(self, b: &mut FunctionBuilder, x: i32) -> Value {
        let s = b.ins().iconst(types::I32, i64::from(x));
        if self.is_vector() {
            b.ins().splat(self.int, s)
        } else {
            s
        }
    }

    /// `mask ? t : f` per lane, for float or integer values of this shape.
    pub fn select(self, b: &mut FunctionBuilder, mask: Value, t: Value, f: Value) -> Value {
        if !self.is_vector() {
            return b.ins().select(mask, t, f);
        }
        let ty = b.func.dfg.value_type(t);
        let mask = if ty == self.int {
            mask
        } else {
            b.ins().bitcast(ty, MemFlagsData::new(), mask)
        };
        b.ins().bitselect(mask, t, f)
    }

    /// The logical negation of a comparison's result.
    pub fn not(self, b: &mut FunctionBuilder, mask: Value) -> Value {
        if self.is_vector() {
            b.ins().bnot(mask)
        } else {
            b.ins().bxor_imm_s(mask, 1)
        }
    }

    /// `|x|`. In vectors a mask held like any constant: Cranelift's `fabs` of `f32x4`
    /// builds its mask from all-ones and a shift at every use (three instructions where
    /// this is one, in a loop of five activations whose constants are already spilled).
    pub fn abs(self, b: &mut FunctionBuilder, x: Value) -> Value {
        if !self.is_vector() {
            return b.ins().fabs(x);
        }
        let bits = self.to_bits(b, x);
        let bits = self.band_imm(b, bits, 0x7fff_ffff);
        self.from_bits(b, bits)
    }

    /// `-|x|`: the sign bit set (one instruction in vectors, where `fneg(fabs(x))` is six).
    pub fn neg_abs(self, b: &mut FunctionBuilder, x: Value) -> Value {
        if !self.is_vector() {
            let ax = b.ins().fabs(x);
            return b.ins().fneg(ax);
        }
        let bits = self.to_bits(b, x);
        let bits = self.bor_imm(b, bits, 0x8000_0000);
        self.from_bits(b, bits)
    }

    /// `x` with the sign bit of `y` added, for `x` whose sign bit is clear (`|x|`,
    /// +0, a NaN): `copysign(x, y)` in two instructions where `copysign` takes three.
    pub fn or_sign(self, b: &mut FunctionBuilder, x: Value, y: Value) -> Value {
        if !self.is_vector() {
            return b.ins().fcopysign(x, y);
        }
        let xb = self.to_bits(b, x);
        let yb = self.to_bits(b, y);
        let sign = self.band_imm(b, yb, 0x8000_0000);
        let bits = b.ins().bor(xb, sign);
        self.from_bits(b, bits)
    }

    /// `x + k` for integers.
    pub fn iadd_imm(self, b: &mut FunctionBuilder, x: Value, k: i32) -> Value {
        if self.is_vector() {
            let k = self.i(b, k);
            b.ins().iadd(x, k)
        } else {
            b.ins().iadd_imm_s(x, i64::from(k))
        }
    }

    /// `x << k` for integers.
    pub fn shl_imm(self, b: &mut FunctionBuilder, x: Value, k: u32) -> Value {
        if self.is_vector() {
            let k = b.ins().iconst(types::I32, i64::from(k));
            b.ins().ishl(x, k)
        } else {
            b.ins().ishl_imm_u(x, i64::from(k))
        }
    }

    /// `x >> k` for integers, logical.
    pub fn ushr_imm(self, b: &mut FunctionBuilder, x: Value, k: u32) -> Value {
        if self.is_vector() {
            let k = b.ins().iconst(types::I32, i64::from(k));
            b.ins().ushr(x, k)
        } else {
            b.ins().ushr_imm_u(x, i64::from(k))
        }
    }

    /// `x >> k` for integers, arithmetic.
    pub fn sshr_imm(self, b: &mut FunctionBuilder, x: Value, k: u32) -> Value {
        if self.is_vector() {
            let k = b.ins().iconst(types::I32, i64::from(k));
            b.ins().sshr(x, k)
        } else {
            b.ins().sshr_imm_u(x, i64::from(k))
        }
    }

    /// `x & k` for integers.
    pub fn band_imm(self, b: &mut FunctionBuilder, x: Value, k: u32) -> Value {
        if self.is_vector() {
            let k = self.i(b, k as i32);
            b.ins().band(x, k)
        } else {
            b.ins().band_imm_u(x, i64::from(k))
        }
    }

    /// `x | k` for integers.
    pub fn bor_imm(self, b: &mut FunctionBuilder, x: Value, k: u32) -> Value {
        if self.is_vector() {
            let k = self.i(b, k as i32);
            b.ins().bor(x, k)
        } else {
            b.ins().bor_imm_u(x, i64::from(k))
        }
    }

    /// A float's bits as an integer of the same shape.
    pub fn to_bits(self, b: &mut FunctionBuilder, x: Value) -> Value {
        b.ins().bitcast(self.int, MemFlagsData::new(), x)
    }

    /// An integer's bits as a float of the same shape.
    pub fn from_bits(self, b: &mut FunctionBuilder, x: Value) -> Value {
        b.ins().bitcast(self.float, MemFlagsData::new(), x)
    }

    /// `|x|` with the sign of `y`. Cranelift's x86-64 backend has `fcopysign` for
    /// scalars only; for vectors the same bits come from masking.
    pub fn copysign(self, b: &mut FunctionBuilder, x: Value, y: Value) -> Value {
        if !self.is_vector() {
            return b.ins().fcopysign(x, y);
        }
        let magnitude = self.abs(b, x);
        self.or_sign(b, magnitude, y)
    }
}
